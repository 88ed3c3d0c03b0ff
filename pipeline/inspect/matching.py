"""Latents of two SAEs matched by decoder cosine: does the g-SAE learn latents TopK lacks?

The paper's motivation is that TopK neglects latents with small activations and large
effects on the loss. The direct test: train both on the same cache, match every g-SAE latent
to its closest TopK decoder direction, and look at the g-SAE latents left without a close
counterpart — how many there are, and how their density, mean activation and mean
|attribution| compare with the matched ones.

* :func:`match` — one pair of SAEs: the (signed) cosine matrix of the unit decoder rows of
  the *alive* latents (density > 0; dead latents are neither matched nor counted, only
  reported as ``n_dead``), the best-match cosine of every latent of each side, a one-to-one
  assignment (``scipy.optimize.linear_sum_assignment``, ~2 s at 4608 × 4608 on one CPU core;
  a greedy assignment above ``lsa_max`` latents), and per direction the stats of matched
  (best cosine ≥ threshold) vs unmatched latents.
* :func:`compare` — every SAE of a run: cross pairs (two groups, same k and block) in both
  directions, and the controls that calibrate them (one group, two seeds). Same-seed cross
  pairs are kept apart (``same-init``): they start from the same decoder.
  Aggregates are mean ± sd over pairs (sd nan for a single pair).

The report section and its PNG are in :mod:`pipeline.inspect.matching_report`.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.errors import SAEFormatError
from pipeline.saes.io import load_sae

logger = logging.getLogger(__name__)

THRESHOLDS = (0.5, 0.7, 0.9)
"""Best-match cosines at which the share of unmatched latents is also reported."""
N_BINS = 20
"""Histogram bins of best-match cosines on [0, 1] (negative cosines fall in the first bin)."""
LSA_MAX = 8192
"""Above this many alive latents on a side the one-to-one matching is greedy (LSA is O(n³))."""
STATS = ("density", "mean_act", "mean_abs_attr")
"""Per-latent statistics compared between matched and unmatched latents."""


@dataclass(frozen=True)
class LatentStats:
    """One SAE's decoder and per-latent statistics (from the inspect stage's description)."""

    name: str
    """Entry name: the variant folder (``gsae-k32-b0.3-x8-sel-s0``) or ``<variant>@beta0``."""
    cfg: Mapping[str, Any]
    """The variant's cfg.json."""
    W_dec: np.ndarray
    """float32 [n, d] decoder rows (unit norm in saved SAEs; normalised again here)."""
    density: np.ndarray
    """[n] share of described tokens on which the latent fires (0 = dead)."""
    mean_act: np.ndarray
    """[n] mean activation over its firings."""
    mean_abs_attr: np.ndarray | None
    """[n] mean |attribution| over its firings; None when the store has no gradients."""

    @property
    def alive(self) -> np.ndarray:
        """int64 indices of the latents with density > 0."""
        return np.flatnonzero(np.asarray(self.density) > 0)


@dataclass(frozen=True)
class GroupStats:
    """Mean and median of the per-latent statistics over a set of latents (nan when empty)."""

    n: int
    mean: dict[str, float]
    median: dict[str, float]


@dataclass(frozen=True)
class Side:
    """One direction of a match: every alive latent of ``source`` against ``target``."""

    source: str
    target: str
    threshold: float
    latents: np.ndarray
    """int64 [m] the source's alive latents (ids in the source SAE)."""
    n_dead: int
    best_cos: np.ndarray
    """float32 [m] highest cosine with any alive target latent."""
    best_index: np.ndarray
    """int64 [m] the target latent achieving it (id in the target SAE)."""
    one_to_one_cos: np.ndarray
    """float32 [m] cosine with the latent the one-to-one matching gives (nan: none left)."""
    matched: GroupStats
    unmatched: GroupStats

    @property
    def share_unmatched(self) -> float:
        """Share of alive source latents whose best cosine is below the threshold."""
        return self.share_below(self.threshold)

    def share_below(self, threshold: float) -> float:
        return float(np.mean(self.best_cos < threshold)) if self.best_cos.size else math.nan

    def histogram(self, bins: int = N_BINS) -> np.ndarray:
        """Share of alive latents per best-cosine bin on [0, 1] (negatives in the first)."""
        counts, _ = np.histogram(np.clip(self.best_cos, 0.0, 1.0), bins=bins, range=(0.0, 1.0))
        return counts / max(1, self.best_cos.size)

    def figures(self, thresholds: Sequence[float] = THRESHOLDS) -> dict[str, float]:
        """The scalars :func:`compare` aggregates over pairs."""
        out = {
            "n_alive": float(self.latents.size),
            "n_dead": float(self.n_dead),
            "median_best_cos": _median(self.best_cos),
            "share_unmatched": self.share_unmatched,
            **{f"share_unmatched@{t:g}": self.share_below(t) for t in thresholds},
            "one_to_one_mean_cos": float(np.nanmean(self.one_to_one_cos)) if self.best_cos.size else math.nan,
            "n_matched": float(self.matched.n),
            "n_unmatched": float(self.unmatched.n),
        }
        for stat in STATS:
            m, u = self.matched.mean[stat], self.unmatched.mean[stat]
            out[f"matched_{stat}"] = m
            out[f"unmatched_{stat}"] = u
            out[f"matched_{stat}_median"] = self.matched.median[stat]
            out[f"unmatched_{stat}_median"] = self.unmatched.median[stat]
            out[f"ratio_{stat}"] = u / m if m and math.isfinite(m) and math.isfinite(u) else math.nan
        return out


