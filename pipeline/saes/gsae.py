"""g-SAE (Olmo et al. 2025): gradient-aware TopK selection (DESIGN §1).

    f  = |W_dec g|                      [B, n], detached (no training signal through it)
    s  = z + β · z ∘ f                  [B, n]
    S  = indices of the k largest s_i

What the decoder receives at S (``value_mode``):

- ``augmented``: ReLU(s_i) — the paper's y = TopK(z + β z ∘ |W_decᵀ∇ₓL|) read literally.
  Since 1 + β f_i > 0 for β ≥ 0, s_i has the sign of z_i, so ReLU(s_i) = ReLU(z_i)(1 + β f_i):
  the gradient also magnifies the value. Training signal flows through z only.
- ``selection``: ReLU(z_i) — the gradient only picks which latents fire.

ReLU is applied in both modes, exactly as in TopK, so a selected latent with a negative
score contributes 0. g is the raw gradient × ``grad_scale``. β = 0 returns TopK's code bit
for bit (s is z itself, not z + 0).
"""

from __future__ import annotations

import torch

from pipeline.saes import register
from pipeline.saes.base import SAE

VALUE_MODES = ("augmented", "selection")


@register("gsae")
class GSAE(SAE):
    """Gradient-aware selection; reads ``beta`` and ``value_mode``."""

    uses_grad = True
    grid_hparams = ("beta", "value_mode")

    def __init__(self, d_in: int, d_sae: int, k: int, **kwargs: object) -> None:
        kwargs.setdefault("value_mode", "augmented")
        super().__init__(d_in, d_sae, k, **kwargs)  # type: ignore[arg-type]
        if self.value_mode not in VALUE_MODES:
            raise ValueError(f"value_mode must be one of {VALUE_MODES}, got {self.value_mode!r}")
        if self.beta < 0:
            raise ValueError(f"beta must be >= 0, got {self.beta}")

    def scores(self, z: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor:
        """Selection scores s = z + β z ∘ |W_dec g|: z [B, n], grad [B, d] → [B, n]."""
        if self.beta == 0.0:
            return z
        if grad is None:
            raise ValueError("gsae SAE needs the loss gradient (grad=None given)")
        return z + self.beta * z * self.grad_factor(grad)

    def select(self, z: torch.Tensor, grad: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """z [B, n], grad [B, d] → indices [B, k] (top k of s), values [B, k] per value_mode."""
        s = self.scores(z, grad)
        top = torch.topk(s, self.k, dim=-1, sorted=False)
        if self.value_mode == "augmented":
            return top.indices, torch.relu(top.values)
        return top.indices, torch.relu(z.gather(1, top.indices))
