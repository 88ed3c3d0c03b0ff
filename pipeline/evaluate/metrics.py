"""Reconstruction metrics of an SAE on stored activations, and the loss-recovered formula.

All figures are computed on the rows of the evaluation tokens that are *not* the first
position of a context (BOS / attention sink, excluded from training too):

- ``fvu``  = Σ‖x − x̂‖² / Σ‖x − x̄‖² (centred: x̄ is the mean activation over the evaluated
  rows, so FVU = 1 for the constant predictor x̂ = x̄),
- ``mse``  = Σ‖x − x̂‖² / (N·d) (per-element mean squared error),
- ``l0``   = mean number of nonzero latents per token,
- ``dead_frac`` = fraction of latents never nonzero on the evaluated rows,
- ``selection_shift`` (gradient-aware architectures only) = fraction of the selected
  latents that the same SAE encoded with β = 0 would not have selected (the plain top-k of
  the pre-activations for the g-SAE; :meth:`~pipeline.saes.base.SAE.selection_changes`).
- ``fo_loss_err`` = mean |g · (x − x̂)| and ``fo_loss_delta`` = mean g · (x̂ − x) (only when
  the store holds gradients; every architecture, β = 0 twins included): the first-order
  change of the loss when x̂ replaces x, no LM needed. Units: g is the raw stored gradient
  of a context's *summed* next-token loss L_seq = Σ_{p=0}^{T−2} CE_p (DESIGN §1), so
  g_p · (x̂_p − x_p) is the first-order change of L_seq, in nats, from position p alone.
  Replacing every non-first position of a context changes L_seq by Σ_{p=1}^{T−1} of these
  to first order; spliced CE is the mean over the T − 1 next-token predictions of a context
  and the evaluated rows are the same T − 1 positions 1 … T−1 (the last one with g = 0), so
  ``fo_loss_delta`` (a mean over n_ctx·(T − 1) rows) is directly the first-order estimate
  of ``ce_spliced − ce_clean`` in nats per prediction — no T/(T − 1) factor (that factor
  appears only when averaging over all T positions, the first included). ``fo_loss_err``
  ≥ |``fo_loss_delta``| is the same per-token figure without the cancellation between
  tokens: how much each reconstruction error matters to the loss at its token.

x are the stored activations (float16 in the default store, read as float32) and the g-SAE
encoder receives the stored clean gradient of the same token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from pipeline.saes.base import SAE


@dataclass(frozen=True)
class ReconStats:
    """What one SAE does to the evaluated rows."""

    fvu: float
    mse: float
    l0: float
    dead_frac: float
    freq: np.ndarray
    """[n] tokens on which each latent is nonzero."""
    mean_act: np.ndarray
    """[n] mean nonzero value of each latent (0 for never-active latents)."""
    selection_shift: float | None = None
    """Fraction of selections the gradient changed (None for gradient-free architectures)."""
    fo_loss_err: float | None = None
    """Mean |g · (x − x̂)| over the rows, nats (None without gradients)."""
    fo_loss_delta: float | None = None
    """Mean g · (x̂ − x) over the rows, nats: first-order estimate of ce_spliced − ce_clean."""


@torch.no_grad()
def recon_stats(sae: SAE, act: np.ndarray, grad: np.ndarray | None, *, chunk: int = 4096) -> ReconStats:
    """Encode/decode act [N, d] (with grad [N, d], or ``None`` for a gradient-free SAE) in chunks
    and accumulate the metrics."""
    if act.ndim != 2 or (grad is not None and act.shape != grad.shape):
        shape = None if grad is None else grad.shape
        raise ValueError(f"act {act.shape} and grad {shape} must be equal [N, d] arrays")
    n, d = act.shape
    if n == 0:
        raise ValueError("no rows to evaluate")
    device = sae.W_dec.device
    x64 = torch.from_numpy(act).to(torch.float64)
    mean = x64.mean(dim=0)
    total_var = float(((x64 - mean) ** 2).sum())
    sse, nonzero, changed, selected = 0.0, 0, 0, 0
    fo_abs, fo_sum = 0.0, 0.0
    freq = torch.zeros(sae.d_sae, dtype=torch.float64)
    act_sum = torch.zeros(sae.d_sae, dtype=torch.float64)
    for start in range(0, n, chunk):
        x = torch.from_numpy(act[start : start + chunk]).to(device, torch.float32)
        g = None if grad is None else torch.from_numpy(grad[start : start + chunk]).to(device, torch.float32)
        out = sae(x, g)
        err = (out.x_hat - x).double()
        sse += float((err**2).sum())
        if g is not None:
            delta = (err * g.double()).sum(dim=1)  # g · (x̂ − x) per row
            fo_abs, fo_sum = fo_abs + float(delta.abs().sum()), fo_sum + float(delta.sum())
        active = out.acts > 0
        nonzero += int(active.sum())
        freq += active.sum(dim=0).double().cpu()
        act_sum += out.acts.clamp_min(0).sum(dim=0).double().cpu()
        if sae.uses_grad:
            moved, chosen = sae.selection_changes(out.pre, out.indices, out.values)
            changed, selected = changed + int(moved), selected + int(chosen)
    mean_act = torch.where(freq > 0, act_sum / freq.clamp_min(1), torch.zeros_like(act_sum))
    return ReconStats(
        fvu=sse / total_var if total_var > 0 else math.nan,
        mse=sse / (n * d),
        l0=nonzero / n,
        dead_frac=float((freq == 0).double().mean()),
        freq=freq.numpy(),
        mean_act=mean_act.numpy(),
        selection_shift=(changed / selected if selected else 0.0) if sae.uses_grad else None,
        fo_loss_err=None if grad is None else fo_abs / n,
        fo_loss_delta=None if grad is None else fo_sum / n,
    )


def loss_recovered(ce_clean: float, ce_spliced: float, ce_zero: float) -> float:
    """(ce_zero − ce_spliced) / (ce_zero − ce_clean); NaN when ablation costs nothing."""
    denom = ce_zero - ce_clean
    if denom == 0 or not math.isfinite(denom):
        return math.nan
    return (ce_zero - ce_spliced) / denom


def distribution(values: np.ndarray | list[float]) -> dict[str, float]:
    """mean, median, p10 and p90 of a sample (empty sample → empty dict)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return {}
    return {
        "mean": float(v.mean()),
        "median": float(np.median(v)),
        "p10": float(np.percentile(v, 10)),
        "p90": float(np.percentile(v, 90)),
    }
