"""``gsae train`` under torchrun (2 CPU processes, gloo) against the one-process run.

- ``train.parallel=variants``: every output file is byte-identical to one process's.
- ``train.parallel=data``: the weights match one process within float rounding
  (measured max abs diff ~3e-6 on parameters of magnitude up to ~500, the bound below
  leaves an order of magnitude); metrics and curves agree to the same relative bound.
Both torchrun runs are killed at a checkpoint and resumed under torchrun (which covers
the uninterrupted path up to the kill, and resuming).
- ``train.grid.layer``: several blocks of one store in one run, names and hooks per layer.

Each torchrun launch gets its own free loopback port. The one-process reference runs in
this process with one torch thread, as torchrun's workers do (OMP_NUM_THREADS=1).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from pipeline.core.errors import ConfigError
from pipeline.core.loader import params_from_dict
from pipeline.stores import train_store
from pipeline.train import distributed
from pipeline.train.run import run_train
from pipeline.train.trainer import Trainer
from tests._stores import build_store

pytestmark = pytest.mark.usefixtures("one_thread")

GSAE = Path(sys.executable).parent / "gsae"
LAYER_GRID = {
    "grid": {
        "architecture": ["topk", "gsae"],
        "k": [4],
        "expansion": [4],
        "beta": [1.0],
        "lr": [3e-3],
        "layer": [1, 2],
    }
}
DATA_TOLERANCE = 1e-5
"""Max abs difference of any parameter, relative to that parameter's largest magnitude."""


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    url = str(tmp_path_factory.mktemp("dist") / "s.zarr")
    return build_store(url, n_tokens=1024, context_length=16, hooks=("model.layers.1", "model.layers.2"))


def raw_params(store: str, **train: object) -> dict:
    base = {
        "store": store,
        "out_dir": "saes",
        "metrics_out": "metrics/train_metrics.json",
        "curves_dir": "metrics/curves",
        "tokens": 128 * 12,
        "batch_size": 128,
        "checkpoint_every": 4,
        "log_every": 3,
        "warmup_steps": 3,
        "dead_tokens": 300,  # latents die within the run: the AuxK loss and counters are exercised
        "init_sample_tokens": 512,
        "shuffle_buffer_shards": 2,
        "device": "cpu",
        "grid": {"architecture": ["topk", "gsae"], "k": [4], "expansion": [4], "beta": [1.0], "lr": [3e-3]},
    }
    base.update(train)
    return {
        "model": {"name": "tiny-test-model"},
        "data": {"context_length": 16},
        "harvest": {"layers": [1, 2], "tokens_per_shard": 128, "chunk_tokens": 64},
        "train": base,
    }


def one_process(raw: dict, folder: Path, monkeypatch) -> Path:
    """The reference: ``run_train`` in this process, relative paths under ``folder``."""
    folder.mkdir(parents=True)
    monkeypatch.chdir(folder)
    p = params_from_dict(raw)
    store = train_store(p)
    run_train(p, store_url=store.url, expected_key=store.key)
    monkeypatch.undo()
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(
    raw: dict, folder: Path, *, nproc: int = 2, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """``torchrun --nproc_per_node=N --no-python gsae train`` in ``folder`` (params written there)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "params.yaml").write_text(yaml.safe_dump(raw))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={nproc}",
        "--master_addr=127.0.0.1",
        f"--master_port={free_port()}",
        "--no-python",
        str(GSAE),
        "train",
    ]
    run_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    proc = subprocess.run(cmd, cwd=folder, env=run_env, capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def output_files(folder: Path) -> dict[str, bytes]:
    """Every output file by relative path, without the run information (wall time)."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name not in ("params.yaml",) and not p.name.endswith(".run.json")
    }


def crash_then_resume(raw: dict, folder: Path) -> subprocess.CompletedProcess[str]:
    """A torchrun run killed at a checkpoint, then the same command again (returned)."""
    # Each rank that writes checkpoints dies writing its second one (after step 8's state
    # file, before its index): what is left on disk is the checkpoint of step 4, or none.
    crashed = torchrun(raw, folder, env={"GSAE_FAULT": "checkpoint_write:2"}, check=False)
    assert crashed.returncode != 0
    indexes = list((folder / "saes" / ".checkpoints").rglob("state.json"))
    assert indexes and all(json.loads(p.read_text())["step"] == 4 for p in indexes)
    assert not (folder / "metrics" / "train_metrics.json").exists()
    resumed = torchrun(raw, folder)
    assert "resumed from" in resumed.stderr and "at step 4" in resumed.stderr
    assert not (folder / "saes" / ".checkpoints").exists() and not list((folder / "saes").glob(".rank*"))
    return resumed


def max_rel_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k] - b[k]).abs().max() / a[k].abs().max()) for k in a)


