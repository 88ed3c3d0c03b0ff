"""Steering effectiveness of SAE latents in arbitrary held-out contexts (docs/steering.md).

For one SAE: M alive latents are sampled with a seeded RNG; latent i is steered by adding
v_i = α_i · d_i (d_i = row i of W_dec in raw activation space, α_i = steer_scale × the
latent's mean nonzero activation on the evaluation tokens) to the hook's output at every
position except the first of each of N held-out contexts (the same contexts for every
SAE). Per latent, over all steered positions (1..T−1) of the N contexts:

- ``kl``    = mean per-position KL(p_steered ‖ p_clean) of the next-token distribution,
- ``logit`` = max over the vocabulary of |mean over positions of Δ log p(v)|, the change of
  the most-affected token's log-probability (normalised logit: log-softmax removes the
  constant shift softmax ignores), and ``token`` = that token's id.

All (latent, context) pairs are batched together, ``batch_size`` rows per forward, and
only the blocks after the steered one run (:mod:`pipeline.lm.suffix`), from the clean state
the reference pass recorded. :func:`bootstrap_ci` gives a confidence interval of the
mean effect over latents (the latents are the sampled unit; contexts are fixed).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from pipeline.core.devices import autocast as autocast_on
from pipeline.evaluate.splice import clean_pass, keep_first, logits
from pipeline.lm.models import LoadedModel
from pipeline.lm.suffix import suffix_logits


@dataclass(frozen=True)
class CleanRef:
    """Clean next-token distributions of the steering contexts at the steered positions 1..T−1."""

    ids: torch.Tensor
    """[N, T] token ids."""
    logp: torch.Tensor
    """[N, T−1, V] float32 clean log-probabilities at positions 1..T−1."""
    autocast: str
    """The precision the clean logits were computed in (the steered ones use the same)."""
    states: dict[int, torch.Tensor]
    """block → [N, T, d] clean output state of that block."""
    tails: dict[int, Any]
    """block → the non-hidden part of the block's output (see :class:`PrefixCapture`)."""


@dataclass(frozen=True)
class SteerResult:
    """Per-latent steering effects of one SAE."""

    latents: np.ndarray
    """[M] latent indices."""
    alphas: np.ndarray
    """[M] steering coefficients α_i."""
    kl: np.ndarray
    """[M] mean KL(p_steered ‖ p_clean) per steered position."""
    logit: np.ndarray
    """[M] max_v |mean Δ log p(v)|."""
    token: np.ndarray
    """[M] the most-affected token id."""


def pick_contexts(n_available: int, n: int, seed: int) -> np.ndarray:
    """Sorted indices of ``n`` distinct contexts out of ``n_available`` (seeded)."""
    rng = np.random.default_rng([seed, 0x5EED])
    return np.sort(rng.choice(n_available, size=min(n, n_available), replace=False))


def pick_latents(freq: np.ndarray, m: int, seed: int, name: str) -> np.ndarray:
    """Sorted indices of ``m`` latents with ``freq > 0``, seeded by ``seed`` and the SAE's ``name``."""
    alive = np.flatnonzero(np.asarray(freq) > 0)
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    return np.sort(rng.choice(alive, size=min(m, alive.size), replace=False))


@torch.no_grad()
def clean_reference(
    lm: LoadedModel,
    ids: np.ndarray | torch.Tensor,
    batch_size: int = 8,
    blocks: tuple[int, ...] = (),
    autocast: str = "none",
) -> CleanRef:
    """Clean distributions of the steering contexts ``ids`` [N, T] and the states at ``blocks``.

    ``autocast`` other than ``none`` needs ``blocks`` (the clean logits then come from the
    suffix of the first, as the steered ones do; see :func:`pipeline.evaluate.splice.clean_pass`).
    """
    ids_t = torch.as_tensor(np.asarray(ids), dtype=torch.long)
    parts: list[torch.Tensor] = []
    states: dict[int, list[torch.Tensor]] = {b: [] for b in blocks}
    tails: dict[int, Any] = {}
    for s in range(0, len(ids_t), batch_size):
        capture, z = clean_pass(lm, ids_t[s : s + batch_size], list(blocks), "suffix", autocast)
        parts.append(F.log_softmax(z[:, 1:].float(), dim=-1).cpu())
        for b in blocks:
            states[b].append(capture.states[b])
            tails[b] = capture.tails[b]
    return CleanRef(ids_t, torch.cat(parts), autocast, {b: torch.cat(v) for b, v in states.items()}, tails)


