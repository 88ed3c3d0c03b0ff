"""Aggregating evaluated runs over seeds: mean ± spread tables, paired differences, Pareto plots.

Input: run folders, each holding ``evaluate.json`` (DESIGN §3 metrics, variant → figures)
and ``saes/<variant>/cfg.json`` (architecture, k, β, value mode, seed). Where a variant's
``cfg.json`` is absent (the SAE folders are DVC outputs that a clone may lack) those are read
from the variant's name (:func:`pipeline.saes.naming.parse_variant`), and the output says
so. Variants that
differ only by their initialisation seed form a *group*; a g-SAE's ``@beta0`` twin (the
same weights encoded without the gradient) is its own group. Per group and metric the
table gives the mean and the sample standard deviation over seeds (n − 1 in the
denominator; "±" is omitted for one seed). A g-SAE group is also compared with TopK at
the same k *seed by seed* (same seeds, same tokens): Δ = g-SAE − TopK per seed, reported
as mean ± sd of the differences, which is the figure to hold against the noise.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core.errors import NothingToEvaluate, SAEFormatError
from pipeline.core.fileio import atomic_write_text
from pipeline.report.entries import group_by, mean_sd
from pipeline.report.sweepplots import beta_sweep_plot, pareto_plots
from pipeline.report.tracking import correlation_lines, correlations
from pipeline.saes.naming import base_variant, grid_hparams, parse_variant, table_label

log = logging.getLogger(__name__)

COLUMNS = (
    ("loss_recovered", "loss rec.", 4),
    ("ce_loss_score", "CE loss score (SAELens)", 4),
    ("ce_spliced", "CE spliced", 4),
    ("kl", "KL", 4),
    ("kl_div_score", "KL div score (SAELens)", 4),
    ("fvu", "FVU", 4),
    ("fo_loss_err", "FO loss err.", 4),
    ("l0", "L0", 1),
    ("dead_frac", "dead (held-out)", 4),
    ("train_dead_frac", "dead (train)", 4),
    ("selection_shift", "sel. shift", 3),
    ("steer_kl_mean", "steer KL", 4),
)
COUNT_KEYS = ("l0",)
"""Figures printed as a bare integer when every seed gives the same whole number."""
PAIRED = ("loss_recovered", "ce_loss_score", "kl", "fvu", "dead_frac", "steer_kl_mean")
DELTA_COLUMNS = (
    ("loss_recovered", "Δ loss rec. vs TopK (paired)"),
    ("ce_loss_score", "Δ CE loss score vs TopK (paired)"),
)
"""The paired differences shown in the table (Δ CE loss score only when some entry has the figure)."""


@dataclass(frozen=True)
class Group:
    """What identifies a group of seeds."""

    architecture: str
    k: int
    beta: float
    value_mode: str
    with_grad: bool
    grad_loss: float = 0.0
    """λ of the gradient loss term (0 = none)."""

    @property
    def label(self) -> str:
        hp = {"beta": self.beta, "value_mode": self.value_mode, "grad_loss": self.grad_loss}
        return table_label(self.architecture, hp, with_grad=self.with_grad)


@dataclass(frozen=True)
class Row:
    """One evaluated variant."""

    group: Group
    seed: int
    metrics: dict[str, float]
    from_name: bool = False
    """Its hyper-parameters were read from its name (no ``cfg.json`` at hand)."""


def sources(
    run_dirs: Iterable[str | Path], pairs: Iterable[tuple[str | Path, str | Path | None]] = ()
) -> list[tuple[Path, Path | None]]:
    """(metrics JSON, SAE folder or None) of every run folder and explicit pair, in order."""
    return [(Path(r) / "evaluate.json", Path(r) / "saes") for r in run_dirs] + [
        (Path(a), None if b is None else Path(b)) for a, b in pairs
    ]


def _hparams(saes: Path | None, name: str) -> tuple[dict[str, Any], bool]:
    """(architecture, k, β, value mode and seed of variant ``name``, whether read from the name).

    From ``<saes>/<name>/cfg.json`` when it is there, else from the name itself."""
    cfg_path = None if saes is None else saes / name / "cfg.json"
    if cfg_path is not None and cfg_path.is_file():
        cfg = json.loads(cfg_path.read_text())
        seed = cfg.get("training", {}).get("init_seed", cfg.get("seed", 0))
        return {**cfg, "seed": seed}, False
    try:
        return parse_variant(name), True
    except ValueError as exc:
        where = "no SAE folder given" if cfg_path is None else f"no {cfg_path}"
        raise SAEFormatError(f"cannot tell the hyper-parameters of {name!r} ({where}): {exc}") from None


def load_rows(
    run_dirs: Iterable[str | Path],
    pairs: Iterable[tuple[str | Path, str | Path | None]] = (),
    extra: dict[str, dict[str, dict[str, float]]] | None = None,
) -> list[Row]:
    """Every evaluated variant of the given run folders (``evaluate.json`` + ``saes/``) and of
    explicit (metrics JSON, SAE folder or None) pairs, with its group and seed.

    ``extra``: metrics JSON path (as given) → entry → figures added to (and overriding) the
    recorded ones, e.g. the first-order loss error recomputed by ``gsae first-order``.
    """
    rows = []
    for path, saes in sources(run_dirs, pairs):
        if not path.is_file():
            raise NothingToEvaluate(f"{path} not found: evaluate the run first")
        added = (extra or {}).get(str(path), {})
        entries = {n: {**m, **added.get(n, {})} for n, m in json.loads(path.read_text()).items()}
        these = rows_of(entries, saes)
        rows += these
        named = sum(r.from_name for r in these)
        if named:
            log.info(
                "%s: the hyper-parameters of %d entries come from their names (no %s)",
                path,
                named,
                "SAE folder given" if saes is None else f"cfg.json under {saes}",
            )
    return rows


def rows_of(entries: Mapping[str, Mapping[str, Any]], saes: Path | None) -> list[Row]:
    """One :class:`Row` per entry of a metrics mapping (entry → figures, ``evaluate.out``'s
    shape), its group read from ``<saes>/<variant>/cfg.json`` or else from its name."""
    rows = []
    for name, metrics in entries.items():
        base, with_grad = base_variant(name)
        cfg, from_name = _hparams(saes, base)
        arch = str(cfg["architecture"])
        read = grid_hparams(arch)
        group = Group(
            arch,
            int(cfg["k"]),
            float(cfg.get("beta", 0.0)) if "beta" in read else 0.0,
            str(cfg.get("value_mode", "")) if "value_mode" in read else "",
            with_grad,
            float(cfg.get("grad_loss", 0.0)),
        )
        values = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and v is not None}
        rows.append(Row(group, int(cfg["seed"]), values, from_name))
    return rows


def _fmt(mean: float, sd: float, digits: int) -> str:
    if not math.isfinite(mean):
        return "–"
    return f"{mean:.{digits}f}" + (f" ± {sd:.{digits}f}" if math.isfinite(sd) else "")


def summarize(rows: list[Row]) -> dict[str, Any]:
    """group label per k → {n, seeds, metric → [mean, sd], paired Δ vs TopK → [mean, sd, n]}."""
    by_group = group_by(rows, lambda r: r.group)
    out: dict[str, Any] = {}
    for g in sorted(
        by_group,
        key=lambda g: (g.k, g.architecture != "topk", g.value_mode, g.beta, g.grad_loss, not g.with_grad),
    ):
        rs = sorted(by_group[g], key=lambda r: r.seed)
        entry: dict[str, Any] = {
            "k": g.k,
            "label": g.label,
            "seeds": [r.seed for r in rs],
            "architecture": g.architecture,
            "beta": g.beta,
            "value_mode": g.value_mode,
            "with_grad": g.with_grad,
        } | ({"grad_loss": g.grad_loss} if g.grad_loss else {})
        for key, _, _ in COLUMNS:
            mean, sd, n = mean_sd([r.metrics.get(key, math.nan) for r in rs])
            if n:
                entry[key] = [mean, sd]
        if len(rs) == 1 and "steer_kl_ci_lo" in rs[0].metrics:
            entry["steer_kl_ci"] = [rs[0].metrics["steer_kl_ci_lo"], rs[0].metrics["steer_kl_ci_hi"]]
        base = by_group.get(Group("topk", g.k, 0.0, "", True))
        if base and (g.architecture != "topk" or g.grad_loss):
            entry["delta_vs_topk"] = _paired(rs, base)
        out[f"k{g.k} {g.label}"] = entry
    return out


def _paired(rows: list[Row], base: list[Row]) -> dict[str, list[float]]:
    """metric → [mean, sd, n] of (variant − TopK) over the seeds both have."""
    ref = {r.seed: r.metrics for r in base}
    deltas: dict[str, list[float]] = {}
    for key in PAIRED:
        diffs = [
            r.metrics[key] - ref[r.seed][key]
            for r in rows
            if r.seed in ref and key in r.metrics and key in ref[r.seed]
        ]
        mean, sd, n = mean_sd(diffs)
        if n:
            deltas[key] = [mean, sd, float(n)]
    return deltas


def markdown_table(summary: dict[str, Any]) -> str:
    """The summary as one markdown table (a row per group, k-major)."""
    deltas = [
        (key, title)
        for key, title in DELTA_COLUMNS
        if key == "loss_recovered" or any(key in e for e in summary.values())
    ]
    head = ["k", "variant", "seeds", *[title for _, title, _ in COLUMNS], *(title for _, title in deltas)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for entry in summary.values():
        cells = [str(entry["k"]), entry["label"], str(len(entry["seeds"]))]
        for key, _, digits in COLUMNS:
            mean, sd = entry.get(key, [math.nan, math.nan])
            cell = _fmt(mean, sd, digits)
            if key in COUNT_KEYS and math.isfinite(mean) and mean.is_integer() and not sd:
                cell = str(int(mean))  # TopK's L0 is k on every token: "32", not "32.0 ± 0.0"
            if key == "steer_kl_mean" and "steer_kl_ci" in entry:
                lo, hi = entry["steer_kl_ci"]
                cell += f" [{lo:.{digits}f}, {hi:.{digits}f}]"
            cells.append(cell)
        for key, _ in deltas:
            delta = entry.get("delta_vs_topk", {}).get(key)
            cells.append(
                "–"
                if delta is None
                else f"{delta[0]:+.4f} ± {delta[1]:.4f} (n={int(delta[2])})"
                if math.isfinite(delta[1])
                else f"{delta[0]:+.4f} (n=1)"
            )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def tracking(rows: Sequence[Row]) -> tuple[dict[str, dict[str, float]], list[str]]:
    """Spearman ρ of fo_loss_err (and FVU) with CE spliced − CE clean across every loaded entry,
    and its markdown lines (empty below 3 entries with fo_loss_err)."""
    entries = {str(i): r.metrics for i, r in enumerate(rows)}
    scope = "these runs (mix runs only when they share the held-out tokens)"
    return correlations(entries), correlation_lines(entries, scope)


def write_results(
    run_dirs: Sequence[str | Path],
    out_md: str | Path,
    plots_dir: str | Path,
    pairs: Sequence[tuple[str | Path, str | Path | None]] = (),
    extra: dict[str, dict[str, dict[str, float]]] | None = None,
) -> dict[str, Any]:
    """Aggregate ``run_dirs`` (and ``pairs``) into ``out_md`` (+ the same name with ``.json``) and the plots.

    ``extra``: figures added per metrics JSON and entry (:func:`load_rows`). When some entry has
    ``fo_loss_err`` on ≥ 3 entries, ``<out stem>.tracking.json`` holds figure → Spearman ρ and n
    with CE spliced − CE clean, and the markdown a section on it.
    """
    rows = load_rows(run_dirs, pairs, extra)
    summary = summarize(rows)
    rho, rho_lines = tracking(rows)
    sweep = beta_sweep_plot(summary, plots_dir)
    pngs = ([sweep] if sweep else []) + (
        pareto_plots(summary, plots_dir) if len({e["k"] for e in summary.values()}) > 1 else []
    )
    md = Path(out_md)
    named = sum(r.from_name for r in rows)
    rel = [p.relative_to(md.parent) if p.is_relative_to(md.parent) else p for p in pngs]
    text = (
        "# g-SAE vs TopK: aggregated results\n\n"
        f"Generated by `gsae summarize` from {', '.join(str(r) for r in [*run_dirs, *(a for a, _ in pairs)])}."
        " Mean ± sample sd over seeds;"
        " Δ is g-SAE − TopK paired by seed (same seeds, same tokens). `@β0`: the same g-SAE encoded without the"
        " gradient. Steering KL: mean over latents (one seed: [95 % bootstrap CI over latents]).\n\n"
        + markdown_table(summary)
        + "\n"
        + (
            f"Architecture, k, β, value mode and seed of {named} of the {len(rows)} entries were read from "
            "their names (`pipeline/saes/naming.py`): their SAE folders (`cfg.json`) were not at hand.\n\n"
            if named
            else ""
        )
        + (
            "## Does the first-order loss error track the spliced CE?\n\n"
            "FO loss err. = mean |g · (x − x̂)| over the evaluated positions (g: stored gradient of the "
            "context's summed loss), nats per prediction, computed from the store without the LM.\n\n"
            + "\n".join(rho_lines)
            + "\n\n"
            if rho_lines
            else ""
        )
        + "".join(f"![{p.stem}]({p})\n" for p in rel)
    )
    atomic_write_text(md, text)
    atomic_write_text(md.with_suffix(".json"), json.dumps(summary, indent=2, sort_keys=True) + "\n")
    if rho_lines:
        atomic_write_text(md.with_suffix(".tracking.json"), json.dumps(rho, indent=2, sort_keys=True) + "\n")
    return summary
