"""Cross-entropy and KL of next-token distributions straight from logits, in few passes.

Evaluation compares every edited forward's next-token distribution q with the clean one p
at the same positions. Logits are [rows, positions, V] with V ≈ 50k, so every pass over
them costs a read (and a write for every temporary) of hundreds of MB: on a 2-core CPU
these passes cost a fifth of a suffix forward. Per edited tensor of logits z this module
needs no log-softmax of its own:

- ``lse = logsumexp(z)`` (log Σ_v exp z_v), the normaliser (one read), and
- ``Σ_v p_v (c_v − z_v)`` against the clean logits c and probabilities p (one temporary),

from which, with the clean normaliser lse_c,

    CE(target) = lse − z_target            KL(p ‖ q) = Σ_v p_v (c_v − z_v) + (lse − lse_c) · Σ_v p_v.

This is ``Σ_v p_v (log p_v − log q_v)`` up to float rounding. The obvious shortcut
``Σ p log p − Σ p z + lse`` is not: its terms are logits (~30 nats), and float32 sums of
50k of them lose ~1e-2 nats per position, a 0.6 % bias on the default run's KL.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


class RefDist(NamedTuple):
    """The clean distributions every edit is compared with."""

    z: torch.Tensor
    """[B, P, V] clean logits (float32)."""
    p: torch.Tensor
    """[B, P, V] clean probabilities."""
    mass: torch.Tensor
    """[B, P] Σ_v p_v as float32 rounding left it (≈ 1 − 1e-5; the KL uses it, not 1)."""
    lse: torch.Tensor
    """[B, P] the clean logits' log-normaliser."""


def reference(z: torch.Tensor) -> RefDist:
    """The clean distributions of logits ``z`` [B, P, V]."""
    z = z.float()
    p = F.softmax(z, dim=-1)
    return RefDist(z, p, p.sum(-1, dtype=torch.float64).float(), torch.logsumexp(z, dim=-1))


def target_ce(z: torch.Tensor, lse: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-position CE [B, P] of logits ``z`` [B, P, V] (normaliser ``lse`` [B, P]) at ``target`` [B, P]."""
    return lse - z.gather(-1, target.unsqueeze(-1).to(z.device)).squeeze(-1).float()


def edited(z: torch.Tensor, ref: RefDist) -> tuple[torch.Tensor, torch.Tensor]:
    """(lse [J·B, P], KL(p ‖ q) [J·B, P]) of J edits' logits ``z`` [J·B, P, V] stacked along rows.

    Row ``j·B + b`` is compared with the clean row ``b``.
    """
    b, pos, _ = ref.p.shape
    j = z.shape[0] // b
    lse = torch.logsumexp(z, dim=-1)
    # Σ p (z_clean − z) sums terms of the size of the change, not of the logits (~30 nats
    # here): float32 keeps ~1e-6 nats, where Σ p log p − Σ p z + lse loses ~1e-2
    gap = ref.z - z.unflatten(0, (j, b))
    shift = (lse - ref.lse.repeat(j, 1)) * ref.mass.repeat(j, 1)
    kl = torch.einsum("bpv,jbpv->jbp", ref.p, gap).reshape(j * b, pos) + shift
    return lse, kl
