"""SAE architectures and their registry (name → class, each class carrying its hparams class).

Adding an architecture = one file that declares a frozen hyper-parameter dataclass
(subclass of :class:`~pipeline.saes.base.KHParams`, one docstring per field) and a subclass of
:class:`~pipeline.saes.base.SAE`, decorates the class with ``@register("name", HParams)`` and
is imported below (SAELens's pattern: name → (SAE class, config class)). Everything else
reads the registry: the sweep (:mod:`pipeline.sweep`: an hparams field named like a
``train.grid`` key is varied by it, the others keep their defaults), variant names and
series labels (:mod:`pipeline.naming`), ``cfg.json`` and
:func:`pipeline.saes.io.load_sae`, and the CLI's ``-a`` choices. Files:
:mod:`pipeline.saes.io` (SAELens 6 layout), :mod:`pipeline.saes.saelens_plugin` (the ``gsae``
architecture for SAELens; imports ``sae_lens``), :mod:`pipeline.saes.export` (sparsify).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TypeVar

from pipeline.errors import ConfigError
from pipeline.naming import GRID_KEYS
from pipeline.saes.base import SAE, KHParams, SAEOutput

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


# Importing the modules registers the built-in architectures.
from pipeline.saes import batchtopk as _batchtopk  # noqa: E402,F401
from pipeline.saes import gbatchtopk as _gbatchtopk  # noqa: E402,F401
from pipeline.saes import gsae as _gsae  # noqa: E402,F401
from pipeline.saes import topk as _topk  # noqa: E402,F401

__all__ = ["GRID_KEYS", "REGISTRY", "SAE", "KHParams", "SAEOutput", "get_sae_class", "register"]
