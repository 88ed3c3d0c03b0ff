"""Names of variants, series and table rows: the one place that turns hyper-parameters into text.

Every name is built from an architecture's registered hyper-parameters (those that are
``train.grid`` keys), in the order of the grid's keys, with the abbreviations below:

    variant  <arch>-k32[-b1]-x8[-aug][-lr0.001]-s0      a trained folder (train.out_dir/<variant>)
    series   <arch>[-b1][-aug]-x8[-L15][@beta0]          seeds and k pooled (evaluate summaries)
    label    <arch>[ aug][ β=1][ @β0]                    a row of the seed tables (gsae summarize)

``@beta0`` (:data:`BETA0_SUFFIX`) marks a gradient-aware SAE evaluated without its gradient.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.saes.registry import GRID_KEYS, get_sae_class

BETA0_SUFFIX = "@beta0"
"""Appended to a variant (and series) name for its β = 0 evaluation."""

PREFIX = {"k": "k", "beta": "b", "expansion": "x", "lr": "lr", "seed": "s"}
"""Numeric grid keys → the letters before their value in names."""
SYMBOL = {"beta": "β"}
"""Numeric hyper-parameters → their symbol in table labels."""
VALUE_ABBREV = {"value_mode": {"augmented": "aug", "selection": "sel"}}
"""Categorical grid keys → abbreviations of their values (written without a prefix)."""


def _part(key: str, value: Any) -> str:
    if key in VALUE_ABBREV:
        return VALUE_ABBREV[key].get(str(value), str(value))
    return f"{PREFIX[key]}{float(value) if key in ('beta', 'lr') else value:g}"


def grid_hparams(architecture: str) -> tuple[str, ...]:
    """The grid keys ``architecture`` reads besides ``k`` (``beta``, ``value_mode``...)."""
    return get_sae_class(architecture).grid_hparams


def variant_name(
    architecture: str,
    hparams: Mapping[str, Any],
    *,
    expansion: int,
    lr: float,
    seed: int,
    show_lr: bool,
    layer: int | None = None,
) -> str:
    """Directory name of one trained variant: ``gsae-k32-b1-x8-aug[-L15]-s0`` (``lr`` only if
    ``show_lr``; the block only when the grid lists several, ``train.grid.layer``)."""
    read = {"k", *grid_hparams(architecture)}
    values = {**{k: v for k, v in hparams.items() if k in read}, "expansion": expansion}
    if show_lr:
        values["lr"] = lr
    parts = [architecture, *(_part(key, values[key]) for key in GRID_KEYS if key in values)]
    if layer is not None:
        parts.append(f"L{layer}")
    return "-".join([*parts, _part("seed", seed)])


def series_name(cfg: Mapping[str, Any], *, beta0: bool, with_layer: bool) -> str:
    """Series of a variant from its cfg.json: architecture + grid hyper-parameters other than k
    and seed, expansion, the block when several are evaluated: ``gsae-b1-aug-x8-L15@beta0``."""
    arch = str(cfg["architecture"])
    parts = [arch, *(_part(key, cfg[key]) for key in grid_hparams(arch) if key in cfg)]
    parts.append(f"x{int(cfg['d_sae']) / int(cfg['d_in']):g}")
    if with_layer:
        parts.append(f"L{str(cfg['hook_name']).rpartition('.')[2]}")
    return "-".join(parts) + (BETA0_SUFFIX if beta0 else "")


def table_label(architecture: str, hparams: Mapping[str, Any], *, with_grad: bool = True) -> str:
    """Row label of the seed tables: ``gsae sel β=0.3``, ``gsae aug β=1 @β0``, ``topk``."""
    keys = [key for key in grid_hparams(architecture) if key in hparams]
    parts = [architecture, *(_part(key, hparams[key]) for key in keys if key in VALUE_ABBREV)]
    parts += [f"{SYMBOL.get(key, key)}={float(hparams[key]):g}" for key in keys if key not in VALUE_ABBREV]
    return " ".join(parts) + ("" if with_grad else " @β0")


def base_variant(name: str) -> tuple[str, bool]:
    """``(variant folder name, evaluated with the gradient)`` of a metrics key."""
    return name.removesuffix(BETA0_SUFFIX), not name.endswith(BETA0_SUFFIX)
