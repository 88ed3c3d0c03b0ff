"""Input scales and b_dec initialisation."""

from __future__ import annotations

import math

import numpy as np
import torch

from pipeline.train.normalize import activation_scale, geometric_median, gradient_scale, init_b_dec


def test_activation_scale_is_power_of_two_near_sqrt_d() -> None:
    x = np.random.default_rng(0).normal(size=(2000, 64)).astype(np.float32) * 37.0
    c = activation_scale(x)
    assert math.log2(c) == round(math.log2(c))
    mean_norm = np.linalg.norm(x * c, axis=1).mean()
    assert 8 / math.sqrt(2) <= mean_norm <= 8 * math.sqrt(2)


def test_gradient_scale_gives_mean_norm_sqrt_d() -> None:
    g = np.random.default_rng(1).normal(size=(1000, 32)).astype(np.float32) * 1e-3
    s = gradient_scale(g)
    assert abs(np.linalg.norm(g.astype(np.float64) * s, axis=1).mean() - math.sqrt(32)) < 1e-5
    assert gradient_scale(np.zeros((4, 3))) == 1.0


def test_random_direction_gradient_factor_is_order_one() -> None:
    """What gives β its meaning: |d · γg| ≈ 0.8 for unit rows d, at any width d."""
    rng = np.random.default_rng(2)
    for d in (64, 576):
        g = rng.normal(size=(512, d)) * rng.lognormal(size=(512, 1)) * 1e-3
        rows = rng.normal(size=(256, d))
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        factor = np.abs((g * gradient_scale(g)) @ rows.T).mean()
        assert 0.6 < factor < 1.0, (d, factor)


def test_geometric_median_resists_outliers() -> None:
    x = torch.randn(500, 4, generator=torch.Generator().manual_seed(0))
    x[:20] += 1000.0
    gm = geometric_median(x)
    assert gm.norm() < 1.0 < init_b_dec(x, "mean").norm()
    assert torch.allclose(init_b_dec(x, "geometric_median"), gm)
