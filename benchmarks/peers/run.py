"""Side-by-side benchmark of this pipeline against its peers, SAELens 6 and sparsify (issue 13).

    .venv/bin/python -m benchmarks.peers.run [--quick] [--only 1,2,3] [--tokens N] [--repeat R] [--json PATH]
    make bench-peers

Creates one virtual environment per peer (``.bench/venvs/<peer>/``: CPU torch 2.13.0, then
``sae-lens==6.54.12`` / ``eai-sparsify==1.3.3``; reused while their stamp file says so),
converts the embedded SmolLM2-135M GGUF once into an HF folder (``.bench/smollm2/``: neither
peer loads GGUF) and exports our packed ``python-docs`` contexts (``.bench/contexts.npy``), so
both sides see the same model, block 15 (``model.layers.15``), tokens, k, width 4,608 (d = 576
x 8) and batch 4,096 tokens. None of that preparation is timed. Our side loads the same
converted folder (``model.name=.bench/smollm2``; ``--our-model alias`` uses ``smollm2-135m``,
whose GGUF parsing adds ~35 s to every process that loads the model). Each measurement then runs
our side and the peer back to back, each as a subprocess in its own venv (child modules
``child_ours``, ``child_saelens``, ``child_sparsify`` print one JSON line; how they are run:
measurements.py), and the ratios ours / peer are printed in a table (report.py):

1. SAE training throughput from a cache (TopK k=32): our trainer reading our activation-only
   store vs SAELens's trainer reading its own ``CacheActivationsRunner`` cache (both the
   caches of measurement 3). Steady tok/s between step timestamps after a warm-up.
   Target: ours >= 2x SAELens.
2. An 8-variant TopK sweep end to end (k in {16, 32, 64, 128} x seeds {0, 1}, one pass over
   the same tokens): ours = ``gsae harvest`` (activation-only) + one ``gsae train`` with the
   grid; SAELens = one activation cache + 8 trainings in one process (model loaded once);
   sparsify = on-the-fly training, one ``sparsify.Trainer`` run per k (both seeds in each run
   via ``init_seeds``) in one process. Wall time of each side's process(es), from launch to
   exit (process start and model load included on every side). Target: ours / faster peer <= 0.5.
3. Activation-only harvest, float16 on both sides: our ``run_harvest`` (what ``gsae harvest -s
   harvest.gradients=false -s harvest.dtype=float16`` runs) vs SAELens's
   ``CacheActivationsRunner.run()`` (dtype float16), both timed after model load and a warm-up
   forward. Targets: tok/s ours / SAELens >= 1.0, bytes per token on disk ours / SAELens <= 1.0.

``--repeat R`` runs measurements 2 and 3 R times each, alternating which side goes first, and
reports the median of the per-round ratios with their range (machine noise moves one round by
several percent; measurement 1 trains on the last round's caches).

Every "nearest honest equivalent" is printed under the table (and documented in the child
scripts' docstrings); neither peer trains a g-SAE, so only TopK is compared.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shlex
import sys
import time
from pathlib import Path

from benchmarks.peers import prepare as setup
from benchmarks.peers.child_common import versions
from benchmarks.peers.measurements import (
    Sizes,
    harvest_round,
    measure_harvest,
    measure_sweep,
    measure_training,
    whole,
)
from benchmarks.peers.report import Report, print_table

log = logging.getLogger("peers")


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny token counts: a smoke run of a few minutes")
    ap.add_argument("--only", default="1,2,3", help="comma-separated measurements to run (1, 2, 3)")
    ap.add_argument(
        "--tokens", type=int, help="tokens of the harvests / caches (3 and 1); default 32768, quick 4096"
    )
    ap.add_argument("--sweep-tokens", type=int, help="tokens of the sweep (2); default 32768, quick 4096")
    ap.add_argument("--steps", type=int, help="training steps timed in 1; default 48, quick 10")
    ap.add_argument("--warmup", type=int, help="of which warm-up steps; default 8, quick 3")
    ap.add_argument(
        "--our-model",
        choices=["folder", "alias"],
        default="folder",
        help="our model.name: the same converted HF folder the peers load (default) or the GGUF alias",
    )
    ap.add_argument(
        "--sweep-peers",
        choices=["all", "saelens"],
        default="all",
        help="peers of the sweep (2): all, or SAELens only (sparsify's on-the-fly runs take longest)",
    )
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rounds of the sweep (2) and of the harvest (3), alternating which side runs first; median ratio and range",
    )
    ap.add_argument(
        "--lm-autocast",
        choices=["none", "bfloat16"],
        default="none",
        help="every harvest's LM forward (ours: harvest.autocast; SAELens: autocast_lm); SAELens peer only",
    )
    ap.add_argument("--json", type=Path, help="write all results, versions and the command here")
    return ap.parse_args()


def sizes_of(args: argparse.Namespace) -> Sizes:
    if args.repeat < 1:
        raise SystemExit(f"--repeat must be at least 1, got {args.repeat}")
    if args.lm_autocast != "none" and args.sweep_peers == "all" and "2" in args.only:
        raise SystemExit("--lm-autocast needs --sweep-peers saelens: sparsify's trainer has no LM autocast")
    q = args.quick
    return Sizes(
        tokens=whole(args.tokens or (4096 if q else 32768)),
        sweep_tokens=whole(args.sweep_tokens or (4096 if q else 32768)),
        steps=args.steps or (10 if q else 48),
        warmup=args.warmup or (3 if q else 8),
        our_model=args.our_model,
        sweep_sparsify=args.sweep_peers == "all",
        repeat=args.repeat,
        lm_autocast=args.lm_autocast,
    )


def prepare(rep: Report, sz: Sizes) -> tuple[Path, Path]:
    """Venvs, converted model, exported contexts (untimed)."""
    for peer in setup.PEER_PINS:
        setup.ensure_venv(peer)
    model = setup.converted_model()
    contexts = setup.exported_contexts(max(sz.tokens, sz.sweep_tokens))
    if sz.our_model == "folder":
        sz.our_model = str(model)
        rep.note(
            "ours loads the same converted HF folder as the peers (model.name=.bench/smollm2), so every side "
            "loads the same files; --our-model alias uses smollm2-135m, whose GGUF load costs ~35 s more per "
            "process on this machine"
        )
    else:
        sz.our_model = "smollm2-135m"
        rep.note("ours loads the GGUF alias smollm2-135m (peers: the converted HF folder of the same GGUF)")
    if sz.repeat > 1:
        rep.note(
            f"sweep and harvest: {sz.repeat} rounds each, alternating which side runs first; each ratio is the "
            "median of the per-round ratios (range printed under it), ours and peer the median figures"
        )
    if sz.lm_autocast != "none":
        rep.note(
            "every harvest's LM forward runs under bf16 autocast: ours harvest.autocast=bfloat16, SAELens "
            "autocast_lm=True (both torch.autocast on the CPU); the SAEs still train in float32"
        )
    return model, contexts


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    only = {int(x) for x in args.only.split(",") if x.strip()}
    sz = sizes_of(args)
    rep = Report(command=shlex.join([sys.executable, "-m", __spec__.name, *sys.argv[1:]]), sizes={})
    model, contexts = prepare(rep, sz)
    rep.sizes = vars(sz)
    log.info("sizes: %s; measurements %s; %d CPU cores", vars(sz), sorted(only), os.cpu_count())
    start = time.perf_counter()
    if only & {1, 3}:
        n = sz.repeat if 3 in only else 1
        rounds = [harvest_round(rep, sz, model, contexts, peer_first=i % 2 == 1) for i in range(n)]
        if 3 in only:
            measure_harvest(rep, rounds)
    if 1 in only:
        measure_training(rep, sz, model, contexts)
    if 2 in only:
        measure_sweep(rep, sz, model, contexts)
    rep.versions["orchestrator"] = {"python": platform.python_version(), **versions("gsae-pipeline")}
    rep.results["benchmark_wall_s"] = time.perf_counter() - start
    rep.rows.sort(key=lambda r: r["measurement"][0])  # by measurement number, stable within one
    print_table(rep)
    print(f"Benchmark wall time (preparation excluded): {rep.results['benchmark_wall_s']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(vars(rep), indent=2, default=str) + "\n")
        print(f"JSON: {args.json}")


if __name__ == "__main__":
    main()
