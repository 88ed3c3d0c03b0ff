"""The plots of ``gsae summarize``: figures against L0 per variant family, and the β sweep.

Both read :func:`pipeline.report.summarize.summarize`'s output (group → mean and sd over
seeds) and draw ±1 sd error bars.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.saes.naming import grid_hparams


def pareto_plots(summary: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """Loss recovered, FVU and steering KL against L0, one line per variant family, ±1 sd bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    families: dict[str, list[dict[str, Any]]] = {}
    for entry in summary.values():
        families.setdefault(entry["label"], []).append(entry)
    paths = []
    for key, title in (
        ("loss_recovered", "Loss recovered"),
        ("fvu", "FVU (held-out)"),
        ("steer_kl_mean", "Steering KL"),
    ):
        if not any(key in e for e in summary.values()):
            continue
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for label, entries in families.items():
            pts = sorted((e["l0"][0], *e[key]) for e in entries if key in e and "l0" in e)
            if not pts:
                continue
            x, y, sd = (np.array(v, dtype=float) for v in zip(*pts, strict=True))
            style = "-o" if label == "topk" else ("--s" if "@β0" in label else "-^")
            ax.errorbar(
                x,
                y,
                yerr=np.nan_to_num(sd),
                fmt=style,
                capsize=3,
                label=label,
                linewidth=1.5 if label == "topk" else 1,
                color=plt.get_cmap("tab20")(len(ax.lines) % 20),
            )
        ax.set_xscale("log", base=2)
        ax.set_xlabel("L0 (active latents per token, held-out)")
        ax.set_ylabel(title)
        ax.set_title(f"{title} vs L0 (mean ± sd over seeds)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        path = out / f"{key}_vs_l0.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def beta_sweep_plot(summary: dict[str, Any], out_dir: str | Path) -> Path | None:
    """Loss recovered, held-out dead fraction and selection shift against β, per k (None if < 2 βs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = list(summary.values())
    families: dict[tuple[int, str, str, bool], list[dict[str, Any]]] = {}
    for e in entries:
        if "beta" in grid_hparams(e["architecture"]):
            families.setdefault((e["k"], e["architecture"], e["value_mode"], e["with_grad"]), []).append(e)
    if not any(len({e["beta"] for e in fam}) > 1 for fam in families.values()):
        return None
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    keys = (
        ("loss_recovered", "loss recovered"),
        ("dead_frac", "dead latents (held-out)"),
        ("selection_shift", "selection shift"),
    )
    colors = plt.get_cmap("tab10")
    for i, ((k, arch, mode, grad), fam) in enumerate(sorted(families.items())):
        fam = sorted(fam, key=lambda e: e["beta"])
        label = f"k={k} {arch} {mode}" + ("" if grad else " @β0 (no gradient at inference)")
        for ax, (key, _) in zip(axes, keys, strict=True):
            pts = [(e["beta"], *e[key]) for e in fam if key in e]
            if pts and not (key == "selection_shift" and not grad):
                x, y, sd = (np.array(v, dtype=float) for v in zip(*pts, strict=True))
                ax.errorbar(
                    x,
                    y,
                    yerr=np.nan_to_num(sd),
                    fmt="-o" if grad else "--s",
                    color=colors(i // 2 % 10),
                    alpha=1.0 if grad else 0.6,
                    capsize=3,
                    label=label,
                )
    for e in entries:
        if e["architecture"] == "topk":
            for ax, (key, _) in zip(axes[:2], keys[:2], strict=True):
                ax.axhline(e[key][0], color="black", linestyle=":", linewidth=1, label=f"TopK k={e['k']}")
    for ax, (_, title) in zip(axes, keys, strict=True):
        ax.set_xscale("log")
        ax.set_xlabel("β (gradients scaled to mean norm √d)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "beta_sweep.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
