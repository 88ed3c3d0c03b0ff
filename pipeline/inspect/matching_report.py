"""The report of :func:`pipeline.inspect.matching.compare`: a markdown section and a PNG.

:func:`matching_markdown` writes the tables (mean ± sd over seed pairs), what each figure
means, the threshold, the pairs used and how to read the result against its controls;
:func:`write_matching_plot` draws the histograms of best-match cosines per direction.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.inspect.matching import STATS, THRESHOLDS, Match

_STAT_LABEL = {"density": "density", "mean_act": "mean act", "mean_abs_attr": "mean \\|attr\\|"}


def _fmt(fig: Mapping[str, Any], digits: int = 3) -> str:
    mean, sd = fig["mean"], fig["sd"]
    if not math.isfinite(mean):
        return "–"
    return f"{mean:.{digits}g}" + (f" ± {sd:.2g}" if math.isfinite(sd) else "")


def _label(d: Mapping[str, Any]) -> str:
    return f"{d['source']} → {d['target']}" + ("" if d["kind"] == "cross" else f" ({d['kind']})")


def _overview_table(result: Mapping[str, Any]) -> list[str]:
    ts = result["thresholds"]
    head = [
        "direction",
        "pairs",
        "alive latents",
        "median best cos",
        *(f"unmatched < {t:g}" for t in ts),
        "1:1 mean cos",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for d in result["directions"]:
        f = d["figures"]
        cells = [
            _label(d),
            str(len(d["pairs"])),
            _fmt(f["n_alive"], 4),
            _fmt(f["median_best_cos"]),
            *(_fmt(f[f"share_unmatched@{t:g}"]) for t in ts),
            _fmt(f["one_to_one_mean_cos"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _stats_table(result: Mapping[str, Any]) -> list[str]:
    head = ["direction", "matched", "unmatched"]
    for stat in STATS:
        head += [
            f"{_STAT_LABEL[stat]} matched",
            f"{_STAT_LABEL[stat]} unmatched",
            f"{_STAT_LABEL[stat]} ratio u/m",
        ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for d in result["directions"]:
        f = d["figures"]
        cells = [_label(d), _fmt(f["n_matched"], 4), _fmt(f["n_unmatched"], 4)]
        for stat in STATS:
            cells += [_fmt(f[f"matched_{stat}"]), _fmt(f[f"unmatched_{stat}"]), _fmt(f[f"ratio_{stat}"])]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def matching_markdown(result: Mapping[str, Any], plot: str | None = None) -> str:
    """The report section of a :func:`compare` result (``plot``: a relative PNG path to embed)."""
    t = result["threshold"]
    out = ["## Latents matched across SAEs (decoder cosine)", ""]
    if not result["directions"]:
        return "\n".join([*out, "No pair of SAEs to match (one seed of one architecture only).", ""])
    pairs = sorted({f"{a} ~ {b}" for d in result["directions"] for a, b in d["pairs"]})
    out += [
        "Every alive latent (density > 0; dead latents take no part) of the source SAE is matched to the "
        "target latent whose unit decoder row has the highest (signed) cosine with its own. *Median best "
        "cos*: the median of these best cosines; *unmatched < t*: the share of alive source latents whose best "
        f"cosine is below t; *1:1 mean cos*: the mean cosine of a one-to-one matching maximising the total "
        f"cosine ({', '.join(result['one_to_one']['method'])}). A latent is *matched* at the threshold "
        f"**{t:g}**. Figures are mean ± sd over seed pairs (no sd: a single pair).",
        "",
        *_overview_table(result),
        "",
        f"Matched (best cos ≥ {t:g}) vs unmatched source latents: their count, and the mean over those "
        "latents of the density (share of tokens it fires on), the mean activation over its firings and the "
        "mean |attribution| over its firings (|act · (d_i · g)|: the first-order effect of removing it on the "
        "loss); *ratio u/m* = unmatched mean / matched mean, per pair, then averaged.",
        "",
        *_stats_table(result),
        "",
        "**How to read this.** Two TopK SAEs trained from different seeds do not learn the same dictionary, so "
        "an unmatched share means nothing on its own: the g-SAE → TopK share is evidence that the g-SAE learns "
        "latents TopK lacks only by how far it exceeds the TopK → TopK (control) share at the same threshold; "
        "the g-SAE → g-SAE control says how reproducible the g-SAE's own dictionary is. The paper's motivation "
        "predicts unmatched g-SAE latents with a smaller mean activation (ratio < 1) and a larger mean "
        "|attribution| (ratio > 1) than the matched ones, beyond what the control's unmatched latents show. "
        "Rows marked *same-init* pair the same seed of two architectures: the trainer seeds the initialisation "
        "with the seed, so both start from the same decoder, and their cosines measure how far training moved "
        "the latents apart from a common start (nothing else in the run compares with them); the unmarked "
        "cross rows pair different seeds and compare with the controls.",
        "",
        "Pairs: " + "; ".join(pairs) + ".",
        "",
    ]
    if plot:
        out += [f"![best-match cosines]({plot})", ""]
    return "\n".join(out)


def write_matching_plot(path: str | Path, result: Mapping[str, Any]) -> Path:
    """PNG: per direction, the mean share of alive latents per best-match cosine bin."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.core.fileio import atomic_write

    edges = np.asarray(result["bin_edges"])
    fig, ax = plt.subplots(figsize=(7, 4))
    for d in result["directions"]:
        hist = np.asarray(d["histogram"]["mean"])
        style = {"cross": "-", "control": "--"}.get(d["kind"], ":")
        ax.step(edges, np.append(hist, hist[-1]), where="post", linestyle=style, label=_label(d))
    ax.axvline(result["threshold"], color="grey", linewidth=0.8, linestyle=":")
    ax.set_xlabel("best-match decoder cosine")
    ax.set_ylabel("share of alive latents")
    ax.set_title("Best-match cosines (mean over seed pairs)")
    ax.legend(fontsize=7)
    out = Path(path)
    atomic_write(out, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)
    return out


def pair_table(m: Match, thresholds: Sequence[float] = THRESHOLDS) -> str:
    """Both directions of one matched pair as a Markdown table (``gsae match``)."""
    keys = ["n_alive", "median_best_cos", *(f"share_unmatched@{t:g}" for t in thresholds)]
    keys += ["one_to_one_mean_cos", "n_unmatched"]
    keys += [f"{g}_{s}" for s in STATS for g in ("matched", "unmatched")]
    sides = (m.a_to_b, m.b_to_a)
    figs = [side.figures(thresholds) for side in sides]
    head = ["figure", *(f"{side.source} → {side.target}" for side in sides)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key in keys:
        lines.append(f"| {key} | " + " | ".join(_fmt({"mean": f[key], "sd": math.nan}) for f in figs) + " |")
    return "\n".join(lines) + f"\n\nmatched: best cos ≥ {m.a_to_b.threshold:g}; one-to-one by {m.method}\n"
