"""Shard writes: the direct encoder (cache/shard_encode.py) vs zarr's sharding pipeline, same bytes.

    .venv/bin/python -m benchmarks.components.shard_write [--d 576] [--shard 65536] [--rounds 3]

``ShardWriter.write`` of one shard of float16 activations and gradients (zstd level 3, 32
inner chunks), everything included: the finiteness check, the SHA-256 and XXH3 digests,
the files and the commit. The two paths alternate round by round on fresh stores and the
best round of each is kept; the ratio is encoder / zarr in MB/s.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from unittest import mock

import numpy as np

import cache.writer
from cache.writer import ShardWriter, allocate


def one_write(url: str, d: int, shard: int, act: np.ndarray, grad: np.ndarray, direct: bool) -> float:
    """Seconds for one ``ShardWriter.write`` of shard 0 of a fresh store."""
    allocate(
        url,
        {
            "key": "b" * 64,
            "model": "bench",
            "model_revision": "none",
            "tokenizer": "bench",
            "dataset": {"source": "synthetic"},
            "context_length": 128,
            "loss": "bench",
        },
        hooks=("h",),
        d_model=d,
        total_tokens=2 * shard,
        tokens_per_shard=shard,
        chunk_tokens=shard // 32,
        dtype="float16",
        compressor="zstd",
        level=3,
        store_loss=True,
    )
    with mock.patch.object(
        cache.writer, "shard_encoder", cache.writer.shard_encoder if direct else lambda a: None
    ):
        writer = ShardWriter(url)
    t = time.perf_counter()
    writer.write(0, np.zeros(shard, np.int32), {"h": act}, {"h": grad}, np.zeros(shard, np.float32))
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d", type=int, default=576)
    ap.add_argument("--shard", type=int, default=65536)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    act = (rng.normal(size=(args.shard, args.d)) * 4).astype(np.float16)
    grad = (rng.normal(size=(args.shard, args.d)) * 0.01).astype(np.float16)
    mb = (act.nbytes + grad.nbytes) / 1e6
    best = {True: float("inf"), False: float("inf")}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for direct in (False, True):
                url = f"{tmp}/{r}-{direct}.zarr"
                best[direct] = min(best[direct], one_write(url, args.d, args.shard, act, grad, direct))
    print(f"shard: {args.shard} tokens x d={args.d}, float16 act+grad = {mb:.0f} MB; {os.cpu_count()} cores")
    for direct, label in ((False, "zarr sharding pipeline"), (True, "direct encoder")):
        print(f"  {label:<24}: {mb / best[direct]:7.0f} MB/s  ({args.shard / best[direct]:,.0f} tok/s)")
    print(f"  ratio direct / zarr     : {best[False] / best[True]:.2f}")


if __name__ == "__main__":
    main()
