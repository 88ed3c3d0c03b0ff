"""The store through the API: xarray, dask and a torch Dataset that a DataLoader takes."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from torch.utils.data import DataLoader

import gsae_pipeline as gp
from cache.errors import CacheMismatch
from cache.reader import read_rows
from cache.writer import ShardWriter, allocate
from tests._stores import build_store
from tests.api.conftest import HOOK, Project

GOLDEN = str(Path(__file__).parents[1] / "data" / "golden.zarr")
T = 32


def test_xarray_view_of_a_harvest(project: Project) -> None:
    ds = gp.open_xarray(project.heldout_store)
    tokens, act, grad = read_rows(project.heldout_store, HOOK, 0, 256)
    assert ds["act"].dims == ds["grad"].dims == ("token", "d_model")
    assert ds["tokens"].dims == ("token",) and ds.sizes == {"token": 256, "d_model": 32}
    np.testing.assert_array_equal(ds["tokens"].values, tokens)
    np.testing.assert_array_equal(ds["act"].values.astype(np.float32), act)
    np.testing.assert_array_equal(ds["grad"].values.astype(np.float32), grad)
    np.testing.assert_array_equal(ds["position"].values, np.arange(256) % T)
    np.testing.assert_array_equal(ds["context"].values, np.arange(256) // T)
    assert ds.attrs["hook"] == HOOK and ds.attrs["context_length"] == T
    # the position coordinate selects what training and evaluation use
    assert ds["act"].where(ds["position"] > 0, drop=True).sizes["token"] == 256 - 256 // T


def test_dask_view_of_a_harvest(project: Project) -> None:
    arrays = gp.open_dask(project.train_store, HOOK)
    assert set(arrays) == {"tokens", "act", "grad", "loss"}
    _, act, _ = read_rows(project.train_store, HOOK, 0, 512)
    assert arrays["act"].chunks[0] == (256, 256)  # one chunk per shard
    np.testing.assert_allclose(
        arrays["act"].astype(np.float64).sum(axis=0).compute(), act.astype(np.float64).sum(axis=0), rtol=1e-9
    )


def test_a_store_from_before_dimension_names_opens_too() -> None:
    """tests/data/golden.zarr was written without them: xarray alone refuses it, the API names them."""
    with pytest.raises(KeyError, match="dimension_names"):
        xr.open_zarr(GOLDEN, consolidated=False)
    ds = gp.open_xarray(GOLDEN, "model.layers.2")
    r = np.arange(32, dtype=np.float32)[:, None]
    j = np.arange(4, dtype=np.float32)[None, :]
    np.testing.assert_array_equal(ds["act"].values, r + j / 4 + 100)  # make_golden_store.py's values
    np.testing.assert_array_equal(ds["grad"].values, (j - r) / 64)
    assert ds["loss"].dims == ("token",) and set(ds.data_vars) == {"tokens", "act", "grad", "loss"}
    with pytest.raises(CacheMismatch, match="no hook 'model.layers.9'"):
        gp.open_xarray(GOLDEN, "model.layers.9")


def test_an_incomplete_store_shows_its_committed_rows(tmp_path: Path) -> None:
    url = build_store(str(tmp_path / "s.zarr"), n_tokens=1024, shards=3)
    assert gp.open_xarray(url).sizes["token"] == 3 * 128
    assert len(gp.StoreDataset(url, exclude_first=False)) == 3 * 128


def test_a_dataloader_iterates_every_usable_token_once(project: Project) -> None:
    data = gp.StoreDataset(project.train_store, cached_shards=1)
    usable = np.arange(512)[np.arange(512) % T != 0]
    assert len(data) == usable.size
    loader = DataLoader(data, batch_size=100, shuffle=True, generator=torch.Generator().manual_seed(0))
    assert len(loader) == -(-usable.size // 100)
    batches = list(loader)
    assert batches[0]["act"].shape == (100, 32) and batches[0]["act"].dtype == torch.float32
    rows = torch.cat([b["row"] for b in batches]).numpy()
    order = np.argsort(rows)
    assert rows[order].tolist() == usable.tolist()
    tokens, act, grad = read_rows(project.train_store, HOOK, 0, 512)
    np.testing.assert_array_equal(torch.cat([b["act"] for b in batches]).numpy()[order], act[usable])
    np.testing.assert_array_equal(torch.cat([b["grad"] for b in batches]).numpy()[order], grad[usable])
    np.testing.assert_array_equal(torch.cat([b["token"] for b in batches]).numpy()[order], tokens[usable])


def test_dataset_window_pickling_and_bounds(project: Project) -> None:
    data = gp.StoreDataset(project.heldout_store, start=64, stop=128, exclude_first=False)
    assert len(data) == 64 and int(data[0]["row"]) == 64 and int(data[-1]["row"]) == 127
    assert len(data._shards) == 1
    copy = pickle.loads(pickle.dumps(data))
    assert not copy._shards and torch.equal(copy[5]["act"], data[5]["act"])
    with pytest.raises(IndexError):
        data[64]
    with pytest.raises(IndexError, match="committed rows"):
        gp.StoreDataset(project.heldout_store, stop=10_000)


def test_an_activation_only_store_has_no_grad(tmp_path: Path) -> None:
    url = str(tmp_path / "a.zarr")
    attrs = {"key": "a" * 64, "model": "m", "model_revision": "none", "tokenizer": "m"}
    attrs |= {"dataset": {"source": "synthetic", "split": "train"}, "context_length": 16, "loss": "test"}
    allocate(url, attrs, hooks=["h.0"], d_model=4, total_tokens=64, tokens_per_shard=32, chunk_tokens=16,
             dtype="float32", store_grad=False)  # fmt: skip
    writer = ShardWriter(url)
    for s in range(2):
        writer.write(s, np.arange(32, dtype=np.int32), {"h.0": np.full((32, 4), s, np.float32)}, {})
    writer.finalize()
    assert set(gp.open_xarray(url).data_vars) == {"tokens", "act"}
    item = gp.StoreDataset(url)[0]
    assert set(item) == {"act", "token", "row"} and int(item["row"]) == 1
    batch = next(iter(DataLoader(gp.StoreDataset(url), batch_size=64)))
    assert batch["act"].shape == (60, 4)
