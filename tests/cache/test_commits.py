"""Commit records as one object per shard (cache format version 2): their layout, the constant
metadata a commit writes, what counts as committed, and version 1 stores upgraded on resume."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from cache.commits import encode_record, record_key
from cache.errors import CacheCorrupt
from cache.reader import open_store
from cache.store import read_attrs
from cache.verify import verify
from cache.writer import ShardWriter, allocate
from tests._stores import downgrade_to_v1

HOOK = "model.layers.1"
D, T, SHARD = 8, 8, 32


def _allocate(url: str, shards: int) -> None:
    provenance = {
        "key": "c" * 64,
        "model": "m",
        "model_revision": "r",
        "tokenizer": "t",
        "dataset": {"source": "synthetic"},
        "context_length": T,
    }
    allocate(
        url,
        provenance,
        hooks=(HOOK,),
        d_model=D,
        total_tokens=shards * SHARD,
        tokens_per_shard=SHARD,
        chunk_tokens=SHARD,
        dtype="float32",
        store_loss=True,
    )


def _write(writer: ShardWriter, shard: int) -> None:
    """Shard ``shard``'s rows, a function of its index only (so two stores can be compared byte for byte)."""
    start, stop = writer.info.shard_rows(shard)
    rows = np.arange(start, stop, dtype=np.float32)[:, None]
    act = rows + np.arange(D, dtype=np.float32) / 8
    writer.write(
        shard, np.arange(start, stop, dtype=np.int32), {HOOK: act}, {HOOK: -act / 64}, rows[:, 0] / 4
    )


def _build(url: str, shards: int, committed: int | None = None) -> ShardWriter:
    _allocate(url, shards)
    writer = ShardWriter(url)
    for s in range(shards if committed is None else committed):
        _write(writer, s)
    if committed is None:
        writer.finalize()
    return writer


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_each_shard_has_one_commit_object_and_the_attributes_no_list(tmp_path):
    url = tmp_path / "s.zarr"
    _build(str(url), 3)
    attrs = read_attrs(str(url))
    assert attrs["gsae_cache_version"] == 2 and "committed" not in attrs
    assert (attrs["n_tokens"], attrs["complete"]) == (3 * SHARD, True)
    assert json.loads((url / "commits" / "zarr.json").read_text())["node_type"] == "group"
    records = open_store(str(url)).records
    names = ["tokens", f"{HOOK}/act", f"{HOOK}/grad", "loss"]
    for i, record in enumerate(records):
        assert list(record) == ["index", "rows", "sha256", "xxh3"] and list(record["xxh3"]) == names
        assert (record["index"], record["rows"]) == (i, [i * SHARD, (i + 1) * SHARD])
        assert (url / record_key(i)).read_bytes() == encode_record(record)
    assert sorted(p.name for p in (url / "commits").iterdir()) == ["0", "1", "2", "zarr.json"]


def test_a_commit_writes_the_same_metadata_bytes_at_shard_1_and_shard_60(tmp_path):
    """The quadratic term is gone: the group metadata does not grow with the shards committed."""
    url = tmp_path / "s.zarr"
    _allocate(str(url), 60)
    writer = ShardWriter(str(url))
    sizes = []
    for s in range(60):
        _write(writer, s)
        sizes.append(((url / "zarr.json").stat().st_size, (url / record_key(s)).stat().st_size))
    group_sizes, object_sizes = zip(*sizes, strict=True)
    # only the digits of n_tokens, the index and the row numbers vary
    assert max(group_sizes) - min(group_sizes) <= 3 and max(object_sizes) - min(object_sizes) <= 6
    assert max(object_sizes) < 400


def test_an_object_counts_only_once_n_tokens_covers_it(tmp_path):
    """A writer killed between a commit object and ``n_tokens`` leaves an object beyond the committed
    shards: readers ignore it and the resume rewrites it; so is one further on."""
    full, part = tmp_path / "full.zarr", tmp_path / "part.zarr"
    _build(str(full), 6)
    _build(str(part), 6, committed=3)
    stale = {"index": 3, "rows": [96, 128], "sha256": "0" * 64, "xxh3": {}}
    for key, record in ((record_key(3), stale), (record_key(5), {**stale, "index": 5})):
        (part / key).parent.mkdir()
        (part / key).write_bytes(encode_record(record))
    info = open_store(str(part), require_complete=False)
    assert info.committed_shards == 3 and len(info.records) == 3
    assert verify(str(part)).ok and verify(str(part)).checked == 3
    writer = ShardWriter(str(part))
    assert writer.next_shard == 3
    for s in range(3, 6):
        _write(writer, s)
    writer.finalize()
    assert _files(part) == _files(full)


def test_a_missing_object_below_n_tokens_is_refused(tmp_path):
    url = tmp_path / "s.zarr"
    _build(str(url), 4, committed=3)
    (url / record_key(1)).unlink()
    with pytest.raises(CacheCorrupt, match=r"shard 1: commit record 1 is missing \(commits/1/zarr.json\)"):
        open_store(str(url), require_complete=False)
    with pytest.raises(CacheCorrupt, match="commit record 1 is missing"):
        _write_and_finalize(url)


def _write_and_finalize(url: Path) -> None:
    writer = ShardWriter(str(url))
    _write(writer, 3)  # the writer itself reads no records: the commit goes through
    writer.finalize()  # ... and finalizing checks them all


def test_an_interrupted_v1_store_is_upgraded_on_resume(tmp_path, caplog):
    full, part = tmp_path / "full.zarr", tmp_path / "part.zarr"
    _build(str(full), 5)
    _build(str(part), 5, committed=2)
    old = downgrade_to_v1(str(part))
    assert not (part / "commits").exists() and len(old["committed"]) == 2
    info = open_store(str(part), require_complete=False)
    assert info.version == 1 and len(info.records) == 2
    writer = ShardWriter(str(part))
    assert writer.next_shard == 2
    with caplog.at_level(logging.INFO, logger="cache.upgrade"):
        for s in range(2, 5):
            _write(writer, s)
    assert "upgraded from cache format version 1 to 2 (2 commit records as objects)" in caplog.text
    writer.finalize()
    assert _files(part) == _files(full)  # attributes, seal and objects as if written as version 2


def test_a_v1_store_with_edited_attributes_is_not_upgraded(tmp_path):
    url = tmp_path / "s.zarr"
    _build(str(url), 3, committed=1)
    downgrade_to_v1(str(url))
    meta = json.loads((url / "zarr.json").read_text())
    meta["attributes"]["model"] = "another"
    (url / "zarr.json").write_text(json.dumps(meta))
    writer = ShardWriter(str(url))
    with pytest.raises(CacheCorrupt, match="attributes were edited"):
        _write(writer, 1)
    assert read_attrs(str(url))["gsae_cache_version"] == 1 and not (url / "commits").exists()


def test_a_store_of_an_unknown_version_is_refused(tmp_path):
    from cache.errors import CacheMismatch

    url = tmp_path / "s.zarr"
    _build(str(url), 1)
    meta = json.loads((url / "zarr.json").read_text())
    meta["attributes"]["gsae_cache_version"] = 3
    (url / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(CacheMismatch, match="cache format version 3, this code reads versions 1, 2"):
        open_store(str(url))
    with pytest.raises(CacheMismatch, match="cache format version 3, which this code cannot write"):
        ShardWriter(str(url))


def test_memory_store_commits_and_reads_back():
    url = "memory://commit-objects/s.zarr"
    _build(url, 3)
    info = open_store(url)
    assert [r["index"] for r in info.records] == [0, 1, 2] and verify(url).ok
