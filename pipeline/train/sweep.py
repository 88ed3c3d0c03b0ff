"""Expanding the train grid (``train.grid``) into named variant specs, from the SAE registry.

Each architecture varies exactly the grid keys that are fields of its registered hparams
dataclass (:mod:`pipeline.saes`): ``topk``, ``batchtopk`` and ``matryoshka`` read ``k``;
``gsae``, ``gbatchtopk`` and ``gmatryoshka`` also ``beta`` and ``value_mode``. Other hparams fields keep their defaults,
and the hparams dataclass validates the values. ``expansion``, ``lr`` and ``seed`` apply to
every architecture, and so does ``grad_loss`` (λ of the gradient loss term,
:mod:`pipeline.train.losses`; 0 = off). Duplicates collapse; names
(:mod:`pipeline.saes.naming`) are deterministic and readable::

    topk-k32-x8-s0            gsae-k32-b1-x8-aug-s0       gsae-k32-b0.5-x8-sel-lr0.001-s0
    topk-k32-x8-gl0.5-s0      (λ = 0.5: the gradient term enters the name only when nonzero)

``lr`` enters the name only when the grid lists several learning rates, the block
(``L3``) only when ``train.grid.layer`` lists blocks (several layers in one run).
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from typing import Any

from pipeline.core.config import GridConfig
from pipeline.core.errors import ConfigError
from pipeline.saes import REGISTRY, SAE, KHParams, get_sae_class
from pipeline.saes.naming import variant_name


@dataclass(frozen=True)
class VariantSpec:
    """One SAE to train."""

    architecture: str
    """Registered architecture name."""
    hparams: KHParams
    """The architecture's hyper-parameters (an instance of its registered hparams class)."""
    expansion: int
    """Dictionary width as a multiple of the model width."""
    lr: float
    """Adam learning rate."""
    seed: int
    """Initialisation seed."""
    show_lr: bool = False
    """Whether ``lr`` is part of the name (several lrs in the grid)."""
    layer: int | None = None
    """Block trained on (``train.grid.layer``); ``None`` = the run's one layer (not in the name)."""
    grad_loss: float = 0.0
    """λ of the gradient loss term (:mod:`pipeline.train.losses`); 0 = off (not in the name)."""

    @property
    def name(self) -> str:
        """Deterministic directory name of the variant."""
        hp = {f.name: getattr(self.hparams, f.name) for f in dataclasses.fields(self.hparams)}
        return variant_name(
            self.architecture,
            hp,
            expansion=self.expansion,
            lr=self.lr,
            seed=self.seed,
            show_lr=self.show_lr,
            layer=self.layer,
            grad_loss=self.grad_loss,
        )

    @property
    def sae_class(self) -> type[SAE]:
        """The registered class of :attr:`architecture` (its hparams reach the selection as they are)."""
        return get_sae_class(self.architecture)

    @property
    def k(self) -> int:
        """Active latents per token."""
        return self.hparams.k

    def d_sae(self, d_in: int) -> int:
        """Dictionary width for model width ``d_in``."""
        return self.expansion * d_in


TRAINER_KEYS = ("expansion", "grad_loss", "lr", "seed")
"""Grid keys every architecture takes (the rest are hparams fields)."""


def _combinations(cls: type[SAE], grid: GridConfig) -> list[dict[str, Any]]:
    """Grid values ``cls`` reads, one mapping per combination, in the grid keys' order."""
    read = {f.name for f in dataclasses.fields(cls.hparams_class)} | set(TRAINER_KEYS)
    keys = [f.name for f in dataclasses.fields(GridConfig) if f.name in read]
    return [
        dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(getattr(grid, k) for k in keys))
    ]


def _spec(cls: type[SAE], values: dict[str, Any], show_lr: bool, layer: int | None = None) -> VariantSpec:
    arch = cls.architecture
    try:
        hp = cls.hparams_class(**{k: v for k, v in values.items() if k not in TRAINER_KEYS})
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"train.grid ({arch}): {exc}") from None
    return VariantSpec(
        arch,
        hp,
        values["expansion"],
        float(values["lr"]),
        values["seed"],
        show_lr,
        layer,
        float(values["grad_loss"]),
    )


def expand_grid(grid: GridConfig) -> list[VariantSpec]:
    """All variants of ``grid``, deduplicated, in grid order; ``ConfigError`` on bad entries."""
    for arch in grid.architecture:
        if arch not in REGISTRY:
            raise ConfigError(
                f"train.grid.architecture: unknown architecture {arch!r} (known: {', '.join(sorted(REGISTRY))})"
            )
    for name, values in (("k", grid.k), ("expansion", grid.expansion), ("lr", grid.lr)):
        if not values:
            raise ConfigError(f"train.grid.{name} must list at least one value")
        if any(v <= 0 for v in values):
            raise ConfigError(f"train.grid.{name} values must be positive, got {list(values)}")
    if not grid.grad_loss:
        raise ConfigError("train.grid.grad_loss must list at least one value (0 = no gradient loss term)")
    if any(not (isinstance(v, (int, float)) and v >= 0 and v != float("inf")) for v in grid.grad_loss):
        raise ConfigError(
            f"train.grid.grad_loss values must be finite numbers >= 0, got {list(grid.grad_loss)}"
        )
    classes = [get_sae_class(arch) for arch in grid.architecture]
    for cls in classes:
        for key in cls.grid_hparams:
            if not getattr(grid, key):
                raise ConfigError(
                    f"train.grid.{key} must list at least one value ({cls.architecture} reads it)"
                )
    show_lr = len(set(grid.lr)) > 1
    specs: dict[VariantSpec, None] = {}
    # layer outermost: a layer's variants are contiguous, in the single-layer order.
    for layer in grid.layer or (None,):
        for cls in classes:
            for combo in _combinations(cls, grid):
                specs.setdefault(_spec(cls, combo, show_lr, layer), None)
    out = list(specs)
    names = [s.name for s in out]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ConfigError(
            f"train.grid gives several variants named {sorted(dup)[0]!r} (duplicate grid values?)"
        )
    if not out:
        raise ConfigError("train.grid is empty")
    return out
