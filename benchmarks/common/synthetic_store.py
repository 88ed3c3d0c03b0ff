"""The synthetic store the reader and trainer benchmarks read: random float16 rows of SmolLM2's
width (d = 576) at its block 15, zstd, 8,192-token shards, written with ``cache.writer``.

Used by components/train_stage.py, components/checksum_cost.py, scaleup/cpu_figures.py,
scaleup/train_processes.py (at its own width and hook) and the GPU ``reader`` and ``writer``
parts. The rows are random: a reader's or a trainer's speed does not depend on them.
"""

from __future__ import annotations

import time

import numpy as np

from cache.reader import BatchReader
from cache.writer import ShardWriter, allocate

D, T, SHARD, CHUNK, HOOK = 576, 128, 8192, 2048, "model.layers.15"

SYNTHETIC_ATTRS = {
    "key": "bench",
    "model": "synthetic",
    "model_revision": "-",
    "tokenizer": "-",
    "dataset": {"source": "synthetic"},
    "context_length": T,
    "loss": "-",
}


def allocate_synthetic(
    url: str,
    n_shards: int,
    *,
    d: int = D,
    shard: int = SHARD,
    hook: str = HOOK,
    chunk: int = CHUNK,
    compressor: str = "zstd",
) -> None:
    """Allocate a float16 store of ``n_shards`` shards of random rows (filled by the caller)."""
    allocate(
        url,
        dict(SYNTHETIC_ATTRS),
        hooks=[hook],
        d_model=d,
        total_tokens=n_shards * shard,
        tokens_per_shard=shard,
        chunk_tokens=chunk,
        dtype="float16",
        compressor=compressor,
    )


def build(url: str, n_shards: int, *, d: int = D, hook: str = HOOK, fresh: bool = False) -> str:
    """Store of ``n_shards`` shards of random rows; one shard's data reused unless ``fresh``
    (fast to write, still incompressible)."""
    rng = np.random.default_rng(0)
    allocate_synthetic(url, n_shards, d=d, hook=hook)
    w = ShardWriter(url)
    for s in range(n_shards):
        if fresh or s == 0:
            act = (rng.normal(size=(SHARD, d)) * 4).astype(np.float16)
            grad = (rng.normal(size=(SHARD, d)) * 0.01).astype(np.float16)
        w.write(s, np.zeros(SHARD, np.int32), {hook: act}, {hook: grad})
    w.finalize()
    return url


def reader_rate(url: str, batch: int, n_batches: int, direct: bool = True) -> tuple[float, float]:
    """(seconds to the first batch, steady tok/s over the following ``n_batches``).

    Steady state is what a training run sees: the first buffer's read happens once, before
    the first step, and is reported separately.
    """
    r = BatchReader(
        url, HOOK, batch_size=batch, seed=0, shuffle_buffer_shards=4, prefetch=2, direct_shards=direct
    )
    it = r.batches(0, n_batches + 1)
    t0 = time.perf_counter()
    next(it)
    t1 = time.perf_counter()
    n = sum(a.shape[0] for a, _ in it)
    return t1 - t0, n / (time.perf_counter() - t1)