def test_variants_mode_killed_and_resumed_is_bit_identical_to_one_process(
    store, tmp_path, monkeypatch
) -> None:
    raw = raw_params(store, **LAYER_GRID)  # 4 variants over 2 layers: each rank trains one per layer
    ref = output_files(one_process(raw, tmp_path / "one", monkeypatch))
    raw["train"]["parallel"] = "variants"
    two = tmp_path / "two"
    crash_then_resume(raw, two)
    got = output_files(two)
    assert len([k for k in ref if k.endswith("sae_weights.safetensors")]) == 4
    assert sorted(got) == sorted(ref)
    for name in ref:  # SAE weights, cfg.json, curves.csv, train_metrics.json
        assert got[name] == ref[name], name
    info = json.loads((two / "metrics" / "train_metrics.run.json").read_text())
    assert info["processes"] == 2 and info["parallel"] == "variants"


def test_data_mode_killed_and_resumed_matches_one_process_within_float_tolerance(
    store, tmp_path, monkeypatch
) -> None:
    raw = raw_params(store)
    one = one_process(raw, tmp_path / "one", monkeypatch)
    raw["train"]["parallel"] = "data"
    two = tmp_path / "two"
    crash_then_resume(raw, two)
    for name in ("topk-k4-x4-s0", "gsae-k4-b1-x4-aug-s0"):
        a = load_file(str(one / "saes" / name / "sae_weights.safetensors"))
        b = load_file(str(two / "saes" / name / "sae_weights.safetensors"))
        assert set(a) == set(b)
        diff = max_rel_diff(a, b)
        assert 0 < diff < DATA_TOLERANCE, (name, diff)  # summed in another order: not bit-equal, but close
    ma = json.loads((one / "metrics" / "train_metrics.json").read_text())
    mb = json.loads((two / "metrics" / "train_metrics.json").read_text())
    for name, figs in ma.items():
        assert figs["dead_frac"] > 0  # the dead-latent counters and AuxK were in play
        for key, val in figs.items():
            assert mb[name][key] == pytest.approx(val, rel=1e-5, abs=1e-7), (name, key)
    ca = (one / "metrics" / "curves" / "curves.csv").read_text().splitlines()
    cb = (two / "metrics" / "curves" / "curves.csv").read_text().splitlines()
    assert len(ca) == len(cb) and [r.split(",")[:3] for r in ca] == [r.split(",")[:3] for r in cb]


