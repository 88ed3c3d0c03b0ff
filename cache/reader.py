"""Reading a store: validate it, then stream shuffled (act, grad) batches for training.

An activation-only store (``has_grad`` false) yields (act, ``None``) and reads half the bytes.

Stream order (deterministic given ``seed``): the stream is the concatenation of epochs.
In epoch e the shard order is a permutation drawn from ``(seed, e)``; consecutive groups of
``shuffle_buffer_shards`` shards form buffers; a buffer is read by a thread pool, one task
per (array, shard file), so reads are aligned to the store's chunks and decode in parallel
(see :mod:`cache.shards`); rows that start a context (row r with r % context_length == 0)
are dropped when ``exclude_first``, and the remaining rows are
shuffled with a permutation drawn from ``(seed, e, buffer index)``. Batches of
``batch_size`` rows are cut from this stream; a batch may straddle buffers and epochs, so
every usable token appears exactly once per epoch. Because the number of usable rows per
buffer is known without reading, :meth:`BatchReader.batches` can start at any batch index
and only reads from the buffer that batch starts in (this is how training resumes).

Memory is bounded by two buffers (``shuffle_buffer_shards`` shards of act + grad in the
store dtype: the one being cut into batches and the next one, read ahead by a loader
thread) plus ``prefetch`` float32 batches queued by the background thread. The two buffers
are allocated once and reused, so memory does not grow with the size of the cache.
"""

from __future__ import annotations

import functools
import logging
import os
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
import zarr

from cache.attrs import act_path, grad_path
from cache.errors import CacheIncomplete, CacheMismatch, ShardMissing
from cache.integrity import ShardChecker, open_array, read_zarr_rows, validate_layout
from cache.schema import READABLE_VERSIONS, CacheInfo, usable_rows
from cache.shards import ShardFile, shard_codec
from cache.store import open_group, read_info

logger = logging.getLogger(__name__)

Batch = tuple[torch.Tensor, torch.Tensor | None]
"""(act, grad) float32 [batch_size, d]; grad is ``None`` from an activation-only store."""


def open_store(
    url: str,
    *,
    hook: str | None = None,
    expected_key: str | None = None,
    expected_model: str | None = None,
    require_complete: bool = True,
) -> CacheInfo:
    """Validated info of the store at ``url``, with its commit records loaded.

    Raises ``CacheNotFound`` (nothing there), ``CacheCorrupt`` (not a g-SAE cache, or
    attributes that do not match the arrays or the committed shards:
    :func:`cache.integrity.validate_layout`), ``CacheIncomplete`` (``complete`` false and
    ``require_complete``) or ``CacheMismatch`` (other format version, ``hook`` not stored,
    other key or model than expected).
    """
    info = read_info(url)
    if info.version not in READABLE_VERSIONS:
        readable = ", ".join(map(str, READABLE_VERSIONS))
        raise CacheMismatch(
            f"store {url} has cache format version {info.version}, this code reads versions {readable}"
        )
    info = validate_layout(url, open_group(url, "r"), info)
    if expected_key is not None and info.key != expected_key:
        raise CacheMismatch(
            f"store {url} holds a different harvest (key {info.key[:12]}…, expected {expected_key[:12]}…)"
        )
    if expected_model is not None and info.model != expected_model:
        raise CacheMismatch(
            f"store {url} was harvested from model {info.model!r}, expected {expected_model!r}"
        )
    if hook is not None:
        require_hook(info, url, hook)
    if require_complete and not info.complete:
        raise CacheIncomplete(
            f"store {url} is incomplete ({info.committed_tokens} of {info.total_tokens} tokens committed); "
            "finish the harvest first"
        )
    return info


def require_hook(info: CacheInfo, url: str, hook: str) -> None:
    """``CacheMismatch`` unless the store at ``url`` (described by ``info``) holds ``hook``."""
    if hook not in info.hooks:
        raise CacheMismatch(f"store {url} has no hook {hook!r} (stored hooks: {', '.join(info.hooks)})")


def resolve_hook(info: CacheInfo, layer: int | None) -> str:
    """The stored hook for block ``layer`` (``None`` = the first hook).

    Uses the ``layers`` attribute when the store has one (parallel to ``hooks``), else the
    trailing integer of the hook name (``model.layers.15`` → 15).
    """
    if layer is None:
        return info.hooks[0]
    for h in info.hooks:
        if info.layer_of(h) == layer:
            return h
    raise CacheMismatch(f"store has no hook for layer {layer} (stored hooks: {', '.join(info.hooks)})")


