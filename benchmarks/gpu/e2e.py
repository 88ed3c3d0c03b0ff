"""The ``e2e`` part of the GPU benchmark (benchmarks/gpu/run.py): the stage commands ``gsae
harvest``, ``gsae harvest --heldout``, ``gsae train`` (8 variants) and ``gsae evaluate`` on this
device, each timed as a fresh process (this checkout's code: the repository root first on
``PYTHONPATH``) on a random SmolLM2-shaped model."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks import ROOT
from benchmarks.common.child import child_env
from benchmarks.gpu.measure import RESULTS, record
from benchmarks.gpu.shapes import smollm2_folder


def part_e2e(dev: torch.device, smoke: bool) -> None:
    """The stage commands on this device: harvest, held-out harvest, train (8 variants), evaluate."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = smollm2_folder(dev, smoke, Path(tmp))
        layer = 2 if smoke else 15
        tokens = 16384 if smoke else 1048576
        common = [
            f"model.name={folder}",
            f"model.device={dev}",
            f"harvest.layers=[{layer}]",
            "data.source=python-docstrings",
            f"harvest.cache_root={tmp}/cache",
            f"harvest.tokens={tokens}",
            f"harvest.batch_size={16 if smoke else 256}",
            f"harvest.tokens_per_shard={tokens // 8}",
            f"harvest.chunk_tokens={tokens // 32}",
            "harvest.autocast=bfloat16",
            f"train.out_dir={tmp}/saes",
            f"train.tokens={tokens}",
            f"train.batch_size={1024 if smoke else 4096}",
            "train.grid.architecture=[topk,gsae]",
            "train.grid.k=[16,32,64,128]",
            "train.grid.seed=[0]",
            f"evaluate.tokens={4096 if smoke else 65536}",
            f"evaluate.out={tmp}/evaluate.json",
            f"evaluate.summary={tmp}/summary.json",
            f"evaluate.report={tmp}/report.md",
            f"evaluate.plots_dir={tmp}/plots",
            f"evaluate.batch_size={8 if smoke else 64}",
        ]
        gsae = [sys.executable, "-c", "from stages.cli import main; main()"]
        for stage in (["harvest"], ["harvest", "--heldout"], ["train"], ["evaluate"]):
            t = time.perf_counter()
            sets = [arg for item in common for arg in ("-s", item)]
            res = subprocess.run(
                [*gsae, *stage, "-p", str(ROOT / "params.yaml"), *sets],
                cwd=tmp,
                env=child_env(),
                capture_output=True,
                text=True,
            )
            wall = time.perf_counter() - t
            if res.returncode != 0:
                print(res.stdout[-3000:], res.stderr[-3000:])
            record("e2e", " ".join(stage), wall_s=wall, rc=res.returncode)
        if Path(f"{tmp}/evaluate.json").exists():
            RESULTS["e2e"]["evaluate_json"] = json.loads(Path(f"{tmp}/evaluate.json").read_text())
