"""Matryoshka BatchTopK and its gradient-aware twin: nested groups, the nested loss through the
real trainer against a direct torch computation, β = 0, and width checks."""

from __future__ import annotations

import copy

import pytest
import torch

from pipeline.core.config import GridConfig, TrainConfig
from pipeline.saes import get_sae_class
from pipeline.saes.base import SAE
from pipeline.saes.gmatryoshka import GMatryoshkaHParams
from pipeline.saes.matryoshka import DEFAULT_GROUP_FRACTIONS, MatryoshkaHParams, group_ends
from pipeline.train.sweep import VariantSpec, expand_grid
from pipeline.train.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")
D, K, B = 8, 3, 24
FRACTIONS = (0.25, 0.25, 0.5)  # n = 16: groups [0, 4), [4, 8), [8, 16)


def batch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    scale = torch.exp(0.5 * torch.randn(B, 1, generator=g))
    return scale * torch.randn(B, D, generator=g) * 2 + 0.5, torch.randn(B, D, generator=g)


def test_group_ends_and_validation() -> None:
    assert group_ends(FRACTIONS, 16) == [4, 8, 16]
    assert group_ends(DEFAULT_GROUP_FRACTIONS, 4608) == [144, 432, 1008, 2160, 4608]  # d = 576, x8
    assert sum(DEFAULT_GROUP_FRACTIONS) == 1.0
    with pytest.raises(ValueError, match="empty group at d_sae=16"):
        group_ends(DEFAULT_GROUP_FRACTIONS, 16)  # 16/32 rounds to 0 latents
    with pytest.raises(ValueError, match="sum to 1"):
        MatryoshkaHParams(k=4, group_fractions=(0.5, 0.25))
    with pytest.raises(ValueError, match="positive"):
        MatryoshkaHParams(k=4, group_fractions=(1.5, -0.5))
    hp = MatryoshkaHParams(k=4, group_fractions=[0.5, 0.5])  # type: ignore[arg-type]  # as cfg.json gives it
    assert hp.group_fractions == (0.5, 0.5) and hash(hp)
    with pytest.raises(ValueError, match="empty group"):
        get_sae_class("matryoshka")(4, 16, k=2)  # default fractions at n = 16


