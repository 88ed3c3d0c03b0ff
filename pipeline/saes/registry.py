"""The architecture registry: name → SAE class, each class carrying its hparams class.

:func:`register` is the class decorator every architecture file applies; :func:`get_sae_class`
is the one lookup. :data:`GRID_KEYS` (the ``train.grid`` keys) decides which hparams fields
the sweep varies. Importing :mod:`pipeline.saes` registers the built-in architectures.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TypeVar

from pipeline.core.config import GridConfig
from pipeline.core.errors import ConfigError
from pipeline.saes.base import SAE, KHParams

GRID_KEYS = tuple(f.name for f in dataclasses.fields(GridConfig))
"""``train.grid`` keys, in the order their values appear in variant names."""

REGISTRY: dict[str, type[SAE]] = {}
"""Architecture name → SAE class (its hyper-parameters: ``cls.hparams_class``)."""


T = TypeVar("T", bound=type[SAE])


def register(name: str, hparams: type[KHParams]) -> Callable[[T], T]:
    """Class decorator: make an SAE class available under ``name`` with its hparams dataclass.

    Every hparams field must be a ``train.grid`` key or have a default (the sweep has to be
    able to build it); ``grid_hparams`` becomes the grid keys it reads besides ``k``.
    """
    if not (dataclasses.is_dataclass(hparams) and issubclass(hparams, KHParams)):
        raise TypeError(f"{name}: hparams must be a KHParams dataclass, got {hparams!r}")
    missing = [
        f.name
        for f in dataclasses.fields(hparams)
        if f.name not in GRID_KEYS
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise TypeError(f"{name}: hparams field(s) {missing} are neither train.grid keys nor defaulted")

    def deco(cls: T) -> T:
        if name in REGISTRY and REGISTRY[name] is not cls:
            raise ValueError(f"SAE architecture {name!r} registered twice")
        cls.architecture = name
        cls.hparams_class = hparams
        cls.grid_hparams = tuple(
            f.name for f in dataclasses.fields(hparams) if f.name in GRID_KEYS and f.name != "k"
        )
        REGISTRY[name] = cls
        return cls

    return deco


def get_sae_class(name: str) -> type[SAE]:
    """The class registered as ``name``; ``ConfigError`` naming the known ones otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"unknown SAE architecture {name!r} (known: {', '.join(sorted(REGISTRY))})"
        ) from None
