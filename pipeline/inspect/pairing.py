"""Every SAE of a run matched by decoder cosine: which pairs, and mean ± sd over them.

:func:`pairings` forms the pairs: two groups (series with k; seeds pooled) pair when their k
and block agree. ``same-init``: seed s of both groups (the trainer seeds the initialisation
with the seed, so both start from the same decoder). ``cross``: seed s of one group vs seed
s' ≠ s of the other, the figures that compare with the ``control`` pairs: seeds s < s' of one
group. :func:`compare` matches them all (:func:`pipeline.inspect.matching.match`) and
aggregates per direction: mean ± sd over pairs (sd nan for a single pair).
"""

from __future__ import annotations

import itertools
import logging
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pipeline.inspect.matching import LSA_MAX, N_BINS, THRESHOLDS, LatentStats, Side, match
from pipeline.report.entries import mean_sd
from pipeline.saes.naming import BETA0_SUFFIX, series_name
from pipeline.saes.registry import get_sae_class

logger = logging.getLogger(__name__)


def seed_of(s: LatentStats) -> int | None:
    """The variant's initialisation seed: cfg ``training.init_seed``, ``init_seed``, ``seed``,
    else the ``-s<seed>`` suffix of the name; None when none is found."""
    training = s.cfg.get("training")
    for value in (
        training.get("init_seed") if isinstance(training, Mapping) else None,
        s.cfg.get("init_seed"),
        s.cfg.get("seed"),
    ):
        if value is not None:
            return int(value)
    found = re.search(r"-s(\d+)$", s.name.removesuffix(BETA0_SUFFIX))
    return int(found.group(1)) if found else None


def group_of(cfg: Mapping[str, Any], *, with_layer: bool = False) -> str:
    """The series name with k after the architecture: ``gsae-k32-b0.3-sel-x8`` (seeds pooled)."""
    arch = str(cfg["architecture"])
    series = series_name(cfg, beta0=False, with_layer=with_layer)
    return f"{arch}-k{int(cfg['k'])}{series[len(arch) :]}"


def _groups(entries: Sequence[LatentStats]) -> dict[str, dict[int, LatentStats]]:
    """Group → seed → entry; ``@beta0`` entries (same decoder as their variant) are skipped."""
    used = [e for e in entries if not e.name.endswith(BETA0_SUFFIX)]
    with_layer = len({str(e.cfg.get("hook_name")) for e in used}) > 1
    out: dict[str, dict[int, LatentStats]] = {}
    for e in used:
        seed = seed_of(e)
        group = out.setdefault(group_of(e.cfg, with_layer=with_layer), {})
        if seed is None or seed in group:
            logger.warning("matching: %s skipped (seed %s missing or already in its group)", e.name, seed)
            continue
        group[seed] = e
    return out


def _uses_grad(group: Mapping[int, LatentStats]) -> bool:
    """Whether the group's architecture selects with the gradient (those groups come first)."""
    return bool(get_sae_class(str(next(iter(group.values())).cfg["architecture"])).uses_grad)


def _comparable(x: LatentStats, y: LatentStats) -> bool:
    keys = ("k", "hook_name", "d_in")
    return all(x.cfg.get(key) == y.cfg.get(key) for key in keys)


KINDS = ("same-init", "cross", "control")
"""Pair kinds, in report order (see :func:`pairings`)."""


def pairings(entries: Sequence[LatentStats]) -> list[tuple[str, str, str, LatentStats, LatentStats]]:
    """``(kind, group a, group b, a, b)`` for every pair to match.

    Two groups pair when their k and block agree; both directions are read off one match.
    ``same-init``: seed s of both groups. The trainer seeds the initialisation with the seed,
    so these two start from the same decoder: their cosines say how far training moved the
    latents apart, and nothing else in the run compares with them. ``cross``: seed s of one
    group vs seed s' ≠ s of the other (different initialisations), the figures that compare
    with the ``control`` pairs: seeds s < s' of one group (direction s → s' only).
    """
    groups = _groups(entries)
    names = sorted(groups, key=lambda g: (not _uses_grad(groups[g]), g))
    out: list[tuple[str, str, str, LatentStats, LatentStats]] = []
    for g, h in itertools.combinations(names, 2):
        for s, t in itertools.product(sorted(groups[g]), sorted(groups[h])):
            if _comparable(groups[g][s], groups[h][t]):
                out.append(("same-init" if s == t else "cross", g, h, groups[g][s], groups[h][t]))
    for g in names:
        for s, t in itertools.combinations(sorted(groups[g]), 2):
            out.append(("control", g, g, groups[g][s], groups[g][t]))
    return out


def _mean_sd(values: Sequence[float]) -> dict[str, Any]:
    mean, sd, _ = mean_sd(values)
    return {"mean": mean, "sd": sd, "values": [float(v) for v in values]}


def _direction(
    kind: str, source: str, target: str, sides: list[Side], thresholds: Sequence[float], bins: int
) -> dict[str, Any]:
    figures = [side.figures(thresholds) for side in sides]
    hists = np.stack([side.histogram(bins) for side in sides])
    return {
        "kind": kind,
        "source": source,
        "target": target,
        "pairs": [[side.source, side.target] for side in sides],
        "figures": {key: _mean_sd([f[key] for f in figures]) for key in figures[0]},
        "histogram": {
            "mean": hists.mean(axis=0).tolist(),
            "sd": (hists.std(axis=0, ddof=1) if len(sides) > 1 else np.full(bins, np.nan)).tolist(),
        },
    }


def compare(
    entries: Sequence[LatentStats],
    threshold: float = 0.7,
    *,
    thresholds: Sequence[float] = THRESHOLDS,
    bins: int = N_BINS,
    lsa_max: int = LSA_MAX,
) -> dict[str, Any]:
    """Match the SAEs of one run (see :func:`pairings`) and aggregate per direction.

    Returns a JSON-ready dict: ``threshold``, ``thresholds``, ``bin_edges``, ``groups``
    (group → entry names by seed), ``directions`` (one per (kind, source group, target group):
    the pairs used, every figure of :meth:`Side.figures` as mean ± sd over pairs with the
    per-pair values, the mean histogram of best cosines) and ``one_to_one`` (method, seconds).
    """
    sides: dict[tuple[str, str, str], list[Side]] = {}
    seconds: list[float] = []
    methods: set[str] = set()
    for kind, g, h, a, b in pairings(entries):
        m = match(a, b, threshold, lsa_max=lsa_max)
        seconds.append(m.seconds)
        methods.add(m.method)
        sides.setdefault((kind, g, h), []).append(m.a_to_b)
        if kind != "control":
            sides.setdefault((kind, h, g), []).append(m.b_to_a)
    directions = [_direction(*key, found, thresholds, bins) for key, found in sides.items()]
    directions.sort(key=lambda d: KINDS.index(d["kind"]))
    return {
        "threshold": float(threshold),
        "thresholds": [float(t) for t in thresholds],
        "bin_edges": np.linspace(0.0, 1.0, bins + 1).tolist(),
        "groups": {
            g: {str(s): e.name for s, e in sorted(by_seed.items())} for g, by_seed in _groups(entries).items()
        },
        "directions": directions,
        "one_to_one": {
            "method": sorted(methods),
            "seconds_mean": float(np.mean(seconds)) if seconds else math.nan,
            "seconds_max": float(np.max(seconds)) if seconds else math.nan,
        },
    }
