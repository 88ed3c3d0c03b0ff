"""Direct whole-shard decoding: identical to zarr's reads, refuses damage, falls back cleanly."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from cache.attrs import act_path, grad_path
from cache.reader import BatchReader
from cache.shards import ShardFile, shard_codec
from cache.store import open_group
from pipeline.core.errors import CacheCorrupt
from tests._stores import build_store

HOOK = "model.layers.1"


def shard_files(url: str) -> list[tuple[zarr.Array, ShardFile]]:
    group = open_group(url, "r")
    out = []
    for path in ("tokens", act_path(HOOK), grad_path(HOOK)):
        arr = group[path]
        codec = shard_codec(arr)
        assert codec is not None, path
        out.append((arr, ShardFile(url, arr, codec)))
    return out


@pytest.mark.parametrize("compressor", ["zstd", "blosc", "none"])
@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_every_shard_equals_zarr(tmp_path, compressor: str, dtype: str) -> None:
    # 1000 tokens: the last shard is partial and its last inner chunk is an edge chunk
    url = build_store(str(tmp_path / "s.zarr"), n_tokens=1000, compressor=compressor, dtype=dtype)
    for arr, f in shard_files(url):
        assert f.codec.compressor == (None if compressor == "none" else compressor)
        for s in range(8):
            start, stop = s * 128, min(s * 128 + 128, 1000)
            out = np.empty((stop - start, *arr.shape[1:]), arr.dtype)
            f.read_into(s, out)
            assert np.array_equal(out, arr[start:stop])


def test_memory_url(tmp_path) -> None:
    url = build_store("memory://shards-test.zarr", n_tokens=256)
    for arr, f in shard_files(url):
        out = np.empty((128, *arr.shape[1:]), arr.dtype)
        f.read_into(1, out)
        assert np.array_equal(out, arr[128:256])


def test_unwritten_inner_chunks_read_as_fill(tmp_path) -> None:
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w", zarr_format=3)
    arr = group.create_array(
        "x", shape=(256, 4), chunks=(32, 4), shards=(128, 4), dtype="float32", fill_value=7
    )
    arr[40:50] = np.arange(40, dtype=np.float32).reshape(10, 4)
    out = np.zeros((128, 4), np.float32)
    ShardFile(str(tmp_path / "g.zarr"), arr, shard_codec(arr)).read_into(0, out)
    assert np.array_equal(out, arr[0:128]) and out[0, 0] == 7 and out[100, 0] == 7


def test_damage_is_refused(tmp_path) -> None:
    url = build_store(str(tmp_path / "s.zarr"), n_tokens=512)
    arr, f = shard_files(url)[1]
    out = np.empty((128, 16), np.float32)
    path = tmp_path / "s.zarr" / act_path(HOOK) / "c" / "2" / "0"
    blob = bytearray(path.read_bytes())
    blob[-10] ^= 0xFF  # inside the index table: its CRC no longer matches
    path.write_bytes(bytes(blob))
    with pytest.raises(CacheCorrupt, match="bad index checksum"):
        f.read_into(2, out)
    path.write_bytes(b"xx")
    with pytest.raises(CacheCorrupt, match="truncated"):
        f.read_into(2, out)
    path.unlink()
    with pytest.raises(CacheCorrupt, match="missing"):
        f.read_into(2, out)
    with pytest.raises(ValueError, match="C-contiguous"):
        f.read_into(1, np.empty((128, 8), np.float32))


def test_other_layouts_are_left_to_zarr(tmp_path) -> None:
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w", zarr_format=3)
    split_rows = group.create_array("a", shape=(256, 8), chunks=(32, 4), shards=(128, 8), dtype="float32")
    unsharded = group.create_array("b", shape=(256, 8), chunks=(32, 8), dtype="float32")
    assert shard_codec(split_rows) is None and shard_codec(unsharded) is None


def test_reader_batches_identical_both_ways(tmp_path) -> None:
    url = build_store(str(tmp_path / "s.zarr"), n_tokens=1000, dtype="float16")
    fast = BatchReader(url, HOOK, batch_size=96, seed=3, shuffle_buffer_shards=3)
    slow = BatchReader(url, HOOK, batch_size=96, seed=3, shuffle_buffer_shards=3, direct_shards=False)
    assert all(f is not None for f in fast._files.values()) and all(f is None for f in slow._files.values())
    n = 2 * fast.tokens_per_epoch // 96 + 1  # crosses buffers and epochs
    for (a1, g1), (a2, g2) in zip(fast.batches(0, n), slow.batches(0, n), strict=True):
        assert a1.dtype == a2.dtype
        assert a1.equal(a2) and g1.equal(g2)
