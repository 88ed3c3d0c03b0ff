"""Evaluate stage end to end on a tiny model: harvest train + held-out, two variants, run_evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cache.reader import read_rows
from cache.writer import ShardWriter, allocate
from pipeline.config import params_from_dict
from pipeline.errors import CacheIncomplete, CacheMismatch, PipelineError
from pipeline.evaluate import NothingToEvaluate, run_evaluate
from pipeline.harvest import heldout_params, run_harvest, store_key, store_url
from pipeline.saes.gsae import GSAE
from pipeline.saes.io import save_sae
from pipeline.saes.topk import TopKSAE
from tests.conftest import tiny_overrides

CORE_KEYS = {
    "fvu", "mse", "l0", "dead_frac", "ce_clean", "ce_spliced", "ce_zero_ablation", "loss_recovered", "kl",
    "steer_kl_mean", "steer_kl_median", "steer_kl_p10", "steer_kl_p90",
    "steer_logit_mean", "steer_logit_median", "steer_logit_p10", "steer_logit_p90",
}


def write_tiny_saes(out_dir: Path, url: str, hook: str, model: str) -> None:
    """Two SAEs initialised from the training store (encoder = decoder transpose, b_dec = mean)."""
    _, act, grad = read_rows(url, hook, 0, 512)
    d = act.shape[1]
    g_scale = float(1.0 / np.linalg.norm(grad, axis=1).mean())
    for name, sae, seed in (
        ("topk-k4-x2-s0", TopKSAE(d, 2 * d, 4), 0),
        ("gsae-k4-b1-x2-aug-s0", GSAE(d, 2 * d, 4, beta=1.0, value_mode="augmented", grad_scale=g_scale), 0),
    ):
        sae.reset_parameters(torch.Generator().manual_seed(seed))
        with torch.no_grad():
            sae.b_dec.copy_(torch.from_numpy(act.mean(0)))
        cfg = {"hook_name": hook, "model": model, "cache_key": "test", "seed": seed, "train_dead_frac": 0.25}
        save_sae(sae, out_dir / name, cfg)


@pytest.fixture(scope="module")
def project(tiny_llama, tmp_path_factory):
    """Harvested train + held-out stores and two saved variants; returns (params, heldout url, key)."""
    root = tmp_path_factory.mktemp("evalproj")
    overrides = [
        *tiny_overrides(tiny_llama, str(root / "train.zarr"), tokens=512, layers="[1]"),
        f"evaluate.store={root / 'heldout.zarr'}",
        "evaluate.tokens=256",
        f"evaluate.out={root / 'metrics' / 'evaluate.json'}",
        f"evaluate.report={root / 'reports' / 'report.md'}",
        f"evaluate.plots_dir={root / 'reports' / 'plots'}",
        f"train.out_dir={root / 'saes'}",
        "evaluate.batch_size=4",
        "evaluate.steer_latents=3",
        "evaluate.steer_contexts=2",
    ]
    params = params_from_dict({}, overrides)
    train_url = run_harvest(params)
    held = heldout_params(params)
    key = store_key(held)
    held_url = run_harvest(held)
    assert held_url == store_url(held, key)
    write_tiny_saes(root / "saes", train_url, "model.layers.1", str(tiny_llama))
    return params, held_url, key


def test_end_to_end(project):
    params, url, key = project
    metrics = run_evaluate(params, store_url=url, expected_key=key)
    names = {"topk-k4-x2-s0", "gsae-k4-b1-x2-aug-s0", "gsae-k4-b1-x2-aug-s0@beta0"}
    assert set(metrics) == names
    on_disk = json.loads(Path(params.evaluate.out).read_text())
    assert set(on_disk) == names
    for name in names:
        assert on_disk[name] == pytest.approx(metrics[name])
    for name, m in metrics.items():
        assert set(m) >= CORE_KEYS, name
        assert all(isinstance(v, float) for v in m.values())
        assert 0 < m["l0"] <= 4
        assert 0 <= m["dead_frac"] <= 1
        assert m["train_dead_frac"] == 0.25
        assert m["ce_zero_ablation"] != m["ce_clean"]  # a random model: ablation may even help
        assert m["kl"] > 0
        lr = (m["ce_zero_ablation"] - m["ce_spliced"]) / (m["ce_zero_ablation"] - m["ce_clean"])
        assert m["loss_recovered"] == pytest.approx(lr)
        assert m["steer_kl_p10"] <= m["steer_kl_median"] <= m["steer_kl_p90"]
    ce_clean = {m["ce_clean"] for m in metrics.values()}
    assert len(ce_clean) == 1
    plots = Path(params.evaluate.plots_dir)
    for png in ("loss_recovered_vs_k.png", "fvu_vs_loss_recovered.png", "steering.png"):
        assert (plots / png).stat().st_size > 1000
    for sub in ("loss_recovered_vs_k", "fvu_vs_loss_recovered", "steering"):
        assert (plots / sub / "topk-x2.csv").is_file()
        assert (plots / sub / "gsae-b1-aug-x2@beta0.csv").is_file()
    steer_rows = (plots / "steering" / "topk-x2.csv").read_text().strip().splitlines()
    assert len(steer_rows) == 1 + 3
    report = Path(params.evaluate.report).read_text()
    assert "plots/loss_recovered_vs_k.png" in report
    assert "topk-k4-x2-s0" in report and "## Settings" in report and "k = 4" in report
    assert not list(plots.rglob("*.tmp"))


def test_errors(project, tmp_path):
    params, url, key = project
    with pytest.raises(CacheMismatch):
        run_evaluate(params, store_url=url, expected_key="0" * 64)
    empty = params_from_dict({}, [f"train.out_dir={tmp_path / 'none'}"])
    with pytest.raises(NothingToEvaluate, match="no trained SAE variants"):
        run_evaluate(empty, store_url=url, expected_key=None)
    # an incomplete store
    part = str(tmp_path / "part.zarr")
    allocate(part, {"key": key, "model": params.model.name, "model_revision": "x", "tokenizer": "x",
                    "dataset": {}, "context_length": 32, "loss": "x"},
             hooks=["model.layers.1"], d_model=32, total_tokens=512, tokens_per_shard=256, chunk_tokens=128,
             dtype="float16")
    ShardWriter(part).write(0, np.zeros(256), {"model.layers.1": np.zeros((256, 32))}, {"model.layers.1": np.zeros((256, 32))})
    with pytest.raises(CacheIncomplete):
        run_evaluate(params, store_url=part, expected_key=None)
    assert issubclass(NothingToEvaluate, PipelineError)
