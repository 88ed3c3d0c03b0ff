"""``gsae train`` in one process vs two processes under torchrun (gloo, CPU), side by side.

On a synthetic store (d = 256, float16, 64k tokens) the same grid (4 variants: topk and
gsae x two seeds, x8, k32) is trained four times, each a fresh command:

  1p-1t   one process, OMP_NUM_THREADS=1       (the reference of the bit-identity check)
  1p-2t   one process, OMP_NUM_THREADS=2
  2p-var  torchrun --nproc_per_node=2, train.parallel=variants (1 thread each)
  2p-data torchrun --nproc_per_node=2, train.parallel=data     (1 thread each)

Printed: the training-loop seconds (run.json, rank 0) and the whole command's wall time,
both as ratios to 1p-2t; whether 2p-var's files equal 1p-1t's byte for byte; and the max
abs / relative (to the parameter's largest magnitude) difference of 2p-data's weights
from 1p-1t's.

Run: .venv/bin/python -m benchmarks.scaleup.train_processes [--steps 30]

The store is benchmarks/common/synthetic_store.py's, at this benchmark's width and hook.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

from benchmarks.common import synthetic_store
from benchmarks.common.child import child_env

D, T, SHARD, CHUNK, HOOK = 256, 128, 8192, 2048, "model.layers.3"
GSAE = Path(sys.executable).parent / "gsae"


def build(url: str, n_shards: int = 8) -> str:
    """Store of ``n_shards`` shards of fresh random rows at this benchmark's width and hook."""
    return synthetic_store.build(url, n_shards, d=D, hook=HOOK, fresh=True)


def params(store: str, steps: int) -> dict:
    return {
        "model": {"name": "synthetic"},
        "data": {"context_length": T},
        "harvest": {"layers": [3], "tokens_per_shard": SHARD, "chunk_tokens": CHUNK},
        "train": {
            "store": store,
            "out_dir": "saes",
            "metrics_out": "metrics/train.json",
            "curves_dir": "metrics/c",
            "tokens": 1024 * steps,
            "batch_size": 1024,
            "log_every": 5,
            "warmup_steps": 5,
            "device": "cpu",
            "init_sample_tokens": 4096,
            "grid": {
                "architecture": ["topk", "gsae"],
                "k": [32],
                "expansion": [8],
                "beta": [0.3],
                "value_mode": ["selection"],
                "seed": [0, 1],
            },
        },
    }


def run(folder: Path, raw: dict, *, procs: int, threads: int, mode: str = "variants") -> tuple[float, float]:
    """(training-loop seconds, command wall seconds)."""
    folder.mkdir(parents=True)
    raw = {**raw, "train": {**raw["train"], "parallel": mode}}
    (folder / "params.yaml").write_text(yaml.safe_dump(raw))
    cmd = [str(GSAE), "train", "--allow-other-store"]
    if procs > 1:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            f"--nproc_per_node={procs}",
            "--master_addr=127.0.0.1",
            f"--master_port={port}",
            "--no-python",
            *cmd,
        ]
    t0 = time.perf_counter()
    subprocess.run(
        cmd, cwd=folder, env=child_env({"OMP_NUM_THREADS": str(threads)}), check=True, capture_output=True
    )
    wall = time.perf_counter() - t0
    return json.loads((folder / "metrics" / "train.run.json").read_text())["seconds"], wall


def files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "params.yaml" and not p.name.endswith(".run.json")
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        raw = params(build(str(root / "s.zarr")), args.steps)
        runs = {
            "1p-1t": (1, 1, "variants"),
            "1p-2t": (1, 2, "variants"),
            "2p-var": (2, 1, "variants"),
            "2p-data": (2, 1, "data"),
        }
        times = {name: run(root / name, raw, procs=p, threads=t, mode=m) for name, (p, t, m) in runs.items()}
        base_fit, base_wall = times["1p-2t"]
        print(f"{'run':8} {'fit s':>7} {'fit/1p-2t':>10} {'wall s':>7} {'wall/1p-2t':>11}")
        for name, (fit, wall) in times.items():
            print(f"{name:8} {fit:7.1f} {fit / base_fit:10.2f} {wall:7.1f} {wall / base_wall:11.2f}")
        print("2p-var files == 1p-1t files (bit for bit):", files(root / "2p-var") == files(root / "1p-1t"))
        worst_abs = worst_rel = 0.0
        for sae in sorted((root / "1p-1t" / "saes").iterdir()):
            a = load_file(str(sae / "sae_weights.safetensors"))
            b = load_file(str(root / "2p-data" / "saes" / sae.name / "sae_weights.safetensors"))
            for k in a:
                diff = float((a[k] - b[k]).abs().max())
                worst_abs = max(worst_abs, diff)
                worst_rel = max(worst_rel, diff / float(a[k].abs().max()))
        print(f"2p-data vs 1p-1t weights: max abs diff {worst_abs:.3g}, max rel diff {worst_rel:.3g}")
        print(f"(torch {torch.__version__}, {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
