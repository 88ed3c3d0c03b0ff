"""Writing a store: allocate the arrays, write shards in order, commit each, finalize.

The protocol that makes a store trustworthy and resumable:

1. ``allocate`` first marks the location ``gsae_allocating`` (one atomic metadata
   write), then creates the group (still marked), empty sharded arrays of the final
   shape and the empty ``commits`` group, and only then writes the real attributes
   (``complete=false``, ``n_tokens=0``) in one atomic metadata write. A kill at any
   instant leaves either the previous state or a store marked ``gsae_allocating``, which
   a rerun re-allocates (:func:`interrupted_allocation`).
2. ``ShardWriter.write`` refuses non-finite values, writes one whole shard of every
   array (each shard file is written once), then *commits* it: writes its record
   ``{index, rows, sha256, xxh3}`` as the object ``commits/<index>/zarr.json``
   (:mod:`cache.commits`) and then advances ``n_tokens`` (the group metadata, constant
   size). ``xxh3`` holds one digest per array (checked by the reader,
   :mod:`cache.integrity`). A crash before ``n_tokens`` moves leaves an uncommitted shard
   (and perhaps its object) that a resume simply rewrites.
3. ``ShardWriter.finalize`` re-validates the layout, then sets ``complete=true`` once
   every shard is committed.

A version 1 store (every record in the ``committed`` attribute) being resumed or repaired
is first upgraded in place: its records are written as objects, then its attributes are
rewritten without the list, as version 2, in one atomic metadata write.

An ``OSError`` while writing (disk full, read-only store, permissions) becomes one
``CacheWriteError`` line; whatever was committed stays committed and a rerun resumes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import replace
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec, ZstdCodec

from cache.attrs import act_path, grad_path
from cache.commits import create_commits_group, read_record, write_record
from cache.dims import dimension_names
from cache.errors import CacheMismatch, CacheUsageError, CacheWriteError, NonFiniteError, PipelineError
from cache.faults import fault_point
from cache.integrity import array_digest, legacy_digest, open_array, validate_layout
from cache.schema import ALLOCATING, CACHE_VERSION, READABLE_VERSIONS, CacheInfo, Layout, Provenance
from cache.shard_encode import ShardEncoder, shard_encoder
from cache.store import local_url, open_group, read_attrs
from cache.upgrade import upgrade_v1

logger = logging.getLogger(__name__)


def _compressors(name: str, level: int) -> list[Any] | None:
    if name == "zstd":
        return [ZstdCodec(level=level)]
    if name == "blosc":
        return [BloscCodec(cname="zstd", clevel=level, shuffle="bitshuffle")]
    return None


shard_digest = legacy_digest
"""SHA-256 over the raw bytes of a shard's arrays, in the store's fixed array order."""


@contextmanager
def writing(url: str, what: str) -> Iterator[None]:
    """Turn an ``OSError`` raised while writing ``url`` into one resumable ``CacheWriteError`` line."""
    try:
        yield
    except OSError as exc:
        if isinstance(exc, PipelineError):
            raise
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise CacheWriteError(
            f"cannot write store {url} ({what}): {reason}; committed shards are kept, "
            "fix the cause and rerun to resume"
        ) from exc


def allocate(
    url: str,
    provenance: Provenance | Mapping[str, Any],
    *,
    hooks: Sequence[str],
    d_model: int,
    total_tokens: int,
    tokens_per_shard: int,
    chunk_tokens: int,
    dtype: str,
    compressor: str = "zstd",
    level: int = 3,
    store_loss: bool = False,
    store_grad: bool = True,
) -> zarr.Group:
    """Create a fresh, empty store (overwriting whatever is at ``url``), atomically from the user's view.

    ``provenance`` may be given as its attributes (parsed strictly).
    """
    if not isinstance(provenance, Provenance):
        provenance = Provenance.from_attrs(provenance)
    layout = Layout(
        tuple(hooks),
        d_model,
        dtype,
        tokens_per_shard,
        total_tokens,
        chunk_tokens=min(chunk_tokens, tokens_per_shard),
        compressor=compressor,
        has_loss=store_loss,
        has_grad=store_grad,
    )
    marker: dict[str, Any] = {ALLOCATING: True, "key": provenance.key}
    with writing(url, "allocation"):
        # the old store is unusable from here on; nothing there (or no readable group): the next line replaces it
        with suppress(Exception):
            open_group(url, "r+").attrs.put(marker)
        group = zarr.open_group(store=local_url(url), mode="w", zarr_format=3, attributes=marker)
        fault_point("allocation")
        _create_arrays(group, layout, _compressors(compressor, level))
        create_commits_group(group)
        group.attrs.put(CacheInfo.allocated(provenance, layout).to_attrs())
    return group


_WRITE_EMPTY_CHUNKS: Any = {
    "write_empty_chunks": True
}  # every committed shard has a file (zarr types it as a full config)


def _create_arrays(group: zarr.Group, layout: Layout, comp: list[Any] | None) -> None:
    chunk = layout.chunk_tokens or layout.tokens_per_shard
    for path in layout.array_names:
        shape = (
            (layout.total_tokens,) if path in ("tokens", "loss") else (layout.total_tokens, layout.d_model)
        )
        dt = {"tokens": "int32", "loss": "float32"}.get(path, layout.dtype)
        tail = shape[1:]
        group.create_array(
            path,
            shape=shape,
            chunks=(chunk, *tail),
            shards=(layout.tokens_per_shard, *tail),
            dtype=dt,
            compressors=comp,
            fill_value=0,
            config=_WRITE_EMPTY_CHUNKS,
            dimension_names=dimension_names(path),  # xarray's named dimensions
        )


_OUR_ARRAYS = ("tokens", "loss")


def interrupted_allocation(url: str) -> bool:
    """Whether ``url`` holds a store whose allocation was interrupted (safe to allocate again).

    True when the group is marked ``gsae_allocating``, or (stores from before the marker)
    when it has no attributes at all and holds nothing but arrays of this format.
    """
    try:
        attrs = read_attrs(url)
    except PipelineError:
        return False
    if attrs.get(ALLOCATING):
        return True
    if attrs:
        return False
    group = open_group(url, "r")
    for path, member in group.members(max_depth=None):
        if isinstance(member, zarr.Array) and not (path in _OUR_ARRAYS or path.endswith(("/act", "/grad"))):
            return False
    return True


class ShardWriter:
    """Writes and commits the shards of an allocated store, strictly in order."""

    def __init__(self, url: str, *, allow_nonfinite: bool = False) -> None:
        self.url, self.allow_nonfinite = url, allow_nonfinite
        self.group = open_group(url, "r+")
        self.info = CacheInfo.from_attrs(dict(self.group.attrs))
        if self.info.version not in READABLE_VERSIONS:
            raise CacheMismatch(
                f"store {url} has cache format version {self.info.version}, which this code cannot write"
            )
        self.names = self.info.array_names
        self.arrays: dict[str, zarr.Array] = {name: open_array(url, self.group, name) for name in self.names}
        # whole shards bypass zarr's sequential codec pipeline where the bytes are the same
        self.encoders: dict[str, ShardEncoder | None] = {n: shard_encoder(a) for n, a in self.arrays.items()}

    @property
    def next_shard(self) -> int:
        """Index of the first shard not yet committed."""
        return self.info.committed_shards

    def _shard_data(
        self,
        index: int,
        tokens: np.ndarray,
        acts: Mapping[str, np.ndarray],
        grads: Mapping[str, np.ndarray],
        loss: np.ndarray | None,
        pool: Executor | None = None,
    ) -> dict[str, np.ndarray]:
        """Every array's rows of shard ``index`` in the store dtypes, checked for shape and
        finiteness (on ``pool`` in row blocks when given)."""
        start, stop = self.info.shard_rows(index)
        data: dict[str, np.ndarray] = {"tokens": np.asarray(tokens, dtype=np.int32)}
        with np.errstate(over="ignore"):  # values beyond the storage dtype become inf: refused just below
            for hook in self.info.hooks:
                data[act_path(hook)] = np.asarray(acts[hook], dtype=self.info.dtype)
                if self.info.has_grad:
                    data[grad_path(hook)] = np.asarray(grads[hook], dtype=self.info.dtype)
        if "loss" in self.arrays:
            if loss is None:
                raise CacheUsageError("store expects a loss array but none was given")
            data["loss"] = np.asarray(loss, dtype=np.float32)
        for name in self.names:
            if data[name].shape[0] != stop - start:
                raise CacheUsageError(
                    f"shard {index}: {name} has {data[name].shape[0]} rows, expected {stop - start}"
                )
            if name == "tokens" or self.allow_nonfinite:
                continue
            if pool is None or not all(pool.map(_all_finite, np.array_split(data[name], 16))):
                _check_finite(name, data[name], start, self.info.dtype)  # names the bad rows
        return data

    def write(
        self,
        index: int,
        tokens: np.ndarray,
        acts: Mapping[str, np.ndarray],
        grads: Mapping[str, np.ndarray],
        loss: np.ndarray | None = None,
    ) -> None:
        """Write every array's rows of shard ``index``, then commit it."""
        if index != self.next_shard:
            raise CacheUsageError(f"shard {index} written out of order (next is {self.next_shard})")
        record = self.write_uncommitted(index, tokens, acts, grads, loss)
        with writing(self.url, f"shard {index}"):
            fault_point("commit")
            self._commit(index, record)

    def write_uncommitted(
        self,
        index: int,
        tokens: np.ndarray,
        acts: Mapping[str, np.ndarray],
        grads: Mapping[str, np.ndarray],
        loss: np.ndarray | None = None,
    ) -> dict[str, Any]:
        """Write every array's rows of uncommitted shard ``index`` (any order) and return its commit record.

        Several processes may write different shards at once (each shard is its own file per
        array); only one, the holder of the store's lock, commits them with :meth:`commit`.
        """
        if index < self.next_shard:
            raise CacheUsageError(f"shard {index} is already committed")
        with writing(self.url, f"shard {index}"), ThreadPoolExecutor(max(2, os.cpu_count() or 1)) as pool:
            data = self._shard_data(index, tokens, acts, grads, loss, pool)
            # The digests overlap the writes (hashing and compression release the GIL).
            record = pool.submit(self._record, index, data)
            start, stop = self.info.shard_rows(index)
            pending = []
            for i, name in enumerate(self.names):
                encoder = self.encoders[name]
                if encoder is not None and encoder.handles(index):
                    encoder.write(index, data[name], pool)  # its inner chunks compressed on the pool
                else:  # zarr's own write, overlapping the others
                    pending.append(pool.submit(self.arrays[name].__setitem__, slice(start, stop), data[name]))
                if i == 0:
                    for future in pending:
                        future.result()
                    fault_point("shard_write")
            for future in pending:
                future.result()
            return record.result()

    def commit(self, record: Mapping[str, Any]) -> None:
        """Commit a shard another process wrote (:meth:`write_uncommitted`), strictly in order."""
        index = int(record["index"])
        if index != self.next_shard:
            raise CacheUsageError(f"shard {index} committed out of order (next is {self.next_shard})")
        with writing(self.url, f"shard {index}"):
            fault_point("commit")
            self._commit(index, dict(record))

    def rewrite(
        self,
        index: int,
        tokens: np.ndarray,
        acts: Mapping[str, np.ndarray],
        grads: Mapping[str, np.ndarray],
        loss: np.ndarray | None = None,
    ) -> bool:
        """Repair: write committed shard ``index`` again and replace its record.

        Returns whether the new data matches the old record's SHA-256 (a deterministic harvest does).
        """
        if index >= self.next_shard:
            raise CacheUsageError(f"shard {index} is not committed (next is {self.next_shard})")
        data = self._shard_data(index, tokens, acts, grads, loss)
        start, stop = self.info.shard_rows(index)
        record = self._record(index, data)
        with writing(self.url, f"shard {index}"):
            self._upgrade()
            old = read_record(self.group, index)
            same = old is not None and record["sha256"] == old.get("sha256")
            for name in self.names:
                self.arrays[name][start:stop] = data[name]
            write_record(self.group, record)
        return same

    def _record(self, index: int, data: dict[str, np.ndarray]) -> dict[str, Any]:
        start, stop = self.info.shard_rows(index)
        return {
            "index": index,
            "rows": [start, stop],
            "sha256": shard_digest([data[n] for n in self.names]),
            "xxh3": {n: array_digest(data[n]) for n in self.names},
        }

    def _commit(self, index: int, record: dict[str, Any]) -> None:
        """The record's object first, then ``n_tokens`` over it: the shard counts from that write on."""
        self._upgrade()
        write_record(self.group, record)
        fault_point("commit_record")
        info = self.info.with_commit(record)
        self.group.attrs.update(info.progress_attrs())
        self.info = info

    def _upgrade(self) -> None:
        """A version 1 store is upgraded in place before its first write here (:mod:`cache.upgrade`)."""
        if self.info.version < CACHE_VERSION:
            self.info = upgrade_v1(self.url, self.group, self.info)

    def finalize(self) -> None:
        """Mark the store complete; refuses while shards are missing or the layout does not check out."""
        if self.next_shard != self.info.n_shards:
            raise CacheUsageError(
                f"cannot finalize: {self.next_shard} of {self.info.n_shards} shards committed"
            )
        with writing(self.url, "finalize"):
            self._upgrade()
        self.info = validate_layout(self.url, self.group, self.info)
        fault_point("finalize")
        with writing(self.url, "finalize"):
            self.group.attrs.update(replace(self.info, complete=True).progress_attrs())
        self.info = replace(self.info, complete=True)


