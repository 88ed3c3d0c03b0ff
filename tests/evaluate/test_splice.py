"""Splicing: an exact reconstruction changes nothing; zero ablation matches a direct computation."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.core.config import ModelConfig
from pipeline.evaluate.metrics import loss_recovered
from pipeline.evaluate.splice import Edit, sae_editor, splice_losses, zero_editor
from pipeline.lm.models import load_model


class _Out(NamedTuple):
    x_hat: torch.Tensor


class IdentitySAE(torch.nn.Module):
    """An 'SAE' that reconstructs its input exactly (and checks it got a gradient of the right shape)."""

    def forward(self, x: torch.Tensor, grad: torch.Tensor | None = None) -> _Out:
        assert grad is None or grad.shape == x.shape
        return _Out(x)


@pytest.fixture(scope="module")
def lm(tiny_llama):
    return load_model(ModelConfig(name=str(tiny_llama), device="cpu"))


def _ids(lm, n: int = 5, t: int = 12, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, len(lm.tokenizer), (n, t), generator=g)
    ids[:, 0] = 0
    return ids


def test_identity_splice_is_exact(lm):
    ids = _ids(lm)
    grads = torch.randn(*ids.shape, lm.d_model)
    res = splice_losses(lm, ids, {"id": Edit(2, sae_editor(IdentitySAE(), grads))}, batch_size=2)
    assert res.ce["id"] == pytest.approx(res.ce_clean, abs=1e-6)
    assert res.kl["id"] == pytest.approx(0.0, abs=1e-7)
    assert res.predictions == ids.numel() - ids.shape[0]


def _direct_ce(lm, ids: torch.Tensor, block: int | None) -> float:
    def zero_tail(_mod, _inp, out):
        h = out[0] if isinstance(out, tuple) else out
        h = h.clone()
        h[:, 1:] = 0
        return (h, *out[1:]) if isinstance(out, tuple) else h

    handle = lm.blocks[block].register_forward_hook(zero_tail) if block is not None else None
    try:
        with torch.no_grad():
            logits = lm.model(input_ids=ids).logits
    finally:
        if handle is not None:
            handle.remove()
    V = logits.shape[-1]
    return float(F.cross_entropy(logits[:, :-1].reshape(-1, V), ids[:, 1:].reshape(-1)))


def test_zero_ablation_matches_direct_computation(lm):
    ids = _ids(lm, seed=1)
    res = splice_losses(lm, ids, {"zero": Edit(1, zero_editor())}, batch_size=3)
    assert res.ce_clean == pytest.approx(_direct_ce(lm, ids, None), rel=1e-5)
    assert res.ce["zero"] == pytest.approx(_direct_ce(lm, ids, 1), rel=1e-5)
    assert res.kl["zero"] > 0


def test_stored_activation_comparison(lm):
    ids = _ids(lm, n=2, seed=2)
    with torch.no_grad():
        hidden = lm.model(input_ids=ids, output_hidden_states=True).hidden_states[2]  # output of block 1
    res = splice_losses(lm, ids, {}, stored_acts={1: hidden})
    assert res.act_rel_err[1] < 1e-5


@pytest.mark.parametrize(
    ("clean", "spliced", "zero", "expected"),
    [(2.0, 2.5, 3.0, 0.5), (2.0, 2.0, 4.0, 1.0), (2.0, 4.0, 4.0, 0.0), (1.0, 0.5, 2.0, 1.5)],
)
def test_loss_recovered_formula(clean, spliced, zero, expected):
    assert loss_recovered(clean, spliced, zero) == pytest.approx(expected)


def test_loss_recovered_degenerate_is_nan():
    assert np.isnan(loss_recovered(2.0, 2.0, 2.0))


def test_bfloat16_splice_shares_the_clean_rounding(lm):
    """Under autocast the clean logits come from the same bf16 suffix as the edits: an exact
    reconstruction still has zero KL, while the figures move from the float32 ones."""
    ids = _ids(lm)
    edits = {"id": Edit(1, sae_editor(IdentitySAE(), None)), "zero": Edit(1, zero_editor())}
    fp32 = splice_losses(lm, ids, edits, batch_size=2)
    bf16 = splice_losses(lm, ids, edits, batch_size=2, autocast="bfloat16")
    assert bf16.kl["id"] == pytest.approx(0.0, abs=1e-6)
    assert bf16.ce["id"] == pytest.approx(bf16.ce_clean, abs=1e-6)
    assert bf16.ce_clean != fp32.ce_clean
    assert bf16.ce["zero"] == pytest.approx(fp32.ce["zero"], rel=0.05)
    assert bf16.kl["zero"] == pytest.approx(fp32.kl["zero"], rel=0.05)


def test_counted_sums_per_context(lm):
    """With every position counted, the per-context CE sums add up to our mean; KL adds the last
    position's (ours stops at T − 2); an uncounted position drops out of its context's sums."""
    ids = _ids(lm, seed=4)
    n, t = ids.shape
    edits = {"zero": Edit(1, zero_editor())}
    count = torch.ones(n, t, dtype=torch.bool)
    res = splice_losses(lm, ids, edits, batch_size=2, count=count)
    assert res.counted is not None and res.counted.ce["zero"].shape == (n,)
    assert res.counted.ce_clean.sum() / (n * (t - 1)) == pytest.approx(res.ce_clean, rel=1e-12)
    assert res.counted.ce["zero"].sum() / (n * (t - 1)) == pytest.approx(res.ce["zero"], rel=1e-12)
    assert res.counted.kl["zero"].sum() > res.kl["zero"] * n * (t - 1) > 0
    count[2, 3] = False
    less = splice_losses(lm, ids, edits, batch_size=2, count=count)
    assert less.counted is not None
    logits = lm.model(input_ids=ids[2:3]).logits[0, 3].float()
    ce_23 = float(torch.logsumexp(logits, -1) - logits[ids[2, 4]])
    assert res.counted.ce_clean[2] - less.counted.ce_clean[2] == pytest.approx(ce_23, rel=1e-4)
    assert np.array_equal(np.delete(less.counted.ce_clean, 2), np.delete(res.counted.ce_clean, 2))
