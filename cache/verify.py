"""``gsae cache info`` and ``gsae cache verify``: describe a store and check its shards."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cache.errors import CacheCorrupt, PipelineError
from cache.integrity import array_digest, load_commits, open_array, validate_layout
from cache.schema import CacheInfo
from cache.store import open_group, read_info
from cache.writer import shard_digest


def describe(url: str) -> dict[str, Any]:
    """Summary of a store: schema, model, hooks, tokens, shards, bytes."""
    info = read_info(url)
    summary = {k: v for k, v in info.to_attrs().items() if k not in ("committed", "attrs_sha256")}
    return {
        "url": url,
        **summary,
        "kind": "activations and gradients" if info.has_grad else "activations only",
        "shards_committed": info.committed_shards,
        "shards_total": info.n_shards,
        "bytes": _store_bytes(url),
    }


def _store_bytes(url: str) -> int | None:
    try:
        import fsspec

        fs, path = fsspec.core.url_to_fs(url)
        return int(fs.du(path))
    except Exception:  # the size is informative only
        return None


@dataclass(frozen=True)
class VerifyReport:
    """Outcome of checking the layout and every committed shard against its checksums."""

    url: str
    checked: int
    bad: tuple[str, ...]
    complete: bool
    bad_shards: tuple[int, ...] = ()
    """Committed shards whose data does not check out (what a repair re-harvests)."""

    @property
    def ok(self) -> bool:
        return not self.bad


def _check_shard(
    url: str, group: Any, info: CacheInfo, names: list[str], record: dict[str, Any]
) -> str | None:
    index = int(record["index"])
    start, stop = info.shard_rows(index)
    try:
        data = [np.asarray(open_array(url, group, name)[start:stop]) for name in names]
    except PipelineError as exc:
        return str(exc)
    except Exception as exc:  # any decode failure means a damaged shard file
        return f"shard {index}: unreadable ({type(exc).__name__}: {str(exc)[:120]})"
    if shard_digest(data) != record["sha256"]:
        digests = record.get("xxh3") or {}
        arrays = [
            n for n, a in zip(names, data, strict=True) if digests.get(n) not in (None, array_digest(a))
        ]
        return f"shard {index}: checksum mismatch" + (f" in {', '.join(arrays)}" if arrays else "")
    return None


def verify(url: str) -> VerifyReport:
    """Validate the layout, then re-read every committed shard and compare its SHA-256 with the committed one."""
    info = read_info(url)
    group = open_group(url, "r")
    names = info.array_names
    bad: list[str] = []
    try:
        info = validate_layout(url, group, info)
    except CacheCorrupt as exc:
        bad.append(str(exc))
        if "array" in str(exc) or "commit record" in str(exc):
            return VerifyReport(url, 0, tuple(bad), info.complete)
        try:  # the attributes disagree with the records: still check the data of those there are
            info = load_commits(url, group, info)
        except CacheCorrupt as missing:
            return VerifyReport(url, 0, (*bad, str(missing)), info.complete)
    bad_shards = []
    for record in info.records:
        problem = _check_shard(url, group, info, names, record)
        if problem:
            bad.append(problem)
            bad_shards.append(int(record["index"]))
    return VerifyReport(url, len(info.records), tuple(bad), info.complete, tuple(bad_shards))
