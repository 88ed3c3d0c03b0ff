"""What every part of the GPU benchmark (benchmarks/gpu/run.py) shares: the result table it
records into (written as JSON with ``--json``), device-synchronised timing, and the ``peak``
part, the matrix-product ceilings each MFU figure is a fraction of."""

from __future__ import annotations

import logging
import statistics
import time
from typing import Any

import torch

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


def part_peak(dev: torch.device, smoke: bool) -> None:
    n = 512 if smoke else 8192
    for name, dtype, tf32 in (
        ("bf16", torch.bfloat16, False),
        ("fp32", torch.float32, False),
        ("tf32", torch.float32, True),
    ):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        a, b = torch.randn(n, n, device=dev, dtype=dtype), torch.randn(n, n, device=dev, dtype=dtype)
        t = median_time(lambda a=a, b=b: a @ b, dev, reps=3 if smoke else 10)
        record("peak", name, tflops=2 * n**3 / t / 1e12)
    torch.backends.cuda.matmul.allow_tf32 = False
