"""First-letter absorption (pipeline/evaluate/absorption.py): planted absorption is found, a
clean SAE scores 0, the prompts run on a tiny Llama, and the config is checked."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pipeline.core.config import EvaluateConfig, ModelConfig
from pipeline.core.errors import ConfigError
from pipeline.evaluate.absorption import KEYS, LetterData, absorption_metrics, collect, sae_absorption
from pipeline.evaluate.probes import fit_dense_probe
from pipeline.lm.models import load_model
from pipeline.saes.topk import TopKSAE

N_PER, N_A, D = 20, 40, 48  # words per letter, words of letter "a" (half absorbed), width


def _letter_data() -> tuple[LetterData, list[int]]:
    """Activations 5·e_letter (+ 5·e_word for absorbed "a" words) and the absorbed rows."""
    g = torch.Generator().manual_seed(0)
    letters = torch.cat([torch.zeros(N_A, dtype=torch.long), torch.arange(1, 26).repeat_interleave(N_PER)])
    acts = 5.0 * F.one_hot(letters, D).float() + 0.05 * torch.randn(len(letters), D, generator=g)
    absorbed = list(range(0, N_A, 2))
    for j, row in enumerate(absorbed):
        acts[row, 26 + j] += 5.0
    train = torch.rand(len(letters), generator=g) < 0.6
    w, b = fit_dense_probe(acts[train], F.one_hot(letters[train], 26))
    return LetterData([f" w{i}" for i in range(len(letters))], letters, acts, None, train, w, b), absorbed


def _sae(absorbing: bool) -> TopKSAE:
    """k = 1: latent c is letter c; with ``absorbing``, latent 26 + j is absorbed word j's own
    latent, (e_a + e_word)/√2, which out-scores the "a" latent on that word."""
    n = 26 + (N_A // 2 if absorbing else 0)
    dec = torch.zeros(n, D)
    dec[:26, :26] = torch.eye(26)
    for j in range(n - 26):
        dec[26 + j, 0] = dec[26 + j, 26 + j] = 2**-0.5
    sae = TopKSAE(D, n, k=1)
    with torch.no_grad():
        sae.W_dec.copy_(dec)
        sae.W_enc.copy_(dec.T)
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


def test_planted_absorption_is_detected():
    data, absorbed = _letter_data()
    m = sae_absorption(_sae(absorbing=True), data, min_words=3)
    assert m["absorption_letters"] >= 20
    # only letter "a" absorbs: at most the absorbed share of its test words (word latents the
    # k-sparse probe picks up count as split latents, not absorbers), each fully (fraction 1)
    share = sum(1 for r in absorbed if not data.train[r]) / int((~data.train[:N_A]).sum())
    assert 0.1 < m["absorption_rate"] * m["absorption_letters"] <= share + 1e-6
    assert m["absorption_full"] > 0  # SAEBench: full uses cos >= 0.025, the fraction cos >= 0.1
    assert m["absorption_rate"] > 0.005
    assert m["absorption_grad"] == 0.0


def test_clean_sae_scores_zero():
    data, _ = _letter_data()
    clean = data
    clean.acts = clean.acts.clone()
    clean.acts[:, 26:] = 0.0  # no word features: latent "a" fires on every "a" word
    m = sae_absorption(_sae(absorbing=False), clean, min_words=3)
    assert m["absorption_letters"] >= 20
    assert m["absorption_rate"] == 0.0 and m["absorption_full"] == 0.0
    assert m["absorption_split_latents"] == pytest.approx(1.0)


def test_prompts_on_tiny_llama(tiny_llama):
    lm = load_model(ModelConfig(name=str(tiny_llama), device="cpu"))
    data = collect(lm, 1, 2000, seed=0, with_grad=True, batch_size=8)
    assert data.acts.shape == (len(data.words), lm.d_model) and data.grads is not None
    assert torch.isfinite(data.grads).all() and data.grads.abs().sum() > 0
    # the activation does not depend on the question after the word (causal), only on prefix + word
    sae = TopKSAE(lm.d_model, 64, k=4)
    out = absorption_metrics(lm, [("t", sae, 1)], words=100, min_words=1, seed=0)
    assert {"absorption_letters", "absorption_grad"} <= set(out["t"]) <= set(KEYS)
    assert all(math.isfinite(v) for v in out["t"].values())


def test_config():
    assert EvaluateConfig(absorption_words=0).absorption_words == 0
    for bad in ({"absorption_words": -1}, {"absorption_words": 10}, {"absorption_min_words": 0}):
        with pytest.raises(ConfigError):
            EvaluateConfig(**bad)
