"""Reconstruction metrics: centred FVU, MSE, L0, dead fraction."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cache.schema import usable_rows
from pipeline.evaluate.metrics import distribution, recon_stats
from pipeline.saes.topk import TopKSAE


def test_mean_predictor_has_fvu_one():
    rng = np.random.default_rng(0)
    act = (rng.normal(size=(300, 8)) * 2 + 5).astype(np.float32)
    sae = TopKSAE(8, 16, k=2)
    with torch.no_grad():
        sae.W_dec.zero_()
        sae.b_dec.copy_(torch.from_numpy(act.mean(0)))
    st = recon_stats(sae, act, np.zeros_like(act), chunk=64)
    assert st.fvu == pytest.approx(1.0, rel=1e-5)
    assert st.mse == pytest.approx(float(((act - act.mean(0)) ** 2).mean()), rel=1e-5)


def test_l0_dead_and_mean_act():
    sae = TopKSAE(4, 4, k=1)
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(4))
        sae.W_dec.copy_(torch.eye(4))
    act = np.array([[3, 0, 0, 0], [5, 0, 0, 0], [0, 2, 0, 0], [-1, -1, -1, -1]], dtype=np.float32)
    st = recon_stats(sae, act, np.zeros_like(act))
    assert st.l0 == pytest.approx(3 / 4)  # the all-negative row selects a latent whose ReLU is 0
    assert st.dead_frac == pytest.approx(0.5)
    np.testing.assert_allclose(st.freq, [2, 1, 0, 0])
    np.testing.assert_allclose(st.mean_act, [4, 2, 0, 0])


def near_identity_sae(d: int, eps: float, seed: int = 0, shift: float = 1000.0) -> TopKSAE:
    """x̂ = x + eps · (x + shift) P exactly (every latent selected, all positive): a small, known error."""
    sae = TopKSAE(d, d, k=d)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(d))
        sae.b_enc.zero_()
        sae.b_dec.fill_(-shift)  # z = x + shift > 0 for the activations used here
        sae.W_dec.copy_(torch.eye(d) + eps * torch.randn(d, d, generator=gen) / d**0.5)
    return sae


def test_first_order_loss_error_matches_the_direct_formula():
    rng = np.random.default_rng(1)
    act = (rng.normal(size=(200, 8)) * 2).astype(np.float32)
    grad = rng.normal(size=(200, 8)).astype(np.float32)
    sae = TopKSAE(8, 32, k=3)
    sae.reset_parameters(torch.Generator().manual_seed(0))
    st = recon_stats(sae, act, grad, chunk=64)
    with torch.no_grad():
        x_hat = sae(torch.from_numpy(act)).x_hat.double().numpy()
    per_row = ((x_hat - act) * grad).sum(axis=1)
    assert st.fo_loss_err == pytest.approx(float(np.abs(per_row).mean()), rel=1e-5)
    assert st.fo_loss_delta == pytest.approx(float(per_row.mean()), rel=1e-4, abs=1e-6)
    assert st.fo_loss_err >= abs(st.fo_loss_delta)
    assert recon_stats(sae, act, None).fo_loss_err is None  # no gradients: absent


def test_first_order_loss_error_is_zero_for_an_exact_reconstruction():
    rng = np.random.default_rng(2)
    act = rng.normal(size=(50, 4)).astype(np.float32)
    st = recon_stats(near_identity_sae(4, 0.0, shift=10.0), act, rng.normal(size=(50, 4)).astype(np.float32))
    assert st.fvu < 1e-9
    assert st.fo_loss_err == pytest.approx(0.0, abs=1e-6) and st.fo_loss_delta == pytest.approx(0.0, abs=1e-6)


def test_usable_rows_skip_first_positions():
    assert usable_rows(0, 8, 4).tolist() == [1, 2, 3, 5, 6, 7]


def test_distribution():
    d = distribution(np.arange(11.0))
    assert d == {"mean": 5.0, "median": 5.0, "p10": 1.0, "p90": 9.0}
    assert distribution([]) == {}


def test_outlier_positions_are_the_later_positions_far_above_the_median_norm() -> None:
    import numpy as np
    import torch

    from pipeline.evaluate.heldout import outlier_positions

    ids = torch.zeros(3, 4, dtype=torch.long)
    acts = np.ones((12, 2), dtype=np.float32)
    acts[0] *= 1000.0  # position 0: never marked (kept clean anyway)
    acts[5] *= 50.0  # context 1, position 1
    acts[11] *= 5.0  # below 10x
    assert outlier_positions(acts, ids, 0.0) is None
    mask = outlier_positions(acts, ids, 10.0)
    assert mask is not None and torch.nonzero(mask).tolist() == [[1, 1]]
