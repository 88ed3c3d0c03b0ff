"""Live tracking in DVCLive's format: one DVCLive folder per variant, written as training runs.

Each variant (a trained SAE, or an evaluated entry such as ``<variant>@beta0``) gets its own
folder ``<root>/<name>/`` in the layout ``dvclive`` writes and ``dvc plots`` / ``dvc metrics``
read natively::

    <root>/<name>/metrics.json              the latest value of every figure (+ "step")
    <root>/<name>/params.yaml               the variant's hyper-parameters
    <root>/<name>/plots/metrics/<fig>.tsv   one row per logged step (training curves)

The files are rewritten at every logged step, so a run in progress can be watched
(``dvc plots show <root>/<name>/plots/metrics``, ``dvc plots diff``, or any reader of TSV).

DVCLive's own integration with DVC is left out on purpose (:class:`_FolderLive`): outside a
``dvc exp run`` it would ``dvc init`` a plain git repository it finds, it fails on a git
repository without commits, and it may rewrite the project's ``dvc.yaml``. The folders are
declared by the project's ``dvc.yaml`` instead (they lie inside declared outputs).
``dvclive`` is imported when a logger is made, never at import time.
"""

from __future__ import annotations

import math
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dvclive import Live

_UNSAFE = re.compile(r"[^A-Za-z0-9._@=+-]")


def folder_name(name: str) -> str:
    """A variant or entry name as one path component (anything but ``[A-Za-z0-9._@=+-]`` → ``_``)."""
    safe = _UNSAFE.sub("_", name).strip(".")
    return safe or "_"


def _make_live(folder: Path, resume: bool) -> Live:
    """A DVCLive logger writing ``folder`` only (no DVC repository lookup, no experiment, no dvc.yaml)."""
    from dvclive import Live

    class _FolderLive(Live):
        def _init_dvc(self) -> None:  # why: see the module docstring
            return None

    return _FolderLive(
        dir=str(folder), resume=resume, report=None, save_dvc_exp=False, dvcyaml=None, monitor_system=False
    )


def _truncate(folder: Path, step: int) -> None:
    """Drop the curve rows after ``step`` from every TSV of a DVCLive folder."""
    for tsv in (folder / "plots" / "metrics").rglob("*.tsv"):
        lines = tsv.read_text().splitlines()
        if not lines:
            continue
        col = lines[0].split("\t").index("step") if "step" in lines[0].split("\t") else None
        if col is None:
            continue
        keep = [lines[0], *(r for r in lines[1:] if r and int(float(r.split("\t")[col])) <= step)]
        tsv.write_text("\n".join(keep) + "\n")


def _number(value: Any) -> float | int | None:
    """A loggable number (bools and non-finite floats are left out: DVCLive rejects or mangles them)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value if math.isfinite(value) else None


class LiveRun:
    """One DVCLive folder per variant under ``root``; :meth:`log` appends a step to each.

    Without ``resume_from`` each variant's folder starts afresh at its first write; a run
    resumed from a checkpoint at step S passes ``resume_from=S`` and continues the folders'
    curves (rows logged after S by the interrupted run are dropped: they are logged again).
    :func:`prune` removes the folders of variants no longer trained.
    """

    def __init__(self, root: str | Path, *, resume_from: int | None = None) -> None:
        self.root = Path(root)
        self.resume_from = resume_from
        self._lives: dict[str, Live] = {}

    def folder(self, name: str) -> Path:
        """Where variant ``name`` is logged."""
        return self.root / folder_name(name)

    def _live(self, name: str) -> Live:
        if name not in self._lives:
            folder = self.folder(name)
            resume = self.resume_from is not None and folder.is_dir()
            if resume:
                _truncate(folder, int(self.resume_from or 0))
            elif folder.is_dir():
                shutil.rmtree(folder)
            self._lives[name] = _make_live(folder, resume=resume)
        return self._lives[name]

    def log_params(self, name: str, params: Mapping[str, Any]) -> None:
        """Write the variant's ``params.yaml`` (scalars only)."""
        clean: dict[str, Any] = {k: v for k, v in params.items() if isinstance(v, str | int | float | bool)}
        self._live(name).log_params(clean)

    def log(self, step: int, figures: Mapping[str, Mapping[str, Any]]) -> None:
        """One training step for each variant in ``figures`` (variant → figure → value):
        appended to its ``plots/metrics/*.tsv`` and written to its ``metrics.json`` now."""
        for name, values in figures.items():
            live = self._live(name)
            live.step = int(step)
            for key, value in values.items():
                number = _number(value)
                if number is not None:
                    live.log_metric(key, number)
            live.next_step()

    def summary(self, figures: Mapping[str, Mapping[str, Any]]) -> None:
        """Final figures without a curve (evaluation): each variant's ``metrics.json`` only."""
        for name, values in figures.items():
            live = self._live(name)
            for key, value in values.items():
                number = _number(value)
                if number is not None:
                    live.log_metric(key, number, plot=False)
            live.make_summary()

    def close(self) -> None:
        """Finish every folder (DVCLive's ``end``: the summary is written once more)."""
        for live in self._lives.values():
            live.end()
        self._lives.clear()


def prune(root: str | Path, keep: list[str]) -> None:
    """Remove the folders under ``root`` that belong to none of the names in ``keep``."""
    base = Path(root)
    if not base.is_dir():
        return
    wanted = {folder_name(n) for n in keep}
    for child in base.iterdir():
        if child.is_dir() and child.name not in wanted:
            shutil.rmtree(child)