@dataclass(frozen=True)
class Match:
    """Two SAEs matched by decoder cosine, both directions."""

    a_to_b: Side
    b_to_a: Side
    pairs: np.ndarray
    """int64 [p, 2] the one-to-one matching as (latent of a, latent of b) ids."""
    method: str
    """``lsa`` (optimal: maximum total cosine) or ``greedy``."""
    seconds: float
    """Wall time of the one-to-one matching."""


# ---------------------------------------------------------------------------- one pair


def _median(x: np.ndarray) -> float:
    return float(np.median(x)) if x.size else math.nan


def _unit_rows(w: np.ndarray) -> np.ndarray:
    w = np.asarray(w, dtype=np.float32)
    norm = np.linalg.norm(w, axis=1, keepdims=True)
    return w / np.where(norm > 0, norm, 1.0)


def cosines(a: LatentStats, b: LatentStats) -> np.ndarray:
    """float32 [alive a, alive b] signed cosines of the decoder rows (ReLU codes are ≥ 0, so
    an anti-parallel direction is a different latent, not a match)."""
    return _unit_rows(a.W_dec[a.alive]) @ _unit_rows(b.W_dec[b.alive]).T


def greedy_one_to_one(cos: np.ndarray, candidates: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """A greedy one-to-one matching (rows, cols), highest cosines first.

    Each round takes every row's ``candidates`` best free columns, assigns in descending
    cosine order, and repeats on the rows left; close to the exact greedy matching at
    O(n·candidates) memory per round instead of sorting all n² entries.
    """
    rows_left, cols_left = np.arange(cos.shape[0]), np.arange(cos.shape[1])
    out_r: list[int] = []
    out_c: list[int] = []
    while rows_left.size and cols_left.size:
        sub = cos[np.ix_(rows_left, cols_left)]
        m = min(candidates, cols_left.size)
        top = np.argpartition(-sub, m - 1, axis=1)[:, :m]
        order = np.argsort(-np.take_along_axis(sub, top, axis=1), axis=None, kind="stable")
        used_r, used_c = np.zeros(rows_left.size, bool), np.zeros(cols_left.size, bool)
        for flat in order:
            r, c = divmod(int(flat), m)
            col = int(top[r, c])
            if not used_r[r] and not used_c[col]:
                used_r[r] = used_c[col] = True
                out_r.append(int(rows_left[r]))
                out_c.append(int(cols_left[col]))
        rows_left, cols_left = rows_left[~used_r], cols_left[~used_c]
    order_r = np.argsort(out_r)
    return np.asarray(out_r, np.int64)[order_r], np.asarray(out_c, np.int64)[order_r]


def one_to_one(cos: np.ndarray, lsa_max: int = LSA_MAX) -> tuple[np.ndarray, np.ndarray, str]:
    """(rows, cols, method): the assignment maximising the total cosine, greedy when large."""
    if max(cos.shape) <= lsa_max:
        from scipy.optimize import linear_sum_assignment

        rows, cols = linear_sum_assignment(cos, maximize=True)
        return rows.astype(np.int64), cols.astype(np.int64), "lsa"
    logger.info("one-to-one matching of %d × %d latents: greedy (above lsa_max=%d)", *cos.shape, lsa_max)
    rows, cols = greedy_one_to_one(cos)
    return rows, cols, "greedy"


def _group_stats(s: LatentStats, latents: np.ndarray) -> GroupStats:
    arrays = {"density": s.density, "mean_act": s.mean_act, "mean_abs_attr": s.mean_abs_attr}
    mean, median = {}, {}
    for stat, arr in arrays.items():
        vals = np.asarray(arr, dtype=np.float64)[latents] if arr is not None else np.empty(0)
        mean[stat] = float(vals.mean()) if vals.size else math.nan
        median[stat] = _median(vals)
    return GroupStats(int(latents.size), mean, median)


def _side(
    source: LatentStats, target: LatentStats, cos: np.ndarray, assigned: np.ndarray, threshold: float
) -> Side:
    """``cos`` [alive source, alive target]; ``assigned`` [alive source] column or −1."""
    latents, tl = source.alive, target.alive
    if cos.shape[1]:
        best_col = cos.argmax(axis=1)
        best = cos[np.arange(cos.shape[0]), best_col]
    else:
        best_col, best = np.zeros(cos.shape[0], np.int64), np.full(cos.shape[0], -np.inf, np.float32)
    has = assigned >= 0
    oto = np.full(latents.size, np.nan, np.float32)
    oto[has] = cos[np.flatnonzero(has), assigned[has]]
    ok = best >= threshold
    return Side(
        source=source.name,
        target=target.name,
        threshold=threshold,
        latents=latents,
        n_dead=int(source.density.size - latents.size),
        best_cos=best.astype(np.float32),
        best_index=tl[best_col] if tl.size else np.full(latents.size, -1, np.int64),
        one_to_one_cos=oto,
        matched=_group_stats(source, latents[ok]),
        unmatched=_group_stats(source, latents[~ok]),
    )


def match(a: LatentStats, b: LatentStats, threshold: float = 0.7, *, lsa_max: int = LSA_MAX) -> Match:
    """Match the alive latents of ``a`` and ``b`` by decoder cosine (both directions).

    A latent is *matched* when its best cosine with any alive latent of the other SAE is ≥
    ``threshold``; dead latents (density 0) of either SAE take no part.
    """
    if a.W_dec.shape[1] != b.W_dec.shape[1]:
        raise ValueError(
            f"{a.name} and {b.name} decode to different widths ({a.W_dec.shape[1]}, {b.W_dec.shape[1]})"
        )
    cos = cosines(a, b)
    t0 = time.perf_counter()
    rows, cols, method = one_to_one(cos, lsa_max)
    seconds = time.perf_counter() - t0
    logger.debug("%s vs %s: %s one-to-one of %s in %.2f s", a.name, b.name, method, cos.shape, seconds)
    col_of_row = np.full(cos.shape[0], -1, np.int64)
    col_of_row[rows] = cols
    row_of_col = np.full(cos.shape[1], -1, np.int64)
    row_of_col[cols] = rows
    return Match(
        a_to_b=_side(a, b, cos, col_of_row, threshold),
        b_to_a=_side(b, a, cos.T, row_of_col, threshold),
        pairs=np.stack([a.alive[rows], b.alive[cols]], axis=1),
        method=method,
        seconds=seconds,
    )


# ---------------------------------------------------------------------------- two folders


def stats_from_files(sae_dir: str | Path, latents_json: str | Path | None = None) -> LatentStats:
    """A trained SAE folder's decoder, with the per-latent figures of an inspect run's
    ``latents.json`` when given (else every latent counts as alive, figures nan)."""
    sae, cfg = load_sae(sae_dir)
    W_dec = sae.W_dec.detach().float().numpy()
    n = W_dec.shape[0]
    if latents_json is None:
        nan = np.full(n, math.nan)
        return LatentStats(Path(sae_dir).name, cfg, W_dec, np.ones(n), nan, nan)
    doc = json.loads(Path(latents_json).read_text())
    lat = doc.get("latents")
    if not isinstance(lat, list) or len(lat) != n:
        raise SAEFormatError(f"{latents_json} does not describe the {n} latents of {sae_dir}")
    attr = [x["mean_abs_attr"] for x in lat]
    return LatentStats(
        str(doc.get("entry", Path(sae_dir).name)),
        cfg,
        W_dec,
        np.array([x["density"] for x in lat], dtype=np.float64),
        np.array([x["mean_act"] for x in lat], dtype=np.float64),
        None if any(a is None for a in attr) else np.array(attr, dtype=np.float64),
    )
