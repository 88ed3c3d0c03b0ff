"""Gradient-aware Matryoshka BatchTopK: the nested-prefix loss on the g-SAE's batch selection.

    s  = z + β · z ∘ |W_dec g|          (the g-SAE score, :class:`~pipeline.saes.gsae.GradientScoring`)
    training:   S = the k·B largest positive s_{b,i} over the batch; loss = Σ_m FVU(x̂_{≤m}, x)
    inference:  latent i fires when s_i > θ (needs g)

Selection, values (``value_mode``), both thresholds (θ on s, ``threshold_beta0`` on z for the
``@beta0`` twin) and ``selection_shift`` are :mod:`pipeline.saes.gbatchtopk`'s; the nested
groups and their loss are :mod:`pipeline.saes.matryoshka`'s. At β = 0 it is ``matryoshka``
bit for bit. No SAELens architecture thresholds a gradient-aware score, so ``gsae export``
refuses it (as it refuses ``gbatchtopk``).
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.saes.gbatchtopk import GBatchTopKSAE
from pipeline.saes.gsae import GSAEHParams
from pipeline.saes.matryoshka import MatryoshkaHParams, NestedGroups
from pipeline.saes.registry import register


@dataclass(frozen=True)
class GMatryoshkaHParams(GSAEHParams, MatryoshkaHParams):
    """g-SAE hyper-parameters (``k``, ``beta``, ``value_mode``) plus Matryoshka's
    ``threshold_decay`` and ``group_fractions``."""


@register("gmatryoshka", GMatryoshkaHParams)
class GMatryoshkaSAE(NestedGroups, GBatchTopKSAE):
    """BatchTopK selection on the g-SAE score, nested-prefix training loss."""

    hp: GMatryoshkaHParams  # type: ignore[assignment]
