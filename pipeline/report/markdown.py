"""The evaluate stage's metrics JSON and report.md (plot data: :mod:`pipeline.report.plotdata`,
PNGs: :mod:`pipeline.report.plots`).

Every file is written atomically (temporary file in the same folder, then rename). Groups
(series) and seed statistics are :mod:`pipeline.report.entries`'s. The report shows the CE
baselines loss recovered is measured against (and warns when zero ablation does not hurt),
those of SAELens's convention (``ce_loss_score``, ``kl_div_score``: BOS zero-ablated too,
:mod:`pipeline.evaluate.conventions`) with the difference stated,
a table of the known figures plus ``selection_shift`` and ``fo_loss_err`` columns when present,
every other numeric figure in a second table, the first-order loss error per group with its
rank correlation with the spliced CE (:mod:`pipeline.report.tracking`), and the PNGs.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.fileio import atomic_write_text
from pipeline.report.entries import VariantResult, by_group, group_by, mean_sd
from pipeline.report.plotdata import baselines
from pipeline.report.plots import TITLES
from pipeline.report.tracking import FO_NOTE, GROUPED_HEAD, correlation_lines, grouped_rows

# ----------------------------------------------------------------------------- files


def _clean(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def write_metrics(path: str | Path, metrics: Mapping[str, Mapping[str, float]]) -> Path:
    """Flat JSON ``{variant: {metric: number}}`` (non-finite numbers become null)."""
    obj = {name: {k: _clean(v) for k, v in m.items()} for name, m in metrics.items()}
    return atomic_write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


# ----------------------------------------------------------------------------- report


COUNT_KEYS = {"l0", "steer_latents", "absorption_letters", "absorption_grad", "n_seeds"}
"""Figures that are counts or flags: printed without decimals when whole (TopK's L0 = k is "32", not "32.0000")."""


def _fmt(value: Any, digits: int = 4, key: str | None = None) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if key in COUNT_KEYS and isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e-3 and value != 0 else f"{value:.{digits}f}"
    return str(value)


TABLE_COLUMNS = (
    ("variant", None),
    ("group", None),
    ("k", None),
    ("fvu", "fvu"),
    ("FO loss err.", "fo_loss_err"),
    ("mse", "mse"),
    ("l0", "l0"),
    ("dead (held out)", "dead_frac"),
    ("dead (train)", "train_dead_frac"),
    ("CE spliced", "ce_spliced"),
    ("loss rec.", "loss_recovered"),
    ("CE loss score (SAELens)", "ce_loss_score"),
    ("KL", "kl"),
    ("KL div score (SAELens)", "kl_div_score"),
    ("absorption", "absorption_rate"),
    ("full absorption", "absorption_full"),
    ("split latents", "absorption_split_latents"),
    ("selection shift", "selection_shift"),
    ("steer KL (median)", "steer_kl_median"),
    ("steer Δlogp (median)", "steer_logit_median"),
)
OPTIONAL_COLUMNS = {
    "ce_loss_score",
    "kl_div_score",
    "selection_shift",
    "train_dead_frac",
    "fo_loss_err",
    "absorption_rate",
    "absorption_full",
    "absorption_split_latents",
}
"""Columns shown only when some entry has the figure."""
SAELENS_BASELINES = {
    "ce_loss_without_sae": "CE of the clean model",
    "ce_loss_with_ablation": "CE with the layer's output zeroed at every position",
    "kl_div_with_ablation": "KL(p_clean ‖ p_zeroed) of that ablation",
}
"""SAELens's baselines (the special-token positions left out of the means), per hook."""
BASELINE_KEYS = {"ce_clean", "ce_zero_ablation", *SAELENS_BASELINES}
"""Shown once, in the baselines section, not per variant."""

DEAD_LATENTS_NOTE = (
    "Two dead-latent figures: **dead (train)** is the trainer's count at the end of training, a latent "
    "not selected with a positive value during the last `train.dead_tokens` training tokens (the AuxK loss "
    "revives such latents); **dead (held out)** is the fraction of latents never active on any evaluated "
    "held-out token. With few held-out tokens the second can be larger: a latent that fires rarely can be alive "
    "in training yet silent on a small evaluation set."
)


def _sorted(results: Sequence[VariantResult]) -> list[VariantResult]:
    return sorted(results, key=lambda r: (r.group, r.k, r.seed if r.seed is not None else -1))


def _markdown(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def table(results: Sequence[VariantResult]) -> str:
    """Markdown table of every entry (optional columns only when some entry has them)."""
    present = {k for r in results for k in r.metrics}
    cols = [(c, key) for c, key in TABLE_COLUMNS if key not in OPTIONAL_COLUMNS or key in present]
    rows = []
    for r in _sorted(results):
        ids = {"variant": f"`{r.name}`", "group": r.group, "k": str(r.k)}
        rows.append([ids[c] if key is None else _fmt(r.metrics.get(key), key=key) for c, key in cols])
    return _markdown([c for c, _ in cols], rows)


def extra_table(results: Sequence[VariantResult]) -> str | None:
    """Every other numeric figure (e.g. steering quantiles, confidence bounds), one column each."""
    shown = {key for _, key in TABLE_COLUMNS if key} | BASELINE_KEYS
    extra = sorted(
        {
            k
            for r in results
            for k, v in r.metrics.items()
            if k not in shown and isinstance(v, (int, float)) and not isinstance(v, bool)
        }
    )
    if not extra:
        return None
    rows = [[f"`{r.name}`", *(_fmt(r.metrics.get(k), key=k) for k in extra)] for r in _sorted(results)]
    return _markdown(["variant", *extra], rows)


def baseline_lines(results: Sequence[VariantResult]) -> list[str]:
    """The clean and zero-ablation CE, with a warning when ablating the layer does not hurt."""
    base = baselines(results)
    clean = base.get("ce_clean")
    lines = [f"- CE of the clean model: **{_fmt(clean)}** nats/token."]
    for key, zero in base.items():
        if not key.startswith("ce_zero_ablation"):
            continue
        where = f" (block {key.rpartition('_L')[2]})" if "_L" in key else ""
        lines.append(f"- CE with the layer's output zeroed{where}: **{_fmt(zero)}** nats/token.")
        if (
            clean is not None
            and zero is not None
            and math.isfinite(clean)
            and math.isfinite(zero)
            and zero <= clean
        ):
            lines.append(
                f"- **Warning**: zero ablation{where} does not raise CE above the clean model "
                f"({_fmt(zero)} ≤ {_fmt(clean)}), so loss recovered (which divides by their difference) "
                "is meaningless here."
            )
    lines.append(
        "- Loss recovered = (CE_zero − CE_spliced) / (CE_zero − CE_clean): 1 is the clean model, "
        "0 is no better than zeroing the layer."
    )
    return lines + saelens_baseline_lines(results)


def saelens_baseline_lines(results: Sequence[VariantResult]) -> list[str]:
    """The baselines of SAELens/SAEBench's convention and how it differs from ours ([] without them)."""
    by_hook = {r.hook: r.metrics for r in results if "ce_loss_score" in r.metrics}
    if not by_hook:
        return []
    lines = [
        "- **Two conventions.** Ours (loss rec., KL) keeps position 0 (BOS) clean in every edit, the "
        "zero ablation included, as our SAEs were trained without it, and averages over every "
        "prediction. SAELens's `evals.run_evals` and SAEBench (CE loss score, KL div score; their "
        "defaults) zero-ablate every position, BOS included, keep special tokens (BOS, EOS) "
        "unreconstructed and leave their positions out of the means: CE loss score = "
        "(CE_zero − CE_SAE) / (CE_zero − CE_clean), KL div score = (KL_zero − KL_SAE) / KL_zero. "
        "In that convention:"
    ]
    for hook, m in sorted(by_hook.items()):
        where = f" (block {hook.rpartition('.')[2]})" if len(by_hook) > 1 else ""
        parts = [f"{label} **{_fmt(m.get(key))}**" for key, label in SAELENS_BASELINES.items()]
        lines.append(f"  - {'; '.join(parts)}{where}.")
    return lines


def reading(results: Sequence[VariantResult]) -> list[str]:
    """A neutral, auto-generated summary: per k, the ranking by loss recovered and FVU."""
    lines: list[str] = []
    for k in sorted({r.k for r in results}):
        at_k = by_group([r for r in results if r.k == k])
        stats = {
            g: (
                mean_sd(r.metrics.get("loss_recovered") for r in rs),
                mean_sd(r.metrics.get("fvu") for r in rs),
            )
            for g, rs in at_k.items()
        }
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
    absorb = {g: mean_sd(r.metrics.get("absorption_rate") for r in rs) for g, rs in by_group(results).items()}
    if any(n for _, _, n in absorb.values()):
        parts = [
            f"`{g}` {_fmt(m)}" + (f" ± {sd:.4f}" if n > 1 else "") for g, (m, sd, n) in absorb.items() if n
        ]
        lines.append(
            "- First-letter absorption rate (SAEBench's mean absorption fraction; lower is better, "
            "mean ± sd over seeds): " + ", ".join(parts) + "."
        )
    field = saelens_reading(results)
    if field:
        lines.append(field)
    steer = {
        g: np.concatenate([r.steer.kl for r in rs if r.steer is not None and len(r.steer.kl)])
        for g, rs in by_group(results).items()
        if any(r.steer is not None and len(r.steer.kl) for r in rs)
    }
    if steer:
        parts = [f"`{g}` {_fmt(float(np.median(v)))}" for g, v in steer.items()]
        lines.append("- Median steering KL per latent: " + ", ".join(parts) + ".")
    return lines


def saelens_reading(results: Sequence[VariantResult]) -> str | None:
    """Per series and k: SAELens's CE loss score beside our loss recovered (mean ± sd over seeds)."""

    def pm(values: Iterable[Any]) -> str:
        mean, sd, n = mean_sd(values)
        return _fmt(mean) + (f" ± {sd:.4f}" if n > 1 else "")

    cells = group_by(_sorted(results), lambda r: (r.k, r.group))
    several_k = len({k for k, _ in cells}) > 1
    parts = [
        f"`{g}`{f' k = {k}' if several_k else ''} {pm(r.metrics.get('ce_loss_score') for r in rs)} "
        f"(ours {pm(r.metrics.get('loss_recovered') for r in rs)})"
        for (k, g), rs in sorted(cells.items())
        if any("ce_loss_score" in r.metrics for r in rs)
    ]
    if not parts:
        return None
    return (
        "- CE loss score in SAELens's convention (BOS zero-ablated too; see Baselines) beside our "
        "loss recovered, mean ± sd over seeds: " + ", ".join(parts) + "."
    )


def first_order_section(results: Sequence[VariantResult]) -> list[str]:
    """The first-order loss error per group (mean ± sd over seeds) and its rank correlation with
    the spliced CE across the entries ([] when no entry has the figure: activation-only store)."""
    if not any("fo_loss_err" in r.metrics for r in results):
        return []
    groups = {g: [r.metrics for r in rs] for g, rs in by_group(_sorted(results)).items()}
    lines = [
        "## First-order loss error",
        "",
        _markdown(GROUPED_HEAD, grouped_rows(groups)),
        "",
        FO_NOTE,
        "",
    ]
    corr = correlation_lines({r.name: r.metrics for r in results})
    return lines + ([*corr, ""] if corr else [])


def write_report(
    path: str | Path,
    results: Sequence[VariantResult],
    settings: Mapping[str, Any],
    pngs: Mapping[str, Path],
    paired: str | None = None,
) -> Path:
    """Render report.md (plots embedded by paths relative to the report's folder).

    ``paired``: ``gsae summarize``'s markdown table of the same entries (mean ± sd per series
    and k, Δ vs TopK paired by seed), which the report opens with."""
    report_dir = Path(path).resolve().parent
    titles = TITLES
    extra = extra_table(results)
    lead = (
        [
            "## Comparison (mean ± sd over seeds; Δ paired by seed)",
            "",
            paired.rstrip("\n"),
            "",
            "As `gsae summarize` computes it: Δ = variant − TopK at the same k, seed by seed (same seeds, "
            "same tokens), mean ± sd of the differences; `@β0` is the same g-SAE encoded without the "
            "gradient. Hold each Δ against its sd.",
            "",
        ]
        if paired
        else []
    )
    parts = [
        "# g-SAE evaluation report",
        "",
        "Generated by `gsae evaluate`. Every figure is recomputable from the files listed under Settings.",
        "",
        *lead,
        "## Reading",
        "",
        *reading(results),
        "",
        "## Baselines",
        "",
        *baseline_lines(results),
        "",
        "## Variants",
        "",
        table(results),
        "",
        "`<variant>@beta0` is the same g-SAE encoded with β = 0 (no gradient at inference).",
        "FVU is centred (Σ‖x − x̂‖² / Σ‖x − x̄‖²); KL is the mean per-token KL(p_clean ‖ p_spliced);"
        " selection shift (g-SAEs) is the fraction of selected latents that differ from the same SAE's"
        " β = 0 selection. Steering: see docs/steering.md. CE loss score and KL div score are"
        " SAELens's `ce_loss_score` and `kl_div_score` (its convention, see Baselines), beside our"
        " loss rec. and KL.",
        "",
        DEAD_LATENTS_NOTE,
        "",
        *(["### Other figures", "", extra, ""] if extra else []),
        *first_order_section(results),
        "## Plots",
        "",
    ]
    for key, png in pngs.items():
        rel = os.path.relpath(Path(png).resolve(), report_dir)
        parts += [f"### {titles.get(key, key)}", "", f"![{titles.get(key, key)}]({rel})", ""]
    parts += ["## Settings", "", "| setting | value |", "|---|---|"]
    for key, value in settings.items():
        shown = json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list)) else str(value)
        parts.append(f"| {key} | {shown.replace('|', '/')} |")
    return atomic_write_text(path, "\n".join(parts) + "\n")
