"""Suffix-only splicing equals full recomputation (tiny Llama and GPT-2 built in the test)."""

from __future__ import annotations

import pytest
import torch

from pipeline.core.config import ModelConfig
from pipeline.evaluate.splice import Edit, logits, sae_editor, splice_losses, zero_editor
from pipeline.lm.models import load_model
from pipeline.lm.suffix import PrefixCapture, suffix_logits


class _Out(tuple):
    @property
    def x_hat(self) -> torch.Tensor:
        return self[0]


class NoisySAE(torch.nn.Module):
    """A deterministic non-trivial 'reconstruction': x ↦ 0.7 x + a fixed direction (+ grad term)."""

    def __init__(self, d: int, seed: int) -> None:
        super().__init__()
        self.shift = torch.randn(d, generator=torch.Generator().manual_seed(seed))

    def forward(self, x: torch.Tensor, grad: torch.Tensor | None = None) -> _Out:
        out = 0.7 * x + self.shift + (0.0 if grad is None else 0.1 * grad)
        return _Out((out,))


def _ids(vocab: int, n: int, t: int, seed: int) -> torch.Tensor:
    ids = torch.randint(2, vocab, (n, t), generator=torch.Generator().manual_seed(seed))
    ids[:, 0] = 0
    return ids


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def lm(request, tiny_llama, tiny_gpt2):
    folder = tiny_llama if request.param == "llama" else tiny_gpt2
    return load_model(ModelConfig(name=str(folder), device="cpu"))


@pytest.mark.parametrize("block", [0, 2, 3])
def test_suffix_from_clean_state_gives_clean_logits(lm, block):
    ids = _ids(len(lm.tokenizer), 3, 16, seed=block)
    capture = PrefixCapture(lm, [block])
    with capture.active():
        full = logits(lm, ids)
    part = suffix_logits(lm, block, capture.states[block], ids, capture.tails[block])
    assert torch.allclose(part, full, atol=1e-5, rtol=0)
    # the blocks are restored: a plain forward is still the clean one
    assert torch.equal(logits(lm, ids), full)


def test_suffix_splice_equals_full_recomputation(lm):
    ids = _ids(len(lm.tokenizer), 7, 20, seed=5)
    grads = torch.randn(*ids.shape, lm.d_model, generator=torch.Generator().manual_seed(1))
    edits = {
        "a@1": Edit(1, sae_editor(NoisySAE(lm.d_model, 0), grads)),
        "b@1": Edit(1, sae_editor(NoisySAE(lm.d_model, 1), None)),
        "c@3": Edit(3, sae_editor(NoisySAE(lm.d_model, 2), grads)),
        "zero@1": Edit(1, zero_editor()),
        "zero@2": Edit(2, zero_editor()),
    }
    full = splice_losses(lm, ids, edits, batch_size=3, mode="full")
    fast = splice_losses(lm, ids, edits, batch_size=3, mode="suffix", edits_per_forward=2)
    assert fast.ce_clean == full.ce_clean
    for name in edits:
        assert abs(fast.ce[name] - full.ce[name]) <= 1e-4, name
        assert abs(fast.kl[name] - full.kl[name]) <= 1e-4, name
        assert full.ce[name] != pytest.approx(full.ce_clean, abs=1e-3), name  # the edits do change the loss
