"""Opening stores by local path or fsspec URL, and reading their attributes."""

from __future__ import annotations

import json
from typing import Any, Literal

import zarr

from cache.errors import CacheCorrupt, CacheNotFound, CacheWriteError, PipelineError
from cache.schema import ALLOCATING, CacheInfo

Mode = Literal["r", "r+", "a", "w"]


def local_url(url: str) -> str:
    """``file://`` URLs as plain paths: zarr's fsspec store does not create parent folders."""
    return url[len("file://") :] if url.startswith("file://") else url


def open_group(url: str, mode: Mode = "r") -> zarr.Group:
    """Open the store's root group, mapping every failure to one line of the error hierarchy.

    ``CacheNotFound``: nothing there, an unknown fsspec protocol, an unreachable host;
    ``CacheCorrupt``: the group's ``zarr.json`` is unreadable (truncated, not JSON);
    ``CacheWriteError``: the location cannot be written when ``mode`` writes.
    """
    try:
        return zarr.open_group(store=local_url(url), mode=mode, zarr_format=3)
    except PipelineError:
        raise
    except (FileNotFoundError, zarr.errors.GroupNotFoundError) as exc:
        if mode in ("w", "a"):
            raise CacheWriteError(f"cannot create the cache store at {url}: {exc}") from exc
        raise CacheNotFound(f"no cache store at {url}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CacheCorrupt(f"store {url}: zarr.json is not valid JSON ({exc})") from exc
    except ImportError as exc:
        raise CacheNotFound(f"cannot open {url}: {exc}") from exc
    except ValueError as exc:
        if "protocol" in str(exc).lower():
            scheme = url.split("://", 1)[0]
            raise CacheNotFound(f"cannot open {url}: unknown storage protocol {scheme!r}") from exc
        raise CacheCorrupt(f"store {url}: unreadable group metadata ({exc})") from exc
    except OSError as exc:
        if mode != "r":  # a write failure is never reported as "not found"
            raise CacheWriteError(f"cannot write store {url}: {exc.strerror or exc}") from exc
        raise CacheNotFound(f"cannot reach store {url}: {exc.strerror or exc}") from exc
    except Exception as exc:  # network clients raise their own types (aiohttp, botocore, ...)
        if type(exc).__module__.split(".")[0] in {"aiohttp", "botocore", "requests", "gcsfs", "s3fs"}:
            raise CacheNotFound(f"cannot reach store {url}: {type(exc).__name__}: {exc}") from exc
        raise


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
    except KeyError as exc:
        if attrs.get(ALLOCATING):
            raise CacheCorrupt(
                f"store {url}: allocation was interrupted; rerun the harvest to allocate it again"
            ) from exc
        raise CacheCorrupt(f"store {url} is not a g-SAE cache (missing attribute {exc})") from exc
    except (TypeError, ValueError) as exc:
        raise CacheCorrupt(f"store {url}: bad attribute ({exc})") from exc
