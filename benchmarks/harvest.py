"""Harvest overhead: bare forward + activation backward vs ``run_harvest`` on the same batches.

    .venv/bin/python benchmarks/harvest.py [--model smollm2-135m] [--tokens 4096]

The bare loop computes exactly what a harvest needs (one forward, one backward to the
hooked activations) and throws it away; the harvest run adds device→host copies, fp16
conversion, zstd compression, Zarr shard writes and commits. Both use one loaded model and
the same packed contexts; the bare loop runs before and after the harvest and its mean is
used. Prints tokens/s of both and the ratio (target >= 0.95).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time

import torch

from pipeline.config import params_from_dict
from pipeline.harvest import forward_backward, run_harvest
from pipeline.models import load_model
from pipeline.text import iter_documents, pack_contexts


def bare_loop(lm, contexts, layers, batch_size) -> float:
    """Tokens/s of forward + activation backward with nothing kept."""
    start = time.perf_counter()
    for b in range(0, len(contexts), batch_size):
        out = forward_backward(lm, layers, torch.from_numpy(contexts[b : b + batch_size]).to(lm.device))
        if lm.device.type == "cuda":
            torch.cuda.synchronize()
        del out
    return contexts.size / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--layers", default="[15]")
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--context-length", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        params = params_from_dict(
            {},
            [
                f"model.name={args.model}",
                f"model.device={args.device}",
                f"harvest.layers={args.layers}",
                f"data.context_length={args.context_length}",
                f"harvest.tokens={args.tokens}",
                f"harvest.batch_size={args.batch_size}",
                f"harvest.store={tmp}/bench.zarr",
                f"harvest.tokens_per_shard={args.tokens // 4 // args.context_length * args.context_length}",
                f"harvest.chunk_tokens={args.tokens // 8 // args.context_length * args.context_length}",
            ],
        )
        lm = load_model(params.model)
        layers = list(params.harvest.layers)
        contexts = pack_contexts(
            iter_documents(params.data), lm.tokenizer, args.context_length, args.tokens // args.context_length
        )
        bare_loop(lm, contexts[: args.batch_size], layers, args.batch_size)  # warm-up
        bare1 = bare_loop(lm, contexts, layers, args.batch_size)
        start = time.perf_counter()
        run_harvest(params, lm=lm)
        harvest = contexts.size / (time.perf_counter() - start)
        bare2 = bare_loop(lm, contexts, layers, args.batch_size)
    bare = (bare1 + bare2) / 2
    print(f"device={lm.device} model={args.model} layers={args.layers} tokens={contexts.size}")
    print(f"bare forward+backward : {bare:8.1f} tok/s  (runs: {bare1:.1f}, {bare2:.1f})")
    print(f"gsae harvest          : {harvest:8.1f} tok/s")
    print(f"ratio harvest/bare    : {harvest / bare:.3f}  (target >= 0.95)")


if __name__ == "__main__":
    main()