def _all_finite(values: np.ndarray) -> bool:
    return bool(np.isfinite(values).all())


def _check_finite(name: str, values: np.ndarray, start: int, dtype: str) -> None:
    """``NonFiniteError`` naming the array and token rows when ``values`` hold NaN or inf."""
    bad = ~np.isfinite(values)
    if values.ndim > 1:
        bad = bad.any(axis=tuple(range(1, values.ndim)))
    if not bad.any():
        return
    rows = np.nonzero(bad)[0]
    hint = " (values beyond the float16 range: set harvest.dtype: float32)" if dtype == "float16" else ""
    raise NonFiniteError(
        f"{name}: {len(rows)} token(s) with NaN/inf in rows [{start + rows[0]}, {start + rows[-1] + 1}); "
        f"not committed{hint}"
    )


def check_same_key(url: str, key: str) -> CacheInfo:
    """Info of the existing store at ``url``; ``CacheMismatch`` if it was made for another key."""
    group = open_group(url, "r")
    info = CacheInfo.from_attrs(dict(group.attrs))
    if info.key != key:
        raise CacheMismatch(
            f"store {url} holds a different harvest (key {info.key[:12]}…, expected {key[:12]}…); "
            "use --overwrite to replace it or choose another harvest.store"
        )
    return info
