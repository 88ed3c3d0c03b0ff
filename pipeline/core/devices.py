"""Turning a device setting (``auto``, ``cpu``, ``cuda``, ``cuda:N``) into a torch device, and the
mixed-precision context every stage applies in the same way."""

from __future__ import annotations

from contextlib import AbstractContextManager

import torch

from pipeline.core.errors import ConfigError


def resolve_device(spec: str, key: str = "device") -> torch.device:
    """``auto`` → CUDA when available, else CPU; a bad or unavailable device → ``ConfigError`` naming ``key``."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as exc:
        raise ConfigError(f"{key}: bad device {spec!r}") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{key} is {spec!r} but CUDA is not available here (use auto or cpu)")
    return device


def autocast(device: torch.device, mode: str) -> AbstractContextManager[None]:
    """``torch.autocast`` on ``device``'s type in ``mode`` (``none`` | ``bfloat16`` | ``float16``);
    ``none`` is a context that changes nothing."""
    amp = mode != "none"
    return torch.autocast(device.type, dtype=getattr(torch, mode) if amp else None, enabled=amp)


def native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware (AVX512-BF16 or AMX tiles)."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)
