"""Harvest overhead: the bare model loop vs ``run_harvest`` on the same batches, for both kinds of store.

    .venv/bin/python -m benchmarks.components.harvest_overhead [--model smollm2-135m] [--tokens 4096] [--kind both|grad|act]

``grad``: the bare loop is one forward and one backward to the hooked activations (what a
gradient harvest needs) with nothing kept; ``act`` (``harvest.gradients: false``): the bare
loop is the forward up to the deepest hooked block, stopped there. The harvest run adds
device→host copies, fp16 conversion, zstd compression, Zarr shard writes and commits. Both
use one loaded model and the same packed contexts; the bare loop runs before and after the
harvest and its mean is used. Prints tokens/s and the ratio of each (target >= 0.95), and
the activation-only speed-up over the gradient harvest.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time

import torch

from pipeline.core.loader import params_from_dict
from pipeline.harvest.forward import forward_activations, forward_backward
from pipeline.harvest.run import run_harvest
from pipeline.lm.models import LoadedModel, load_model
from pipeline.text.packing import pack_contexts
from pipeline.text.sources import iter_documents


def bare_loop(lm: LoadedModel, contexts, layers, batch_size: int, gradients: bool = True) -> float:
    """Tokens/s of the model work a harvest needs (forward + activation backward, or the
    stopped forward) with nothing kept."""
    step = forward_backward if gradients else forward_activations
    start = time.perf_counter()
    for b in range(0, len(contexts), batch_size):
        out = step(lm, layers, torch.from_numpy(contexts[b : b + batch_size]).to(lm.device))
        if lm.device.type == "cuda":
            torch.cuda.synchronize()
        del out
    return contexts.size / (time.perf_counter() - start)


def measure(args: argparse.Namespace, lm: LoadedModel | None, gradients: bool) -> tuple[LoadedModel, dict]:
    """Bare loop, harvest, bare loop again for one kind of store; returns the model and the figures."""
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
                f"harvest.cache_root={tmp}/cache",
                f"harvest.gradients={str(gradients).lower()}",
                f"harvest.tokens_per_shard={args.tokens // 4 // args.context_length * args.context_length}",
                f"harvest.chunk_tokens={args.tokens // 8 // args.context_length * args.context_length}",
            ],
        )
        lm = lm or load_model(params.model)
        layers = list(params.harvest.layers)
        contexts = pack_contexts(
            iter_documents(params.data), lm.tokenizer, args.context_length, args.tokens // args.context_length
        )
        bare_loop(lm, contexts[: args.batch_size], layers, args.batch_size, gradients)  # warm-up
        bare1 = bare_loop(lm, contexts, layers, args.batch_size, gradients)
        start = time.perf_counter()
        run_harvest(params, lm=lm)
        harvest = contexts.size / (time.perf_counter() - start)
        bare2 = bare_loop(lm, contexts, layers, args.batch_size, gradients)
    return lm, {"bare1": bare1, "bare2": bare2, "bare": (bare1 + bare2) / 2, "harvest": harvest}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--layers", default="[15]")
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--context-length", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--kind", choices=["both", "grad", "act"], default="both")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    lm, runs = None, {}
    for kind in ("grad", "act"):
        if args.kind in ("both", kind):
            lm, runs[kind] = measure(args, lm, gradients=kind == "grad")
    assert lm is not None
    print(f"device={lm.device} model={args.model} layers={args.layers} tokens={args.tokens}")
    labels = {"grad": "forward+backward", "act": "forward to the block"}
    for kind, r in runs.items():
        print(
            f"[{kind}] bare {labels[kind]:<20}: {r['bare']:8.1f} tok/s  (runs: {r['bare1']:.1f}, {r['bare2']:.1f})"
        )
        print(f"[{kind}] gsae harvest{'':<17}: {r['harvest']:8.1f} tok/s")
        print(f"[{kind}] ratio harvest/bare         : {r['harvest'] / r['bare']:.3f}  (target >= 0.95)")
    if len(runs) == 2:
        print(
            f"activation-only harvest / gradient harvest: {runs['act']['harvest'] / runs['grad']['harvest']:.2f}x"
        )


if __name__ == "__main__":
    main()
