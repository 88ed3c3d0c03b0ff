"""A harvested store as arrays: dask arrays, an xarray Dataset with named dimensions, a torch Dataset.

Every view is of one hook and of the committed rows (an interrupted harvest's uncommitted
tail is left out), and starts by validating the store's attributes against its arrays
(:func:`cache.reader.open_store`). Names follow the store (DESIGN §3): ``tokens`` [token],
``act`` and ``grad`` [token, d_model] (``grad`` absent from an activation-only store),
``loss`` [token] when stored; row r is position ``r % T`` of context ``r // T``.

- :func:`open_dask` and :func:`open_xarray` read lazily through zarr, one dask chunk per shard.
  They work on stores written before the arrays carried ``dimension_names`` too (the names
  come from :func:`cache.dims.dimension_names`); on newer stores ``xr.open_zarr(store,
  group=hook)`` works directly. They read through zarr without the per-shard digest check
  (``gsae cache verify URL`` checks every byte). Need ``xarray`` and ``dask``
  (``pip install 'gsae-pipeline[arrays]'``).
- :class:`StoreDataset` is a map-style ``torch.utils.data.Dataset`` of single tokens for a
  ``DataLoader``. It reads whole shards through the checked reader
  (:func:`cache.reader.read_rows`) and keeps the last ``cached_shards`` of them (float32), so
  reading in order is fast; shuffling over many shards re-reads them (for shuffled training
  at scale, ``cache.reader.BatchReader`` is the project's own reader).
"""

from __future__ import annotations

import importlib
import logging
from collections import OrderedDict
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from cache.attrs import act_path, grad_path
from cache.dims import dimension_names
from cache.integrity import open_array
from cache.reader import open_store, read_rows, require_hook
from cache.schema import CacheInfo, usable_rows
from cache.store import open_group
from pipeline.core.errors import PipelineError

logger = logging.getLogger(__name__)


class MissingDependency(PipelineError, ImportError):
    """An optional package that a view of the store needs is not installed."""


