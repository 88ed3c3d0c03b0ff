"""The gradient loss term λ · Σ(γg · (x − x̂))² / Σ‖x − x̄‖² (``train.grid.grad_loss``): value and
gradients against a direct torch computation for every architecture, its normalisation,
λ = 0 changing nothing, the grid, the names, cfg.json, curves and the refusals."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch

from pipeline.core.config import GridConfig, TrainConfig
from pipeline.core.errors import CacheMismatch, ConfigError
from pipeline.saes import REGISTRY
from pipeline.saes.naming import parse_variant
from pipeline.train.losses import batch_fvu, batch_share, downstream_sq
from pipeline.train.run import run_train
from pipeline.train.sweep import expand_grid
from pipeline.train.trainer import Trainer
from tests._stores import build_store, tiny_train_params
from tests.clirun import run_cli

pytestmark = pytest.mark.usefixtures("one_thread")
D, B = 8, 32
ACT_SCALE, GRAD_SCALE = 0.5, 3.0


def batch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, D, generator=g) * 3 + 1, 0.1 * torch.randn(B, D, generator=g)


def grid(arch: str, lam: float) -> GridConfig:
    return GridConfig(architecture=(arch,), k=(3,), expansion=(4,), beta=(2.0,), grad_loss=(lam,), lr=(1e-2,))


@pytest.mark.parametrize("sparse", [True, False])
@pytest.mark.parametrize("arch", sorted(REGISTRY))
def test_grad_loss_value_and_gradients_equal_a_direct_computation(arch: str, sparse: bool) -> None:
    """The trainer's loss = reconstruction loss + λ Σ_b (γ g_b · (x_b − x̂_b))² / Σ_b ‖x_b − x̄‖² (scaled
    x, raw g × the SAE's grad_scale), and the SAE's parameter gradients are that loss's."""
    lam = 0.7
    cfg = TrainConfig(warmup_steps=1, decay_fraction=0.0, grid=grid(arch, lam))
    (spec,) = expand_grid(cfg.grid)
    assert spec.grad_loss == lam and spec.name.endswith("-gl0.7-s0")
    tr = Trainer([spec], D, cfg, total_steps=4, act_scale=ACT_SCALE, grad_scale=GRAD_SCALE)
    tr.sparse_encoder_grad = sparse
    v = tr.variants[spec.name]
    for step in range(3):
        x_raw, g = batch(step)
        ref = copy.deepcopy(v.sae)
        stats = tr.train_step(x_raw, g)[spec.name]
        x = x_raw * ACT_SCALE
        out = ref(x, g)  # the same selection, autograd through z
        denom = (x - x.mean(dim=0)).pow(2).sum()
        recon = sum(
            ((x - r).pow(2).sum() / denom for r in ref.nested_decodes(out.indices, out.values)),
            torch.zeros(()),
        )
        e = ((x - out.x_hat) * (g * GRAD_SCALE)).sum(dim=1)  # γ g_b · (x_b − x̂_b) per token
        term = e.pow(2).sum() / denom
        loss = recon + lam * term
        assert float(stats["grad_loss"]) == pytest.approx(float(term.detach()), rel=1e-5)
        assert float(stats["loss"]) == pytest.approx(float(loss.detach()), rel=1e-5)
        loss.backward()
        ref.remove_parallel_grad_()
        for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
            torch.testing.assert_close(
                getattr(v.sae, name).grad, getattr(ref, name).grad, rtol=1e-4, atol=1e-6, msg=name
            )


def test_grad_loss_is_scale_free_and_weighs_like_the_fvu_for_residuals_ignoring_g() -> None:
    """With γ = √d / mean‖g‖, a residual in general position to g gives grad_loss ≈ FVU (λ = 1
    weighs the term like the MSE), whatever the raw sizes of x and g."""
    gen = torch.Generator().manual_seed(0)
    d, n = 64, 20000
    x = torch.randn(n, d, generator=gen) * 2 + 1
    x_hat = x + 0.3 * torch.randn(n, d, generator=gen)
    g = torch.randn(n, d, generator=gen) * 1e-3
    gamma = math.sqrt(d) / float(g.norm(dim=1).mean())
    gl = batch_share(x, downstream_sq(x, x_hat, g * gamma))
    assert float(gl) == pytest.approx(float(batch_fvu(x, x_hat)), rel=0.05)
    # x × c and g × 1/c' with γ recomputed: the same figure
    c, g2 = 16.0, g * 250.0
    gamma2 = math.sqrt(d) / float(g2.norm(dim=1).mean())
    assert float(batch_share(x * c, downstream_sq(x * c, x_hat * c, g2 * gamma2))) == pytest.approx(
        float(gl), rel=1e-4
    )
    # a residual orthogonal to each token's gradient costs nothing downstream
    r = x - x_hat
    ortho = r - (r * g).sum(1, keepdim=True) / g.pow(2).sum(1, keepdim=True) * g
    assert float(batch_share(x, downstream_sq(x, x - ortho, g * gamma))) < 1e-8


