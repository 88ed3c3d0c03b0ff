"""The evaluate stage's outputs: the settings table, plots, report, metrics and summary files.

Besides ``evaluate.out`` each entry's figures go to a DVCLive folder
``<evaluate.plots_dir>/live/<entry>/metrics.json`` (:mod:`pipeline.core.live`).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from cache.schema import CacheInfo
from pipeline.core.config import Params
from pipeline.core.errors import SAEFormatError
from pipeline.core.live import LiveRun, prune
from pipeline.core.provenance import git_revision, package_versions
from pipeline.curves import live_dir, read_curves
from pipeline.lm.models import LoadedModel
from pipeline.report.entries import VariantResult
from pipeline.report.markdown import write_metrics, write_report
from pipeline.report.plotdata import write_plot_data, write_summary
from pipeline.report.plots import make_plots
from pipeline.report.summarize import markdown_table, rows_of, summarize
from pipeline.saes.naming import grid_hparams

log = logging.getLogger("pipeline.evaluate.run")


def settings_table(
    params: Params,
    lm: LoadedModel,
    info: CacheInfo,
    url: str,
    entries: list[tuple[str, dict[str, Any]]],
    n_ctx: int,
    ctx_idx: np.ndarray,
    act_err: dict[int, float],
    elapsed: float,
    kept_clean: dict[str, int] | None = None,
) -> dict[str, Any]:
    """The report's settings table; ``entries`` holds each evaluated entry's (hook, cfg.json),
    ``kept_clean`` the count of activation outliers per hook left out of FVU/L0 (run.py)."""
    ev = params.evaluate
    T = info.context_length
    hooks = sorted({hook for hook, _ in entries})
    scored = n_ctx * (T - 1)
    outliers = {hook: n for hook, n in (kept_clean or {}).items() if n}
    if len(set(outliers.values())) == 1 and len(outliers) == len(hooks):  # one count for every hook
        n = next(iter(outliers.values()))
        positions = f"{scored - n} non-first positions ({n} activation outliers kept clean)"
    elif outliers:
        kept = ", ".join(f"{n} at {hook}" for hook, n in sorted(outliers.items()))
        positions = f"{scored} non-first positions less the activation outliers kept clean ({kept})"
    else:
        positions = f"{scored} non-first positions"
    return {
        "model": f"{lm.name} (revision {lm.revision}, dtype {params.model.dtype})",
        "hooks": hooks,
        "held-out store": url,
        "store key": info.key,
        "store dataset": info.dataset,
        "store dtype": info.dtype,
        "tokens evaluated": f"{n_ctx * T} ({n_ctx} contexts × {T}) from token {params.evaluate.first_token}; FVU/L0 on {positions}",
        "train caches": sorted({str(cfg.get("cache_key", cfg.get("key", "?")))[:16] for _, cfg in entries}),
        "train.out_dir": params.train.out_dir,
        "live vs stored activation rel. error": {str(b): float(f"{v:.3g}") for b, v in act_err.items()},
        "steering": (
            f"{ev.steer_latents} latents/SAE × {len(ctx_idx)} contexts {ctx_idx.tolist()}, "
            f"alpha = {ev.steer_scale} × mean nonzero activation"
        ),
        "absorption": (
            f"{ev.absorption_words} vocabulary words (80 % probes / 20 % scored), letters with probe F1 >= 0.6 "
            f"and >= {ev.absorption_min_words} test words; gradient-aware SAEs "
            + ("select with the answer's gradient" if ev.absorption_grad else "scored as their beta = 0 twin")
            if ev.absorption_words
            else "off"
        ),
        "LM precision after the hook": ev.autocast if ev.autocast != "none" else params.model.dtype,
        "seed": ev.seed,
        "batch size (contexts)": ev.batch_size,
        "device": str(lm.device),
        "wall time (s)": round(elapsed, 1),
        "git commit": git_revision() or "unknown (not a git checkout)",
        "packages": package_versions(),
        **training_settings([cfg for _, cfg in entries]),
    }


_RUN_ONLY = {
    "grid",
    "out_dir",
    "metrics_out",
    "curves_dir",
    "store",
    "device",
    "prefetch",
    "checkpoint_every",
    "parallel",
}
"""Training settings that say where or how fast, not what was trained (left out of the table)."""


def training_settings(cfgs: list[dict[str, Any]]) -> dict[str, Any]:
    """``train.<key>`` → value of the training run recorded in the SAEs' ``cfg.json``, and
    ``train.grid.<key>`` for the grid's hyper-parameters (a sorted list of the distinct values
    when the SAEs differ, e.g. ``init_seed`` or ``grid.architecture``)."""
    values: dict[str, list[Any]] = {}
    for cfg in cfgs:
        arch = cfg.get("architecture")
        read = ("architecture", "k", "expansion", *grid_hparams(str(arch))) if arch else ()
        grid = {f"grid.{key}": cfg[key] for key in read if key in cfg}  # the grid, per SAE
        for key, value in {**(cfg.get("training") or {}), **grid}.items():
            if key in _RUN_ONLY or isinstance(value, dict | list):
                continue
            seen = values.setdefault(key, [])
            if value not in seen:
                seen.append(value)
    out: dict[str, Any] = {}
    for key in sorted(values):
        distinct = values[key]
        out[f"train.{key}"] = distinct[0] if len(distinct) == 1 else sorted(distinct, key=str)
    return out


def paired_table(metrics: dict[str, dict[str, float]], saes: str | Path) -> str | None:
    """``gsae summarize``'s table of this evaluation (mean ± sd per series and k, paired Δ vs
    TopK by seed); None when an entry's hyper-parameters cannot be told."""
    try:
        return markdown_table(summarize(rows_of(metrics, Path(saes))))
    except SAEFormatError as exc:
        log.warning("no paired table in the report: %s", exc)
        return None


def write_outputs(
    params: Params,
    metrics: dict[str, dict[str, float]],
    results: list[VariantResult],
    settings: dict[str, Any],
) -> None:
    """Write the plot data, plots, report, ``evaluate.out`` and the summary of one evaluation."""
    ev = params.evaluate
    curves = read_curves(params.train.curves_dir)
    write_plot_data(ev.plots_dir, results, curves)
    pngs = make_plots(ev.plots_dir, results, curves)
    write_report(ev.report, results, settings, pngs, paired=paired_table(metrics, params.train.out_dir))
    write_metrics(ev.out, metrics)
    # Each entry's figures also as a DVCLive folder (metrics.json), beside the training curves'.
    live = LiveRun(live_dir(ev.plots_dir))
    live.summary(metrics)
    live.close()
    prune(live_dir(ev.plots_dir), list(metrics))
    write_summary(ev.summary, results)
    bad = [n for n, m in metrics.items() if any(not math.isfinite(v) for v in m.values())]
    if bad:
        log.warning("non-finite metrics (written as null) for: %s", ", ".join(bad))
