"""Outputs of the evaluate stage: metrics JSON, plot data (CSV for DVC), PNG plots, report.md.

Every file is written atomically (temporary file in the same folder, then rename).
Plot data lives in one sub-folder per plot with one CSV per *group* (architecture plus the
hyper-parameters that are not k or seed, e.g. ``topk-x8``, ``gsae-b1-aug-x8``,
``gsae-b1-aug-x8@beta0``), so a DVC directory plot draws one series per group:

- ``loss_recovered_vs_k/<group>.csv``   k, loss_recovered, fvu, seed, variant
- ``fvu_vs_loss_recovered/<group>.csv`` fvu, loss_recovered, k, seed, variant
- ``steering/<group>.csv``              quantile, steer_kl, steer_logit, alpha, latent, token, k, variant
  (one row per steered latent, sorted by steer_kl; quantile = (rank + 0.5) / rows)

plus ``variants.csv`` at the top of the folder: one row per entry with every metric (long
format, for tools that colour by a column).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.fileio import atomic_write, atomic_write_text

PLOT_DIRS = ("loss_recovered_vs_k", "fvu_vs_loss_recovered", "steering")
PNGS = {
    "loss_recovered_vs_k": "loss_recovered_vs_k.png",
    "fvu_vs_loss_recovered": "fvu_vs_loss_recovered.png",
    "steering": "steering.png",
}


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
    """A :class:`pipeline.steering.SteerResult` or None when steering was skipped."""
    tokens: list[str] = field(default_factory=list)
    """Decoded most-affected token of each steered latent."""


# ----------------------------------------------------------------------------- files


def _clean(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def write_metrics(path: str | Path, metrics: Mapping[str, Mapping[str, float]]) -> Path:
    """Flat JSON ``{variant: {metric: number}}`` (non-finite numbers become null)."""
    obj = {name: {k: _clean(v) for k, v in m.items()} for name, m in metrics.items()}
    return atomic_write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


def safe_name(text: str) -> str:
    """A file-name-safe version of a group label."""
    return re.sub(r"[^A-Za-z0-9._@=-]+", "_", text)


def _csv(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: row.get(c, "") for c in columns})
    return buf.getvalue()


def by_group(results: Sequence[VariantResult]) -> dict[str, list[VariantResult]]:
    """Results grouped by ``group``, in first-seen order, each sorted by (k, seed)."""
    groups: dict[str, list[VariantResult]] = defaultdict(list)
    for r in results:
        groups[r.group].append(r)
    return {g: sorted(rs, key=lambda r: (r.k, r.seed if r.seed is not None else -1)) for g, rs in groups.items()}


def write_plot_data(plots_dir: str | Path, results: Sequence[VariantResult]) -> list[Path]:
    """The CSVs of the three plots (stale CSVs in those folders are removed)."""
    root = Path(plots_dir)
    for sub in PLOT_DIRS:
        for old in (root / sub).glob("*.csv"):
            old.unlink()
    keys = sorted({k for r in results for k in r.metrics})
    table_rows = [
        {"variant": r.name, "group": r.group, "architecture": r.architecture, "k": r.k,
         "seed": "" if r.seed is None else r.seed, **r.metrics}
        for r in results
    ]
    written = [atomic_write_text(root / "variants.csv", _csv(table_rows, ["variant", "group", "architecture", "k", "seed", *keys]))]
    for group, rs in by_group(results).items():
        fname = f"{safe_name(group)}.csv"
        rows = [
            {
                "k": r.k,
                "seed": "" if r.seed is None else r.seed,
                "variant": r.name,
                "loss_recovered": r.metrics.get("loss_recovered"),
                "fvu": r.metrics.get("fvu"),
            }
            for r in rs
        ]
        written.append(atomic_write_text(root / "loss_recovered_vs_k" / fname, _csv(rows, ["k", "loss_recovered", "fvu", "seed", "variant"])))
        written.append(atomic_write_text(root / "fvu_vs_loss_recovered" / fname, _csv(rows, ["fvu", "loss_recovered", "k", "seed", "variant"])))
        steer_rows = []
        for r in rs:
            if r.steer is None:
                continue
            for j, lat in enumerate(r.steer.latents):
                steer_rows.append(
                    {
                        "variant": r.name, "k": r.k, "latent": int(lat), "alpha": float(r.steer.alphas[j]),
                        "steer_kl": float(r.steer.kl[j]), "steer_logit": float(r.steer.logit[j]),
                        "token": int(r.steer.token[j]),
                    }
                )
        if steer_rows:
            steer_rows.sort(key=lambda row: row["steer_kl"])
            for i, row in enumerate(steer_rows):
                row["quantile"] = (i + 0.5) / len(steer_rows)
            cols = ["quantile", "steer_kl", "steer_logit", "alpha", "latent", "token", "k", "variant"]
            written.append(atomic_write_text(root / "steering" / fname, _csv(steer_rows, cols)))
    return written


# ----------------------------------------------------------------------------- plots


def _save_png(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)
    return path


def make_plots(plots_dir: str | Path, results: Sequence[VariantResult]) -> dict[str, Path]:
    """The three PNG plots; returns plot id → path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    root = Path(plots_dir)
    groups = by_group(results)
    out: dict[str, Path] = {}

    fig, ax = plt.subplots(figsize=(6, 4))
    for group, rs in groups.items():
        ks = sorted({r.k for r in rs})
        means = [np.nanmean([_f(r.metrics.get("loss_recovered")) for r in rs if r.k == k]) for k in ks]
        style = "--" if group.endswith("@beta0") else "-"
        line = ax.plot(ks, means, marker="o", linestyle=style, label=group)[0]
        ax.scatter([r.k for r in rs], [_f(r.metrics.get("loss_recovered")) for r in rs], s=12, color=line.get_color(), alpha=0.5)
    all_k = sorted({r.k for r in results})
    if len(all_k) > 1:
        ax.set_xscale("log", base=2)
    ax.set_xticks(all_k, [str(k) for k in all_k])
    ax.minorticks_off()
    ax.set(xlabel="k (active latents)", ylabel="loss recovered", title="Loss recovered vs k")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    out["loss_recovered_vs_k"] = _save_png(fig, root / PNGS["loss_recovered_vs_k"])

    fig, ax = plt.subplots(figsize=(6, 4))
    for group, rs in groups.items():
        xs = [_f(r.metrics.get("fvu")) for r in rs]
        ys = [_f(r.metrics.get("loss_recovered")) for r in rs]
        ax.scatter(xs, ys, label=group)
        for r, x, y in zip(rs, xs, ys, strict=True):
            ax.annotate(f"k{r.k}", (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set(xlabel="FVU (centred)", ylabel="loss recovered", title="FVU vs loss recovered")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    out["fvu_vs_loss_recovered"] = _save_png(fig, root / PNGS["fvu_vs_loss_recovered"])

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    names, kls, logits = [], [], []
    for group, rs in groups.items():
        steered = [r.steer for r in rs if r.steer is not None and len(r.steer.kl)]
        if steered:
            names.append(group)
            kls.append(np.concatenate([s.kl for s in steered]))
            logits.append(np.concatenate([s.logit for s in steered]))
    for ax, data, label in ((axes[0], kls, "KL(p_steered ‖ p_clean) per token"), (axes[1], logits, "max |Δ log p| (most-affected token)")):
        if data:
            ax.boxplot(data, showfliers=True)
            ax.set_xticks(range(1, len(names) + 1), names, rotation=20, ha="right", fontsize=8)
            if all(np.all(d > 0) for d in data):
                ax.set_yscale("log")
        else:
            ax.text(0.5, 0.5, "no steering data", ha="center", va="center", transform=ax.transAxes)
        ax.set(ylabel=label)
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle("Steering effect per latent")
    out["steering"] = _save_png(fig, root / PNGS["steering"])
    return out


def _f(value: Any) -> float:
    return math.nan if value is None else float(value)


# ----------------------------------------------------------------------------- report


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e-3 and value != 0 else f"{value:.{digits}f}"
    return str(value)


TABLE_COLUMNS = (
    ("variant", None), ("group", None), ("k", None), ("fvu", "fvu"), ("mse", "mse"), ("l0", "l0"),
    ("dead", "dead_frac"), ("train dead", "train_dead_frac"), ("CE spliced", "ce_spliced"),
    ("loss rec.", "loss_recovered"), ("KL", "kl"), ("steer KL (median)", "steer_kl_median"),
    ("steer Δlogp (median)", "steer_logit_median"),
)


def table(results: Sequence[VariantResult]) -> str:
    """Markdown table of every entry."""
    head = "| " + " | ".join(c for c, _ in TABLE_COLUMNS) + " |"
    sep = "|" + "|".join("---" for _ in TABLE_COLUMNS) + "|"
    lines = [head, sep]
    for r in sorted(results, key=lambda r: (r.group, r.k, r.seed if r.seed is not None else -1)):
        cells = []
        for col, key in TABLE_COLUMNS:
            if key is None:
                cells.append({"variant": f"`{r.name}`", "group": r.group, "k": str(r.k)}[col])
            else:
                cells.append(_fmt(r.metrics.get(key)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _group_stats(rs: Sequence[VariantResult], key: str) -> tuple[float, float, int]:
    vals = np.array([_f(r.metrics.get(key)) for r in rs], dtype=np.float64)
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        return math.nan, math.nan, 0
    return float(vals.mean()), float(vals.std(ddof=1)) if vals.size > 1 else 0.0, int(vals.size)


def reading(results: Sequence[VariantResult]) -> list[str]:
    """A neutral, auto-generated summary: per k, the ranking by loss recovered and FVU."""
    lines: list[str] = []
    for k in sorted({r.k for r in results}):
        at_k = by_group([r for r in results if r.k == k])
        stats = {g: (_group_stats(rs, "loss_recovered"), _group_stats(rs, "fvu")) for g, rs in at_k.items()}
        ranked = sorted(stats, key=lambda g: -stats[g][0][0] if math.isfinite(stats[g][0][0]) else math.inf)
        if not ranked:
            continue
        best = ranked[0]
        (lr_b, lr_sd, n_b), (fvu_b, _, _) = stats[best]
        seeds = f" (mean of {n_b} seeds, std {lr_sd:.4f})" if n_b > 1 else ""
        text = f"- **k = {k}**: highest loss recovered: `{best}` with {_fmt(lr_b)}{seeds}, FVU {_fmt(fvu_b)}"
        others = []
        for g in ranked[1:]:
            (lr, sd, n), (fvu, _, _) = stats[g]
            spread = f" ± {sd:.4f}" if n > 1 else ""
            others.append(
                f"`{g}` {_fmt(lr)}{spread} (Δ {lr - lr_b:+.4f}), FVU {_fmt(fvu)} (Δ {fvu - fvu_b:+.4f})"
            )
        if others:
            text += "; then " + "; ".join(others)
        lines.append(text + ".")
        fvu_best = min(stats, key=lambda g: stats[g][1][0] if math.isfinite(stats[g][1][0]) else math.inf)
        if fvu_best != best:
            lines.append(f"  Lowest FVU at k = {k}: `{fvu_best}` ({_fmt(stats[fvu_best][1][0])}).")
    steer = {
        g: np.concatenate([r.steer.kl for r in rs if r.steer is not None and len(r.steer.kl)])
        for g, rs in by_group(results).items()
        if any(r.steer is not None and len(r.steer.kl) for r in rs)
    }
    if steer:
        parts = [f"`{g}` {_fmt(float(np.median(v)))}" for g, v in steer.items()]
        lines.append("- Median steering KL per latent: " + ", ".join(parts) + ".")
    return lines


def write_report(
    path: str | Path,
    results: Sequence[VariantResult],
    settings: Mapping[str, Any],
    pngs: Mapping[str, Path],
) -> Path:
    """Render report.md (plots embedded by paths relative to the report's folder)."""
    report_dir = Path(path).resolve().parent
    titles = {
        "loss_recovered_vs_k": "Loss recovered vs k",
        "fvu_vs_loss_recovered": "FVU vs loss recovered",
        "steering": "Steering effect per latent",
    }
    parts = [
        "# g-SAE evaluation report",
        "",
        "Generated by `gsae evaluate`. Every figure is recomputable from the files listed under Settings.",
        "",
        "## Reading",
        "",
        *reading(results),
        "",
        "## Variants",
        "",
        table(results),
        "",
        "`<variant>@beta0` is the same g-SAE encoded with β = 0 (no gradient at inference).",
        "FVU is centred (Σ‖x − x̂‖² / Σ‖x − x̄‖²); loss recovered = (CE_zero − CE_spliced) / (CE_zero − CE_clean);"
        " KL is the mean per-token KL(p_clean ‖ p_spliced). Steering: see docs/steering.md.",
        "",
        "## Plots",
        "",
    ]
    for key, png in pngs.items():
        rel = os.path.relpath(Path(png).resolve(), report_dir)
        parts += [f"### {titles.get(key, key)}", "", f"![{titles.get(key, key)}]({rel})", ""]
    parts += ["## Settings", "", "| setting | value |", "|---|---|"]
    for key, value in settings.items():
        shown = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
        parts.append(f"| {key} | {shown.replace('|', '/')} |")
    return atomic_write_text(path, "\n".join(parts) + "\n")
