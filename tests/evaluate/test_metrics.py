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


def test_usable_rows_skip_first_positions():
    assert usable_rows(0, 8, 4).tolist() == [1, 2, 3, 5, 6, 7]


def test_distribution():
    d = distribution(np.arange(11.0))
    assert d == {"mean": 5.0, "median": 5.0, "p10": 1.0, "p90": 9.0}
    assert distribution([]) == {}
