"""How well a cheap figure tracks the spliced CE: Spearman rank correlations across entries.

``fo_loss_err`` (mean |g · (x − x̂)|, :mod:`pipeline.evaluate.metrics`) needs only the store,
no LM; the figure it stands in for is the CE cost of splicing, ``ce_spliced − ce_clean``.
Across the entries of one run (variants, seeds and ``@beta0`` twins evaluated on the same
tokens) the rank correlation of each cheap figure with that CE cost says whether ordering
SAEs by it orders them by CE. FVU is given beside it for comparison. With fewer than
:data:`MIN_ENTRIES` entries no correlation is reported.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from pipeline.report.entries import mean_sd

MIN_ENTRIES = 3
TARGET = "ce_delta"
"""``ce_spliced − ce_clean`` (nats per prediction)."""
CHEAP = (("fo_loss_err", "first-order loss error |g·(x − x̂)|"), ("fvu", "FVU"))
"""The figures correlated with :data:`TARGET`, with their labels (``fo_loss_delta`` is added
when present)."""


def _ranks(v: np.ndarray) -> np.ndarray:
    """Ranks 1 … n, ties given their average rank."""
    order = np.argsort(v, kind="mergesort")
    ranks = np.empty(len(v), dtype=np.float64)
    ranks[order] = np.arange(1, len(v) + 1, dtype=np.float64)
    for value in np.unique(v):
        tied = v == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's ρ (Pearson correlation of average ranks); NaN below 2 pairs or for a constant side."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.size < 2:
        return math.nan
    rx, ry = _ranks(x) - (x.size + 1) / 2, _ranks(y) - (y.size + 1) / 2
    denom = math.sqrt(float((rx**2).sum() * (ry**2).sum()))
    return float((rx * ry).sum() / denom) if denom > 0 else math.nan


def ce_delta(m: Mapping[str, float | None]) -> float | None:
    """``ce_spliced − ce_clean`` of one entry (None when either is missing)."""
    s, c = m.get("ce_spliced"), m.get("ce_clean")
    if s is None or c is None or not (math.isfinite(s) and math.isfinite(c)):
        return None
    return float(s) - float(c)


def correlations(entries: Mapping[str, Mapping[str, float | None]]) -> dict[str, dict[str, float]]:
    """figure → {"rho", "n"}: Spearman ρ of the figure with ce_spliced − ce_clean over the entries
    holding both (figures with fewer than :data:`MIN_ENTRIES` such entries are left out)."""
    out: dict[str, dict[str, float]] = {}
    for key in (*(k for k, _ in CHEAP), "fo_loss_delta"):
        pairs = []
        for m in entries.values():
            value, target = m.get(key), ce_delta(m)
            if value is not None and target is not None and math.isfinite(value):
                pairs.append((float(value), target))
        if len(pairs) >= MIN_ENTRIES:
            a, b = zip(*pairs, strict=True)
            out[key] = {"rho": spearman(a, b), "n": float(len(pairs))}
    return out


def correlation_lines(
    entries: Mapping[str, Mapping[str, float | None]], scope: str = "this run"
) -> list[str]:
    """Markdown bullets of :func:`correlations` ([] without fo_loss_err on ≥ MIN_ENTRIES entries)."""
    rho = correlations(entries)
    if "fo_loss_err" not in rho:
        return []
    labels = dict(CHEAP) | {"fo_loss_delta": "signed first-order estimate g·(x̂ − x)"}
    n = int(rho["fo_loss_err"]["n"])
    lines = [
        f"- Spearman ρ with CE spliced − CE clean, computed across the {n} entries of {scope} "
        "(variants, seeds and `@beta0` twins on the same tokens; 1 = same order):"
    ]
    for key, r in rho.items():
        lines.append(f"  - {labels[key]}: ρ = {r['rho']:+.3f} (n = {int(r['n'])})")
    lines.append(
        "- A high ρ here licenses ranking SAEs of this kind by the first-order error without the LM; "
        "it is measured within this run only (same layer, same tokens) and does not transfer across "
        "architectures, layers or models unchecked."
    )
    return lines


def grouped_rows(groups: Mapping[str, Sequence[Mapping[str, float | None]]]) -> list[list[str]]:
    """Per group: n, FVU, fo_loss_err, fo_loss_delta and CE spliced − CE clean as mean ± sd."""
    rows = []
    for group, ms in groups.items():
        cells = [f"`{group}`"]
        n = 0
        for values in (
            [m.get("fvu") for m in ms],
            [m.get("fo_loss_err") for m in ms],
            [m.get("fo_loss_delta") for m in ms],
            [ce_delta(m) for m in ms],
        ):
            mean, sd, count = mean_sd(values)
            n = max(n, count)
            cells.append(
                "–"
                if not math.isfinite(mean)
                else f"{mean:.4f}" + (f" ± {sd:.4f}" if math.isfinite(sd) else "")
            )
        rows.append([cells[0], str(n), *cells[1:]])
    return rows


GROUPED_HEAD = ("group", "seeds", "FVU", "FO loss err.", "FO Δloss", "CE spliced − clean")
FO_NOTE = (
    "FO loss err. = mean over the evaluated (non-first) positions of |g · (x − x̂)|, FO Δloss = the mean of "
    "g · (x̂ − x), with g the stored gradient of the context's summed next-token loss: nats per prediction, "
    "so FO Δloss is the first-order estimate of CE spliced − CE clean (same rows, no T/(T−1) factor). "
    "Computed from the store alone, no LM."
)
