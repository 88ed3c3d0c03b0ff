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

from dataclasses import dataclass
from typing import Literal

import torch

from pipeline.saes.base import SAE, KHParams
from pipeline.saes.registry import register

ValueMode = Literal["augmented", "selection"]
VALUE_MODES: tuple[str, ...] = ("augmented", "selection")


@dataclass(frozen=True)
class GSAEHParams(KHParams):
    """g-SAE hyper-parameters: ``k`` plus the gradient weight and the value mode."""

    beta: float = 0.0
    """Gradient weight β in s = z + β z ∘ |W_dec g| (0 = plain TopK)."""
    value_mode: ValueMode = "augmented"
    """What the decoder receives at the selected latents: ReLU(s_i) or ReLU(z_i)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.value_mode not in VALUE_MODES:
            raise ValueError(f"value_mode must be one of {VALUE_MODES}, got {self.value_mode!r}")
        if not self.beta >= 0:
            raise ValueError(f"beta must be >= 0, got {self.beta}")
        object.__setattr__(self, "beta", float(self.beta))


class GradientScoring:
    """The g-SAE score and values, shared by every gradient-aware architecture (a mixin of
    :class:`~pipeline.saes.base.SAE` subclasses whose hparams are :class:`GSAEHParams`)."""

    architecture: str
    hp: GSAEHParams

    def scores(self, z: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor:
        """Selection scores s = z + β z ∘ |W_dec g|: z [B, n], grad [B, d] → [B, n] (z itself at β = 0)."""
        if self.hp.beta == 0.0:
            return z
        if grad is None:
            raise ValueError(f"{self.architecture} SAE needs the loss gradient (grad=None given)")
        return z + self.hp.beta * z * self.grad_factor(grad)  # type: ignore[attr-defined]

    def gradient_free_twin(self) -> SAE | None:
        """The same weights at β = 0 (None when β is 0 already: the SAE is its own twin)."""
        if self.hp.beta == 0.0:
            return None
        return self.with_hparams(beta=0.0)  # type: ignore[attr-defined,no-any-return]

    def values_at(self, z: torch.Tensor, s: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """What the decoder receives at ``indices`` [B, m]: ReLU(s_i) (augmented) or ReLU(z_i)."""
        return torch.relu((s if self.hp.value_mode == "augmented" else z).gather(1, indices))


@register("gsae", GSAEHParams)
class GSAE(GradientScoring, SAE):
    """Gradient-aware per-token top-k; reads ``beta`` and ``value_mode``."""

    uses_grad = True
    hp: GSAEHParams

    def select(self, z: torch.Tensor, grad: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """z [B, n], grad [B, d] → indices [B, k] (top k of s), values [B, k] per value_mode."""
        s = self.scores(z, grad)
        top = torch.topk(s, self.k, dim=-1, sorted=False)
        if self.hp.value_mode == "augmented":
            return top.indices, torch.relu(top.values)
        return top.indices, torch.relu(z.gather(1, top.indices))
