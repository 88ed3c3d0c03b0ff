"""Helpers shared by the child modules of ``benchmarks/peers/run.py`` (stdlib + numpy only).

Each child (``child_ours`` in ``.venv``, ``child_saelens`` / ``child_sparsify`` in the
peers' venvs, each run as ``python -m benchmarks.peers.child_<side>`` from the repository
root: benchmarks/peers/measurements.py) imports this module, runs one measurement and prints
its result as ONE JSON line prefixed with ``RESULT `` on stdout.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULT_PREFIX = "RESULT "
HOOK = "model.layers.15"
LAYER = 15
D_MODEL = 576
WIDTH = 4608
BATCH_TOKENS = 4096
CONTEXT = 128


class StepClock:
    """Timestamps taken just before each training step (after its batch arrived)."""

    def __init__(self) -> None:
        self.marks: list[float] = []

    def mark(self) -> None:
        self.marks.append(time.perf_counter())

    def steady_rate(self, warmup: int, tokens_per_step: int) -> dict[str, float]:
        """Tokens/s over the steps after ``warmup`` (interval from step ``warmup`` to the last mark)."""
        marks = self.marks
        if len(marks) < warmup + 2:
            raise RuntimeError(f"only {len(marks)} steps timed; need more than warm-up {warmup} + 1")
        steps = len(marks) - 1 - warmup
        seconds = marks[-1] - marks[warmup]
        return {"steady_tok_s": steps * tokens_per_step / seconds, "steady_steps": steps, "steady_s": seconds}


def versions(*packages: str) -> dict[str, str]:
    """Installed version of each distribution (``"-"`` when absent)."""
    found = {}
    for name in packages:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "-"
    return found


def dir_bytes(path: str | Path) -> int:
    """Bytes of every file under ``path`` (what the cache costs on disk)."""
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files)


def load_contexts(path: str | Path, tokens: int) -> np.ndarray:
    """The first ``tokens // 128`` packed contexts [n, 128] int32 exported by ``prepare.py``."""
    contexts = np.load(path)
    n = tokens // contexts.shape[1]
    if n > len(contexts):
        raise SystemExit(f"{path} holds {len(contexts)} contexts; {n} asked")
    return contexts[:n]


def emit(result: dict[str, Any]) -> None:
    """Print the one result line the parent parses."""
    print(RESULT_PREFIX + json.dumps(result), flush=True)
