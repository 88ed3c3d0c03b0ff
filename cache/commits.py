"""Commit records as objects of their own (cache format version 2).

Each committed shard ``i`` has one small object, ``commits/<i>/zarr.json``: a Zarr v3 group
metadata document whose attributes are the shard's commit record::

    {"zarr_format":3,"node_type":"group","attributes":{"index":i,"rows":[start,stop],
     "sha256":"<hex>","xxh3":{"<array>":"<hex>",...}}}

``commits/`` is itself a group (``commits/zarr.json``, written at allocation), so the store
stays a plain Zarr hierarchy that any Zarr tool lists and copies without foreign files. A
commit writes shard ``i``'s object (a temp file renamed into place on a local disk, by
zarr's ``LocalStore``; one PUT on an object store), then advances the group's ``n_tokens``:
an object counts only once ``n_tokens`` covers its shard, and ``n_tokens`` only ever moves
over the next shard, so the committed shards are always ``0 .. n - 1``. An object beyond
``n_tokens`` (a writer killed between the two writes) is ignored and rewritten by the
resume. Each commit writes ~0.4 KB plus the constant-size group metadata, where version 1
rewrote a ``committed`` attribute that grew by one record per shard (quadratic over a
harvest: benchmarks/components/commit_metadata.py).

Readers fetch the objects of shards ``0 .. n - 1`` by name (no listing), concurrently:
:func:`read_records`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

import zarr
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

COMMITS = "commits"
"""The group holding one commit object per committed shard."""

CONCURRENT_READS = 64
"""Commit objects fetched at once when a store is opened (object stores: parallel GETs)."""


def record_key(index: int) -> str:
    """Key of shard ``index``'s commit object, relative to the store's root."""
    return f"{COMMITS}/{index}/zarr.json"


def encode_record(record: Mapping[str, Any]) -> bytes:
    """The bytes of a commit object (compact JSON, the record's own key order)."""
    doc = {"zarr_format": 3, "node_type": "group", "attributes": dict(record)}
    return json.dumps(doc, separators=(",", ":")).encode()


def decode_record(blob: bytes) -> dict[str, Any]:
    """The record held by a commit object (``ValueError`` / ``KeyError`` / ``TypeError`` when malformed)."""
    doc = json.loads(blob)
    record = doc["attributes"]
    if not isinstance(record, dict):
        raise TypeError("the object's attributes are not a JSON object")
    return record


def create_commits_group(group: zarr.Group) -> None:
    """Create (or keep) the ``commits`` group of a store."""
    group.require_group(COMMITS)


def write_record(group: zarr.Group, record: Mapping[str, Any]) -> None:
    """Write (or replace) the commit object of shard ``record["index"]`` in one atomic write."""
    path = group.store_path / record_key(int(record["index"]))
    sync(path.set(default_buffer_prototype().buffer.from_bytes(encode_record(record))))


async def _read_all(group: zarr.Group, indices: list[int]) -> list[bytes | None]:
    gate = asyncio.Semaphore(CONCURRENT_READS)
    prototype = default_buffer_prototype()

    async def one(index: int) -> bytes | None:
        async with gate:
            buf = await (group.store_path / record_key(index)).get(prototype=prototype)
        return None if buf is None else buf.to_bytes()

    return list(await asyncio.gather(*(one(i) for i in indices)))


def read_records(group: zarr.Group, indices: list[int]) -> list[bytes | None]:
    """The raw commit objects of shards ``indices`` (``None`` for an absent one), fetched concurrently."""
    if not indices:
        return []
    return sync(_read_all(group, indices))


def read_record(group: zarr.Group, index: int) -> dict[str, Any] | None:
    """Shard ``index``'s commit record, ``None`` when its object is absent or unreadable."""
    blob = read_records(group, [index])[0]
    try:
        return None if blob is None else decode_record(blob)
    except (ValueError, KeyError, TypeError):
        return None
