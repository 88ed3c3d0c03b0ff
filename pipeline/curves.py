"""The hand-off from train to evaluate: the training curves file.

``gsae train`` writes ``<train.curves_dir>/curves.csv`` (one long CSV: variant, step, tokens,
loss, fvu, aux, l0, dead_frac, lr, selection_shift for g-SAEs, ``fo_loss_err`` — the
first-order loss error mean |g · (x − x̂)| on the window's last batch — only when the batches
carried gradients, and ``grad_loss`` only for variants trained with the gradient loss term),
and while it trains one DVCLive folder per variant under ``<train.curves_dir>/live/``
(:func:`live_dir`); ``gsae evaluate`` reads the CSV for
the training-curves plot. Neither stage imports the other: this module is the contract
between them (with the SAE folders of :mod:`pipeline.saes.io`).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.core.fileio import atomic_write_text

CURVES_FILE = "curves.csv"
LIVE_DIR = "live"
"""``<curves_dir>/live/<variant>/``: each variant's DVCLive folder (:mod:`pipeline.core.live`),
written while training runs; ``curves.csv`` is written once, at the end."""
CURVE_FIELDS = ("variant", "step", "tokens", "loss", "fvu", "aux", "l0", "dead_frac", "lr", "selection_shift")
OPTIONAL_FIELDS = ("fo_loss_err", "grad_loss")
"""Columns written only when some row has them: ``fo_loss_err`` is absent from an activation-only
run's curves, ``grad_loss`` (the gradient loss term, :mod:`pipeline.train.losses`) from a run
whose variants all have λ = 0."""


def csv_text(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """CSV with a header; missing and non-finite cells are left empty."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: _cell(row.get(c)) for c in columns})
    return buf.getvalue()


def _cell(value: Any) -> Any:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return value


def write_curves(curves_dir: str | Path, curve: Sequence[Mapping[str, Any]]) -> Path:
    """All variants' curve rows in one long CSV (older per-variant CSVs in the folder are removed)."""
    root = Path(curves_dir)
    if root.is_dir():
        for old in root.glob("*.csv"):
            if old.name != CURVES_FILE:
                old.unlink()
    rows = [{k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()} for row in curve]
    optional = tuple(c for c in OPTIONAL_FIELDS if any(c in row for row in rows))
    return atomic_write_text(root / CURVES_FILE, csv_text(rows, CURVE_FIELDS + optional))


def live_dir(curves_dir: str | Path) -> Path:
    """The folder holding one DVCLive folder per trained variant."""
    return Path(curves_dir) / LIVE_DIR


def read_curves(curves_dir: str | Path) -> list[dict[str, Any]]:
    """Rows of ``curves.csv`` with numbers parsed ([] when the file is absent)."""
    path = Path(curves_dir) / CURVES_FILE
    if not path.is_file():
        return []
    rows = []
    for row in csv.DictReader(path.read_text().splitlines()):
        rows.append({k: (v if k == "variant" else _number(v)) for k, v in row.items()})
    return rows


def _number(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan
