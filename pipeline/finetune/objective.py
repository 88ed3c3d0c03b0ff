"""The KL fine-tune's objective: KL(p_clean ‖ p_spliced) through the LM's suffix, plus the MSE.

For a batch of contexts (ids [B, T]) with the clean residual state x [B, T, d] at the SAE's
block, positions 1..T−1 are replaced by the SAE's reconstruction x̂ (position 0 stays clean,
as in evaluation: the SAEs never see it) and only the blocks after the hook run
(:func:`pipeline.lm.suffix.differentiable_suffix_logits`), with autograd on, so the KL's
gradient reaches the SAE's parameters through the frozen LM. The objective is

    loss = kl_coef · KL + mse_coef · NMSE

- ``KL``: mean over the B·(T−1) predictions of positions 0..T−2 of
  KL(p_clean ‖ p_spliced) in nats (the evaluation's ``kl``; the prediction at position 0
  is unchanged by a causal model and contributes 0),
- ``NMSE``: Σ‖x − x̂‖² / Σ‖x − x̄‖² over the reconstructed rows (the batch's FVU), so that
  its scale does not depend on the model's activation norm.

With ``kl_coef = 0`` the suffix is not run (``kl`` is NaN): the MSE-only control, the same
extra tokens and optimiser without the downstream term, at the cost of the clean forward alone.

This is Karvonen's (2025, arXiv 2503.17272) end-to-end fine-tune of a trained SAE, applied
to every architecture of the registry: a g-SAE selects with the stored gradient as in
evaluation. The clean logits carry no gradient; they are computed once per batch and shared
by every SAE fine-tuned in the same pass.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from pipeline.lm.models import LoadedModel
from pipeline.lm.suffix import differentiable_suffix_logits
from pipeline.saes.base import SAE


class FinetuneLoss(NamedTuple):
    """One batch's objective (scalars; ``loss`` carries the graph)."""

    loss: torch.Tensor
    kl: torch.Tensor
    """Mean KL(p_clean ‖ p_spliced) per prediction, nats (NaN when ``kl_coef`` is 0: not computed)."""
    nmse: torch.Tensor
    """Σ‖x − x̂‖² / Σ‖x − x̄‖² over the reconstructed rows."""


def clean_log_probs(z_clean: torch.Tensor) -> torch.Tensor:
    """float32 log-probabilities [B, T−1, V] of the predictions at positions 0..T−2 (no gradient)."""
    return F.log_softmax(z_clean[:, :-1].detach().float(), dim=-1)


def finetune_loss(
    lm: LoadedModel,
    block: int,
    sae: SAE,
    clean: torch.Tensor,
    ids: torch.Tensor,
    logp_clean: torch.Tensor,
    *,
    grads: torch.Tensor | None = None,
    tail: tuple[Any, ...] | None = None,
    kl_coef: float = 1.0,
    mse_coef: float = 1.0,
) -> FinetuneLoss:
    """The objective for contexts ``ids`` [B, T] (module docstring).

    ``clean`` [B, T, d]: the clean state at block ``block``'s output; ``logp_clean``
    [B, T−1, V]: :func:`clean_log_probs` of the clean logits; ``grads`` [B, T, d]: the stored
    loss gradients (a gradient-aware SAE needs them); ``tail``: the block output's non-hidden
    part (:class:`pipeline.lm.suffix.PrefixCapture`).
    """
    x = clean[:, 1:].float()
    g = None if grads is None else grads[:, 1:].float()
    x_hat = sae(x, g).x_hat
    rows = x.reshape(-1, x.shape[-1])
    err = (rows - x_hat.reshape(rows.shape)).pow(2).sum()
    nmse = err / (rows - rows.mean(0)).pow(2).sum().clamp_min(torch.finfo(rows.dtype).tiny)
    if kl_coef == 0:  # the MSE-only control: the suffix would cost ~15x the rest and add nothing
        return FinetuneLoss(mse_coef * nmse, torch.tensor(float("nan")), nmse.detach())
    edited = torch.cat([clean[:, :1], x_hat.to(clean.dtype)], dim=1)
    z = differentiable_suffix_logits(lm, block, edited, ids, tail)
    logp = F.log_softmax(z[:, :-1], dim=-1)
    kl = (logp_clean.exp() * (logp_clean - logp)).sum(-1).mean()
    return FinetuneLoss(kl_coef * kl + mse_coef * nmse, kl.detach(), nmse.detach())
