"""SAE architectures and their registry (name → class).

Adding a variant = one file that subclasses :class:`~pipeline.saes.base.SAE`, decorates the
class with ``@register("name")`` and is imported below. The registry feeds the sweep
(:mod:`pipeline.sweep`), the CLI choices and :func:`pipeline.saes.io.load_sae`. Files:
:mod:`pipeline.saes.io` (SAELens 6 layout), :mod:`pipeline.saes.saelens_plugin` (the ``gsae``
architecture for SAELens; imports ``sae_lens``), :mod:`pipeline.saes.export` (sparsify).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from pipeline.errors import ConfigError
from pipeline.saes.base import SAE, SAEOutput

REGISTRY: dict[str, type[SAE]] = {}

T = TypeVar("T", bound=type[SAE])


def register(name: str) -> Callable[[T], T]:
    """Class decorator: make an SAE class available under ``name``."""

    def deco(cls: T) -> T:
        if name in REGISTRY and REGISTRY[name] is not cls:
            raise ValueError(f"SAE architecture {name!r} registered twice")
        cls.architecture = name
        REGISTRY[name] = cls
        return cls

    return deco


def get_sae_class(name: str) -> type[SAE]:
    """The class registered as ``name``; ``ConfigError`` naming the known ones otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown SAE architecture {name!r} (known: {', '.join(sorted(REGISTRY))})") from None


# Importing the modules registers the built-in architectures.
from pipeline.saes import gsae as _gsae  # noqa: E402,F401
from pipeline.saes import topk as _topk  # noqa: E402,F401

__all__ = ["REGISTRY", "SAE", "SAEOutput", "get_sae_class", "register"]
