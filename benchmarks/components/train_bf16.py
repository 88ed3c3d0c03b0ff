"""Trainer tokens/s with ``train.autocast`` none (float32) against bfloat16, side by side.

The grid, batch size and training settings are those of ``params.yaml`` (the default run: TopK
and the g-SAE at k = 32, x8, three seeds each, batch 1,024), plus one TopK and one g-SAE
variant alone. Batches are real rows when a store is given (``--store``, e.g. the default run's
``data/cache/train/<key>.zarr``), else rows of the synthetic d = 576 store
(benchmarks/common/synthetic_store.py); they are read into memory first, so the figure is the
trainer's, not the reader's (the reader runs ≥ 20× faster, train_stage.py figure a). Width
d = 576 (4,608 latents at x8).

One trainer per precision (seeded: both start from the same weights) runs two untimed warm-up
steps; then, for ``--rounds`` rounds, both take one step on the same batch in turn, their
order flipping every round (ABBA), so a shared machine's load hits both sides alike. Printed
per grid, by wall and by process CPU time (the latter less moved by other processes on the
cores): median tok/s of each side, the bf16 / float32 speed ratio of each round's pair, its
median and range, and the ratio of the best steps. AuxK is not reached (fewer tokens than
``train.dead_tokens``). On a machine other jobs share, ``--threads 1`` makes the CPU-time
figure the robust one (no thread of ours waits on a descheduled sibling).

``--stage N`` adds the whole stage: N ABBA pairs of ``gsae train`` runs (subprocesses, the
params' grid on the same store, ``--stage-tokens`` tokens each), compared by the training
loop's wall time that each run records in ``train.run.json``. There the reader decodes
batches on the same cores, as in a real run.

Run: .venv/bin/python -m benchmarks.components.train_bf16 [--rounds 20] [--store URL] [--stage 2] [--threads 1] [--quick]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks import ROOT
from benchmarks.common.synthetic_store import build
from cache.reader import BatchReader, open_store
from pipeline.core.config import TrainConfig
from pipeline.core.devices import native_bf16
from pipeline.core.loader import load_params
from pipeline.train.normalize import activation_scale, gradient_scale
from pipeline.train.sweep import expand_grid
from pipeline.train.trainer import Trainer
from stages.allocator import tune_allocator

MODES = ("none", "bfloat16")


def load_batches(url: str, batch: int, n: int) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """``n`` shuffled batches of the store's first hook, in memory (float16 as stored)."""
    r = BatchReader(url, open_store(url).hooks[0], batch_size=batch, seed=0)
    return list(r.batches(0, n))


def trainer(cfg: TrainConfig, batches: list, steps: int) -> Trainer:
    """A fresh trainer, its input scales set from the first batch as a training run sets them,
    after two untimed warm-up steps (allocations)."""
    act, grad = (t.float().numpy() for t in batches[0])
    c, gamma = activation_scale(act), gradient_scale(grad)
    tr = Trainer(
        expand_grid(cfg.grid), act.shape[1], cfg, total_steps=steps + 2, act_scale=c, grad_scale=gamma
    )
    for i in range(2):
        tr.train_step(*batches[i % len(batches)])
    return tr


def measure(cfg: TrainConfig, batches: list, rounds: int) -> dict[str, dict[str, list[float]]]:
    """Per precision, the wall and process-CPU seconds of each round's step; the two trainers
    step in turn on the same batch, their order flipping every round (ABBA)."""
    trainers = {mode: trainer(dataclasses.replace(cfg, autocast=mode), batches, rounds) for mode in MODES}
    out: dict[str, dict[str, list[float]]] = {mode: {"wall": [], "cpu": []} for mode in MODES}
    for r in range(rounds):
        act, grad = batches[(r + 2) % len(batches)]
        for mode in MODES if r % 2 == 0 else MODES[::-1]:
            t, c = time.perf_counter(), time.process_time()
            trainers[mode].train_step(act, grad)
            out[mode]["wall"].append(time.perf_counter() - t)
            out[mode]["cpu"].append(time.process_time() - c)
    return out


