"""Shared pieces of the GPU benchmarks (benchmarks/gpu.py): result table, device timing."""

from __future__ import annotations

import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

log = logging.getLogger("gpu-bench")
RESULTS: dict[str, Any] = {}


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def median_time(fn, dev: torch.device, reps: int, warmup: int = 2) -> float:
    """Median wall seconds of ``fn()`` over ``reps`` runs (device synchronised)."""
    for _ in range(warmup):
        fn()
    sync(dev)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        sync(dev)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def record(section: str, name: str, **values: Any) -> None:
    RESULTS.setdefault(section, {})[name] = values
    print(
        f"[{section}] {name}: "
        + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()),
        flush=True,
    )