def test_nested_decodes_are_prefix_sums() -> None:
    sae = get_sae_class("matryoshka")(D, 16, k=K, group_fractions=FRACTIONS)
    x, _ = batch(0)
    out = sae(x)
    recons = sae.nested_decodes(out.indices, out.values)
    assert len(recons) == 3 and torch.equal(recons[-1], out.x_hat)
    for end, x_hat in zip((4, 8, 16), recons, strict=True):
        direct = out.acts[:, :end] @ sae.W_dec[:end] + sae.b_dec
        torch.testing.assert_close(x_hat, direct, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(recons[0], recons[-1])  # later groups were active too


def direct_nested_loss(sae: SAE, x: torch.Tensor, ends: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(Σ_m ‖x − x̂_{≤m}‖² / Σ‖x − x̄‖², the full dictionary's FVU) written out in torch, with
    BatchTopK's selection (the k·B largest positive z of the batch) recomputed here."""
    z = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
    flat = z.detach().flatten()
    top = flat.topk(K * x.shape[0]).indices
    mask = torch.zeros_like(flat, dtype=torch.bool)
    mask[top] = flat[top] > 0
    a = torch.relu(z) * mask.view_as(z)
    denom = (x - x.mean(dim=0)).pow(2).sum()
    terms = [(x - (a[:, :e] @ sae.W_dec[:e] + sae.b_dec)).pow(2).sum() / denom for e in ends]
    return torch.stack(terms).sum(), terms[-1]


@pytest.mark.parametrize("sparse", [True, False])
def test_nested_loss_and_its_gradients_equal_a_direct_computation(sparse: bool) -> None:
    """The trainer's loss for a Matryoshka variant is Σ over prefixes of the FVU, and its parameter
    gradients are that sum's (AuxK off: no latent can be dead yet)."""
    cfg = TrainConfig(warmup_steps=1, decay_fraction=0.0)
    spec = VariantSpec("matryoshka", MatryoshkaHParams(k=K, group_fractions=FRACTIONS), 2, 1e-2, 0)
    tr = Trainer([spec], D, cfg, total_steps=3)
    tr.sparse_encoder_grad = sparse
    v = tr.variants[spec.name]
    for step in range(2):
        x, g = batch(step)
        ref = copy.deepcopy(v.sae)
        stats = tr.train_step(x, g)[spec.name]
        loss, fvu = direct_nested_loss(ref, x, [4, 8, 16])
        assert float(stats["loss"]) == pytest.approx(float(loss.detach()), rel=1e-5)
        assert float(stats["fvu"]) == pytest.approx(float(fvu.detach()), rel=1e-5)
        assert float(stats["loss"]) > 1.5 * float(stats["fvu"])  # the inner prefixes count
        loss.backward()
        ref.remove_parallel_grad_()  # what the trainer does before Adam's step
        for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
            torch.testing.assert_close(
                getattr(v.sae, name).grad, getattr(ref, name).grad, rtol=1e-4, atol=1e-6, msg=name
            )


def test_gmatryoshka_at_beta_zero_trains_as_matryoshka_bit_for_bit() -> None:
    cfg = TrainConfig(
        warmup_steps=1,
        decay_fraction=0.0,
        dead_tokens=48,  # AuxK runs too
        grid=GridConfig(architecture=("matryoshka", "gmatryoshka"), k=(K,), expansion=(4,), beta=(0.0,)),
    )
    tr = Trainer(expand_grid(cfg.grid), D, cfg, total_steps=6, grad_scale=2.0)
    plain, grad = tr.variants["matryoshka-k3-x4-s0"], tr.variants["gmatryoshka-k3-b0-x4-aug-s0"]
    saw_aux = False
    for step in range(6):
        stats = tr.train_step(*batch(10 + step))
        a, b = stats[plain.spec.name], stats[grad.spec.name]
        for key in ("loss", "fvu", "aux", "l0"):
            assert torch.equal(a[key], b[key]), key
        saw_aux |= float(a["aux"]) > 0
    assert saw_aux
    for key, value in plain.sae.state_dict().items():
        assert torch.equal(value, grad.sae.state_dict()[key]), key
    assert torch.equal(grad.sae.threshold_beta0, plain.sae.threshold)


def test_gmatryoshka_selects_with_the_gradient_and_thresholds_at_inference() -> None:
    cfg = TrainConfig(warmup_steps=1, decay_fraction=0.0)
    hp = GMatryoshkaHParams(k=K, beta=20.0, value_mode="selection", group_fractions=FRACTIONS)
    spec = VariantSpec("gmatryoshka", hp, 2, 1e-2, 0)
    tr = Trainer([spec], D, cfg, total_steps=8, grad_scale=3.0)
    for step in range(8):
        stats = tr.train_step(*batch(30 + step))[spec.name]
        assert 0.0 < float(stats["selection_shift"]) < 1.0 and float(stats["l0"]) == K
        assert float(stats["loss"]) > float(stats["fvu"])
    sae = tr.variants[spec.name].sae.eval()
    x, g = batch(99)
    with pytest.raises(ValueError, match="gradient"):
        sae(x)
    out = sae(x, g)
    assert torch.equal(out.acts != 0, (sae.scores(out.pre, g) > sae.threshold) & (out.pre > 0))


def test_at_inference_a_matryoshka_sae_is_the_batchtopk_sae_of_its_weights_and_threshold() -> None:
    sae = get_sae_class("matryoshka")(D, 16, k=K, group_fractions=FRACTIONS)
    for step in range(5):  # training passes: θ
        sae(batch(50 + step)[0])
    plain = get_sae_class("batchtopk")(D, 16, k=K)
    plain.load_state_dict(sae.state_dict())  # the same four tensors and θ buffers (group ends are not saved)
    sae.eval(), plain.eval()
    x, _ = batch(77)
    a, b = sae(x), plain(x)
    for u, v in zip(a, b, strict=True):
        assert torch.equal(u, v)
    assert (a.acts != 0).any()