def read_rows(
    url: str, hook: str, start: int, stop: int, info: CacheInfo | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Rows [start, stop): tokens int32 [N], act float32 [N, d], grad float32 [N, d]
    (``None`` from an activation-only store).

    Only committed shards are read, each whole and checked against its commit record, so
    a missing or damaged shard raises ``CacheCorrupt`` instead of reading as zeros.
    """
    info = info if info is not None else open_store(url, hook=hook, require_complete=False)
    if stop > info.committed_tokens:
        raise CacheIncomplete(
            f"store {url} has {info.committed_tokens} committed tokens, rows up to {stop} requested"
        )
    group = open_group(url, "r")
    checker = ShardChecker(url, info, group)
    tps = info.tokens_per_shard
    first, last = start // tps, -(-stop // tps)
    names = ("tokens", act_path(hook), grad_path(hook)) if info.has_grad else ("tokens", act_path(hook))
    out: list[list[np.ndarray]] = [[] for _ in names]
    for shard in range(first, last):
        s0, s1 = info.shard_rows(shard)
        lo, hi = max(start, s0) - s0, min(stop, s1) - s0
        for slot, name in enumerate(names):
            rows = read_zarr_rows(url, open_array(url, group, name), s0, s1, shard)
            checker.check(shard, name, rows)
            out[slot].append(rows[lo:hi])
    tokens, act, *grad = (np.concatenate(parts) for parts in out)
    return (
        tokens.astype(np.int32, copy=False),
        act.astype(np.float32),
        grad[0].astype(np.float32) if grad else None,
    )


@dataclass
class _Slot:
    """A reusable buffer: act and grad (when stored) rows of up to ``shuffle_buffer_shards`` shards."""

    act: np.ndarray
    grad: np.ndarray | None

    @classmethod
    def empty(cls, rows: int, d: int, dtype: str, with_grad: bool) -> _Slot:
        return cls(np.empty((rows, d), dtype), np.empty((rows, d), dtype) if with_grad else None)

    def arrays(self) -> list[tuple[str, np.ndarray]]:
        """(name, buffer) of each array this slot holds."""
        return [("act", self.act)] + ([] if self.grad is None else [("grad", self.grad)])


def _shard_file(url: str, array: zarr.Array) -> ShardFile | None:
    """The fast whole-shard reader of ``array``, or ``None`` to read through zarr."""
    codec = shard_codec(array)
    if codec is None:
        logger.info("%s: layout not handled by the fast shard reader; reading through zarr", array.path)
        return None
    return ShardFile(url, array, codec)


def _read_fast(fast: ShardFile, shard: int, out: np.ndarray) -> None:
    """Decode a whole shard; an absent shard file reads as fill values, as through zarr (a store written
    before ``write_empty_chunks`` has no file for an all-fill shard): its commit digest then decides."""
    try:
        fast.read_into(shard, out)
    except ShardMissing:
        out[:] = fast.codec.fill_value


class BatchReader:
    """Shuffled, epoch-cycling (act, grad) float32 batches [batch_size, d] from one hook
    (grad ``None`` from an activation-only store, which is then read at half the bytes)."""

    def __init__(
        self,
        url: str,
        hook: str,
        *,
        batch_size: int,
        seed: int = 0,
        shuffle_buffer_shards: int = 4,
        exclude_first: bool = True,
        prefetch: int = 2,
        info: CacheInfo | None = None,
        direct_shards: bool = True,
    ) -> None:
        """``direct_shards`` decodes whole shard files with :mod:`cache.shards` (1.4x the
        throughput in benchmarks/components/train_stage.py); ``False`` reads through zarr. Both give identical batches."""
        self.url, self.hook = url, hook
        self.info = info if info is not None else open_store(url, hook=hook)
        self.batch_size, self.seed = batch_size, seed
        self.buffer_shards = max(1, shuffle_buffer_shards)
        self.exclude_first, self.prefetch = exclude_first, max(1, prefetch)
        self.n_shards = self.info.committed_shards
        self.shard_usable = [
            len(usable_rows(*self._rows(s), self.info.context_length, exclude_first))
            for s in range(self.n_shards)
        ]
        self.tokens_per_epoch = sum(self.shard_usable)
        if self.tokens_per_epoch == 0:
            raise CacheIncomplete(f"store {url} has no usable tokens")
        group = open_group(url, "r")
        self._paths = {"act": act_path(hook)}
        if self.info.has_grad:
            self._paths["grad"] = grad_path(hook)
        self._arrays = {name: open_array(url, group, path) for name, path in self._paths.items()}
        self._files = {
            name: _shard_file(url, arr) if direct_shards else None for name, arr in self._arrays.items()
        }
        self._checker = ShardChecker(url, self.info, group)
        tokens = open_array(url, group, "tokens")
        self._tokens = (tokens, _shard_file(url, tokens) if direct_shards else None)
        self._tokens_ok: set[int] = set()
        self.read_workers = max(1, min(4, os.cpu_count() or 1))

    def _rows(self, shard: int) -> tuple[int, int]:
        return self.info.committed_rows(shard)

    def buffers(self, epoch: int) -> list[list[int]]:
        """Shard indices of each buffer of ``epoch``, in stream order."""
        order = np.random.default_rng([self.seed, epoch]).permutation(self.n_shards).tolist()
        return [order[i : i + self.buffer_shards] for i in range(0, self.n_shards, self.buffer_shards)]

    def position(self, batch_index: int) -> tuple[int, int]:
        """(epoch, token offset within the epoch) where batch ``batch_index`` starts."""
        return divmod(batch_index * self.batch_size, self.tokens_per_epoch)

    def _read_shard(self, name: str, shard: int, out: np.ndarray) -> None:
        """Rows of ``shard`` of array ``name`` ("act" or "grad") into ``out``, checked against its commit record."""
        fast = self._files[name]
        if fast is not None:
            _read_fast(fast, shard, out)
        else:
            out[:] = read_zarr_rows(self.url, self._arrays[name], *self._rows(shard), shard)
        self._checker.check(shard, self._paths[name], out)

    def _check_tokens(self, shard: int) -> None:
        """Read and check the ``tokens`` rows of ``shard`` once per reader (training does not use them,
        but a damaged store is refused whichever of its arrays is damaged)."""
        s0, s1 = self._rows(shard)
        array, fast = self._tokens
        rows = np.empty(s1 - s0, np.int32)
        if fast is not None:
            _read_fast(fast, shard, rows)
        else:
            rows[:] = read_zarr_rows(self.url, array, s0, s1, shard)
        self._checker.check(shard, "tokens", rows)
        self._tokens_ok.add(shard)

    def _load(self, epoch: int, index: int, shards: list[int], slot: _Slot) -> np.ndarray:
        """Read one buffer into ``slot``; returns its usable rows, shuffled."""
        tasks: list[Callable[[], None]] = []
        usable, offset = [], 0
        for s in shards:
            s0, s1 = self._rows(s)
            for name, buf in slot.arrays():
                tasks.append(functools.partial(self._read_shard, name, s, buf[offset : offset + s1 - s0]))
            if s not in self._tokens_ok:
                tasks.append(functools.partial(self._check_tokens, s))
            usable.append(usable_rows(s0, s1, self.info.context_length, self.exclude_first) + offset)
            offset += s1 - s0
        # one task per (array, shard file): whole-shard reads that decode in parallel (zstd releases the GIL)
        with ThreadPoolExecutor(self.read_workers, thread_name_prefix="gsae-read") as pool:
            for done in [pool.submit(task) for task in tasks]:
                done.result()
        rows = np.concatenate(usable)
        return rows[np.random.default_rng([self.seed, epoch, index]).permutation(len(rows))]

    def _plan(self, start_batch: int) -> Iterator[tuple[int, int, list[int], int]]:
        """(epoch, buffer index, shards, rows to skip) of every buffer from ``start_batch`` on."""
        epoch, skip = self.position(start_batch)
        while True:
            for index, shards in enumerate(self.buffers(epoch)):
                usable = sum(self.shard_usable[s] for s in shards)
                if skip >= usable:
                    skip -= usable
                    continue
                yield epoch, index, shards, skip
                skip = 0
            epoch += 1

    def _stream(self, start_batch: int, n_batches: int | None, stop: threading.Event) -> Iterator[Batch]:
        bs, d, done = self.batch_size, self.info.d_model, 0
        with_grad = self.info.has_grad
        a, g = torch.empty(bs, d), torch.empty(bs, d) if with_grad else None
        filled = 0
        plan = self._plan(start_batch)
        slot, ahead = (
            _Slot.empty(self.buffer_shards * self.info.tokens_per_shard, d, self.info.dtype, with_grad)
            for _ in range(2)
        )
        with ThreadPoolExecutor(1, thread_name_prefix="gsae-load") as pool:
            epoch, index, shards, skip = next(plan)
            pending = pool.submit(self._load, epoch, index, shards, slot)
            while True:
                perm = pending.result()
                epoch, index, shards, next_skip = next(plan)
                pending = pool.submit(self._load, epoch, index, shards, ahead)  # read the next buffer ahead
                pos, skip = skip, next_skip
                while pos < len(perm):
                    if stop.is_set():
                        return
                    take = min(bs - filled, len(perm) - pos)
                    idx = perm[pos : pos + take]
                    # numpy's row gather, then torch's threaded half→float cast into the batch
                    a[filled : filled + take] = torch.from_numpy(slot.act[idx])
                    if g is not None and slot.grad is not None:
                        g[filled : filled + take] = torch.from_numpy(slot.grad[idx])
                    filled += take
                    pos += take
                    if filled == bs:
                        yield a, g
                        a, filled = torch.empty(bs, d), 0
                        g = torch.empty(bs, d) if with_grad else None
                        done += 1
                        if n_batches is not None and done >= n_batches:
                            return
                slot, ahead = ahead, slot

    def batches(self, start_batch: int = 0, n_batches: int | None = None) -> Iterator[Batch]:
        """Batches ``start_batch``, ``start_batch + 1``, … (``n_batches`` of them, or forever).

        Produced by a background thread that keeps up to ``prefetch`` batches queued.
        """
        return _prefetch(lambda stop: self._stream(start_batch, n_batches, stop), self.prefetch)


_END = object()


def _prefetch(make: Callable[[threading.Event], Iterator[Batch]], depth: int) -> Iterator[Batch]:
    """Run the iterator ``make(stop)`` in a daemon thread, ``depth`` items ahead."""
    q: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in make(stop):
                if not put(item):
                    return
        except BaseException as exc:  # forwarded to the consumer
            put(exc)
            return
        put(_END)

    thread = threading.Thread(target=work, name="gsae-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        thread.join(timeout=5)