def report(label: str, times: dict[str, dict[str, list[float]]], batch: int) -> None:
    """Median tok/s per side; the bf16 / float32 speed ratio per round: median, range, best-of."""
    parts = []
    for clock in ("wall", "cpu"):
        f32, b16 = times["none"][clock], times["bfloat16"][clock]
        ratios = [f / b for f, b in zip(f32, b16, strict=True)]
        parts.append(
            f"{clock}: float32 {batch / statistics.median(f32):,.0f} tok/s, bf16 "
            f"{batch / statistics.median(b16):,.0f} tok/s, bf16 / float32 median {statistics.median(ratios):.2f} "
            f"(range {min(ratios):.2f}-{max(ratios):.2f}; best step {min(f32) / min(b16):.2f})"
        )
    print(f"{label}, {len(ratios)} rounds\n  " + "\n  ".join(parts), flush=True)


def stage_seconds(mode: str, store: str, params: str, tokens: int, folder: Path) -> float:
    """``gsae train`` of the params' grid on ``store`` with ``train.autocast=mode``: the training
    loop's wall seconds (``train.run.json``; the stage's start and writes excluded)."""
    sets = {
        "train.store": store,
        "train.autocast": mode,
        "train.tokens": tokens,
        "train.out_dir": folder / "saes",
        "train.metrics_out": folder / "train.json",
        "train.curves_dir": folder / "curves",
    }
    cmd = [sys.executable, "-m", "stages.cli", "train", "--allow-other-store", "-p", params]
    cmd += [a for key, value in sets.items() for a in ("-s", f"{key}={value}")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True)
    return float(json.loads((folder / "train.run.json").read_text())["seconds"])


def stage(store: str, params: str, tokens: int, pairs: int, tmp: str) -> None:
    """``pairs`` ABBA pairs of whole ``gsae train`` runs, float32 and bf16."""
    seconds: dict[str, list[float]] = {mode: [] for mode in MODES}
    for r in range(pairs):
        for mode in MODES if r % 2 == 0 else MODES[::-1]:
            folder = Path(tmp) / f"stage-{mode}-{r}"
            seconds[mode].append(stage_seconds(mode, store, params, tokens, folder))
            shutil.rmtree(folder)
    ratios = [f / b for f, b in zip(seconds["none"], seconds["bfloat16"], strict=True)]
    print(
        f"gsae train, {tokens:,} tokens, {pairs} pairs: training loop float32 "
        f"{', '.join(f'{x:.1f}' for x in seconds['none'])} s, bf16 {', '.join(f'{x:.1f}' for x in seconds['bfloat16'])} s; "
        f"bf16 / float32 speed median {statistics.median(ratios):.2f} (range {min(ratios):.2f}-{max(ratios):.2f})",
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20, help="timed steps of each precision, alternated")
    ap.add_argument("--store", help="read the batches from this store (default: a synthetic one)")
    ap.add_argument("--params", default=str(ROOT / "params.yaml"), help="the grid and training settings")
    ap.add_argument(
        "--stage", type=int, default=0, help="also time this many ABBA pairs of whole `gsae train` runs"
    )
    ap.add_argument("--stage-tokens", type=int, default=98304, help="train.tokens of those runs")
    ap.add_argument("--threads", type=int, help="torch threads of the in-process part (default: torch's)")
    ap.add_argument("--quick", action="store_true", help="4 rounds (a smoke run)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.rounds = 4
    logging.basicConfig(level=logging.WARNING)
    tune_allocator()
    cfg = load_params(args.params).train
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}, native bf16 {native_bf16()}; batch {cfg.batch_size}"
    )
    n = min(args.rounds, 16) + 2
    with tempfile.TemporaryDirectory() as tmp:
        store = args.store or build(f"{tmp}/s.zarr", 2)
        batches = load_batches(store, cfg.batch_size, n)
        print(f"batches: {n} x {cfg.batch_size} rows of d = {batches[0][0].shape[1]} from {store}")
        grids = {
            f"default grid ({len(expand_grid(cfg.grid))} variants)": cfg.grid,
            "one topk variant": dataclasses.replace(cfg.grid, architecture=("topk",), seed=(0,)),
            "one gsae variant": dataclasses.replace(cfg.grid, architecture=("gsae",), seed=(0,)),
        }
        for label, grid in grids.items():
            report(label, measure(dataclasses.replace(cfg, grid=grid), batches, args.rounds), cfg.batch_size)
        del batches
        if args.stage:
            stage(store, args.params, args.stage_tokens, args.stage, tmp)


if __name__ == "__main__":
    main()
