"""Gradient-aware BatchTopK: BatchTopK's batch-level selection on the g-SAE score.

    s  = z + β · z ∘ |W_dec g|             (the g-SAE score, :class:`~pipeline.saes.gsae.GradientScoring`)
    training:   S = the k·B largest positive s_{b,i} over the batch
    inference:  latent i fires when s_i > θ

with values per ``value_mode`` (ReLU(s_i) or ReLU(z_i), as the g-SAE), θ estimated from the
selected scores exactly as :mod:`pipeline.saes.batchtopk` does from z. Since
s = z(1 + β|W_dec g|) has the sign of z, the positive scores are the positive pre-activations.

The threshold is on the score, so inference needs g, as every g-SAE's does: evaluation
feeds the stored clean gradient of each held-out token (DESIGN §3), and a call without a
gradient raises (β > 0). The same training also estimates ``threshold_beta0`` from the
β = 0 batch selection of z; the ``@beta0`` twin (same weights, no gradient) thresholds z
with it, and ``selection_shift`` counts selections outside that z-only selection (the
batch top-k·B of z when training, z > threshold_beta0 at inference). At β = 0 the model is
BatchTopK bit for bit (s is z itself; both thresholds are equal).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pipeline.saes.base import SAE
from pipeline.saes.batchtopk import BatchTopKHParams, BatchTopKSAE, batch_mask
from pipeline.saes.gsae import GradientScoring, GSAEHParams
from pipeline.saes.registry import register


@dataclass(frozen=True)
class GBatchTopKHParams(GSAEHParams, BatchTopKHParams):
    """g-SAE hyper-parameters (``k``, ``beta``, ``value_mode``) plus BatchTopK's ``threshold_decay``."""


@register("gbatchtopk", GBatchTopKHParams)
class GBatchTopKSAE(GradientScoring, BatchTopKSAE):
    """BatchTopK selection on the g-SAE score."""

    hp: GBatchTopKHParams

    uses_grad = True
    thresholds = ("threshold", "threshold_beta0")

    @torch.no_grad()
    def update_thresholds(self, z: torch.Tensor, s: torch.Tensor, mask: torch.Tensor) -> None:
        """θ from the selected scores, θ₀ from the β = 0 selection of z (the same when β = 0)."""
        valid = mask.any()
        self._update("threshold", s, mask, valid)
        self._update("threshold_beta0", z, mask if s is z else batch_mask(z, self.k), valid)
        self.threshold_steps += valid.long()
        self._correct("threshold")
        self._correct("threshold_beta0")

    def gradient_free_twin(self) -> SAE | None:
        """The same weights at β = 0, thresholding z with ``threshold_beta0``."""
        twin = super().gradient_free_twin()
        if twin is not None:
            twin.threshold.copy_(self.threshold_beta0)  # type: ignore[operator]
        return twin
