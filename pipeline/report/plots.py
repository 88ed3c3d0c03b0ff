"""PNG plots of the evaluate stage (matplotlib, Agg backend): what the report embeds.

Rules every plot follows, so that the report compares at a glance:

- one colour per series in every plot (:func:`pipeline.report.style.series_colours`, from the
  sorted series names; a g-SAE and its ``@beta0`` twin are two series with two colours; the
  twin is also dashed / hatched / drawn with ``x`` markers);
- seeds are summarised as mean ± sd per series (error bars or a shaded band), the seeds
  themselves drawn faintly behind;
- nothing degenerate: with one k the loss-recovered plot shows the series side by side at
  that k instead of a "vs k" strip, and a training panel whose values never change (e.g. no
  dead latent during the whole run) is left out and named in a note instead;
- readable ticks: token counts as 100k / 1.2M, k and other integers without decimals.

:func:`figures` draws every figure (tests read their artists); :func:`make_plots` writes them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.fileio import atomic_write
from pipeline.report.entries import VariantResult, as_float, by_group, mean_sd
from pipeline.report.style import count_axis, legend, log_y, series_colours, short_number, twin

PNGS = {
    "training_curves": "training_curves.png",
    "loss_recovered": "loss_recovered.png",
    "fvu_vs_loss_recovered": "fvu_vs_loss_recovered.png",
    "steering": "steering.png",
}
TITLES = {
    "training_curves": "Training curves (mean ± sd over seeds)",
    "loss_recovered": "Loss recovered per series (mean ± sd over seeds)",
    "fvu_vs_loss_recovered": "FVU vs loss recovered (mean ± sd over seeds)",
    "steering": "Steering effect per latent",
}
CURVE_PANELS = (
    ("fvu", "FVU (batch, log scale)", "Training FVU"),
    ("dead_frac", "dead fraction (train window)", "Dead latents during training"),
    ("selection_shift", "selection shift vs β = 0", "g-SAE selection shift"),
)
"""Candidate training-curve panels: (curve column, y label, title); FVU is always drawn."""


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _cells_of(results: Sequence[VariantResult]) -> dict[str, tuple[str, int | None]]:
    """Variant name → (series, k): the cell whose seeds a training curve is averaged with."""
    return {r.name: (r.group, r.k) for r in results}


def training_curves(
    curves: Sequence[Mapping[str, Any]],
    cells: Mapping[str, tuple[str, int | None]],
    colours: Mapping[str, str],
) -> Any:
    """Per series and k, the mean over seeds of each figure vs training tokens with a ±1 sd band
    (labelled ``k=…`` when there are several k); panels whose values never change are named in
    a note instead of drawn flat."""
    plt = _pyplot()
    rows_by_cell: dict[tuple[str, int | None], dict[str, list[Mapping[str, Any]]]] = {}
    for row in curves:
        name = str(row["variant"])
        rows_by_cell.setdefault(cells.get(name, (name, None)), {}).setdefault(name, []).append(row)
    several_k = len({k for _, k in rows_by_cell}) > 1
    panels, flat = [], []
    for key, ylabel, title in CURVE_PANELS:
        values = np.array([as_float(r.get(key)) for r in curves], dtype=np.float64)
        values = values[np.isfinite(values)]
        if key == "fvu" or (values.size and np.ptp(values) > 0):
            panels.append((key, ylabel, title))
        elif values.size:
            flat.append(f"{title.lower()}: {short_number(values[0])} throughout for every variant")
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    for ax, (key, ylabel, title) in zip(axes[0], panels, strict=True):
        for (series, k), variants in sorted(
            rows_by_cell.items(), key=lambda item: (item[0][0], item[0][1] or 0)
        ):
            colour = colours.get(series, "#000000")
            by_tokens: dict[float, list[float]] = {}
            for rows in variants.values():
                xs = [as_float(r["tokens"]) for r in rows]
                ys = [as_float(r.get(key)) for r in rows]
                if all(not np.isfinite(y) for y in ys):
                    continue
                ax.plot(xs, ys, color=colour, alpha=0.25, linewidth=0.8)  # each seed, faint
                for x, y in zip(xs, ys, strict=True):
                    by_tokens.setdefault(x, []).append(y)
            if not by_tokens:
                continue
            xs = sorted(by_tokens)
            stats = [mean_sd(by_tokens[x]) for x in xs]
            mean = np.array([m for m, _, _ in stats])
            sd = np.nan_to_num(np.array([s for _, s, _ in stats]))
            ax.plot(
                xs,
                mean,
                color=colour,
                linewidth=1.8,
                linestyle="--" if twin(series) else "-",
                marker="o" if len(xs) < 30 else None,  # a short curve (or one logged step) stays visible
                markersize=4,
            )
            ax.fill_between(xs, mean - sd, mean + sd, color=colour, alpha=0.2, linewidth=0)
            if several_k and np.isfinite(mean[-1]):
                ax.annotate(
                    f"k={k}",
                    (xs[-1], mean[-1]),
                    fontsize=7,
                    color=colour,
                    xytext=(3, 0),
                    textcoords="offset points",
                )
        if key == "fvu":
            log_y(ax)
        count_axis(ax.xaxis)
        ax.set(xlabel="training tokens", ylabel=ylabel, title=title)
        ax.grid(alpha=0.3)
    if rows_by_cell:
        legend(
            axes[0][0],
            colours,
            {series for series, _ in rows_by_cell},
            title="series (line: mean, band: ±1 sd)",
        )
    else:
        axes[0][0].text(
            0.5, 0.5, "no training curves", ha="center", va="center", transform=axes[0][0].transAxes
        )
    if flat:
        fig.text(0.01, -0.02, "Not drawn (constant): " + "; ".join(flat) + ".", fontsize=8, ha="left")
    fig.tight_layout()
    return fig


def _metric_panel(
    ax: Any, groups: Mapping[str, Sequence[VariantResult]], key: str, colours: Mapping[str, str]
) -> bool:
    """One series per x position (one k): seeds as faint dots, mean ± sd as a bar; False if no data."""
    drawn = False
    names = sorted(groups)
    for i, series in enumerate(names):
        values = [as_float(r.metrics.get(key)) for r in groups[series]]
        mean, sd, n = mean_sd(values)
        if not n:
            continue
        drawn = True
        c = colours[series]
        ax.scatter([i] * len(values), values, color=c, alpha=0.35, s=14, zorder=2)
        ax.errorbar(
            [i],
            [mean],
            yerr=[[0.0 if not np.isfinite(sd) else sd]],
            fmt="x" if twin(series) else "D",
            color=c,
            capsize=5,
            markersize=7,
            zorder=3,
        )
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right", fontsize=8)
    ax.set_xlim(-0.6, len(names) - 0.4)
    return drawn


def loss_recovered(results: Sequence[VariantResult], colours: Mapping[str, str]) -> Any:
    """With one k: per series, loss recovered (and SAELens's CE loss score) as mean ± sd over
    seeds side by side. With several k: mean ± sd vs k, one line per series."""
    plt = _pyplot()
    ks = sorted({r.k for r in results})
    groups = by_group(results)
    keys = [("loss_recovered", "loss recovered (ours)")]
    if any("ce_loss_score" in r.metrics for r in results):
        keys.append(("ce_loss_score", "CE loss score (SAELens)"))
    fig, axes = plt.subplots(1, len(keys), figsize=(5.5 * len(keys), 4.3), squeeze=False)
    for ax, (key, label) in zip(axes[0], keys, strict=True):
        if len(ks) == 1:
            _metric_panel(ax, groups, key, colours)
            ax.set(ylabel=label, title=f"{label}, k = {ks[0]}")
        else:
            for series, rs in sorted(groups.items()):
                stats = [(k, *mean_sd(r.metrics.get(key) for r in rs if r.k == k)) for k in ks]
                pts = [(k, m, s) for k, m, s, n in stats if n]
                if not pts:
                    continue
                x, m, s = (np.array(v, dtype=np.float64) for v in zip(*pts, strict=True))
                ax.errorbar(
                    x,
                    m,
                    yerr=np.nan_to_num(s),
                    color=colours[series],
                    linestyle="--" if twin(series) else "-",
                    marker="x" if twin(series) else "o",
                    capsize=3,
                )
            ax.set_xscale("log", base=2)
            ax.set_xticks(ks, [str(k) for k in ks])
            ax.minorticks_off()
            ax.set(xlabel="k (active latents)", ylabel=label, title=f"{label} vs k")
        ax.grid(alpha=0.3)
    legend(axes[0][-1], colours, groups, title="series (mean ± sd; dots: seeds)")
    fig.tight_layout()
    return fig


def fvu_vs_loss_recovered(results: Sequence[VariantResult], colours: Mapping[str, str]) -> Any:
    """Seeds as faint points; per series and k the mean with ±1 sd bars on both axes."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    several_k = len({r.k for r in results}) > 1
    groups = by_group(results)
    for series, rs in sorted(groups.items()):
        c = colours[series]
        for k in sorted({r.k for r in rs}):
            at_k = [r for r in rs if r.k == k]
            xs = [as_float(r.metrics.get("fvu")) for r in at_k]
            ys = [as_float(r.metrics.get("loss_recovered")) for r in at_k]
            ax.scatter(xs, ys, color=c, alpha=0.3, s=14)
            (mx, sx, nx), (my, sy, _) = mean_sd(xs), mean_sd(ys)
            if not nx:
                continue
            ax.errorbar(
                [mx],
                [my],
                xerr=[[np.nan_to_num(sx)]],
                yerr=[[np.nan_to_num(sy)]],
                fmt="x" if twin(series) else "o",
                color=c,
                capsize=3,
                markersize=7,
            )
            if several_k:
                ax.annotate(f"k={k}", (mx, my), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.set(xlabel="FVU (centred, held out)", ylabel="loss recovered", title="FVU vs loss recovered")
    ax.grid(alpha=0.3)
    legend(ax, colours, groups, title="series (mean ± sd; dots: seeds)")
    fig.tight_layout()
    return fig


def steering_boxes(results: Sequence[VariantResult]) -> list[tuple[str, str, np.ndarray, np.ndarray]]:
    """(series, label, KL values, |Δ log p| values): one box per (series, k), seeds pooled."""
    boxes: list[tuple[str, str, np.ndarray, np.ndarray]] = []
    several_k = len({r.k for r in results}) > 1
    for group, rs in sorted(by_group(results).items()):
        for k in sorted({r.k for r in rs}):
            steered = [r.steer for r in rs if r.k == k and r.steer is not None and len(r.steer.kl)]
            if steered:
                boxes.append(
                    (
                        group,
                        f"{group}\nk={k}" if several_k else group,
                        np.concatenate([s.kl for s in steered]),
                        np.concatenate([s.logit for s in steered]),
                    )
                )
    return boxes


def steering(results: Sequence[VariantResult], colours: Mapping[str, str]) -> Any:
    """Steering KL and max |Δ log p| per latent: one box per (series, k), never pooling values of k."""
    plt = _pyplot()
    boxes = steering_boxes(results)
    fig, axes = plt.subplots(1, 2, figsize=(max(10, 1.2 * len(boxes) + 4), 4.5))
    for ax, col, label in (
        (axes[0], 2, "KL(p_steered ‖ p_clean) per token"),
        (axes[1], 3, "max |Δ log p| (most-affected token)"),
    ):
        if boxes:
            data: list[np.ndarray] = [np.asarray(b[col]) for b in boxes]
            art = ax.boxplot(data, showfliers=True, patch_artist=True, medianprops={"color": "black"})
            for patch, b in zip(art["boxes"], boxes, strict=True):
                patch.set_facecolor(colours[b[0]])
                patch.set_alpha(0.45)
                if twin(b[0]):
                    patch.set_hatch("//")
            ax.set_xticks(
                range(1, len(boxes) + 1), [b[1] for b in boxes], rotation=20, ha="right", fontsize=7
            )
            if all(np.all(d > 0) for d in data):
                log_y(ax)
        else:
            ax.text(0.5, 0.5, "no steering data", ha="center", va="center", transform=ax.transAxes)
        ax.set(ylabel=label)
        ax.grid(alpha=0.3, axis="y")
    if boxes:
        legend(axes[1], colours, [b[0] for b in boxes], title="series")
    fig.suptitle("Steering effect per latent (one box per series and k; seeds pooled)")
    fig.tight_layout()
    return fig


def figures(results: Sequence[VariantResult], curves: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Plot id → matplotlib figure, all drawn with one :func:`series_colours` map."""
    cells = _cells_of(results)
    colours = series_colours(
        [
            *(r.group for r in results),
            *(cells.get(str(c["variant"]), (str(c["variant"]), None))[0] for c in curves),
        ]
    )
    out: dict[str, Any] = {}
    if curves:
        out["training_curves"] = training_curves(curves, cells, colours)
    out["loss_recovered"] = loss_recovered(results, colours)
    out["fvu_vs_loss_recovered"] = fvu_vs_loss_recovered(results, colours)
    out["steering"] = steering(results, colours)
    return out


def make_plots(
    plots_dir: str | Path, results: Sequence[VariantResult], curves: Sequence[Mapping[str, Any]]
) -> dict[str, Path]:
    """Every PNG; returns plot id → path (training curves only when there are curve rows)."""
    plt = _pyplot()
    root = Path(plots_dir)
    out: dict[str, Path] = {}
    for key, fig in figures(results, curves).items():
        path = root / PNGS[key]

        def save(tmp: str, f: Any = fig) -> None:
            f.savefig(tmp, format="png", dpi=110, bbox_inches="tight")

        atomic_write(path, save)
        plt.close(fig)
        out[key] = path
    return out
