"""What every report, table and plot receives: one :class:`VariantResult` per evaluated entry,
the grouping into series, and mean ± sd over seeds (one definition for all of them).

A *group* (series) is the architecture plus the hyper-parameters that are not k or seed,
e.g. ``topk-x8``, ``gsae-b1-aug-x8``, ``gsae-b1-aug-x8@beta0``. The sd of a single value is
``nan`` (undefined, printed as no spread), never 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)


@dataclass
class VariantResult:
    """Everything the report needs about one evaluated entry (a variant or its β=0 twin)."""

    name: str
    group: str
    architecture: str
    k: int
    seed: int | None
    metrics: dict[str, float]
    steer: Any = None
    """A :class:`pipeline.evaluate.steering.SteerResult` or None when steering was skipped."""
    tokens: list[str] = field(default_factory=list)
    """Decoded most-affected token of each steered latent."""
    hook: str = ""
    """The SAE's hook (block) name."""


def as_float(value: Any) -> float:
    """``value`` as a float, ``None`` as ``nan``."""
    return math.nan if value is None else float(value)


def mean_sd(values: Iterable[Any]) -> tuple[float, float, int]:
    """(mean, sample sd, n) of the finite values; sd is ``nan`` below two values, all ``nan`` for none."""
    v = np.array([as_float(x) for x in values], dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return math.nan, math.nan, 0
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else math.nan, int(v.size)


def group_by(items: Iterable[T], key: Callable[[T], K]) -> dict[K, list[T]]:
    """Items grouped by ``key``, groups in first-seen order, items in input order."""
    out: dict[K, list[T]] = {}
    for item in items:
        out.setdefault(key(item), []).append(item)
    return out


def by_group(results: Sequence[VariantResult]) -> dict[str, list[VariantResult]]:
    """Results grouped by series, in first-seen order, each sorted by (k, seed)."""
    return {
        g: sorted(rs, key=lambda r: (r.k, r.seed if r.seed is not None else -1))
        for g, rs in group_by(results, lambda r: r.group).items()
    }
