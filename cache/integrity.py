"""What makes a store trustworthy before and while it is read.

Two layers of checks, both raising ``CacheCorrupt`` with one line that names the store,
the array and (where it applies) the shard:

- :func:`validate_layout` runs before any training or evaluation: the attributes are
  compared with the arrays' real metadata (present, shape, dtype, shard shape), the commit
  records of shards ``0 .. n - 1`` are loaded (:func:`load_commits`: the ``commits/``
  objects of a version 2 store, the ``committed`` attribute of a version 1 store) and
  checked against the layout (consecutive indices, row ranges, ``n_tokens``, ``complete``).
- :class:`ShardChecker` runs as each shard is read: every commit record holds an
  ``xxh3`` digest (XXH3-64 over the shard's raw, decoded bytes in the store dtype) per
  array, so one array of one shard is checked without reading the others. XXH3 hashes at
  tens of GB/s, a few percent of the zstd decode it follows (docs/reliability.md). Stores
  committed before these digests existed carry only the record's SHA-256 over all arrays
  of the shard; those shards are checked once per reader by re-reading every array.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import xxhash
import zarr

from cache.commits import decode_record, read_records, record_key
from cache.errors import CacheCorrupt
from cache.schema import CacheInfo, attrs_digest

logger = logging.getLogger(__name__)

REPAIR_HINT = "run `gsae harvest --repair` with the params that made it"


def array_digest(a: np.ndarray) -> str:
    """XXH3-64 (hex) of an array's raw bytes (made C-contiguous first)."""
    return xxhash.xxh3_64_hexdigest(np.ascontiguousarray(a).data)


def corrupt(url: str, what: str, array: str | None = None, shard: int | None = None) -> CacheCorrupt:
    """A ``CacheCorrupt`` whose one line names the store, the array and the shard."""
    where = "".join([f", array {array}" if array else "", f", shard {shard}" if shard is not None else ""])
    return CacheCorrupt(f"store {url}{where}: {what}")


def _expected(info: CacheInfo, name: str) -> tuple[tuple[int, ...], np.dtype]:
    if name == "tokens":
        return (info.total_tokens,), np.dtype("int32")
    if name == "loss":
        return (info.total_tokens,), np.dtype("float32")
    return (info.total_tokens, info.d_model), np.dtype(info.dtype)


def open_array(url: str, group: zarr.Group, name: str) -> zarr.Array:
    """``group[name]``; ``CacheCorrupt`` naming the array when it is missing or unreadable."""
    try:
        arr = group[name]
    except KeyError as exc:
        raise corrupt(url, "array is missing", name) from exc
    except Exception as exc:  # truncated or invalid zarr.json of the array
        raise corrupt(url, f"array metadata unreadable ({type(exc).__name__})", name) from exc
    if not isinstance(arr, zarr.Array):
        raise corrupt(url, "is a group, not an array", name)
    return arr


def read_zarr_rows(url: str, array: zarr.Array, start: int, stop: int, shard: int) -> np.ndarray:
    """Rows [start, stop) of ``array`` through zarr; a decode failure becomes ``CacheCorrupt``."""
    try:
        return np.asarray(array[start:stop])
    except Exception as exc:  # zarr/numcodecs raise RuntimeError, ValueError, ... for damaged bytes
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
        raise corrupt(
            url, f"does not decode ({type(exc).__name__}: {first}); {REPAIR_HINT}", array.path, shard
        ) from exc


def load_commits(url: str, group: zarr.Group, info: CacheInfo) -> CacheInfo:
    """``info`` with the commit records of its committed shards loaded (as is when they already are).

    A version 2 store's records are read from their objects, all at once; one that is
    missing or unreadable is a ``CacheCorrupt`` naming the shard.
    """
    if info.committed is not None:
        return info
    indices = list(range(min(info.committed_shards, info.n_shards)))
    records = []
    for index, blob in zip(indices, read_records(group, indices), strict=True):
        if blob is None:
            raise corrupt(url, f"commit record {index} is missing ({record_key(index)})", shard=index)
        try:
            records.append(decode_record(blob))
        except (ValueError, KeyError, TypeError) as exc:
            raise corrupt(
                url, f"commit record {index} is unreadable ({record_key(index)}: {exc})", shard=index
            ) from exc
    return replace(info, committed=tuple(records))


