"""The direct shard encoder writes the files zarr's own sharding pipeline writes, byte for byte."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import zarr

import cache.writer
from cache.shard_encode import shard_encoder
from cache.verify import verify
from tests._stores import build_store
from tests.conftest import store_files


def _zarr_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every shard through zarr's own pipeline (the reference)."""
    monkeypatch.setattr(cache.writer, "shard_encoder", lambda array: None)


@pytest.mark.parametrize(
    ("compressor", "dtype", "n_tokens"),
    [
        ("zstd", "float16", 1024),
        ("zstd", "float32", 1000),  # the last shard ends early: zarr writes it
        ("none", "float16", 1024),
        ("blosc", "float16", 1024),  # not handled by the encoder: zarr writes every shard
    ],
)
def test_store_is_byte_identical_to_zarrs(tmp_path: Path, monkeypatch, compressor, dtype, n_tokens) -> None:
    kw = {"compressor": compressor, "dtype": dtype, "n_tokens": n_tokens, "hooks": ("a", "b")}
    ours = build_store(str(tmp_path / "ours.zarr"), **kw)
    with monkeypatch.context() as m:
        _zarr_only(m)
        ref = build_store(str(tmp_path / "ref.zarr"), **kw)
    assert store_files(Path(ours)) == store_files(Path(ref))
    assert not verify(ours).bad


def test_encoder_is_used_for_zstd_and_raw_and_not_for_blosc(tmp_path: Path) -> None:
    for compressor, handled in (("zstd", True), ("none", True), ("blosc", False)):
        url = build_store(
            str(tmp_path / f"{compressor}.zarr"), compressor=compressor, shards=0, complete=False
        )
        group = zarr.open_group(url, mode="r")
        assert (shard_encoder(group["model.layers.1/act"]) is not None) == handled


def test_encoded_shard_decodes_to_its_rows_and_rejects_a_partial_shard(tmp_path: Path) -> None:
    url = build_store(str(tmp_path / "s.zarr"), shards=0, complete=False, dtype="float16")
    array = zarr.open_group(url, mode="r+")["model.layers.1/act"]
    encoder = shard_encoder(array)
    assert encoder is not None and encoder.handles(7) and not encoder.handles(8)
    rows = np.random.default_rng(1).normal(size=(128, 16)).astype(np.float16)
    with ThreadPoolExecutor(2) as pool:
        encoder.write(3, rows, pool)
        with pytest.raises(ValueError, match="whole shard"):
            encoder.encode(rows[:100], pool)
    np.testing.assert_array_equal(array[3 * 128 : 4 * 128], rows)