def _require(module: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependency(
            f"{module} is not installed: pip install 'gsae-pipeline[arrays]' (xarray and dask)"
        ) from exc


def store_info(store: str) -> CacheInfo:
    """The validated description of the store at ``store`` (path or fsspec URL): ``hooks``,
    ``d_model``, ``context_length``, ``committed_tokens``, ``has_grad``, ``model``, ``key``..."""
    return open_store(store, require_complete=False)


def _hook(info: CacheInfo, store: str, hook: str | None) -> str:
    if hook is None:
        return info.hooks[0]
    require_hook(info, store, hook)
    return hook


def _committed(info: CacheInfo, store: str) -> int:
    if not info.complete:
        logger.warning(
            "store %s is incomplete: %d of %d rows committed, only those are read",
            store,
            info.committed_tokens,
            info.total_tokens,
        )
    return info.committed_tokens


def open_dask(store: str, hook: str | None = None) -> dict[str, Any]:
    """Lazy dask arrays of one hook (default: the first stored one) over the committed rows:
    ``tokens`` [N] int32, ``act`` [N, d], ``grad`` [N, d] (when stored), ``loss`` [N] (when stored),
    in the store's dtype, chunked by shard."""
    da = _require("dask.array")
    info = store_info(store)
    hook = _hook(info, store, hook)
    n = _committed(info, store)
    group = open_group(store, "r")
    paths = {"tokens": "tokens", "act": act_path(hook)}
    if info.has_grad:
        paths["grad"] = grad_path(hook)
    if info.has_loss:
        paths["loss"] = "loss"
    out = {}
    for name, path in paths.items():
        array = open_array(store, group, path)
        chunks = (info.tokens_per_shard, *array.shape[1:])
        out[name] = da.from_zarr(array, chunks=chunks)[:n]
    return out


def open_xarray(store: str, hook: str | None = None) -> Any:
    """An ``xarray.Dataset`` of one hook (default: the first stored one) over the committed rows.

    Variables ``tokens`` (token), ``act`` and ``grad`` (token, d_model), ``loss`` (token)
    as stored, lazily read (dask); coordinates ``context`` and ``position`` (token), numpy
    (6 bytes a row): the context a row belongs to and its position there (0 = the
    BOS/attention-sink position that training and evaluation leave out, so
    ``ds.where(ds.position > 0, drop=True)`` is what they see). Attributes: ``store``,
    ``hook``, ``model``, ``context_length``, ``key``.
    """
    xr = _require("xarray")
    info = store_info(store)
    hook = _hook(info, store, hook)
    arrays = open_dask(store, hook)
    names = {"tokens": "tokens", "act": act_path(hook), "grad": grad_path(hook), "loss": "loss"}
    T, n = info.context_length, int(arrays["tokens"].shape[0])
    position = np.tile(np.arange(T, dtype=np.int16 if T <= 2**15 else np.int32), -(-n // T))[:n]
    context = np.repeat(np.arange(-(-n // T), dtype=np.int32 if n < 2**31 else np.int64), T)[:n]
    token_dim = dimension_names("tokens")[0]
    return xr.Dataset(
        {name: (dimension_names(names[name]), a) for name, a in arrays.items()},
        coords={"context": (token_dim, context), "position": (token_dim, position)},
        attrs={"store": store, "hook": hook, "model": info.model, "context_length": T, "key": info.key},
    )


class StoreDataset(Dataset[dict[str, torch.Tensor]]):
    """Map-style ``torch.utils.data.Dataset`` of the tokens of one hook, for a ``DataLoader``.

    Item i is a dict of tensors: ``act`` float32 [d], ``grad`` float32 [d] (absent from an
    activation-only store), ``token`` (the token id) and ``row`` (the store row), int64
    scalars; ``DataLoader``'s default collation stacks them into batches. The items are the
    committed rows in [``start``, ``stop``), without each context's first position when
    ``exclude_first`` (the default, as training and evaluation do); ``rows`` lists them.
    """

    def __init__(
        self,
        store: str,
        hook: str | None = None,
        *,
        start: int = 0,
        stop: int | None = None,
        exclude_first: bool = True,
        cached_shards: int = 2,
    ) -> None:
        self.store = store
        self.info = store_info(store)
        self.hook = _hook(self.info, store, hook)
        n = _committed(self.info, store)
        stop = n if stop is None else stop
        if not 0 <= start <= stop <= n:
            raise IndexError(f"rows [{start}, {stop}) are not within the {n} committed rows of {store}")
        self.start, self.stop, self.exclude_first = start, stop, exclude_first
        self.rows = start + usable_rows(start, stop, self.info.context_length, exclude_first).astype(np.int64)
        self.cached_shards = max(1, cached_shards)
        self._shards: OrderedDict[int, tuple[np.ndarray, np.ndarray, np.ndarray | None]] = OrderedDict()

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    def _shard(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        if index in self._shards:
            self._shards.move_to_end(index)
        else:
            s0, s1 = self.info.committed_rows(index)
            self._shards[index] = read_rows(self.store, self.hook, s0, s1, self.info)
            while len(self._shards) > self.cached_shards:
                self._shards.popitem(last=False)
        return self._shards[index]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} tokens")
        row = int(self.rows[i])
        shard, offset = divmod(row, self.info.tokens_per_shard)
        tokens, act, grad = self._shard(shard)
        item = {
            "act": torch.from_numpy(act[offset].copy()),
            "token": torch.tensor(int(tokens[offset]), dtype=torch.int64),
            "row": torch.tensor(row, dtype=torch.int64),
        }
        if grad is not None:
            item["grad"] = torch.from_numpy(grad[offset].copy())
        return item

    def __getstate__(self) -> dict[str, Any]:
        # DataLoader workers get the settings, not the decoded shards
        return {**self.__dict__, "_shards": OrderedDict()}

    def __repr__(self) -> str:
        grad = "act+grad" if self.info.has_grad else "act only"
        return f"StoreDataset({self.store!r}, hook={self.hook!r}, {len(self)} tokens, d={self.info.d_model}, {grad})"
