"""Dataset-wide input normalisation and the b_dec initialisation, from a sample of tokens.

Activation scale c (``act_scale``): one scalar for the whole dataset, chosen so that the
scaled activations have mean norm ≈ √d, i.e. about unit RMS per coordinate, which makes
learning rates transferable across layers and models. c is rounded to the nearest power
of two, c = 2^round(log2(√d / mean‖x‖)), so mean‖c·x‖ lies within a factor √2 of √d; the
payoff is that multiplying by c (and folding c into the saved weights, see
:mod:`pipeline.saes.io`) is exact in floating point.

Gradient scale γ (``grad_scale``): γ = √d / mean‖g‖, so the scaled gradients have mean
norm √d, like the scaled activations. This is what gives β a meaning that carries across
models, layers and widths: for a unit-norm decoder row d_i in general position relative to
g, d_i · γg is distributed like N(0, ‖γg‖²/d), so the gradient factor f_i = |d_i · γg| is
≈ 0.8 on average at a typical token whatever d, n or the gradient's raw size (measured on
SmolLM2 block 15: see docs/results.md). In s_i = z_i (1 + β f_i), β = 1 therefore weighs
the gradient term like the encoder's own pre-activation, β ≪ 1 re-ranks only near-ties
and β ≫ 1 lets the gradient dominate. (Before this choice γ was 1 / mean‖g‖, which made
f ≈ 0.034 in d = 576 and β = 1 a 5 % re-ranking; the old β maps to the new one as
β_new = β_old / √d.) The scale saved in ``cfg.json`` acts on raw activations, so it is c·γ
there.

b_dec is initialised in the scaled space at the geometric median (Weiszfeld iterations) or
the mean of the sample, so z starts centred on the data.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch

logger = logging.getLogger(__name__)


def _mean_norm(rows: np.ndarray | torch.Tensor, what: str) -> float | None:
    """Mean row norm of a sample [N, d] in float64; None (with a warning) when unusable."""
    mean_norm = float(torch.as_tensor(rows, dtype=torch.float64).norm(dim=1).mean())
    if not math.isfinite(mean_norm) or mean_norm <= 0:
        logger.warning("%s sample has mean norm %s; using scale 1", what, mean_norm)
        return None
    return mean_norm


def activation_scale(acts: np.ndarray | torch.Tensor) -> float:
    """Power-of-two c with mean‖c·x‖ ≈ √d: acts [N, d] (raw) → c."""
    mean_norm = _mean_norm(acts, "activation")
    if mean_norm is None:
        return 1.0
    return float(2.0 ** round(math.log2(math.sqrt(acts.shape[1]) / mean_norm)))


def gradient_scale(grads: np.ndarray | torch.Tensor) -> float:
    """γ with mean‖γ·g‖ = √d: grads [N, d] (raw) → γ, rounded to float32."""
    mean_norm = _mean_norm(grads, "gradient")
    return 1.0 if mean_norm is None else float(np.float32(math.sqrt(grads.shape[1]) / mean_norm))


def geometric_median(x: torch.Tensor, iters: int = 20, eps: float = 1e-8) -> torch.Tensor:
    """Weiszfeld's algorithm: x [N, d] → the point minimising Σ‖x_i − m‖, [d] (float64 inside)."""
    pts = x.to(torch.float64)
    m = pts.mean(dim=0)
    for _ in range(iters):
        w = 1.0 / (pts - m).norm(dim=1).clamp_min(eps)
        new = (w[:, None] * pts).sum(dim=0) / w.sum()
        if (new - m).norm() <= 1e-7 * (m.norm() + eps):
            m = new
            break
        m = new
    return m.to(x.dtype)


def init_b_dec(acts_scaled: np.ndarray | torch.Tensor, method: str = "geometric_median") -> torch.Tensor:
    """b_dec [d] from scaled activations [N, d]: ``geometric_median`` or ``mean``."""
    x = torch.as_tensor(acts_scaled, dtype=torch.float32)
    if method == "mean":
        return x.mean(dim=0)
    if method == "geometric_median":
        return geometric_median(x)
    raise ValueError(f"unknown b_dec_init {method!r} (geometric_median | mean)")