def test_lambda_zero_changes_nothing() -> None:
    """λ = 0: the term is not computed or logged, the loss is exactly FVU (+ AuxK), and the batch's
    gradients do not reach a gradient-free architecture's training."""
    cfg = TrainConfig(
        warmup_steps=1,
        decay_fraction=0.0,
        dead_tokens=64,  # AuxK active too
        grid=GridConfig(architecture=("topk", "batchtopk"), k=(3,), expansion=(4,), lr=(1e-2,)),
    )
    assert cfg.grid.grad_loss == (0.0,)  # the default
    with_g, without_g = (Trainer(expand_grid(cfg.grid), D, cfg, total_steps=8) for _ in range(2))
    assert [v.spec.name for v in with_g.variants.values()] == ["topk-k3-x4-s0", "batchtopk-k3-x4-s0"]
    saw_aux = False
    for step in range(8):
        x, g = batch(step)
        a, b = with_g.train_step(x, g, measure_fo=True), without_g.train_step(x, None)
        for name, s in a.items():
            assert "grad_loss" not in s and "grad_loss" not in b[name]
            assert torch.equal(s["loss"], b[name]["loss"])
            aux = s["aux"].float() if float(s["aux"]) > 0 else None
            saw_aux |= aux is not None
            want = s["fvu"].float() + with_g.cfg.aux_coef * aux if aux is not None else s["fvu"].float()
            assert torch.equal(s["loss"], want.double())
    assert saw_aux
    for name, v in with_g.variants.items():
        for key, value in v.sae.state_dict().items():
            assert torch.equal(value, without_g.variants[name].sae.state_dict()[key]), (name, key)


def test_grid_accepts_lambda_and_names_it_only_when_nonzero() -> None:
    specs = expand_grid(GridConfig(architecture=("topk", "gsae"), grad_loss=(0.0, 0.5, 1e-05)))
    names = [s.name for s in specs]
    assert names == [
        "topk-k32-x8-s0",
        "topk-k32-x8-gl0.5-s0",
        "topk-k32-x8-gl1e-05-s0",
        "gsae-k32-b1-x8-aug-s0",
        "gsae-k32-b1-x8-aug-gl0.5-s0",
        "gsae-k32-b1-x8-aug-gl1e-05-s0",
    ]
    for spec in specs:
        parsed = parse_variant(spec.name)
        assert parsed.get("grad_loss", 0.0) == spec.grad_loss and parsed["architecture"] == spec.architecture


@pytest.mark.parametrize("bad", [-0.5, float("nan"), float("inf")])
def test_grid_refuses_a_negative_or_non_finite_lambda(bad: float) -> None:
    with pytest.raises(ConfigError, match="train.grid.grad_loss values must be finite numbers >= 0"):
        expand_grid(GridConfig(grad_loss=(0.0, bad)))
    with pytest.raises(ConfigError, match="at least one value"):
        expand_grid(GridConfig(grad_loss=()))


def test_cli_refuses_a_negative_lambda_in_one_line(tmp_path: Path, capsys) -> None:
    params = tmp_path / "p.yaml"
    params.write_text("train:\n  grid:\n    architecture: [topk]\n    grad_loss: [0.0, 0.25]\n")
    code, out, _ = run_cli(["train", "-p", str(params), "--dry-run"], capsys)
    assert code == 0 and out.split() == ["topk-k32-x8-s0", "topk-k32-x8-gl0.25-s0"]
    code, _, err = run_cli(
        ["train", "-p", str(params), "--dry-run", "-s", "train.grid.grad_loss=[-1]"], capsys
    )
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and "grad_loss values must be finite numbers >= 0" in err, err


def _params(tmp: Path, arch: str, lams: list[float]):  # noqa: ANN202
    grid = {"architecture": [arch], "k": [4], "expansion": [4], "grad_loss": lams, "lr": [3e-3]}
    return tiny_train_params(tmp, grid)


def test_run_train_records_lambda_in_name_cfg_curves_and_metrics(tmp_path: Path) -> None:
    store = build_store(str(tmp_path / "s.zarr"), n_tokens=512, seed=2)
    metrics = run_train(_params(tmp_path, "matryoshka", [0.0, 2.0]), store_url=store, expected_key=None)
    assert set(metrics) == {"matryoshka-k4-x4-s0", "matryoshka-k4-x4-gl2-s0"}
    plain = json.loads((tmp_path / "saes" / "matryoshka-k4-x4-s0" / "cfg.json").read_text())
    weighted = json.loads((tmp_path / "saes" / "matryoshka-k4-x4-gl2-s0" / "cfg.json").read_text())
    assert "grad_loss" not in plain and weighted["grad_loss"] == 2.0
    assert weighted["group_fractions"] == [0.03125, 0.0625, 0.125, 0.25, 0.53125]
    assert (
        metrics["matryoshka-k4-x4-gl2-s0"]["grad_loss"] > 0
        and "grad_loss" not in metrics["matryoshka-k4-x4-s0"]
    )
    curve = (tmp_path / "curves" / "curves.csv").read_text().splitlines()
    header = curve[0].split(",")
    assert "grad_loss" in header
    col = header.index("grad_loss")
    for row in curve[1:]:
        cells = row.split(",")
        assert (cells[col] != "") == (cells[0] == "matryoshka-k4-x4-gl2-s0"), row


def test_a_store_without_gradients_is_refused_for_lambda_above_zero(tmp_path: Path) -> None:
    store = build_store(str(tmp_path / "only.zarr"), n_tokens=512, seed=2, gradients=False)
    with pytest.raises(CacheMismatch, match=r"topk-k4-x4-gl0.5-s0 needs the loss gradient .*grad_loss > 0"):
        run_train(_params(tmp_path / "a", "topk", [0.5]), store_url=store, expected_key=None)
    assert not (tmp_path / "a" / "saes").exists()
    metrics = run_train(_params(tmp_path / "b", "topk", [0.0]), store_url=store, expected_key=None)
    assert set(metrics) == {"topk-k4-x4-s0"}  # λ = 0 trains on activations alone
