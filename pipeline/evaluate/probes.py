"""Logistic-regression probes for the absorption metric (:mod:`pipeline.evaluate.absorption`).

Three fits, all one-vs-rest binary logistic regressions with balanced classes, in torch on
the CPU (small data: a few thousand rows):

- :func:`fit_dense_probe`: the ground-truth first-letter probe on the LM's activations
  (SAEBench: BCE with ``pos_weight`` = negatives/positives, Adam, weight decay 1e-4, learning
  rate decaying exponentially from 1e-2 to 1e-5; here full-batch, 500 steps from 3e-2 to 1e-4 on
  standardised inputs: a few hundred words need more steps than SAEBench's vocabulary-sized batches).
- :func:`fit_l1_probe`: the same on an SAE's sparse code with an L1 penalty 0.01 × mean over
  probes of Σ|w| (SAEBench's k-sparse selection probe); the code is passed as
  (indices, values) so one step costs O(rows × k) instead of O(rows × latents).
- :func:`fit_small_logreg`: many small problems at once (k ≤ 10 features each), the optimum of
  scikit-learn's default ``LogisticRegression(class_weight="balanced")`` (L2 penalty ½‖w‖²,
  C = 1, unpenalised intercept), found by batched Newton steps.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _pos_weight(y: torch.Tensor) -> torch.Tensor:
    pos = y.sum(0).clamp_min(1.0)
    return (y.shape[0] - pos) / pos


def _adam_fit(
    params: list[torch.Tensor], loss_fn, epochs: int, lr: float = 1e-2, end_lr: float = 1e-5, wd: float = 0.0
) -> None:
    opt = torch.optim.Adam(params, lr=lr, weight_decay=wd)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=math.exp(math.log(end_lr / lr) / epochs))
    for _ in range(epochs):
        opt.zero_grad()
        loss_fn().backward()
        opt.step()
        sched.step()


def fit_dense_probe(x: torch.Tensor, y: torch.Tensor, epochs: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """x [N, d] float, y [N, C] 0/1 → (W [C, d], b [C]) of C one-vs-rest logistic probes."""
    x, y = x.float(), y.float()
    w = torch.zeros(y.shape[1], x.shape[1], requires_grad=True)
    b = torch.zeros(y.shape[1], requires_grad=True)
    # standardise for the optimiser; the probe is mapped back to raw units below
    mu, sd = x.mean(0), x.std(0).clamp_min(1e-6)
    xs = (x - mu) / sd
    pw = _pos_weight(y)
    with torch.enable_grad():
        _adam_fit(
            [w, b],
            lambda: F.binary_cross_entropy_with_logits(xs @ w.T + b, y, pos_weight=pw),
            epochs,
            lr=3e-2,
            end_lr=1e-4,
            wd=1e-4,
        )
    w_raw = (w / sd).detach()
    return w_raw, (b - (w / sd) @ mu).detach()


def fit_l1_probe(
    indices: torch.Tensor,
    values: torch.Tensor,
    n_latents: int,
    y: torch.Tensor,
    epochs: int = 200,
    l1: float = 0.01,
) -> torch.Tensor:
    """L1-penalised one-vs-rest probes on a sparse code: indices/values [N, m], y [N, C] → W [C, n]."""
    y = y.float()
    w = torch.zeros(n_latents, y.shape[1], requires_grad=True)
    b = torch.zeros(y.shape[1], requires_grad=True)
    pw = _pos_weight(y)
    values = values.float()

    def loss() -> torch.Tensor:
        logits = F.embedding_bag(indices, w, per_sample_weights=values, mode="sum") + b
        bce = F.binary_cross_entropy_with_logits(logits, y, pos_weight=pw)
        return bce + l1 * w.abs().sum(0).mean()

    with torch.enable_grad():
        _adam_fit([w, b], loss, epochs, wd=1e-6)
    return w.detach().T


def fit_small_logreg(x: torch.Tensor, y: torch.Tensor, iters: int = 25) -> torch.Tensor:
    """Batched balanced L2 logistic regression (scikit-learn's defaults, C = 1).

    x [P, N, k] float64 features (zero-padded columns are harmless: the penalty pins their
    weight at 0), y [P, N] 0/1 → theta [P, k + 1] (weights, then the intercept).
    """
    P, N, k = x.shape
    x = x.double()
    y = y.double()
    X = torch.cat([x, torch.ones(P, N, 1, dtype=x.dtype)], dim=2)
    n_pos = y.sum(1, keepdim=True).clamp_min(1.0)
    n_neg = (N - y.sum(1, keepdim=True)).clamp_min(1.0)
    s = torch.where(y > 0, N / (2 * n_pos), N / (2 * n_neg))  # class_weight="balanced"
    reg = torch.ones(k + 1, dtype=x.dtype)
    reg[-1] = 0.0
    theta = torch.zeros(P, k + 1, dtype=x.dtype)
    eye = torch.eye(k + 1, dtype=x.dtype) * 1e-9
    for _ in range(iters):
        p = torch.sigmoid(torch.einsum("pnk,pk->pn", X, theta))
        grad = torch.einsum("pnk,pn->pk", X, s * (p - y)) + reg * theta
        h = torch.einsum("pnk,pn,pnj->pkj", X, s * p * (1 - p), X) + torch.diag(reg) + eye
        step = torch.linalg.solve(h, grad.unsqueeze(-1)).squeeze(-1)
        theta = theta - step
        if step.abs().max() < 1e-10:
            break
    return theta


def f1_scores(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """F1 of boolean predictions pred [P, N] against labels y [P, N] (0 where nothing is predicted right)."""
    y = y.bool()
    tp = (pred & y).sum(-1).double()
    fp = (pred & ~y).sum(-1).double()
    fn = (~pred & y).sum(-1).double()
    return torch.where(tp > 0, 2 * tp / (2 * tp + fp + fn), torch.zeros_like(tp))
