"""Trainer step time per architecture, this tree against an older commit, side by side.

Issue 25's pilot found the batch-level architectures (BatchTopK, Matryoshka BatchTopK and
their gradient twins) 6-50x slower per step than TopK on the CPU: rows padded to one outlier
token's latent count, and a top-k over the whole [B, n] batch. This benchmark times one
training step of one variant of each architecture (k = 32, x8, batch 2,048, d = 576) on real
batches of a store, for two trees:

- ``old``: the commit ``--old`` (a temporary ``git worktree``; default 3d0714b, before the
  ragged decode and the sampled batch top-k bound),
- ``new``: this tree.

Each arm runs in its own process (``python -P``, ``PYTHONPATH`` = its tree; a probe checks
where ``pipeline`` is imported from); per round both arms run every architecture once, in
ABBA order. A round = a fresh trainer per architecture (same seed in both arms), 2 untimed
steps, then ``--steps`` timed steps; printed: the median step per arm and the old / new ratio.
``--drop-outliers`` leaves out rows above 10x the median norm first, as ``train.max_norm_multiple``
does. Never run it beside another job: the two cores are shared.

Run: .venv/bin/python -m benchmarks.components.batch_selection [--store URL] [--rounds 2] [--steps 6]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks import ROOT

ARCHS = ("topk", "batchtopk", "matryoshka", "gsae", "gbatchtopk", "gmatryoshka")
DEFAULT_STORE = "experiments/gsae-v2/data/cache/train"

# The child: one trainer step loop per architecture, printed as JSON (median seconds per step).
CHILD = r"""
import dataclasses, json, statistics, sys, time
import torch
from cache.reader import BatchReader, open_store
from pipeline.core.config import GridConfig, TrainConfig
from pipeline.train.normalize import activation_scale, gradient_scale
from pipeline.train.sweep import expand_grid
from pipeline.train.trainer import Trainer
url, archs, steps, drop = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3]), sys.argv[4] == "1"
batches = list(BatchReader(url, open_store(url).hooks[0], batch_size=2048, seed=0).batches(0, steps + 2))
if drop:
    norms = torch.cat([torch.linalg.vector_norm(a.float(), dim=1) for a, _ in batches])
    limit = 10 * float(norms.median())
    batches = [(a[k], g[k]) for a, g in batches for k in [torch.linalg.vector_norm(a.float(), dim=1) <= limit]]
act, grad = (t.float().numpy() for t in batches[0])
c, gamma = activation_scale(act), gradient_scale(grad)
out = {}
for arch in archs:
    grid = GridConfig(architecture=(arch,), k=(32,), expansion=(8,), beta=(0.3,), seed=(0,))
    cfg = TrainConfig(batch_size=2048, warmup_steps=25, grid=grid)
    tr = Trainer(expand_grid(grid), act.shape[1], cfg, total_steps=1000, act_scale=c, grad_scale=gamma)
    times = []
    for i, (a, g) in enumerate(batches):
        t = time.perf_counter()
        tr.train_step(a, g)
        if i >= 2:
            times.append(time.perf_counter() - t)
    out[arch] = statistics.median(times)
print(json.dumps(out))
"""


def _env(tree: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(tree)}


def _check_imports_from(tree: Path) -> None:
    """Stop unless a child started like the arms imports ``pipeline`` from ``tree``."""
    probe = [sys.executable, "-P", "-c", "import pipeline; print(pipeline.__file__)"]
    where = subprocess.run(probe, env=_env(tree), capture_output=True, text=True, check=True).stdout
    if not Path(where.strip()).resolve().is_relative_to(tree.resolve()):
        raise SystemExit(f"an arm meant to run {tree} imports pipeline from {where.strip()}")


def _arm(tree: Path, store: str, steps: int, drop: bool) -> dict[str, float]:
    cmd = [sys.executable, "-P", "-c", CHILD, store, ",".join(ARCHS), str(steps), "1" if drop else "0"]
    done = subprocess.run(cmd, env=_env(tree), capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _store_url(path: str) -> str:
    p = ROOT / path
    if (p / "store.json").exists():  # a stage's pointer folder
        return str(p / Path(json.loads((p / "store.json").read_text())["store"]).name)
    return str(p)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", default="3d0714b", help="the commit of the old arm")
    ap.add_argument(
        "--store", default=DEFAULT_STORE, help="a store (or a stage's pointer folder) with gradients"
    )
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=6, help="timed steps per architecture and round")
    ap.add_argument("--drop-outliers", action="store_true", help="leave out rows above 10x the median norm")
    args = ap.parse_args()
    store = _store_url(args.store)
    results: dict[str, dict[str, list[float]]] = {"old": {}, "new": {}}
    with tempfile.TemporaryDirectory() as tmp:
        old_tree = Path(tmp) / "old"
        subprocess.run(
            ["git", "worktree", "add", "--detach", "-q", str(old_tree), args.old], cwd=ROOT, check=True
        )
        try:
            trees = {"old": old_tree, "new": ROOT}
            for tree in trees.values():
                _check_imports_from(tree)
            for r in range(args.rounds):
                for arm in ("old", "new") if r % 2 == 0 else ("new", "old"):
                    for arch, sec in _arm(trees[arm], store, args.steps, args.drop_outliers).items():
                        results[arm].setdefault(arch, []).append(sec)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old_tree)], cwd=ROOT, check=False)
    print(
        f"median trainer step, one variant, k=32, x8, batch 2048 ({args.rounds} rounds x {args.steps} steps)"
    )
    print(f"{'architecture':<14}{'old ms':>10}{'new ms':>10}{'old/new':>10}")
    for arch in ARCHS:
        old, new = statistics.median(results["old"][arch]), statistics.median(results["new"][arch])
        print(f"{arch:<14}{old * 1000:>10.0f}{new * 1000:>10.0f}{old / new:>9.2f}x")


if __name__ == "__main__":
    main()
