"""What every report plot shares: one colour per series, short count ticks, plain log ticks, legends.

:func:`series_colours` assigns colours from the sorted series names, so the same series get
the same colours in every plot of a report, in the plot data the Vega templates read
(:mod:`pipeline.report.plotdata`) and between reports with the same series. A ``@beta0``
twin is its own series (its own colour) and is also drawn dashed / with ``x`` markers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from pipeline.saes.naming import BETA0_SUFFIX

PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
"""Matplotlib's tab10, as hex strings; series beyond ten reuse it (with the twin's styles)."""


def series_colours(series: Iterable[str]) -> dict[str, str]:
    """One colour per series, assigned in sorted order (the same names always get the same colours)."""
    names = sorted(set(series))
    return {s: PALETTE[i % len(PALETTE)] for i, s in enumerate(names)}


def twin(series: str) -> bool:
    """Whether ``series`` is a g-SAE read without its gradient (``…@beta0``)."""
    return series.endswith(BETA0_SUFFIX)


def short_number(value: float) -> str:
    """Tick label of a count: 0, 500, 50k, 1.2M (no run-together digits, no decimals on integers)."""
    v = float(value)
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= size:
            return f"{v / size:.3g}{suffix}"
    return f"{v:.0f}" if v == int(v) else f"{v:.3g}"


def count_axis(axis: Any) -> None:
    """Few ticks, labelled by :func:`short_number`."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    axis.set_major_locator(MaxNLocator(nbins=5, integer=True))
    axis.set_major_formatter(FuncFormatter(lambda v, _pos: short_number(v)))


def log_y(ax: Any) -> None:
    """Log-scale y with plain labels (0.2, 0.3, 1) on major and minor ticks, not 2 × 10⁻¹."""
    from matplotlib.ticker import FuncFormatter

    def minor(v: float, _pos: int) -> str:  # every minor tick within a decade, else 2 and 5 only
        lo, hi = ax.get_ylim()
        if v <= 0 or (hi > 10 * lo and round(v / 10 ** math.floor(math.log10(v))) not in (2, 5)):
            return ""
        return f"{v:.2g}"

    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:.2g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(minor))


def legend(target: Any, colours: Mapping[str, str], shown: Iterable[str], **kw: Any) -> Any:
    """A legend with one entry per series in ``shown`` (its colour and twin style)."""
    from matplotlib.lines import Line2D

    handles = [
        Line2D(
            [],
            [],
            color=colours[s],
            linestyle="--" if twin(s) else "-",
            marker="x" if twin(s) else "o",
            label=s,
        )
        for s in sorted(set(shown))
    ]
    return target.legend(handles=handles, fontsize=7, **kw)
