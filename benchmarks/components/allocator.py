"""The harvest's model forward with and without the glibc allocator tuning ``gsae harvest`` applies.

    .venv/bin/python -m benchmarks.components.allocator [--rounds 2]

Each measurement is a fresh process (``mallopt`` is process-wide and cannot be undone): it
loads SmolLM2, runs the forward up to block 15 over 96 contexts of 128 tokens in batches of
8 (after one warm-up batch) and prints tokens/s. Tuned and untuned processes alternate;
the best of each is compared.
"""

from __future__ import annotations

import argparse
import time

from benchmarks.common.child import run_module


def child(tuned: bool) -> None:
    import torch

    from pipeline.core.loader import params_from_dict
    from pipeline.harvest.forward import forward_activations
    from pipeline.lm.models import load_model
    from pipeline.text.packing import pack_contexts
    from pipeline.text.sources import iter_documents
    from stages.allocator import tune_allocator

    if tuned:
        tune_allocator()
    params = params_from_dict({}, ["model.device=cpu"])
    lm = load_model(params.model)
    ids = torch.from_numpy(pack_contexts(iter_documents(params.data), lm.tokenizer, 128, 96).astype("int64"))
    forward_activations(lm, [15], ids[:8])
    start = time.perf_counter()
    for b in range(0, len(ids), 8):
        forward_activations(lm, [15], ids[b : b + 8])
    print(ids.numel() / (time.perf_counter() - start))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--child", choices=["tuned", "plain"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child == "tuned")
        return
    rates: dict[str, list[float]] = {"plain": [], "tuned": []}
    for _ in range(args.rounds):
        for kind in ("plain", "tuned"):
            rates[kind].append(float(run_module(__spec__.name, "--child", kind).split()[-1]))
    for kind, r in rates.items():
        print(
            f"forward to block 15, {kind:5}: best {max(r):6.1f} tok/s  (runs: {', '.join(f'{x:.1f}' for x in r)})"
        )
    print(f"tuned / plain: {max(rates['tuned']) / max(rates['plain']):.2f}")


if __name__ == "__main__":
    main()
