"""Trainer and run_train: schedule, AuxK, outputs, and bit-identical resume."""

from __future__ import annotations

import copy
import json
import logging
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pipeline.core.config import GridConfig, TrainConfig
from pipeline.core.errors import CacheMismatch
from pipeline.core.loader import params_from_dict
from pipeline.saes.io import load_sae
from pipeline.train.run import run_train
from pipeline.train.sweep import expand_grid
from pipeline.train.trainer import Trainer
from tests._stores import build_store

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return build_store(str(tmp_path_factory.mktemp("t") / "s.zarr"), n_tokens=1024, context_length=16)


def make_params(tmp: Path, **train: object):
    base = {
        "out_dir": str(tmp / "saes"),
        "metrics_out": str(tmp / "metrics" / "train_metrics.json"),
        "curves_dir": str(tmp / "metrics" / "curves"),
        "tokens": 128 * 12,
        "batch_size": 128,
        "checkpoint_every": 4,
        "log_every": 3,
        "warmup_steps": 3,
        "dead_tokens": 300,
        "init_sample_tokens": 512,
        "shuffle_buffer_shards": 2,
        "device": "cpu",
        "grid": {"architecture": ["topk", "gsae"], "k": [4], "expansion": [4], "beta": [1.0], "lr": [3e-3]},
    }
    base.update(train)
    raw = {
        "data": {"context_length": 16},
        "harvest": {"layers": [1], "tokens_per_shard": 128, "chunk_tokens": 64},
        "train": base,
    }
    return params_from_dict(raw)


def test_run_train_writes_outputs(store: str, tmp_path: Path) -> None:
    p = make_params(tmp_path)
    metrics = run_train(p, store_url=store, expected_key="k" * 64)
    assert set(metrics) == {"topk-k4-x4-s0", "gsae-k4-b1-x4-aug-s0"}
    assert json.loads((tmp_path / "metrics" / "train_metrics.json").read_text()) == metrics
    for name, m in metrics.items():
        assert m["tokens"] == 128 * 12 and m["steps"] == 12 and 0 <= m["dead_frac"] <= 1
        sae, cfg = load_sae(tmp_path / "saes" / name)
        assert cfg["hook_name"] == "model.layers.1" and cfg["cache_key"] == "k" * 64
        assert cfg["model"] == "tiny-test-model" and cfg["tokens_seen"] == 128 * 12
        assert cfg["d_in"] == 16 and cfg["d_sae"] == 64 and cfg["k"] == 4
        assert cfg["grad_scale"] == cfg["train_grad_scale"]  # unit-norm fold: c goes into b_enc, b_dec
        curve = (tmp_path / "metrics" / "curves" / "curves.csv").read_text().splitlines()
        assert curve[0] == "variant,step,tokens,loss,fvu,aux,l0,dead_frac,lr,selection_shift,fo_loss_err"
        rows = [line.split(",") for line in curve[1:] if line.startswith(f"{name},")]
        assert len(rows) == 4
        assert all(float(row[10]) > 0 for row in rows) and m["fo_loss_err"] > 0  # the store has gradients
        shifts = [row[9] for row in rows]
        if name.startswith("gsae"):  # the gradient re-ranks a real share of the selections at β = 1
            assert all(0.02 < float(v) <= 1 for v in shifts) and 0.02 < m["selection_shift"] <= 1
        else:
            assert shifts == [""] * 4 and "selection_shift" not in m
    assert not (tmp_path / "saes" / ".checkpoints").exists()


def test_run_train_checks_the_key(store: str, tmp_path: Path) -> None:
    with pytest.raises(CacheMismatch):
        run_train(make_params(tmp_path), store_url=store, expected_key="0" * 64)


