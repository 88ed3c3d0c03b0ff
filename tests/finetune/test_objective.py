"""The KL fine-tune's objective against a direct computation: a full forward with a hook, no suffix code."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cache.reader import read_rows
from pipeline.core.config import ModelConfig
from pipeline.finetune.objective import clean_log_probs, finetune_loss
from pipeline.lm.models import load_model
from pipeline.lm.suffix import PrefixCapture
from pipeline.saes.io import load_sae

HOOK, BLOCK, T = "model.layers.1", 1, 32


def _direct(lm, sae, ids, grads, kl_coef, mse_coef):
    """The objective from two plain forwards of the whole model, the edit done by a forward hook."""
    with torch.no_grad():
        logp_clean = F.log_softmax(lm.model(input_ids=ids).logits[:, :-1].float(), dim=-1)
    seen = {}

    def hook(_mod, _inp, out):
        hidden = out[0] if isinstance(out, tuple) else out
        x = hidden[:, 1:]
        x_hat = sae(x, None if grads is None else grads[:, 1:]).x_hat
        seen["x"], seen["x_hat"] = x, x_hat
        new = torch.cat([hidden[:, :1], x_hat], dim=1)
        return (new, *out[1:]) if isinstance(out, tuple) else new

    handle = lm.blocks[BLOCK].register_forward_hook(hook)
    try:
        logp = F.log_softmax(lm.model(input_ids=ids).logits[:, :-1].float(), dim=-1)
    finally:
        handle.remove()
    kl = F.kl_div(logp, logp_clean, log_target=True, reduction="none").sum(-1).mean()
    x, x_hat = seen["x"].reshape(-1, seen["x"].shape[-1]), seen["x_hat"].reshape(-1, seen["x"].shape[-1])
    nmse = ((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
    return kl_coef * kl + mse_coef * nmse, kl.detach(), nmse.detach()


@pytest.mark.parametrize("variant", ["topk-k4-x2-s0", "gsae-k4-b1-x2-aug-s0"])
def test_loss_and_gradients_equal_a_direct_computation(inspected_project, tiny_llama, variant):
    lm = load_model(ModelConfig(name=str(tiny_llama), device="cpu"))
    sae, _ = load_sae(inspected_project.root / "saes" / variant)
    tokens, _, grads = read_rows(inspected_project.train_store, HOOK, 0, 4 * T)
    ids = torch.from_numpy(tokens.astype(np.int64)).view(4, T)
    g = torch.from_numpy(grads).view(4, T, -1) if sae.uses_grad else None

    capture = PrefixCapture(lm, [BLOCK])
    with torch.no_grad(), capture.active():
        z_clean = lm.model(input_ids=ids).logits
    ours_sae, ref_sae = copy.deepcopy(sae).requires_grad_(True), copy.deepcopy(sae).requires_grad_(True)
    ours = finetune_loss(
        lm, BLOCK, ours_sae, capture.states[BLOCK], ids, clean_log_probs(z_clean),
        grads=g, tail=capture.tails[BLOCK], kl_coef=0.7, mse_coef=0.3,
    )  # fmt: skip
    ours.loss.backward()
    loss, kl, nmse = _direct(lm, ref_sae, ids, g, 0.7, 0.3)
    loss.backward()

    assert float(kl) > 1e-4  # the edit changes the output: the comparison is not 0 == 0
    assert float(ours.kl) == pytest.approx(float(kl), rel=1e-4, abs=1e-7)
    assert float(ours.nmse) == pytest.approx(float(nmse), rel=1e-5)
    assert float(ours.loss.detach()) == pytest.approx(float(loss.detach()), rel=1e-4)
    for name, p in ours_sae.named_parameters():
        q = dict(ref_sae.named_parameters())[name]
        assert p.grad is not None and float(p.grad.abs().max()) > 0, name
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-3, atol=1e-6 * float(q.grad.abs().max()), msg=name)


def test_the_lm_gets_no_gradient(inspected_project, tiny_llama):
    lm = load_model(ModelConfig(name=str(tiny_llama), device="cpu"))
    sae, _ = load_sae(inspected_project.root / "saes" / "topk-k4-x2-s0")
    sae.requires_grad_(True)
    tokens, _, _ = read_rows(inspected_project.train_store, HOOK, 0, 2 * T)
    ids = torch.from_numpy(tokens.astype(np.int64)).view(2, T)
    capture = PrefixCapture(lm, [BLOCK])
    with torch.no_grad(), capture.active():
        z = lm.model(input_ids=ids).logits
    finetune_loss(
        lm, BLOCK, sae, capture.states[BLOCK], ids, clean_log_probs(z), tail=capture.tails[BLOCK]
    ).loss.backward()
    assert all(p.grad is None for p in lm.model.parameters())


def test_without_the_kl_term_the_suffix_is_skipped_and_the_gradient_is_the_mses(
    inspected_project, tiny_llama
):
    """kl_coef = 0 (the MSE-only control): the loss and its gradients are the NMSE's alone, and
    no block after the hook runs."""
    lm = load_model(ModelConfig(name=str(tiny_llama), device="cpu"))
    sae, _ = load_sae(inspected_project.root / "saes" / "topk-k4-x2-s0")
    tokens, _, _ = read_rows(inspected_project.train_store, HOOK, 0, 4 * T)
    ids = torch.from_numpy(tokens.astype(np.int64)).view(4, T)
    capture = PrefixCapture(lm, [BLOCK])
    with torch.no_grad(), capture.active():
        z_clean = lm.model(input_ids=ids).logits
    ran = []
    handles = [b.register_forward_hook(lambda *_: ran.append(1)) for b in lm.blocks[BLOCK + 1 :]]
    ours_sae, ref_sae = copy.deepcopy(sae).requires_grad_(True), copy.deepcopy(sae).requires_grad_(True)
    try:
        ours = finetune_loss(
            lm, BLOCK, ours_sae, capture.states[BLOCK], ids, clean_log_probs(z_clean),
            tail=capture.tails[BLOCK], kl_coef=0.0, mse_coef=0.5,
        )  # fmt: skip
    finally:
        for h in handles:
            h.remove()
    ours.loss.backward()
    _, _, nmse = _direct(lm, ref_sae, ids, None, 0.0, 0.5)
    x = capture.states[BLOCK][:, 1:].reshape(-1, capture.states[BLOCK].shape[-1])
    x_hat = ref_sae(x, None).x_hat
    (0.5 * ((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()).backward()

    assert not ran and np.isnan(float(ours.kl))
    assert float(ours.loss.detach()) == pytest.approx(0.5 * float(nmse), rel=1e-5)
    for name, p in ours_sae.named_parameters():
        q = dict(ref_sae.named_parameters())[name]
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-7 * float(q.grad.abs().max()), msg=name)
