"""The evaluate stage, this tree against an older commit, side by side on the default run's data.

    .venv/bin/python -m benchmarks.components.evaluate_stage [--old 09c9195] [--rounds 1]
        [--steer-latents 32] [--bf16] [--json FILE]

Needs the default run's held-out store and SAEs (``make repro`` or ``dvc repro`` first). Each
round runs ``gsae evaluate`` once per arm in fresh processes, alternating which goes first:

- ``old``: the commit ``--old`` (a temporary ``git worktree``; default: the last commit
  before issue 23's evaluation work) with its own params.yaml,
- ``new``: this tree, float32,
- ``bf16`` (with ``--bf16``): this tree with ``evaluate.autocast=bfloat16``.

All arms read the same store and SAEs and write to a temporary folder. ``--steer-latents``
(default 32, the experiment's setting; the default run steers 8) and ``--absorption-words``
pass through, so the grid matches the experiment's per-SAE work. Printed: each arm's wall
time (best over rounds; the process, model load included), the ratios old / new and
new / bf16, and how far each arm's figures are from the old ones: the largest relative
difference per metric, and for bf16 the change of the paired g-SAE − TopK difference of
loss recovered against its spread over seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
OLD = "09c9195"  # the evaluate stage before issue 23


def _v1_copy(store: Path, dest: Path) -> Path:
    """A copy of the cache format 2 store ``store`` in format 1, which the old code reads.

    Version 1 kept every commit record in the ``committed`` attribute; the arrays and the
    other attributes are the same, so the old arm reads the very same tokens.
    """
    import zarr

    from cache.integrity import load_commits
    from cache.schema import CacheInfo, attrs_digest

    shutil.copytree(store, dest)
    shutil.rmtree(dest / "commits")
    group = zarr.open_group(str(dest), mode="r+")
    info = load_commits(
        str(store), zarr.open_group(str(store), mode="r"), CacheInfo.from_attrs(store_attrs(store))
    )
    attrs = {k: v for k, v in info.attrs.items() if k != "attrs_sha256"}
    attrs.update(gsae_cache_version=1, committed=[dict(r) for r in info.records])
    if info.attrs_sha256 is not None:
        attrs["attrs_sha256"] = attrs_digest(attrs)
    group.attrs.put(attrs)
    return dest


def store_attrs(store: Path) -> dict:
    """The group attributes of the store at ``store``."""
    return dict(json.loads((store / "zarr.json").read_text())["attributes"])


def _check_imports_from(tree: Path, env: dict[str, str]) -> None:
    """Stop unless a child started like the arms imports ``pipeline`` from ``tree``."""
    probe = [sys.executable, "-P", "-c", "import pipeline; print(pipeline.__file__)"]
    where = subprocess.run(probe, cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout
    if not Path(where.strip()).resolve().is_relative_to(tree.resolve()):
        raise SystemExit(f"an arm meant to run {tree} imports pipeline from {where.strip()}")


def _evaluate(tree: Path, params: Path, out: Path, extra: list[str]) -> float:
    """Wall seconds of one ``gsae evaluate`` from the repository root with ``tree``'s code."""
    out.mkdir(parents=True, exist_ok=True)
    sets = [
        f"evaluate.out={out}/evaluate.json",
        f"evaluate.summary={out}/summary.json",
        f"evaluate.report={out}/report.md",
        f"evaluate.plots_dir={out}/plots",
        *extra,
    ]
    # -P: without it `-m` puts the working directory (this tree) before PYTHONPATH, and every
    # arm would run this tree's code
    cmd = [sys.executable, "-P", "-m", "stages.cli", "evaluate", "-p", str(params)]
    for s in sets:
        cmd += ["-s", s]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    _check_imports_from(tree, env)
    t = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if done.returncode != 0:
        raise SystemExit(f"evaluate ({tree}) failed:\n{done.stderr[-3000:]}")
    return wall


def _max_rel(a: dict, b: dict) -> dict[str, float]:
    """metric → largest |b − a| / |a| over the entries both have."""
    worst: dict[str, float] = {}
    for name, m in a.items():
        for key, v in m.items():
            w = b.get(name, {}).get(key)
            if w is None or v is None:
                continue
            worst[key] = max(worst.get(key, 0.0), abs(w - v) / max(abs(v), 1e-12))
    return worst


