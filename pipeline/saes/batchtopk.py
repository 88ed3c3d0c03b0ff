"""BatchTopK SAE (Bussmann et al. 2024): top k·B pre-activations across the batch (DESIGN §1).

Training (module in ``train()`` mode), for a batch of B tokens:

    S  = the k·B largest positive z_{b,i} over the whole batch    # per-token L0 varies, mean ≤ k
    a  = ReLU(z) on S, 0 elsewhere

and θ, the inference threshold, is a running estimate of the smallest selected value:
m_t = min_{(b,i) ∈ S} z_{b,i} per step, θ = bias-corrected exponential average of m_t with
decay ``threshold_decay`` (the paper averages the batch minima; the decay lets the estimate
follow the encoder as it trains). Inference (``eval()`` mode): latent i fires when z_i > θ,
a_i = z_i, token by token, so a loaded SAE needs no batch. θ is a buffer (checkpoints keep
it) and is written to cfg.json as ``threshold`` in raw-activation units (÷ act_scale, exact:
a power of two). An SAE never trained (θ unset) refuses inference rather than guess.

:meth:`select` returns per-token rows padded to the batch's largest count: indices [B, m]
with m = max_b |S_b| (one host synchronisation per call), padding slots hold distinct
unselected latents with value 0, so :meth:`~pipeline.saes.base.SAE.decode_sparse` and the
dense code are exact. The score being thresholded is :meth:`scores` (z here); the
gradient-aware twin (:mod:`pipeline.saes.gbatchtopk`) swaps in the g-SAE score.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from pipeline.saes.base import SAE, KHParams
from pipeline.saes.registry import register


@dataclass(frozen=True)
class BatchTopKHParams(KHParams):
    """BatchTopK: ``k`` (mean active latents per token) and the threshold estimate's decay."""

    threshold_decay: float = 0.99
    """Decay of the running average of the per-batch minimum selected value that gives θ."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.threshold_decay < 1.0:
            raise ValueError(f"threshold_decay must be in [0, 1), got {self.threshold_decay}")


SAMPLE_STRIDE = 17
"""Stride of the sample that bounds the batch top-k from below (prime: it visits every latent)."""


def batch_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """[B, n] bool: the k·B largest *positive* entries of ``scores`` [B, n] over the whole batch."""
    flat = scores.reshape(-1)
    kb = min(k * scores.shape[0], flat.numel())
    mask = torch.zeros_like(flat, dtype=torch.bool)
    candidates = _candidates(flat, kb) if flat.device.type == "cpu" else None
    if candidates is None:
        top = torch.topk(flat, kb, sorted=False)
        mask[top.indices] = top.values > 0
    else:
        top = torch.topk(flat[candidates], kb, sorted=False)
        mask[candidates[top.indices]] = top.values > 0
    return mask.view_as(scores)


def _candidates(flat: torch.Tensor, kb: int) -> torch.Tensor | None:
    """Flat indices of a superset of the ``kb`` largest entries, or None when no cheap one is found.

    A full ``torch.topk`` of k·B = 65,536 among 9.4M scores is most of a CPU BatchTopK step.
    A strided sample's order statistic gives a value t that about 1.25·k·B entries exceed;
    when at least k·B do (checked, exactly), every one of the k·B largest is among them, and
    the top-k runs over those alone. The selected set is the same (the order of equal
    values aside, as in any top-k)."""
    sample = flat[::SAMPLE_STRIDE]
    rank = min(sample.numel(), (5 * kb) // (4 * SAMPLE_STRIDE) + 64)
    if sample.numel() < 4096 or rank >= sample.numel():
        return None
    t = torch.topk(sample, rank, sorted=False).values.min()
    candidates = torch.nonzero(flat >= t).flatten()
    return candidates if candidates.numel() >= kb else None


def mask_rows(mask: torch.Tensor) -> torch.Tensor:
    """Indices [B, m] of each row's selected latents first (m = the largest row count, ≥ 1),
    padded with distinct unselected latents."""
    m = max(1, int(mask.sum(dim=1).max()))
    return torch.topk(mask.to(torch.float32), m, dim=1, sorted=False).indices


@register("batchtopk", BatchTopKHParams)
class BatchTopKSAE(SAE):
    """Batch-level top-k at training, a learned threshold θ at inference."""

    uses_grad = False
    ragged_rows = True
    hp: BatchTopKHParams
    thresholds: tuple[str, ...] = ("threshold",)
    """Buffers estimated during training and written to cfg.json (raw units)."""

    def __init__(self, d_in: int, d_sae: int, *args: Any, **kwargs: Any) -> None:
        super().__init__(d_in, d_sae, *args, **kwargs)
        for name in self.thresholds:
            self.register_buffer(name, torch.tensor(float("nan")))
            self.register_buffer(f"{name}_avg", torch.tensor(0.0))
        self.register_buffer("threshold_steps", torch.tensor(0, dtype=torch.int64))

    def scores(self, z: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor:
        """What is ranked and thresholded: z itself."""
        return z

    def values_at(self, z: torch.Tensor, s: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """The decoder's input at ``indices``: ReLU(z_i)."""
        return torch.relu(z.gather(1, indices))

    def keep_mask(self, s: torch.Tensor, threshold: str = "threshold") -> torch.Tensor:
        """[B, n] selection of scores ``s``: batch top-k·B when training, ``s > θ`` otherwise."""
        if self.training:
            return batch_mask(s, self.k)
        theta = getattr(self, threshold)
        if bool(torch.isnan(theta)):
            raise ValueError(f"{self.architecture} SAE has no inference threshold yet (never trained)")
        return s > theta

    def select(self, z: torch.Tensor, grad: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """z [B, n] → indices [B, m], values [B, m] (0 in padding slots); updates θ when training."""
        s = self.scores(z, grad)
        mask = self.keep_mask(s)
        if self.training:
            self.update_thresholds(z, s, mask)
        indices = mask_rows(mask)
        return indices, self.values_at(z, s, indices) * mask.gather(1, indices)

    @torch.no_grad()
    def update_thresholds(self, z: torch.Tensor, s: torch.Tensor, mask: torch.Tensor) -> None:
        """One step of θ's running average from this batch's selection (no host sync)."""
        valid = mask.any()
        self._update("threshold", s, mask, valid)
        self.threshold_steps += valid.long()
        self._correct("threshold")

    def _update(self, name: str, s: torch.Tensor, mask: torch.Tensor, valid: torch.Tensor) -> None:
        d = self.hp.threshold_decay
        least = torch.where(mask, s.detach(), torch.full_like(s, float("inf"))).amin()
        avg = getattr(self, f"{name}_avg")
        avg.copy_(torch.where(valid, d * avg + (1.0 - d) * least, avg))

    def _correct(self, name: str) -> None:
        # bias correction (as Adam's): avg / (1 − d^steps); 0/0 = NaN while no step counted
        d = torch.tensor(self.hp.threshold_decay, device=self.threshold_steps.device)
        getattr(self, name).copy_(getattr(self, f"{name}_avg") / (1.0 - d.pow(self.threshold_steps)))

    def selection_changes(
        self, z: torch.Tensor, indices: torch.Tensor, values: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(changed, selected): selected = nonzero slots; reference = this SAE's selection of z itself."""
        ref = self.keep_mask(z, self.thresholds[-1])
        chosen = values > 0
        return (chosen & ~ref.gather(1, indices)).sum(), chosen.sum()

    def inference_state(self, act_scale: float = 1.0) -> dict[str, Any]:
        """Thresholds in raw-activation units (None while unset)."""
        out: dict[str, Any] = {}
        for name in self.thresholds:
            theta = float(getattr(self, name))
            out[name] = None if theta != theta else theta / float(act_scale)
        return out

    def load_inference_state(self, cfg: dict[str, Any]) -> None:
        """Thresholds from cfg.json (absent or null = unset)."""
        for name in self.thresholds:
            value = cfg.get(name)
            if value is not None and not isinstance(value, (int, float)):
                raise ValueError(f"{name} must be a number or null, got {value!r}")
            getattr(self, name).fill_(float("nan") if value is None else float(value))
