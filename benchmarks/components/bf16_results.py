"""What ``train.autocast: bfloat16`` does to the default run's results: trained both ways, evaluated both ways.

Trains the grid of ``params.yaml`` (the default run: TopK and the g-SAE, three seeds) twice on
the default run's store, with ``train.autocast`` none and bfloat16, evaluates both on its
held-out store (``gsae train`` / ``gsae evaluate`` as subprocesses, every output under
``--out``; absorption and steering off, which FVU and loss recovered do not read), and prints,
per series (``topk``, ``gsae``, ``gsae@beta0``) and figure, the paired difference bf16 − fp32
over the seeds (mean ± sd) against the seed spread (sd over the seeds of the float32 figures).
A delta is "within" when |mean Δ| ≤ the seed sd.

The stores are the ones the default run's harvest recorded (``<data-root>/data/cache/<split>/
store.json``, their URLs relative to ``--data-root``, their content keys checked here) and are
only read. Nothing is written outside ``--out``. 15–25 min on 2 CPU cores.

Run: .venv/bin/python -m benchmarks.components.bf16_results [--data-root /work/main] [--out /tmp/bf16]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import ROOT
from cache.reader import open_store

MODES = ("none", "bfloat16")
FIGURES = ("fvu", "loss_recovered", "kl")
"""Compared per series; the first two decide the default (docs/benchmarks.md)."""
DECIDING = ("fvu", "loss_recovered")


def recorded_store(data_root: Path, split: str) -> str:
    """The store the default run's harvest of ``split`` recorded, its key checked."""
    ref = json.loads((data_root / "data" / "cache" / split / "store.json").read_text())
    url = ref["store"] if "://" in ref["store"] else str(data_root / ref["store"])
    open_store(url, expected_key=ref["key"])
    return url


def gsae(args: list[str]) -> float:
    """Run ``gsae ARGS`` from the repository root with this interpreter; wall seconds."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "stages.cli", *args], cwd=ROOT, env=env, check=True)
    return time.perf_counter() - t


def train_and_evaluate(
    mode: str, out: Path, params: str, stores: dict[str, str], reuse: bool
) -> dict[str, Any]:
    """Train and evaluate the grid with ``train.autocast=mode`` into ``out/<mode>``; evaluate.json."""
    folder = out / mode
    common = [
        "-p",
        params,
        "-s",
        f"train.out_dir={folder / 'saes'}",
        "-s",
        f"train.curves_dir={folder / 'curves'}",
        "-s",
        f"train.metrics_out={folder / 'train.json'}",
    ]
    if not (reuse and (folder / "train.json").is_file()):
        extra = ["-s", f"train.store={stores['train']}", "-s", f"train.autocast={mode}"]
        seconds = gsae(["train", *common, *extra])
        print(f"train {mode}: {seconds:.0f} s", flush=True)
    if not (reuse and (folder / "evaluate.json").is_file()):
        extra = [
            f"evaluate.store={stores['heldout']}",
            f"evaluate.out={folder / 'evaluate.json'}",
            f"evaluate.summary={folder / 'summary.json'}",
            f"evaluate.report={folder / 'report.md'}",
            f"evaluate.plots_dir={folder / 'plots'}",
            "evaluate.absorption_words=0",
            "evaluate.steer_latents=0",
        ]
        seconds = gsae(["evaluate", *common, *[a for kv in extra for a in ("-s", kv)]])
        print(f"evaluate {mode}: {seconds:.0f} s", flush=True)
    evaluated: dict[str, Any] = json.loads((folder / "evaluate.json").read_text())
    return evaluated


def series_of(name: str) -> tuple[str, int] | None:
    """``gsae-k32-b0.3-x8-sel-s1@beta0`` → (``gsae-k32-b0.3-x8-sel@beta0``, 1); None without a seed."""
    m = re.fullmatch(r"(.+)-s(\d+)(@beta0)?", name)
    return None if m is None else (m.group(1) + (m.group(3) or ""), int(m.group(2)))


def compare(fp32: dict[str, Any], bf16: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per series and figure: paired deltas over the seeds against the float32 seed sd."""
    by_series: dict[str, dict[int, str]] = {}
    for name in fp32:
        parsed = series_of(name)
        if parsed is not None and name in bf16:
            by_series.setdefault(parsed[0], {})[parsed[1]] = name
    rows = []
    for series, seeds in sorted(by_series.items()):
        names = [seeds[s] for s in sorted(seeds)]
        for fig in FIGURES:
            base = [float(fp32[n][fig]) for n in names]
            delta = [float(bf16[n][fig]) - b for n, b in zip(names, base, strict=True)]
            sd_seed = statistics.stdev(base) if len(base) > 1 else float("nan")
            mean_d = statistics.fmean(delta)
            rows.append(
                {
                    "series": series,
                    "figure": fig,
                    "seeds": len(names),
                    "fp32_mean": statistics.fmean(base),
                    "seed_sd": sd_seed,
                    "delta_mean": mean_d,
                    "delta_sd": statistics.stdev(delta) if len(delta) > 1 else float("nan"),
                    "delta_max_abs": max(abs(d) for d in delta),
                    "within": abs(mean_d) <= sd_seed,
                }
            )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| series | figure | fp32 mean | seed sd (fp32) | Δ bf16 − fp32, mean ± sd | max abs Δ | abs mean Δ ≤ seed sd |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| `{r['series']}` | {r['figure']} | {r['fp32_mean']:.5f} | {r['seed_sd']:.5f} | "
            f"{r['delta_mean']:+.5f} ± {r['delta_sd']:.5f} | {r['delta_max_abs']:.5f} | "
            f"{'yes' if r['within'] else '**no**'} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--data-root", default=str(ROOT), help="the folder the default run ran in (its data/cache)"
    )
    ap.add_argument("--out", default="/tmp/bf16-results", help="every output of the runs goes here")
    ap.add_argument("--params", default="params.yaml", help="params file (relative to the repository root)")
    ap.add_argument("--reuse", action="store_true", help="keep runs whose outputs are already in --out")
    args = ap.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    data_root = Path(args.data_root).resolve()
    stores = {split: recorded_store(data_root, split) for split in ("train", "heldout")}
    print(f"stores: {stores}", flush=True)
    evaluated = {mode: train_and_evaluate(mode, out, args.params, stores, args.reuse) for mode in MODES}
    rows = compare(evaluated["none"], evaluated["bfloat16"])
    walls = {mode: json.loads((out / mode / "train.run.json").read_text()).get("seconds") for mode in MODES}
    print(
        f"\n{time.strftime('%Y-%m-%d')}, {len(rows) // len(FIGURES)} series, held-out figures of gsae evaluate"
    )
    print(
        f"training loop wall time (train.run.json, one run each, noisy): fp32 {walls['none']} s, bf16 {walls['bfloat16']} s"
    )
    print(table(rows))
    decided = [r for r in rows if r["figure"] in DECIDING]
    print(f"\nall FVU / loss recovered deltas within the seed spread: {all(r['within'] for r in decided)}")
    (out / "comparison.json").write_text(json.dumps({"rows": rows, "train_seconds": walls}, indent=2) + "\n")


if __name__ == "__main__":
    main()
