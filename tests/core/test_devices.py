"""Device probing: the CPU's native bf16 matrix products (what ``train.autocast`` warns about)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from pipeline.core.devices import native_bf16
from pipeline.train.precision import warn_if_emulated

CPUINFO = Path("/proc/cpuinfo")


@pytest.mark.skipif(not CPUINFO.is_file(), reason="needs Linux's /proc/cpuinfo")
def test_native_bf16_agrees_with_the_cpu_flags(caplog) -> None:
    flags = set()
    for line in CPUINFO.read_text().splitlines():
        if line.startswith("flags"):
            flags |= set(line.split(":", 1)[1].split())
    native = bool({"avx512_bf16", "amx_bf16", "amx_tile"} & flags)
    assert native_bf16() is native
    with caplog.at_level(logging.WARNING, logger="pipeline.train.precision"):
        warn_if_emulated(torch.device("cpu"), "bfloat16")
        warn_if_emulated(torch.device("cpu"), "none")
    assert ("emulated" in caplog.text) is not native