def test_resume_after_interruption_gives_identical_weights(
    store: str, tmp_path: Path, monkeypatch, caplog
) -> None:
    ref = make_params(tmp_path / "ref")
    run_train(ref, store_url=store, expected_key=None)

    run = make_params(tmp_path / "run")
    real_step = Trainer.train_step

    def crashing_step(self: Trainer, act: torch.Tensor, grad: torch.Tensor, **kw: bool):
        if self.step == 6:
            raise KeyboardInterrupt("simulated interruption")
        return real_step(self, act, grad, **kw)

    monkeypatch.setattr(Trainer, "train_step", crashing_step)
    with pytest.raises(KeyboardInterrupt):
        run_train(run, store_url=store, expected_key=None)
    ckpt = tmp_path / "run" / "saes" / ".checkpoints" / "state-4.pt"
    assert ckpt.is_file()
    state = torch.load(ckpt, weights_only=True)
    assert state["trainer"]["step"] == 4 and state["reader"]["batch_index"] == 4
    assert not (tmp_path / "run" / "saes" / "topk-k4-x4-s0").exists()  # nothing marked done

    monkeypatch.setattr(Trainer, "train_step", real_step)
    with caplog.at_level(logging.INFO, logger="pipeline.train.run"):
        run_train(run, store_url=store, expected_key=None)
    assert "resumed from" in caplog.text and "at step 4" in caplog.text
    for name in ("topk-k4-x4-s0", "gsae-k4-b1-x4-aug-s0"):
        a = load_file(str(tmp_path / "ref" / "saes" / name / "sae_weights.safetensors"))
        b = load_file(str(tmp_path / "run" / "saes" / name / "sae_weights.safetensors"))
        for key in a:
            assert torch.equal(a[key], b[key]), (name, key)
    ca = (tmp_path / "ref" / "metrics" / "curves" / "curves.csv").read_text()
    cb = (tmp_path / "run" / "metrics" / "curves" / "curves.csv").read_text()
    assert ca == cb


def test_checkpoint_with_other_settings_is_ignored(store: str, tmp_path: Path, monkeypatch) -> None:
    real_step = Trainer.train_step

    def crashing_step(self: Trainer, act: torch.Tensor, grad: torch.Tensor, **kw: bool):
        if self.step == 5:
            raise KeyboardInterrupt
        return real_step(self, act, grad, **kw)

    monkeypatch.setattr(Trainer, "train_step", crashing_step)
    with pytest.raises(KeyboardInterrupt):
        run_train(make_params(tmp_path), store_url=store, expected_key=None)
    monkeypatch.setattr(Trainer, "train_step", real_step)
    metrics = run_train(make_params(tmp_path, seed=7), store_url=store, expected_key=None)
    assert all(m["steps"] == 12 for m in metrics.values())


def test_lr_schedule() -> None:
    cfg = TrainConfig(
        warmup_steps=10, decay_fraction=0.2, grid=GridConfig(architecture=("topk",), k=(2,), expansion=(1,))
    )
    tr = Trainer(expand_grid(cfg.grid), 4, cfg, total_steps=100)
    f = [tr.lr_factor(s) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == 1.0 and f[50] == 1.0 and f[79] == 1.0
    assert f[80] == 1.0 and f[90] == pytest.approx(0.5) and f[99] == pytest.approx(0.05)


def test_auxk_active_only_with_dead_latents_and_loss_falls() -> None:
    cfg = TrainConfig(
        warmup_steps=1,
        decay_fraction=0.0,
        dead_tokens=64,
        k_aux=8,
        grid=GridConfig(architecture=("topk", "gsae"), k=(2,), expansion=(8,), lr=(1e-2,)),
    )
    tr = Trainer(expand_grid(cfg.grid), 8, cfg, total_steps=40)
    g = torch.Generator().manual_seed(0)
    x, grad = torch.randn(32, 8, generator=g) * 3 + 1, torch.randn(32, 8, generator=g)
    first = tr.train_step(x, grad)
    assert all(s["aux"] == 0.0 for s in first.values())
    stats = [tr.train_step(x, grad) for _ in range(30)]
    assert any(s["topk-k2-x8-s0"]["aux"] > 0 for s in stats)
    assert stats[-1]["topk-k2-x8-s0"]["fvu"] < first["topk-k2-x8-s0"]["fvu"]
    for v in tr.variants.values():
        assert torch.allclose(v.sae.W_dec.norm(dim=1), torch.ones(64), atol=1e-5)
    assert 0.0 <= tr.dead_fraction("topk-k2-x8-s0") <= 1.0


def test_batch_level_architectures_train_learn_a_threshold_and_resume_identically() -> None:
    """batchtopk / gbatchtopk from the grid: L0 = k per token on average, θ in the state dict."""
    cfg = TrainConfig(
        warmup_steps=1,
        decay_fraction=0.0,
        grid=GridConfig(
            architecture=("batchtopk", "gbatchtopk"),
            k=(3,),
            expansion=(4,),
            beta=(20.0,),
            value_mode=("selection",),
            lr=(1e-2,),
        ),
    )
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(32, 8, generator=g) * 2, torch.randn(32, 8, generator=g)) for _ in range(12)]
    tr = Trainer(expand_grid(cfg.grid), 8, cfg, total_steps=12, grad_scale=3.0)
    stats = [tr.train_step(*b) for b in batches[:6]]
    state = copy.deepcopy(tr.state_dict())
    assert all(s["batchtopk-k3-x4-s0"]["l0"] == 3.0 for s in stats)  # k·B kept over the batch
    assert all("selection_shift" not in s["batchtopk-k3-x4-s0"] for s in stats)
    assert all(0.0 < s["gbatchtopk-k3-b20-x4-sel-s0"]["selection_shift"] < 1.0 for s in stats)
    for v in tr.variants.values():
        assert torch.isfinite(v.sae.threshold) and "threshold" in state["variants"][v.spec.name]["model"]
    for b in batches[6:]:
        tr.train_step(*b)
    again = Trainer(expand_grid(cfg.grid), 8, cfg, total_steps=12, grad_scale=3.0)
    again.load_state_dict(state)
    for b in batches[6:]:
        again.train_step(*b)
    for name, v in tr.variants.items():
        for key, value in v.sae.state_dict().items():
            assert torch.equal(value, again.variants[name].sae.state_dict()[key]), (name, key)


