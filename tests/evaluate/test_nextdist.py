"""CE and KL from logits (pipeline.evaluate.nextdist) against the log-softmax definitions."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pipeline.evaluate import nextdist


def _logits(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 4


def test_reference_matches_log_softmax() -> None:
    z = _logits(3, 5, 50)
    ref = nextdist.reference(z)
    logp = F.log_softmax(z.double(), dim=-1)
    assert torch.allclose(ref.p.double(), logp.exp(), atol=1e-6)
    assert torch.allclose(ref.mass.double(), torch.ones(3, 5, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(ref.lse.double(), torch.logsumexp(z.double(), -1), atol=1e-5)


def test_edited_ce_and_kl_match_definitions_for_stacked_edits() -> None:
    b, pos, v, j = 2, 4, 40, 3
    clean = _logits(b, pos, v)
    edits = _logits(j * b, pos, v, seed=1)
    target = torch.randint(0, v, (b, pos), generator=torch.Generator().manual_seed(2))
    ref = nextdist.reference(clean)
    lse, kl = nextdist.edited(edits, ref)
    ce = nextdist.target_ce(edits, lse, target.repeat(j, 1))
    logp = F.log_softmax(clean.double(), -1)
    for e in range(j):
        logq = F.log_softmax(edits[e * b : (e + 1) * b].double(), -1)
        want_kl = (logp.exp() * (logp - logq)).sum(-1)
        want_ce = -logq.gather(-1, target.unsqueeze(-1)).squeeze(-1)
        assert torch.allclose(kl[e * b : (e + 1) * b].double(), want_kl, atol=2e-5)
        assert torch.allclose(ce[e * b : (e + 1) * b].double(), want_ce, atol=2e-5)


def test_identical_logits_have_zero_kl_and_the_clean_ce() -> None:
    z = _logits(2, 3, 30)
    ref = nextdist.reference(z)
    lse, kl = nextdist.edited(z.clone(), ref)
    assert kl.abs().max() < 1e-5
    target = torch.zeros(2, 3, dtype=torch.long)
    assert nextdist.target_ce(z, lse, target).sum() == pytest.approx(
        float(nextdist.target_ce(z, ref.lse, target).sum()), abs=1e-5
    )


def test_edited_reads_a_position_slice_of_a_larger_tensor() -> None:
    """Evaluation passes ``z[:, :-1]`` (a strided view): the result equals a contiguous copy's."""
    clean, edits = _logits(2, 6, 30), _logits(4, 6, 30, seed=3)
    ref = nextdist.reference(clean[:, :-1])
    lse_v, kl_v = nextdist.edited(edits[:, :-1], ref)
    lse_c, kl_c = nextdist.edited(edits[:, :-1].contiguous(), ref)
    assert torch.equal(lse_v, lse_c) and torch.allclose(kl_v, kl_c)


def test_kl_keeps_its_precision_when_logits_are_large_and_the_vocabulary_wide() -> None:
    """LM logits sit ~30 nats above zero over ~50k tokens: a form that sums logits (not their
    change) loses ~1e-2 nats per position in float32, ~1 % of a small KL."""
    clean = _logits(1, 4, 50_000) + 30.0
    edit = clean + 0.05 * _logits(1, 4, 50_000, seed=5)
    ref = nextdist.reference(clean)
    _, kl = nextdist.edited(edit, ref)
    logp, logq = F.log_softmax(clean.double(), -1), F.log_softmax(edit.double(), -1)
    exact = (logp.exp() * (logp - logq)).sum(-1)
    assert torch.allclose(kl.double(), exact, rtol=1e-3, atol=1e-6)
