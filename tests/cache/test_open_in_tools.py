"""A harvested store opens in the usual array tools as it is: xarray (named dimensions) and dask.

The store is a real harvest of the tiny Llama (``reference`` in tests/conftest.py: blocks 1
and 3, 1,024 tokens). Every array carries Zarr v3 ``dimension_names``: ``token`` for the rows,
``d_model`` for the model width.
"""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np
import xarray as xr
import zarr

from cache.dims import dimension_names
from cache.reader import open_store

HOOKS = ("model.layers.1", "model.layers.3")


def test_every_array_names_its_dimensions(reference: Path) -> None:
    group = zarr.open_group(str(reference), mode="r")
    info = open_store(str(reference))
    for name in info.array_names:
        assert group[name].metadata.dimension_names == dimension_names(name), name
    assert dimension_names("tokens") == ("token",)
    assert dimension_names(f"{HOOKS[0]}/grad") == ("token", "d_model")


def test_xarray_opens_the_root_and_each_hook(reference: Path) -> None:
    group = zarr.open_group(str(reference), mode="r")
    root = xr.open_zarr(str(reference), consolidated=False)
    assert root["tokens"].dims == ("token",)
    np.testing.assert_array_equal(root["tokens"].values, group["tokens"][:])
    for hook in HOOKS:
        ds = xr.open_zarr(str(reference), group=hook, consolidated=False)
        assert ds["act"].dims == ds["grad"].dims == ("token", "d_model")
        assert ds.sizes == {"token": 1024, "d_model": 32}
        np.testing.assert_array_equal(ds["act"].values, group[f"{hook}/act"][:])
        np.testing.assert_array_equal(ds["grad"].values, group[f"{hook}/grad"][:])
    tree = xr.open_datatree(str(reference), engine="zarr", consolidated=False)
    assert tree[HOOKS[1]]["act"].dims == ("token", "d_model")  # the hooks share the root's token axis


def test_dask_reads_the_arrays(reference: Path) -> None:
    group = zarr.open_group(str(reference), mode="r")
    act = da.from_zarr(group[f"{HOOKS[0]}/act"])
    assert act.shape == (1024, 32)
    np.testing.assert_allclose(
        act.astype(np.float64).mean(axis=0).compute(),
        group[f"{HOOKS[0]}/act"][:].astype(np.float64).mean(axis=0),
    )
