"""Matryoshka BatchTopK SAE (Bussmann et al. 2025, "Learning Multi-Level Features with
Matryoshka Sparse Autoencoders"): nested dictionary prefixes, each reconstructing on its own.

The n latents are split, in index order, into G consecutive groups of sizes set by
``group_fractions`` (f_1, ..., f_G, summing to 1): group j ends at latent
e_j = round(n · (f_1 + … + f_j)) (e_G = n), so prefix m is the latents [0, e_m). Selection is
BatchTopK's over the whole dictionary (:mod:`pipeline.saes.batchtopk`: the k·B largest
positive z over the batch in training, z_i > θ at inference), and so are the values. Only the
training loss changes: with x̂_{≤m} = Σ_{selected i < e_m} a_i W_dec[i] + b_dec (the active
latents of the first m groups, plus the decoder bias),

    loss = Σ_{m=1}^{G} FVU_batch(x̂_{≤m}, x)      (+ AuxK and the gradient term, as for every SAE)

with FVU_batch the trainer's normalised MSE (:mod:`pipeline.train.losses`); x̂_{≤G} is the
ordinary reconstruction x̂. Early groups must reconstruct alone, so they learn general
features and later ones refine them (less feature absorption). The sum is unweighted, as in
the paper and SAELens's ``matryoshka_batchtopk`` trainer.

At inference a Matryoshka BatchTopK SAE is a BatchTopK SAE (threshold θ on z, full
dictionary): the saved files are BatchTopK's plus ``group_fractions`` in cfg.json, and
``gsae export --format saelens`` writes it as SAELens's JumpReLU SAE, as SAELens itself saves
its Matryoshka BatchTopK SAEs. :class:`NestedGroups` holds the nested decoding; the
gradient-aware twin (:mod:`pipeline.saes.gmatryoshka`) reuses it on the g-SAE score.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from pipeline.saes.base import KHParams
from pipeline.saes.batchtopk import BatchTopKHParams, BatchTopKSAE
from pipeline.saes.registry import register

DEFAULT_GROUP_FRACTIONS: tuple[float, ...] = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 17 / 32)
"""Each group twice the previous one, the last taking the rest (exact binary fractions)."""


def group_ends(fractions: tuple[float, ...], d_sae: int) -> list[int]:
    """End index (exclusive) of each group: e_j = round(d_sae · Σ_{i≤j} f_i), e_G = d_sae.

    ``ValueError`` when a group would be empty at this width."""
    ends, total = [], 0.0
    for f in fractions[:-1]:
        total += f
        ends.append(round(d_sae * total))
    ends.append(d_sae)
    sizes = [b - a for a, b in zip([0, *ends[:-1]], ends, strict=True)]
    if min(sizes) < 1:
        raise ValueError(f"group_fractions {list(fractions)} give an empty group at d_sae={d_sae}")
    return ends


@dataclass(frozen=True)
class MatryoshkaHParams(BatchTopKHParams):
    """BatchTopK's ``k`` and ``threshold_decay`` plus the nested groups."""

    group_fractions: tuple[float, ...] = DEFAULT_GROUP_FRACTIONS
    """Fractions of the dictionary in each nested group, in latent order (positive, summing to 1)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        fractions = self.group_fractions
        if isinstance(fractions, (str, bytes)) or not hasattr(fractions, "__iter__"):
            raise ValueError(f"group_fractions must be a list of numbers, got {fractions!r}")
        values = tuple(float(f) for f in fractions)
        if not values or any(not (f > 0) for f in values):
            raise ValueError(f"group_fractions must be positive numbers, got {list(fractions)}")
        if not math.isclose(sum(values), 1.0, rel_tol=0.0, abs_tol=1e-6):
            raise ValueError(f"group_fractions must sum to 1, got {list(fractions)} (sum {sum(values):g})")
        object.__setattr__(self, "group_fractions", values)  # a list from cfg.json → hashable tuple


class NestedGroups:
    """Nested decoding of a dictionary split into consecutive groups (a mixin of
    :class:`~pipeline.saes.base.SAE` subclasses whose hparams carry ``group_fractions``)."""

    hp: MatryoshkaHParams
    group_end: torch.Tensor

    def __init__(self, d_in: int, d_sae: int, *args: Any, **kwargs: Any) -> None:
        super().__init__(d_in, d_sae, *args, **kwargs)  # type: ignore[call-arg]
        ends = group_ends(self.hp.group_fractions, d_sae)
        # derived from the hyper-parameters: not saved, moves with the module
        self.register_buffer("group_end", torch.tensor(ends[:-1], dtype=torch.int64), persistent=False)  # type: ignore[attr-defined]

    @classmethod
    def check_width(cls, hp: KHParams, d_sae: int) -> None:
        """k ≤ d_sae and no empty group at this width."""
        super().check_width(hp, d_sae)  # type: ignore[misc]
        group_ends(hp.group_fractions, d_sae)  # type: ignore[attr-defined]

    def nested_decodes(self, indices: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(x̂_{≤1}, ..., x̂_{≤G}): indices, values [B, m] → G tensors [B, d]; x̂_{≤G} = x̂.

        Prefix m decodes the selected latents of groups < m only (the others weighted 0), so
        the gradient of Σ_m FVU(x̂_{≤m}) reaches each value once per prefix containing it."""
        group = torch.bucketize(indices, self.group_end, right=True)  # [B, m] group of each slot
        decode = self.decode_sparse  # type: ignore[attr-defined]
        inner = tuple(
            decode(indices, torch.where(group < m, values, 0.0)) for m in range(1, self.group_end.numel() + 1)
        )
        return (*inner, decode(indices, values))


@register("matryoshka", MatryoshkaHParams)
class MatryoshkaSAE(NestedGroups, BatchTopKSAE):
    """BatchTopK selection and inference, nested-prefix training loss."""

    hp: MatryoshkaHParams
