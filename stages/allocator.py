"""Process-wide memory-allocator tuning, applied by the commands that train and harvest.

A library call must not change process-global state behind its caller's back, so
``gsae train`` and ``gsae harvest`` (not :func:`pipeline.train.run.run_train` or
:func:`pipeline.harvest.run.run_harvest`) call :func:`tune_allocator`.
"""

from __future__ import annotations

import ctypes
import logging
import platform

logger = logging.getLogger(__name__)


def tune_allocator(mmap_threshold: int = 1 << 30) -> bool:
    """glibc only: serve large blocks from the heap and never trim it (``mallopt``).

    By default glibc maps every block above 32 MiB (z is [B, n] float32: 75 MiB at
    B=4096, n=4608) freshly from the kernel and unmaps it on free, so each training step
    page-faults and zeroes its temporaries again. Measured on 2 cores (d=576, x8, B=2048):
    8 variants in one pass went from 1.3–1.5x the time of the 8 run alone to 0.9–1.05x, and
    a step got ~2x faster. ``gsae harvest`` applies it too; its model forward (SmolLM2 to block
    15, 8 x 128 tokens) is about the same speed either way (tuned / plain 1.01-1.02 in
    benchmarks/components/allocator.py). The cost is that freed memory stays in the process (RSS stays at
    its peak). Returns whether it applied.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    ok = libc.mallopt(m_mmap_threshold, mmap_threshold) == 1
    ok = libc.mallopt(m_trim_threshold, (1 << 31) - 1) == 1 and ok
    logger.debug("glibc mallopt tuned: %s", ok)
    return ok