def _paired(metrics: dict, key: str = "loss_recovered") -> np.ndarray:
    """g-SAE − TopK ``key`` per seed (the default grid's names)."""
    seeds = sorted(int(n.rsplit("-s", 1)[1]) for n in metrics if n.startswith("topk-"))
    return np.array(
        [metrics[f"gsae-k32-b0.3-x8-sel-s{s}"][key] - metrics[f"topk-k32-x8-s{s}"][key] for s in seeds]
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--old", default=OLD, help="git commit of the old arm")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--steer-latents", type=int, default=32)
    ap.add_argument("--absorption-words", type=int, default=2000)
    ap.add_argument("--bf16", action="store_true", help="also time evaluate.autocast=bfloat16")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args()
    extra = [
        f"evaluate.steer_latents={args.steer_latents}",
        f"evaluate.absorption_words={args.absorption_words}",
    ]
    with tempfile.TemporaryDirectory(prefix="gsae-bench-eval-") as tmp:
        old_tree = Path(tmp) / "old"
        subprocess.run(
            ["git", "worktree", "add", "--detach", "-q", str(old_tree), args.old], cwd=ROOT, check=True
        )
        try:
            # the old code reads only cache format 1: it gets a format 1 copy of the same store
            pointer = json.loads((ROOT / "data/cache/heldout/store.json").read_text())
            v1 = _v1_copy(ROOT / pointer["store"], Path(tmp) / "heldout-v1.zarr")
            arms = {
                "old": (old_tree, old_tree / "params.yaml", [*extra, f"evaluate.store={v1}"]),
                "new": (ROOT, ROOT / "params.yaml", extra),
            }
            if args.bf16:
                arms["bf16"] = (ROOT, ROOT / "params.yaml", [*extra, "evaluate.autocast=bfloat16"])
            walls: dict[str, list[float]] = {a: [] for a in arms}
            for r in range(args.rounds):
                order = list(arms) if r % 2 == 0 else list(reversed(arms))
                for arm in order:
                    tree, params, sets = arms[arm]
                    walls[arm].append(_evaluate(tree, params, Path(tmp) / arm, sets))
                    print(f"round {r + 1}: {arm} {walls[arm][-1]:.1f} s", flush=True)
            figs = {a: json.loads((Path(tmp) / a / "evaluate.json").read_text()) for a in arms}
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old_tree)], cwd=ROOT, check=False)
    best = {a: min(w) for a, w in walls.items()}
    report = {"old": args.old, "rounds": args.rounds, "steer_latents": args.steer_latents, "walls": walls}
    print(f"\nevaluate wall (best of {args.rounds}): " + ", ".join(f"{a} {w:.1f} s" for a, w in best.items()))
    print(f"old / new = {best['old'] / best['new']:.2f}x")
    report["old_over_new"] = best["old"] / best["new"]
    for arm in [a for a in arms if a != "old"]:
        diff = _max_rel(figs["old"], figs[arm])
        report[f"{arm}_max_rel_diff"] = diff
        keys = (
            "loss_recovered",
            "ce_spliced",
            "kl",
            "fvu",
            "steer_kl_mean",
            "steer_logit_mean",
            "absorption_rate",
        )
        print(
            f"{arm} vs old, largest relative difference: "
            + ", ".join(f"{k} {diff.get(k, 0):.1e}" for k in keys)
        )
    if "bf16" in arms:
        report["new_over_bf16"] = best["new"] / best["bf16"]
        p32, p16 = _paired(figs["new"]), _paired(figs["bf16"])
        print(f"new / bf16 = {best['new'] / best['bf16']:.2f}x")
        print(
            f"paired g-SAE - TopK loss recovered: float32 {p32.mean():+.5f} ± {p32.std(ddof=1):.5f}, "
            f"bf16 {p16.mean():+.5f} ± {p16.std(ddof=1):.5f} (change {p16.mean() - p32.mean():+.1e})"
        )
        report["paired_lr"] = {"float32": p32.tolist(), "bf16": p16.tolist()}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
