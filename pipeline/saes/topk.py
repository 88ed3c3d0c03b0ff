"""TopK SAE (Gao et al. 2024): S = the k largest z_i, a_i = ReLU(z_i) on S (DESIGN §1)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pipeline.saes.base import SAE, KHParams
from pipeline.saes.registry import register


@dataclass(frozen=True)
class TopKHParams(KHParams):
    """TopK reads only ``k``."""


@register("topk", TopKHParams)
class TopKSAE(SAE):
    """Plain per-token TopK."""

    uses_grad = False

    def select(self, z: torch.Tensor, grad: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """z [B, n] → indices [B, k] of the k largest z_i, values ReLU(z_i) [B, k]."""
        top = torch.topk(z, self.k, dim=-1, sorted=False)
        return top.indices, torch.relu(top.values)
