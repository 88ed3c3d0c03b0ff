"""``gsae cache info`` and ``gsae cache verify``: describe a store and check its shards."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cache.schema import CacheInfo
from cache.store import open_group, read_info
from cache.writer import array_order, shard_digest


def describe(url: str) -> dict[str, Any]:
    """Summary of a store: schema, model, hooks, tokens, shards, bytes."""
    info = read_info(url)
    return {
        "url": url,
        "gsae_cache_version": info.version,
        "key": info.key,
        "model": info.model,
        "model_revision": info.model_revision,
        "tokenizer": info.tokenizer,
        "dataset": info.dataset,
        "context_length": info.context_length,
        "hooks": list(info.hooks),
        "d_model": info.d_model,
        "dtype": info.dtype,
        "loss": info.attrs.get("loss"),
        "n_tokens": info.n_tokens,
        "total_tokens": info.total_tokens,
        "tokens_per_shard": info.tokens_per_shard,
        "shards_committed": len(info.committed),
        "shards_total": info.n_shards,
        "complete": info.complete,
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
    """Outcome of checking every committed shard against its checksum."""

    url: str
    checked: int
    bad: tuple[str, ...]
    complete: bool

    @property
    def ok(self) -> bool:
        return not self.bad


def _check_shard(group: Any, info: CacheInfo, names: list[str], record: dict[str, Any]) -> str | None:
    index = int(record["index"])
    start, stop = info.shard_rows(index)
    if list(record["rows"]) != [start, stop]:
        return f"shard {index}: committed rows {record['rows']} do not match the layout [{start}, {stop})"
    try:
        data = [np.asarray(group[name][start:stop]) for name in names]
    except Exception as exc:  # any decode failure means a damaged shard file
        return f"shard {index}: unreadable ({type(exc).__name__}: {str(exc)[:120]})"
    if shard_digest(data) != record["sha256"]:
        return f"shard {index}: checksum mismatch"
    return None


def verify(url: str) -> VerifyReport:
    """Re-read every committed shard and compare its SHA-256 with the committed one."""
    info = read_info(url)
    group = open_group(url, "r")
    names = array_order(info.hooks, bool(info.attrs.get("has_loss")))
    bad = []
    if info.n_tokens != (info.shard_rows(len(info.committed) - 1)[1] if info.committed else 0):
        bad.append(f"n_tokens {info.n_tokens} does not match the committed shards")
    if info.complete and len(info.committed) != info.n_shards:
        bad.append(f"marked complete with {len(info.committed)}/{info.n_shards} shards committed")
    for record in info.committed:
        problem = _check_shard(group, info, names, record)
        if problem:
            bad.append(problem)
    return VerifyReport(url, len(info.committed), tuple(bad), info.complete)
