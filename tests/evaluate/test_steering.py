"""Steering: a zero vector has no effect; a real one moves the distribution; sampling is seeded."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.core.config import ModelConfig
from pipeline.evaluate.steering import (
    bootstrap_ci,
    clean_reference,
    pick_contexts,
    pick_latents,
    steer_effects,
    steer_sae,
)
from pipeline.lm.models import load_model


@pytest.fixture(scope="module")
def lm(tiny_gpt2):
    return load_model(ModelConfig(name=str(tiny_gpt2), device="cpu"))


def _ids(lm, n: int = 3, t: int = 10) -> torch.Tensor:
    ids = torch.randint(2, len(lm.tokenizer), (n, t), generator=torch.Generator().manual_seed(0))
    ids[:, 0] = 0
    return ids


def test_zero_vector_has_no_effect(lm):
    ref = clean_reference(lm, _ids(lm), batch_size=2)
    kl, logit, _ = steer_effects(lm, 1, ref, torch.zeros(2, lm.d_model), batch_size=4)
    assert np.allclose(kl, 0.0, atol=1e-7)
    assert np.allclose(logit, 0.0, atol=1e-6)


def test_batching_does_not_change_effects(lm):
    ref = clean_reference(lm, _ids(lm), batch_size=3)
    vecs = torch.randn(3, lm.d_model, generator=torch.Generator().manual_seed(1)) * 5
    a = steer_effects(lm, 2, ref, vecs, batch_size=1)
    b = steer_effects(lm, 2, ref, vecs, batch_size=8)
    assert np.all(a[0] > 0)
    np.testing.assert_allclose(a[0], b[0], rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(a[1], b[1], rtol=1e-4, atol=1e-6)
    # a latent's effect does not depend on which other latents share its batch
    single = steer_effects(lm, 2, ref, vecs[1:2], batch_size=8)
    np.testing.assert_allclose(single[0], a[0][1:2], rtol=1e-4, atol=1e-7)


def test_sampling_is_seeded_and_only_alive():
    freq = np.array([0, 3, 0, 1, 5, 0, 2, 7])
    a = pick_latents(freq, 3, seed=0, name="v")
    assert np.array_equal(a, pick_latents(freq, 3, seed=0, name="v"))
    assert set(a) <= {1, 3, 4, 6, 7} and len(a) == 3
    assert len(pick_latents(freq, 50, seed=0, name="v")) == 5
    c = pick_contexts(10, 4, seed=3)
    assert np.array_equal(c, pick_contexts(10, 4, seed=3)) and len(set(c)) == 4


def test_steer_sae_alpha_and_no_alive(lm):
    ref = clean_reference(lm, _ids(lm, n=2))
    W_dec = torch.randn(6, lm.d_model)
    freq = np.array([1, 0, 2, 0, 0, 4])
    mean_act = np.array([2.0, 0, 3.0, 0, 0, 1.0])
    res = steer_sae(lm, 1, ref, W_dec, freq, mean_act, n_latents=2, scale=0.5, seed=0, name="x")
    assert len(res.kl) == 2
    np.testing.assert_allclose(res.alphas, 0.5 * mean_act[res.latents])
    empty = steer_sae(lm, 1, ref, W_dec, np.zeros(6), mean_act, n_latents=2, scale=1.0, seed=0, name="x")
    assert len(empty.latents) == 0 and len(empty.kl) == 0


def test_suffix_steering_equals_full_forward(lm):
    """Steering from the recorded clean state (suffix only) = hooking the full forward."""
    ids = _ids(lm, n=3, t=12)
    vecs = torch.randn(4, lm.d_model, generator=torch.Generator().manual_seed(4)) * 3
    fast = steer_effects(lm, 1, clean_reference(lm, ids, batch_size=2, blocks=(1,)), vecs, batch_size=5)
    full = steer_effects(lm, 1, clean_reference(lm, ids, batch_size=2), vecs, batch_size=5)
    assert np.all(full[0] > 0)
    np.testing.assert_allclose(fast[0], full[0], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(fast[1], full[1], rtol=1e-4, atol=1e-6)


def test_bootstrap_ci_brackets_the_mean_and_shrinks_with_samples():
    rng = np.random.default_rng(0)
    small, large = rng.exponential(size=16), rng.exponential(size=1024)
    lo_s, hi_s = bootstrap_ci(small)
    lo_l, hi_l = bootstrap_ci(large)
    assert lo_s < small.mean() < hi_s and lo_l < large.mean() < hi_l
    assert hi_l - lo_l < (hi_s - lo_s) / 3
    assert bootstrap_ci(small) == bootstrap_ci(small)  # seeded
    assert np.isnan(bootstrap_ci(np.array([1.0]))[0])