def validate_layout(url: str, group: zarr.Group, info: CacheInfo) -> CacheInfo:
    """Check attributes against the arrays and the commit records against the layout; returns
    ``info`` with its commit records loaded (:func:`load_commits`)."""
    if info.attrs_sha256 is not None and info.attrs_sha256 != attrs_digest(info.attrs):
        raise corrupt(url, "attributes were edited after allocation (attrs_sha256 does not match)")
    if info.context_length < 1 or info.tokens_per_shard < 1 or info.d_model < 1:
        raise corrupt(url, "context_length, tokens_per_shard and d_model must be positive")
    if info.tokens_per_shard % info.context_length:
        raise corrupt(
            url,
            f"tokens_per_shard {info.tokens_per_shard} is not a multiple of "
            f"context_length {info.context_length}",
        )
    if not info.hooks or not all(isinstance(h, str) and h for h in info.hooks):
        raise corrupt(url, "attribute 'hooks' must list hook names")
    for name in info.array_names:
        arr = open_array(url, group, name)
        shape, dtype = _expected(info, name)
        if tuple(arr.shape) != shape:
            raise corrupt(url, f"shape {tuple(arr.shape)} does not match the attributes ({shape})", name)
        if np.dtype(arr.dtype) != dtype:
            raise corrupt(url, f"dtype {arr.dtype} does not match the attributes ({dtype})", name)
        shards = getattr(arr, "shards", None) or arr.chunks
        if shards[0] != info.tokens_per_shard:
            raise corrupt(
                url, f"shard length {shards[0]} does not match tokens_per_shard {info.tokens_per_shard}", name
            )
    info = load_commits(url, group, info)
    _validate_committed(url, info)
    return info


def _validate_committed(url: str, info: CacheInfo) -> None:
    end = 0
    for i, record in enumerate(info.records):
        if not isinstance(record, dict) or record.get("index") != i:
            raise corrupt(url, f"commit record {i} is out of order or malformed", shard=i)
        start, stop = info.shard_rows(i)
        if list(record.get("rows", ())) != [start, stop] or stop > info.total_tokens:
            raise corrupt(
                url, f"committed rows {record.get('rows')} do not match the layout [{start}, {stop})", shard=i
            )
        if not isinstance(record.get("sha256"), str):
            raise corrupt(url, "commit record has no checksum", shard=i)
        end = stop
    if info.committed_tokens != end:
        raise corrupt(
            url, f"n_tokens {info.committed_tokens} does not match the committed shards ({end} rows)"
        )
    if info.complete and len(info.records) != info.n_shards:
        raise corrupt(url, f"marked complete with {len(info.records)} of {info.n_shards} shards committed")


class ShardChecker:
    """Checks the decoded rows of one array of one shard against its commit record."""

    def __init__(self, url: str, info: CacheInfo, group: zarr.Group) -> None:
        self.url, self.info, self.group = url, load_commits(url, group, info), group
        self._legacy_ok: set[int] = set()
        self._lock = threading.Lock()
        self._warned = False

    def record(self, shard: int, array: str) -> dict[str, Any]:
        """The commit record of ``shard``; ``CacheCorrupt`` when it was never committed."""
        records = self.info.records
        if shard >= len(records):
            raise corrupt(self.url, "shard is not committed", array, shard)
        return records[shard]

    def check(self, shard: int, array: str, rows: np.ndarray) -> None:
        """``rows`` (the whole shard of ``array``, store dtype) must match the committed digest."""
        record = self.record(shard, array)
        digests = record.get("xxh3")
        if isinstance(digests, dict) and array in digests:
            if array_digest(rows) != digests[array]:
                raise corrupt(
                    self.url,
                    f"data does not match its checksum (damaged or missing shard file); {REPAIR_HINT}",
                    array,
                    shard,
                )
            return
        self._check_legacy(shard, array, record, rows)

    def _check_legacy(self, shard: int, array: str, record: dict[str, Any], rows: np.ndarray) -> None:
        with self._lock:
            if shard in self._legacy_ok:
                return
            if not self._warned:
                logger.warning(
                    "store %s predates per-array checksums: checking whole shards (slower)", self.url
                )
                self._warned = True
            start, stop = self.info.shard_rows(shard)
            names = self.info.array_names
            data = [
                rows
                if n == array
                else read_zarr_rows(self.url, open_array(self.url, self.group, n), start, stop, shard)
                for n in names
            ]
            if legacy_digest(data) != record["sha256"]:
                raise corrupt(self.url, f"data does not match its checksum; {REPAIR_HINT}", array, shard)
            self._legacy_ok.add(shard)


def legacy_digest(arrays: Sequence[np.ndarray]) -> str:
    """SHA-256 over the raw bytes of a shard's arrays in the fixed order (the ``sha256`` field)."""
    import hashlib

    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).data)  # the buffer itself: no copy of the bytes
    return h.hexdigest()
