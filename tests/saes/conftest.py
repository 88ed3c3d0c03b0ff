"""Real trained outputs for the interop tests: ``run_train`` on a small synthetic store."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from cache.reader import read_rows
from pipeline.core.loader import params_from_dict
from pipeline.train.run import run_train
from tests._stores import build_store

HOOK = "model.layers.1"
TOPK = "topk-k4-x4-s0"
GSAE_AUG = "gsae-k4-b4-x4-aug-s0"
GSAE_SEL = "gsae-k4-b4-x4-sel-s0"


@dataclass(frozen=True)
class Trained:
    """Variant folders of one training run and raw rows of the store they were trained on."""

    out_dir: Path
    dirs: dict[str, Path]
    x: torch.Tensor  # raw activations [N, d]
    g: torch.Tensor  # raw loss gradients [N, d]

    @property
    def scale(self) -> float:
        """Activation scale: the mean row norm of x."""
        return float(self.x.norm(dim=1).mean())


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """TopK + g-SAE (β = 4, both value modes) trained by the project's trainer (16 → 64 latents, k = 4)."""
    root = tmp_path_factory.mktemp("interop")
    store = build_store(str(root / "s.zarr"), n_tokens=1024, context_length=16, seed=3)
    raw = {
        "data": {"context_length": 16},
        "harvest": {"layers": [1], "tokens_per_shard": 128, "chunk_tokens": 64},
        "train": {
            "out_dir": str(root / "saes"),
            "metrics_out": str(root / "metrics" / "train_metrics.json"),
            "curves_dir": str(root / "metrics" / "curves"),
            "tokens": 128 * 8,
            "batch_size": 128,
            "checkpoint_every": 100,
            "log_every": 4,
            "warmup_steps": 2,
            "dead_tokens": 300,
            "init_sample_tokens": 512,
            "shuffle_buffer_shards": 2,
            "device": "cpu",
            "grid": {
                "architecture": ["topk", "gsae"],
                "k": [4],
                "expansion": [4],
                "beta": [4.0],
                "value_mode": ["augmented", "selection"],
                "lr": [3e-3],
            },
        },
    }
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        metrics = run_train(params_from_dict(raw), store_url=store, expected_key=None)
    finally:
        torch.set_num_threads(old)
    out = root / "saes"
    assert set(metrics) == {TOPK, GSAE_AUG, GSAE_SEL}
    _, act, grad = read_rows(store, HOOK, 0, 512)
    return Trained(out, {name: out / name for name in metrics}, torch.from_numpy(act), torch.from_numpy(grad))