def test_layer_grid_trains_each_block_of_the_store(store, tmp_path, monkeypatch) -> None:
    one = one_process(raw_params(store, **LAYER_GRID), tmp_path / "grid", monkeypatch)
    names = sorted(p.name for p in (one / "saes").iterdir())
    assert names == [
        "gsae-k4-b1-x4-aug-L1-s0",
        "gsae-k4-b1-x4-aug-L2-s0",
        "topk-k4-x4-L1-s0",
        "topk-k4-x4-L2-s0",
    ]
    for name in names:
        cfg = json.loads((one / "saes" / name / "cfg.json").read_text())
        layer = int(name.split("-L")[1][0])
        assert cfg["hook_name"] == f"model.layers.{layer}" and cfg["hook_layer"] == layer
    # each block has its own stream: the SAE of layer 1 matches a single-layer run on block 1
    single = one_process(raw_params(store, layer=1), tmp_path / "single", monkeypatch)
    assert sorted(p.name for p in (single / "saes").iterdir()) == ["gsae-k4-b1-x4-aug-s0", "topk-k4-x4-s0"]
    a = load_file(str(single / "saes" / "topk-k4-x4-s0" / "sae_weights.safetensors"))
    b = load_file(str(one / "saes" / "topk-k4-x4-L1-s0" / "sae_weights.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = load_file(str(one / "saes" / "topk-k4-x4-L2-s0" / "sae_weights.safetensors"))
    assert not torch.equal(a["W_enc"], c["W_enc"])
    metrics = json.loads((one / "metrics" / "train_metrics.json").read_text())
    assert sorted(metrics) == names
    curve_variants = [
        r.split(",")[0] for r in (one / "metrics" / "curves" / "curves.csv").read_text().splitlines()[1:]
    ]
    assert set(curve_variants) == set(names)


def test_layer_grid_resume_does_not_retrain_a_finished_layer(store, tmp_path, monkeypatch, caplog) -> None:
    raw = raw_params(store, **LAYER_GRID)
    ref = output_files(one_process(raw, tmp_path / "ref", monkeypatch))
    real_step = Trainer.train_step
    layers_started: list[str] = []

    def crash_in_layer_2(self: Trainer, act: torch.Tensor, grad: torch.Tensor, **kw: bool):
        if self.step == 0:
            layers_started.append(next(iter(self.variants)))
        if "L2" in next(iter(self.variants)) and self.step == 6:
            raise KeyboardInterrupt("simulated interruption")
        return real_step(self, act, grad, **kw)

    monkeypatch.setattr(Trainer, "train_step", crash_in_layer_2)
    with pytest.raises(KeyboardInterrupt):
        one_process(raw, tmp_path / "run", monkeypatch)
    assert layers_started == ["topk-k4-x4-L1-s0", "topk-k4-x4-L2-s0"]
    ckpts = tmp_path / "run" / "saes" / ".checkpoints"
    assert json.loads((ckpts / "L1" / "state.json").read_text())["step"] == 12  # layer 1 finished
    assert json.loads((ckpts / "L2" / "state.json").read_text())["step"] == 4
    layers_started.clear()
    monkeypatch.setattr(Trainer, "train_step", real_step)
    with caplog.at_level(logging.INFO, logger="pipeline.train.run"):
        monkeypatch.chdir(tmp_path / "run")
        p = params_from_dict(raw)
        run_train(p, store_url=p.train.store, expected_key=None)
        monkeypatch.undo()
    assert "at step 12" in caplog.text and "at step 4" in caplog.text
    assert output_files(tmp_path / "run") == ref


def test_config_checks_and_variant_shares() -> None:
    base = raw_params("unused")
    with pytest.raises(ConfigError, match="not both"):
        params_from_dict({**base, "train": {**base["train"], "layer": 1, **LAYER_GRID}})
    grid = {**LAYER_GRID["grid"], "layer": [1, 7]}
    with pytest.raises(ConfigError, match="subset of harvest.layers"):
        params_from_dict({**base, "train": {**base["train"], "grid": grid}})
    with pytest.raises(ConfigError, match="train.parallel"):
        params_from_dict({**base, "train": {**base["train"], "parallel": "model"}})
    specs = list("abcde")
    shares = [distributed.my_share(distributed.Dist(r, 2, mode="variants"), specs) for r in range(2)]
    assert shares == [["a", "c", "e"], ["b", "d"]]
    assert distributed.my_share(distributed.Dist(1, 2, mode="data"), specs) == specs
    with pytest.raises(ConfigError, match="only 5 variant"):
        distributed.my_share(distributed.Dist(0, 6, mode="variants"), specs)


@pytest.mark.parametrize("arch", ["batchtopk", "gbatchtopk", "matryoshka", "gmatryoshka"])
def test_data_mode_refuses_batch_level_selection(arch: str) -> None:
    """Each rank would rank only its own rows: not the one-process run, so refused in one line."""
    from pipeline.saes import get_sae_class

    variants = [("topk-k4-x4-s0", get_sae_class("topk")), (f"{arch}-k4-x4-s0", get_sae_class(arch))]
    with pytest.raises(
        ConfigError, match=f"train.parallel=data: {arch}-k4-x4-s0 select over the whole batch"
    ):
        distributed.check_row_split(distributed.Dist(0, 2, mode="data"), variants)
    distributed.check_row_split(
        distributed.Dist(0, 2, mode="variants"), variants
    )  # one variant per rank: fine
    distributed.check_row_split(distributed.Dist(0, 2, mode="data"), variants[:1])


def test_data_mode_sums_the_gradient_loss_term_over_ranks(store, tmp_path, monkeypatch) -> None:
    """λ > 0 under ``train.parallel: data``: each rank's share of the term uses the global batch's
    denominator, so the run matches one process to float rounding."""
    grid = {"architecture": ["topk"], "k": [4], "expansion": [4], "grad_loss": [0.5], "lr": [3e-3]}
    raw = raw_params(store, grid=grid, checkpoint_every=0)
    one = one_process(raw, tmp_path / "one", monkeypatch)
    raw["train"]["parallel"] = "data"
    torchrun(raw, tmp_path / "two")
    name = "topk-k4-x4-gl0.5-s0"
    a = load_file(str(one / "saes" / name / "sae_weights.safetensors"))
    b = load_file(str(tmp_path / "two" / "saes" / name / "sae_weights.safetensors"))
    assert 0 < max_rel_diff(a, b) < DATA_TOLERANCE
    ma = json.loads((one / "metrics" / "train_metrics.json").read_text())[name]
    mb = json.loads((tmp_path / "two" / "metrics" / "train_metrics.json").read_text())[name]
    assert ma["grad_loss"] > 0 and ma["loss"] == pytest.approx(ma["fvu"] + 0.5 * ma["grad_loss"], rel=0.2)
    for key in ("loss", "fvu", "grad_loss", "l0"):
        assert mb[key] == pytest.approx(ma[key], rel=1e-5, abs=1e-7), key