def test_first_order_loss_error_is_measured_on_log_steps_only() -> None:
    """fo_loss_err = mean |g · (x − x̂)| in raw units on the window's last batch, nothing on other steps."""
    cfg = TrainConfig(
        warmup_steps=1,
        decay_fraction=0.0,
        grid=GridConfig(architecture=("topk", "gsae"), k=(2,), expansion=(2,), beta=(1.0,), lr=(1e-3,)),
    )
    gen = torch.Generator().manual_seed(0)
    x, grad = torch.randn(16, 8, generator=gen) * 3 + 1, torch.randn(16, 8, generator=gen)
    tr = Trainer(expand_grid(cfg.grid), 8, cfg, total_steps=4, act_scale=0.5, grad_scale=2.0)
    plain = tr.train_step(x, grad)
    assert all("fo_loss_err" not in s for s in plain.values())
    before = {n: copy.deepcopy(v.sae) for n, v in tr.variants.items()}
    measured = tr.train_step(x, grad, measure_fo=True)
    for name, sae in before.items():
        with torch.no_grad():
            x_hat = sae(x * 0.5, grad).x_hat / 0.5  # back to raw units
        direct = float(((x - x_hat) * grad).sum(dim=1).abs().mean())
        assert float(measured[name]["fo_loss_err"]) == pytest.approx(direct, rel=1e-4)
    logged = tr.flush_log()
    for name in before:  # the window's value is the measured step's, not diluted by the other step
        assert logged[name]["fo_loss_err"] == pytest.approx(float(measured[name]["fo_loss_err"]))
    only_topk = Trainer(
        expand_grid(GridConfig(architecture=("topk",), k=(2,), expansion=(2,))), 8, cfg, total_steps=2
    )
    assert "fo_loss_err" not in only_topk.train_step(x, None, measure_fo=True)["topk-k2-x2-s0"]
    assert "fo_loss_err" not in only_topk.flush_log()["topk-k2-x2-s0"]


