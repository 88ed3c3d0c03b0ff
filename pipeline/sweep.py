"""Expanding the train grid (``train.grid``) into named variant specs.

Every combination of the grid's lists is one variant, except that an architecture only
varies the hyperparameters it reads (``SAE.grid_hparams``): ``topk`` ignores ``beta`` and
``value_mode`` (fixed to 0 / ``selection``), so its duplicates collapse. Names are
deterministic and readable::

    topk-k32-x8-s0            gsae-k32-b1-x8-aug-s0       gsae-k32-b0.5-x8-sel-lr0.001-s0

``lr`` enters the name only when the grid lists several learning rates, the block
(``L3``) only when ``train.grid.layer`` lists blocks (several layers in one run).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from pipeline.config import GridConfig
from pipeline.errors import ConfigError
from pipeline.saes import REGISTRY, get_sae_class

MODE_ABBREV = {"augmented": "aug", "selection": "sel"}


@dataclass(frozen=True)
class VariantSpec:
    """One SAE to train."""

    architecture: str
    k: int
    beta: float
    expansion: int
    value_mode: str
    lr: float
    seed: int
    show_lr: bool = False
    """Whether ``lr`` is part of the name (several lrs in the grid)."""
    layer: int | None = None
    """Block trained on (``train.grid.layer``); ``None`` = the run's one layer (not in the name)."""

    @property
    def name(self) -> str:
        """Deterministic directory name of the variant."""
        hp = get_sae_class(self.architecture).grid_hparams
        parts = [self.architecture, f"k{self.k}"]
        if "beta" in hp:
            parts.append(f"b{self.beta:g}")
        parts.append(f"x{self.expansion}")
        if "value_mode" in hp:
            parts.append(MODE_ABBREV.get(self.value_mode, self.value_mode))
        if self.show_lr:
            parts.append(f"lr{self.lr:g}")
        if self.layer is not None:
            parts.append(f"L{self.layer}")
        parts.append(f"s{self.seed}")
        return "-".join(parts)

    def d_sae(self, d_in: int) -> int:
        """Dictionary width for model width ``d_in``."""
        return self.expansion * d_in


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
    if any(b < 0 for b in grid.beta):
        raise ConfigError(f"train.grid.beta values must be >= 0, got {list(grid.beta)}")
    for vm in grid.value_mode:
        if vm not in MODE_ABBREV:
            raise ConfigError(f"train.grid.value_mode: unknown mode {vm!r} (augmented | selection)")
    show_lr = len(set(grid.lr)) > 1
    specs: dict[VariantSpec, None] = {}
    # layer outermost: a layer's variants are contiguous, in the single-layer order.
    for layer, arch, k, beta, exp, vm, lr, seed in itertools.product(
        grid.layer or (None,), grid.architecture, grid.k, grid.beta or (0.0,), grid.expansion,
        grid.value_mode or ("selection",), grid.lr, grid.seed,
    ):
        hp = get_sae_class(arch).grid_hparams
        spec = VariantSpec(
            architecture=arch,
            k=k,
            beta=float(beta) if "beta" in hp else 0.0,
            expansion=exp,
            value_mode=vm if "value_mode" in hp else "selection",
            lr=float(lr),
            seed=seed,
            show_lr=show_lr,
            layer=layer,
        )
        specs.setdefault(spec, None)
    out = list(specs)
    names = [s.name for s in out]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ConfigError(f"train.grid gives several variants named {sorted(dup)[0]!r} (duplicate grid values?)")
    if not out:
        raise ConfigError("train.grid is empty")
    return out