@torch.no_grad()
def steer_effects(
    lm: LoadedModel,
    block: int,
    ref: CleanRef,
    vectors: torch.Tensor,
    *,
    batch_size: int = 8,
    desc: str = "steer",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(kl [M], logit [M], token [M]) of adding ``vectors`` [M, d] at block ``block`` (positions ≥ 1)."""
    m = vectors.shape[0]
    n, t = ref.ids.shape
    kl = torch.zeros(m, dtype=torch.float64)
    dlogp = torch.zeros(m, ref.logp.shape[-1], dtype=torch.float64)
    pairs = [(i, c) for i in range(m) for c in range(n)]
    bar = tqdm(total=len(pairs), unit="ctx", desc=desc, leave=False)
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        lat = torch.tensor([p[0] for p in chunk])
        ctx = torch.tensor([p[1] for p in chunk])
        with autocast_on(lm.device, ref.autocast):
            z = _steered_logits(lm, block, ref, ctx, vectors[lat])
        logq = F.log_softmax(z[:, 1:].float(), dim=-1).cpu()
        del z
        for row in range(len(chunk)):  # row by row: no [b, T, V] temporaries
            diff = logq[row] - ref.logp[int(ctx[row])]  # log q − log p, [T−1, V]
            kl[lat[row]] += float(torch.einsum("pv,pv->p", logq[row].exp(), diff).double().sum())
            dlogp[lat[row]] += diff.sum(dim=0, dtype=torch.float64)
        del logq
        bar.update(len(chunk))
    bar.close()
    positions = n * (t - 1)
    kl /= positions
    dlogp /= positions
    best = dlogp.abs().max(dim=1)
    return kl.numpy(), best.values.numpy(), best.indices.numpy()


def _steered_logits(
    lm: LoadedModel, block: int, ref: CleanRef, ctx: torch.Tensor, add: torch.Tensor
) -> torch.Tensor:
    """Logits [b, T, V] of contexts ``ctx`` [b] with ``add`` [b, d] added at positions ≥ 1 of block ``block``."""
    if block in ref.states:
        clean = ref.states[block][ctx]
        steered = keep_first(clean, clean[:, 1:] + add.to(clean.device, clean.dtype)[:, None, :])
        return suffix_logits(lm, block, steered, ref.ids[ctx], ref.tails[block])

    def fn(hidden: torch.Tensor) -> torch.Tensor:
        return keep_first(hidden, hidden[:, 1:] + add.to(hidden.device, hidden.dtype)[:, None, :])

    return logits(lm, ref.ids[ctx], [(block, fn)])


def bootstrap_ci(
    values: np.ndarray, level: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of ``values`` (resampled with replacement, seeded)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size < 2:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng([seed, 0xB007])
    means = v[rng.integers(0, v.size, size=(resamples, v.size))].mean(axis=1)
    alpha = (1.0 - level) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1.0 - alpha))


def steer_sae(
    lm: LoadedModel,
    block: int,
    ref: CleanRef,
    W_dec: torch.Tensor,
    freq: np.ndarray,
    mean_act: np.ndarray,
    *,
    n_latents: int,
    scale: float,
    seed: int,
    name: str,
    batch_size: int = 8,
) -> SteerResult:
    """Sample latents of one SAE and measure their steering effects (see module docstring)."""
    latents = pick_latents(freq, n_latents, seed, name)
    alphas = scale * np.asarray(mean_act, dtype=np.float64)[latents]
    vectors = torch.as_tensor(alphas, dtype=torch.float32)[:, None] * W_dec.detach().float().cpu()[latents]
    if latents.size == 0:
        empty = np.zeros(0)
        return SteerResult(latents, alphas, empty, empty, empty.astype(np.int64))
    kl, logit, token = steer_effects(lm, block, ref, vectors, batch_size=batch_size, desc=f"steer {name}")
    return SteerResult(latents, alphas, kl, logit, token)
