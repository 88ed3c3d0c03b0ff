"""Long-format plot data of the evaluation (one row per variant / metric) and the compact metrics file.

Files (every one written atomically; the training curves are :mod:`pipeline.curves`'s):

- ``<evaluate.plots_dir>/variants.csv``  one row per evaluated entry: variant, series,
  architecture, k, seed, every metric and ``colour`` (the source of the k and FVU plots)
- ``<evaluate.plots_dir>/metrics_long.csv``  variant, series, architecture, k, seed, metric, value
- ``<evaluate.plots_dir>/steering.csv``  one row per steered latent: variant, series, k,
  quantile, steer_kl, steer_logit, alpha, latent, token, colour (quantile = (rank + 0.5) / rows
  within the variant, so each variant draws one sorted curve)

``colour`` is the series' colour in the report's PNGs (:func:`pipeline.report.style.series_colours`
over every series of the evaluation); the Vega templates take their colour range from it, so
``dvc plots show`` colours a series as the report does even where some series are absent
(the ``@beta0`` twins are not steered).
- ``<evaluate.summary>``  ``{series: {"k<k>": {metric: mean over seeds}}, "baseline": {...}}``

A *series* is the architecture plus the hyper-parameters other than k and seed
(``topk-x8``, ``gsae-b1-aug-x8``, ``gsae-b1-aug-x8@beta0``). DVC flattens the summary to
keys such as ``topk-x8.k32.loss_recovered``, which stay the same whatever else the grid
holds, so ``dvc exp show`` lines up experiments with different grids.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.core.fileio import atomic_write_text
from pipeline.curves import CURVE_FIELDS, csv_text
from pipeline.report.entries import VariantResult
from pipeline.report.style import series_colours

ID_COLUMNS = ("variant", "series", "architecture", "k", "seed")
SUMMARY_KEYS = (
    "loss_recovered",
    "ce_loss_score",
    "kl_div_score",
    "fvu",
    "kl",
    "l0",
    "dead_frac",
    "train_dead_frac",
    "ce_spliced",
    "steer_kl_median",
    "selection_shift",
)
"""Per-cell figures of the summary (each only when the entries have it)."""


def _ids(r: VariantResult) -> dict[str, Any]:
    return {
        "variant": r.name,
        "series": r.group,
        "architecture": r.architecture,
        "k": r.k,
        "seed": "" if r.seed is None else r.seed,
    }


def write_plot_data(
    plots_dir: str | Path, results: Sequence[VariantResult], curves: Sequence[Mapping[str, Any]] = ()
) -> list[Path]:
    """variants.csv, metrics_long.csv, steering.csv and training.csv for ``results`` (``VariantResult``s).

    training.csv: the rows of ``curves`` (``curves.csv``'s, :func:`pipeline.curves.read_curves`)
    of the evaluated variants, with their series and its colour, so the Vega training chart
    colours a series as every other plot does.
    """
    root = Path(plots_dir)
    keys = sorted({k for r in results for k in r.metrics})
    colours = series_colours(r.group for r in results)  # the PNGs' colours, for the Vega templates
    wide = [{**_ids(r), **r.metrics, "colour": colours[r.group]} for r in results]
    long = [{**_ids(r), "metric": k, "value": v} for r in results for k, v in sorted(r.metrics.items())]
    steer_rows: list[dict[str, Any]] = []
    for r in results:
        if r.steer is None or not len(r.steer.kl):
            continue
        rows = [
            {
                **_ids(r),
                "colour": colours[r.group],
                "latent": int(lat),
                "alpha": float(r.steer.alphas[j]),
                "steer_kl": float(r.steer.kl[j]),
                "steer_logit": float(r.steer.logit[j]),
                "token": int(r.steer.token[j]),
            }
            for j, lat in enumerate(r.steer.latents)
        ]
        rows.sort(key=lambda row: row["steer_kl"])
        for i, row in enumerate(rows):
            row["quantile"] = (i + 0.5) / len(rows)
        steer_rows += rows
    steer_cols = [*ID_COLUMNS, "quantile", "steer_kl", "steer_logit", "alpha", "latent", "token", "colour"]
    return [
        atomic_write_text(root / "variants.csv", csv_text(wide, [*ID_COLUMNS, *keys, "colour"])),
        atomic_write_text(root / "metrics_long.csv", csv_text(long, [*ID_COLUMNS, "metric", "value"])),
        atomic_write_text(root / "steering.csv", csv_text(steer_rows, steer_cols)),
        atomic_write_text(root / "training.csv", _training_csv(results, curves, colours)),
    ]


def _training_csv(
    results: Sequence[VariantResult], curves: Sequence[Mapping[str, Any]], colours: Mapping[str, str]
) -> str:
    """``curves`` rows of the evaluated variants with ``series`` and ``colour`` (header only when none)."""
    ids = {r.name: _ids(r) for r in results}
    rows = [
        {**ids[row["variant"]], **row, "colour": colours[ids[row["variant"]]["series"]]}
        for row in curves
        if row.get("variant") in ids
    ]
    fields = [f for f in CURVE_FIELDS[1:] if any(f in row for row in rows)] or list(CURVE_FIELDS[1:])
    extra = sorted({k for row in rows for k in row} - {*ID_COLUMNS, *fields, "colour"})
    return csv_text(rows, [*ID_COLUMNS, *fields, *extra, "colour"])


def series_key(series: str) -> str:
    """A series label usable as one key segment (DVC splits keys at dots: ``b0.5`` → ``b0p5``)."""
    return re.sub(r"[^A-Za-z0-9_@-]", "_", series.replace(".", "p"))


def _mean(values: list[float]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else None


def summary(results: Sequence[VariantResult]) -> dict[str, Any]:
    """``{series: {"k<k>": {metric: mean over seeds, "n_seeds": n}}, "baseline": {...}}``."""
    cells: dict[str, dict[str, list[Any]]] = {}
    for r in results:
        cells.setdefault(series_key(r.group), {}).setdefault(f"k{r.k}", []).append(r)
    out: dict[str, Any] = {}
    for series, by_k in sorted(cells.items()):
        out[series] = {}
        for k, rs in sorted(by_k.items(), key=lambda item: int(item[0][1:])):
            cell = {
                key: _mean([r.metrics.get(key) for r in rs])
                for key in SUMMARY_KEYS
                if any(key in r.metrics for r in rs)
            }
            cell["n_seeds"] = len(rs)
            out[series][k] = cell
    out["baseline"] = baselines(results)
    return out


def baselines(results: Sequence[VariantResult]) -> dict[str, float | None]:
    """CE of the clean model and of the zero-ablated layer (one per hook when several)."""
    base: dict[str, float | None] = {}
    if results:
        base["ce_clean"] = results[0].metrics.get("ce_clean")
    zeros = {getattr(r, "hook", "") or "": r.metrics.get("ce_zero_ablation") for r in results}
    if len(zeros) == 1:
        base["ce_zero_ablation"] = next(iter(zeros.values()))
    else:
        for hook, value in sorted(zeros.items()):
            base[f"ce_zero_ablation_L{hook.rpartition('.')[2]}"] = value
    return base


def write_summary(path: str | Path, results: Sequence[VariantResult]) -> Path:
    """The compact metrics file (the DVC stage metric)."""
    obj = summary(results)
    return atomic_write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")
