"""PNG plots of the evaluate stage (matplotlib, Agg backend): what the report embeds.

Every plot overlays the variants in one chart with a legend; a series (architecture plus
hyper-parameters other than k and seed) keeps one colour in every plot, and β = 0 twins
are dashed. The steering boxes are one per (series, k): values of k are never pooled.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.fileio import atomic_write
from pipeline.report.entries import VariantResult, as_float, by_group
from pipeline.saes.naming import BETA0_SUFFIX

PNGS = {
    "training_curves": "training_curves.png",
    "loss_recovered_vs_k": "loss_recovered_vs_k.png",
    "fvu_vs_loss_recovered": "fvu_vs_loss_recovered.png",
    "steering": "steering.png",
}
TITLES = {
    "training_curves": "Training curves",
    "loss_recovered_vs_k": "Loss recovered vs k",
    "fvu_vs_loss_recovered": "FVU vs loss recovered",
    "steering": "Steering effect per latent",
}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    plt = _pyplot()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)
    return path


def _colours(series: Sequence[str]) -> dict[str, Any]:
    """One colour per series; a β = 0 twin takes its parent's colour."""
    cmap = _pyplot().get_cmap("tab10")
    bases = list(dict.fromkeys(s.removesuffix(BETA0_SUFFIX) for s in series))
    return {s: cmap(bases.index(s.removesuffix(BETA0_SUFFIX)) % 10) for s in series}


def _style(series: str) -> str:
    return "--" if series.endswith(BETA0_SUFFIX) else "-"