def test_bf16_autocast_resumes_bit_identically_and_is_recorded(
    store: str, tmp_path: Path, monkeypatch
) -> None:
    """train.autocast=bfloat16 through run_train: a resumed run ends bit-identical, the weights
    stay float32 and are not float32 training's, cfg.json records the setting and SAELens still
    loads the folder."""
    run_train(make_params(tmp_path / "fp32"), store_url=store, expected_key=None)
    metrics = run_train(
        make_params(tmp_path / "ref", autocast="bfloat16"), store_url=store, expected_key=None
    )
    run = make_params(tmp_path / "run", autocast="bfloat16")
    real_step = Trainer.train_step

    def crashing_step(self: Trainer, act: torch.Tensor, grad: torch.Tensor, **kw: bool):
        if self.step == 6:
            raise KeyboardInterrupt("simulated interruption")
        return real_step(self, act, grad, **kw)

    monkeypatch.setattr(Trainer, "train_step", crashing_step)
    with pytest.raises(KeyboardInterrupt):
        run_train(run, store_url=store, expected_key=None)
    monkeypatch.setattr(Trainer, "train_step", real_step)
    assert run_train(run, store_url=store, expected_key=None) == metrics
    curves = (tmp_path / "ref" / "metrics" / "curves" / "curves.csv").read_text()
    assert curves == (tmp_path / "run" / "metrics" / "curves" / "curves.csv").read_text()
    for name in ("topk-k4-x4-s0", "gsae-k4-b1-x4-aug-s0"):
        a = load_file(str(tmp_path / "ref" / "saes" / name / "sae_weights.safetensors"))
        b = load_file(str(tmp_path / "run" / "saes" / name / "sae_weights.safetensors"))
        f = load_file(str(tmp_path / "fp32" / "saes" / name / "sae_weights.safetensors"))
        assert all(torch.equal(a[key], b[key]) and a[key].dtype == torch.float32 for key in a), name
        assert not torch.equal(a["W_enc"], f["W_enc"]), name  # the option does something
        _, cfg = load_sae(tmp_path / "ref" / "saes" / name)
        assert cfg["training"]["autocast"] == "bfloat16" and cfg["dtype"] == "float32"
    with warnings.catch_warnings():  # its transformer_lens import warns when it is the first
        warnings.simplefilter("ignore", DeprecationWarning)
        from sae_lens import SAE as SAELensSAE
    assert SAELensSAE.load_from_disk(str(tmp_path / "ref" / "saes" / "topk-k4-x4-s0")).cfg.d_sae == 64


def test_bf16_encoder_hands_float32_on() -> None:
    """Under autocast z and the g-SAE score are float32 tensors holding a bf16 product."""
    cfg = TrainConfig(grid=GridConfig(architecture=("gsae",), k=(4,), expansion=(8,), beta=(1.0,)))
    gen = torch.Generator().manual_seed(0)
    x, grad = torch.randn(64, 32, generator=gen) * 3 + 5, torch.randn(64, 32, generator=gen)
    sae = next(iter(Trainer(expand_grid(cfg.grid), 32, cfg, total_steps=1).variants.values())).sae
    with torch.no_grad():
        sae.b_dec.copy_(x.mean(dim=0))
        exact = sae.encode_pre(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            z = sae.encode_pre(x)
            s = sae.scores(z, grad)
    assert z.dtype == torch.float32 and s.dtype == torch.float32 and exact.dtype == torch.float32
    err = float((z - exact).abs().max() / exact.abs().max())
    assert 1e-5 < err < 2e-2, err  # rounded like a bf16 product, not float32's ~1e-7


@pytest.mark.parametrize("sparse", [True, False], ids=["sparse-cpu", "dense-autograd"])
def test_bf16_training_learns_like_float32(sparse: bool) -> None:
    """Both encoder-gradient paths (the CPU's sparse one, autograd's dense one that CUDA takes)
    under bf16: the loss falls as in float32, the weights differ from float32's, the gradients
    reaching Adam are float32."""
    grid = GridConfig(architecture=("topk", "gsae"), k=(4,), expansion=(8,), beta=(1.0,), lr=(1e-2,))
    gen = torch.Generator().manual_seed(0)
    batches = [
        (torch.randn(64, 32, generator=gen) * 3 + 5, torch.randn(64, 32, generator=gen)) for _ in range(4)
    ]
    runs = {}
    for autocast in ("none", "bfloat16"):
        cfg = TrainConfig(warmup_steps=1, decay_fraction=0.0, autocast=autocast, grid=grid)
        tr = Trainer(expand_grid(grid), 32, cfg, total_steps=40, b_dec=batches[0][0].mean(dim=0))
        tr.sparse_encoder_grad = sparse
        stats = [tr.train_step(*batches[i % 4]) for i in range(40)]
        runs[autocast] = (tr, stats)
    (tr32, s32), (tr16, s16) = runs["none"], runs["bfloat16"]
    for name, v in tr16.variants.items():
        first = sum(float(s[name]["fvu"]) for s in s16[:4]) / 4
        last = sum(float(s[name]["fvu"]) for s in s16[-4:]) / 4
        last32 = sum(float(s[name]["fvu"]) for s in s32[-4:]) / 4
        assert last < 0.7 * first, (name, first, last)
        assert last == pytest.approx(last32, rel=0.05), (name, last, last32)
        assert not torch.equal(v.sae.W_enc, tr32.variants[name].sae.W_enc)
        assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in v.sae.parameters())
