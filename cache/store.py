"""Opening stores by local path or fsspec URL, and reading their attributes."""

from __future__ import annotations

from typing import Any, Literal

import zarr

from cache.schema import CacheInfo
from pipeline.errors import CacheCorrupt, CacheNotFound, CacheWriteError

Mode = Literal["r", "r+", "a", "w"]


def _local(url: str) -> str:
    """``file://`` URLs as plain paths: zarr's fsspec store does not create parent folders."""
    return url[len("file://"):] if url.startswith("file://") else url


def open_group(url: str, mode: Mode = "r") -> zarr.Group:
    """Open the store's root group.

    ``CacheNotFound`` when reading (``r``, ``r+``) a store that is not there; ``CacheWriteError``
    when creating (``w``, ``a``) fails, so a write failure is never reported as "not found".
    """
    try:
        return zarr.open_group(store=_local(url), mode=mode, zarr_format=3)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError) as exc:
        if mode in ("w", "a"):
            raise CacheWriteError(f"cannot create the cache store at {url}: {exc}") from exc
        raise CacheNotFound(f"no cache store at {url}") from exc
    except OSError as exc:
        if mode == "r":
            raise
        raise CacheWriteError(f"cannot write the cache store at {url}: {exc}") from exc


def exists(url: str) -> bool:
    """Whether a zarr group is present at ``url``."""
    try:
        open_group(url, "r")
    except CacheNotFound:
        return False
    return True


def read_attrs(url: str) -> dict[str, Any]:
    """Group attributes as a plain dict."""
    return dict(open_group(url, "r").attrs)


def read_info(url: str) -> CacheInfo:
    """Parsed attributes; ``CacheCorrupt`` when the group is not a g-SAE cache."""
    attrs = read_attrs(url)
    try:
        return CacheInfo.from_attrs(attrs)
    except (KeyError, TypeError, ValueError) as exc:
        raise CacheCorrupt(f"{url} is not a g-SAE cache (missing or bad attribute {exc})") from exc
