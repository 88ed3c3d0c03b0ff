"""The training losses' batch figures: the normalised MSE (FVU) and the gradient loss term.

Both are ratios over one batch (B tokens, d dimensions, the trainer's scaled space) with the
same denominator, the batch's total variance Σ_b ‖x_b − x̄‖²:

    FVU_batch  = Σ_b ‖x_b − x̂_b‖²        / Σ_b ‖x_b − x̄‖²                 (Gao et al.)
    grad_loss  = Σ_b (g̃_b · (x_b − x̂_b))² / Σ_b ‖x_b − x̄‖²,   g̃ = γ g

``grad_loss`` is the squared first-order change of the next-token loss when x̂ replaces x
(x̂ the whole dictionary's reconstruction, also for a Matryoshka SAE; g the stored gradient
of the context's summed loss; the empirical-Fisher approximation of the KL splicing causes),
weighed by λ (``train.grid.grad_loss``) beside the reconstruction loss. Its normalisation is
the g-SAE score's (:mod:`pipeline.train.normalize`): γ = √d / mean‖g‖ gives the scaled
gradients mean norm √d, and for a residual r in general position relative to g̃,
E[(g̃ · r)²] = ‖g̃‖² ‖r‖² / d ≈ ‖r‖². So ``grad_loss`` ≈ FVU when the residuals ignore the
gradient, λ = 1 weighs the term like the MSE, and λ carries across models, layers and
widths as β does (no dependence on the raw sizes of x or g: both are divided out). It falls
below FVU when the residuals avoid the directions the loss is sensitive to — what the term
rewards. Under ``train.parallel: data`` each rank's share uses the global denominator
(:meth:`pipeline.train.distributed.DataParallel.share`), so the shares sum to the global figure.
"""

from __future__ import annotations

import torch


def batch_fvu(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Σ‖x − x̂‖² / Σ‖x − x̄‖² over a batch: [B, d], [B, d] → scalar."""
    denom = (x - x.mean(dim=0)).pow(2).sum().clamp_min(1e-12)
    return (x - x_hat).pow(2).sum() / denom


def batch_share(x: torch.Tensor, numerator: torch.Tensor) -> torch.Tensor:
    """``numerator`` / Σ‖x − x̄‖² over the batch x [B, d] (the FVU's denominator) → scalar."""
    return numerator / (x - x.mean(dim=0)).pow(2).sum().clamp_min(1e-12)


def downstream_sq(x: torch.Tensor, x_hat: torch.Tensor, g_scaled: torch.Tensor) -> torch.Tensor:
    """Σ_b (g̃_b · (x_b − x̂_b))²: x, x̂, g̃ [B, d] (g̃ = raw gradient × grad_scale) → scalar."""
    return ((x - x_hat) * g_scaled).sum(dim=1).pow(2).sum()
