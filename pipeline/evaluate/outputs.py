"""The evaluate stage's outputs: the settings table, plots, report, metrics and summary files.

Besides ``evaluate.out`` each entry's figures go to a DVCLive folder
``<evaluate.plots_dir>/live/<entry>/metrics.json`` (:mod:`pipeline.core.live`).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from cache.schema import CacheInfo
from pipeline.core.config import Params
from pipeline.core.live import LiveRun, prune
from pipeline.curves import live_dir, read_curves
from pipeline.lm.models import LoadedModel
from pipeline.report.entries import VariantResult
from pipeline.report.markdown import write_metrics, write_report
from pipeline.report.plotdata import write_plot_data, write_summary
from pipeline.report.plots import make_plots

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
) -> dict[str, Any]:
    """The report's settings table; ``entries`` holds each evaluated entry's (hook, cfg.json)."""
    ev = params.evaluate
    T = info.context_length
    hooks = sorted({hook for hook, _ in entries})
    return {
        "model": f"{lm.name} (revision {lm.revision}, dtype {params.model.dtype})",
        "hooks": hooks,
        "held-out store": url,
        "store key": info.key,
        "store dataset": info.dataset,
        "store dtype": info.dtype,
        "tokens evaluated": f"{n_ctx * T} ({n_ctx} contexts × {T}) from token {params.evaluate.first_token}; FVU/L0 on {n_ctx * (T - 1)} non-first positions",
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
    }


def write_outputs(
    params: Params,
    metrics: dict[str, dict[str, float]],
    results: list[VariantResult],
    settings: dict[str, Any],
) -> None:
    """Write the plot data, plots, report, ``evaluate.out`` and the summary of one evaluation."""
    ev = params.evaluate
    write_plot_data(ev.plots_dir, results)
    pngs = make_plots(ev.plots_dir, results, read_curves(params.train.curves_dir))
    write_report(ev.report, results, settings, pngs)
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
