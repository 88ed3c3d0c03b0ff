"""Training checkpoints without pickle, and all-or-nothing output of the trained variants.

A checkpoint is two files in ``<out_dir>/.checkpoints/``: ``state-<step>.pt`` (tensors,
numbers, strings and containers only, loaded with ``torch.load(weights_only=True)``,
which refuses to run pickled code) and ``state.json`` naming it with the run's
fingerprint. The JSON is read and the fingerprint compared *before* the tensor file is
opened, and it is written last (atomically), so a kill at any instant leaves the
previous checkpoint or the new one, never a half. Older ``state-*.pt`` files are removed
after the JSON points past them; a folder from before this format (``state.pt`` only) is
ignored with a warning rather than unpickled.

:func:`write_all_or_none` stages every variant folder under ``<out_dir>/.staging`` and
moves them into place only when all were written, so a full disk or a kill during the
save never leaves some variants new and some missing.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from cache.faults import fault_point
from pipeline.core.errors import OutputError
from pipeline.core.fileio import atomic_write, atomic_write_text

logger = logging.getLogger(__name__)

INDEX = "state.json"
LEGACY = "state.pt"
STAGING = ".staging"


def save_checkpoint(folder: Path, fingerprint: dict[str, Any], step: int, state: dict[str, Any]) -> None:
    """Write ``state`` for ``step``, then point ``state.json`` at it, then drop older state files."""
    name = f"state-{step}.pt"
    atomic_write(folder / name, lambda tmp: torch.save(state, tmp))
    fault_point("checkpoint_write")
    atomic_write_text(
        folder / INDEX, json.dumps({"fingerprint": fingerprint, "file": name, "step": step}) + "\n"
    )
    for old in folder.glob("state-*.pt"):
        if old.name != name:
            old.unlink(missing_ok=True)
    (folder / LEGACY).unlink(missing_ok=True)


def load_checkpoint(folder: Path, fingerprint: dict[str, Any]) -> dict[str, Any] | None:
    """The saved state when ``folder`` holds a checkpoint of a run with this ``fingerprint``, else ``None``."""
    index = folder / INDEX
    if not index.is_file():
        if (folder / LEGACY).is_file():
            logger.warning(
                "ignoring %s: checkpoint format from before pickle-free loading; training from the start",
                folder / LEGACY,
            )
        return None
    try:
        meta = json.loads(index.read_text())
    except (OSError, ValueError) as exc:
        logger.warning("ignoring unreadable checkpoint index %s (%s)", index, exc)
        return None
    if not isinstance(meta, dict) or meta.get("fingerprint") != json.loads(json.dumps(fingerprint)):
        logger.warning("ignoring checkpoint %s: it was made with other settings", index)
        return None
    name = str(meta.get("file", ""))
    path = folder / name
    if "/" in name or not name.startswith("state-") or not path.is_file():
        logger.warning("ignoring checkpoint %s: its state file %r is missing", index, name)
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling refused or a damaged file: never trust it
        logger.warning(
            "ignoring checkpoint %s: %s", path, str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        )
        return None


def write_all_or_none(out_dir: Path, variants: Sequence[tuple[str, Callable[[Path], Any]]]) -> None:
    """Call each ``write(folder)`` into a staging folder, then move every variant into ``out_dir``."""
    staging = out_dir / STAGING
    try:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for name, write in variants:
            write(staging / name)
            fault_point("sae_write")
        for name, _ in variants:
            target = out_dir / name
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging / name, target)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise OutputError(
            f"cannot write the trained SAEs to {out_dir}: {exc.strerror or exc}; "
            "no variant was written (the checkpoint, if any, is kept)"
        ) from exc
    shutil.rmtree(staging, ignore_errors=True)