def training_curves(path: Path, curves: Sequence[Mapping[str, Any]]) -> Path:
    """Training FVU and dead fraction vs tokens, one labelled line per variant."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    names = list(dict.fromkeys(str(r["variant"]) for r in curves))
    cmap = plt.get_cmap("tab10")
    for i, name in enumerate(names):
        rows = [r for r in curves if r["variant"] == name]
        tokens = [r["tokens"] for r in rows]
        for ax, key in zip(axes, ("fvu", "dead_frac"), strict=True):
            ax.plot(
                tokens,
                [r[key] for r in rows],
                color=cmap(i % 10),
                linestyle="-" if i < 10 else "--",
                marker="o" if len(rows) < 30 else None,
                markersize=3,
                label=name,
            )
    if names:
        axes[0].set_yscale("log")
    else:
        for ax in axes:
            ax.text(0.5, 0.5, "no training curves", ha="center", va="center", transform=ax.transAxes)
    axes[0].set(xlabel="training tokens", ylabel="FVU (batch, log scale)", title="Training FVU")
    axes[1].set(
        xlabel="training tokens", ylabel="dead fraction (train window)", title="Dead latents during training"
    )
    for ax in axes:
        ax.grid(alpha=0.3)
    if names:
        axes[0].legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def loss_recovered_vs_k(path: Path, results: Sequence[VariantResult]) -> Path:
    """Mean loss recovered per k, one line per series (seeds as dots)."""
    plt = _pyplot()
    groups = by_group(results)
    colours = _colours(list(groups))
    fig, ax = plt.subplots(figsize=(6, 4))
    for group, rs in groups.items():
        ks = sorted({r.k for r in rs})
        means = [np.nanmean([as_float(r.metrics.get("loss_recovered")) for r in rs if r.k == k]) for k in ks]
        ax.plot(ks, means, marker="o", linestyle=_style(group), color=colours[group], label=group)
        ax.scatter(
            [r.k for r in rs],
            [as_float(r.metrics.get("loss_recovered")) for r in rs],
            s=12,
            color=colours[group],
            alpha=0.5,
        )
    all_k = sorted({r.k for r in results})
    if len(all_k) > 1:
        ax.set_xscale("log", base=2)
    ax.set_xticks(all_k, [str(k) for k in all_k])
    ax.minorticks_off()
    ax.set(xlabel="k (active latents)", ylabel="loss recovered", title="Loss recovered vs k")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def fvu_vs_loss_recovered(path: Path, results: Sequence[VariantResult]) -> Path:
    """One point per variant, coloured by series and annotated with k."""
    plt = _pyplot()
    groups = by_group(results)
    colours = _colours(list(groups))
    fig, ax = plt.subplots(figsize=(6, 4))
    for group, rs in groups.items():
        xs = [as_float(r.metrics.get("fvu")) for r in rs]
        ys = [as_float(r.metrics.get("loss_recovered")) for r in rs]
        marker = "x" if group.endswith(BETA0_SUFFIX) else "o"
        ax.scatter(xs, ys, label=group, color=colours[group], marker=marker)
        for r, x, y in zip(rs, xs, ys, strict=True):
            ax.annotate(f"k{r.k}", (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set(xlabel="FVU (centred, held out)", ylabel="loss recovered", title="FVU vs loss recovered")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def steering_boxes(results: Sequence[VariantResult]) -> list[tuple[str, str, np.ndarray, np.ndarray]]:
    """(series, label, KL values, |Δ log p| values): one box per (series, k), seeds pooled."""
    boxes: list[tuple[str, str, np.ndarray, np.ndarray]] = []
    for group, rs in by_group(results).items():
        for k in sorted({r.k for r in rs}):
            steered = [r.steer for r in rs if r.k == k and r.steer is not None and len(r.steer.kl)]
            if steered:
                boxes.append(
                    (
                        group,
                        f"{group}\nk={k}",
                        np.concatenate([s.kl for s in steered]),
                        np.concatenate([s.logit for s in steered]),
                    )
                )
    return boxes


def steering(path: Path, results: Sequence[VariantResult]) -> Path:
    """Steering KL and max |Δ log p| per latent: one box per (series, k), never pooling values of k."""
    plt = _pyplot()
    boxes = steering_boxes(results)
    colours = _colours([b[0] for b in boxes])
    fig, axes = plt.subplots(1, 2, figsize=(max(10, 1.2 * len(boxes) + 4), 4.5))
    for ax, col, label in (
        (axes[0], 2, "KL(p_steered ‖ p_clean) per token"),
        (axes[1], 3, "max |Δ log p| (most-affected token)"),
    ):
        if boxes:
            data: list[np.ndarray] = [np.asarray(b[col]) for b in boxes]
            art = ax.boxplot(data, showfliers=True, patch_artist=True)
            for patch, b in zip(art["boxes"], boxes, strict=True):
                patch.set_facecolor(colours[b[0]])
                patch.set_alpha(0.45)
                if b[0].endswith(BETA0_SUFFIX):
                    patch.set_hatch("//")
            ax.set_xticks(
                range(1, len(boxes) + 1), [b[1] for b in boxes], rotation=30, ha="right", fontsize=7
            )
            if all(np.all(d > 0) for d in data):
                ax.set_yscale("log")
        else:
            ax.text(0.5, 0.5, "no steering data", ha="center", va="center", transform=ax.transAxes)
        ax.set(ylabel=label)
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle("Steering effect per latent (one box per series and k; hatched: β = 0 at inference)")
    fig.tight_layout()
    return _save(fig, path)


def make_plots(
    plots_dir: str | Path, results: Sequence[VariantResult], curves: Sequence[Mapping[str, Any]]
) -> dict[str, Path]:
    """Every PNG; returns plot id → path (training curves only when there are curve rows)."""
    root = Path(plots_dir)
    out: dict[str, Path] = {}
    if curves:
        out["training_curves"] = training_curves(root / PNGS["training_curves"], curves)
    out["loss_recovered_vs_k"] = loss_recovered_vs_k(root / PNGS["loss_recovered_vs_k"], results)
    out["fvu_vs_loss_recovered"] = fvu_vs_loss_recovered(root / PNGS["fvu_vs_loss_recovered"], results)
    out["steering"] = steering(root / PNGS["steering"], results)
    return out
