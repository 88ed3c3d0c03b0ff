"""Names of variants, series and table rows: the one place that turns hyper-parameters into text.

Every name is built from an architecture's registered hyper-parameters (those that are
``train.grid`` keys), in the order of the grid's keys, with the abbreviations below:

    variant  <arch>-k32[-b1]-x8[-aug][-gl0.5][-lr0.001]-s0   a trained folder (train.out_dir/<variant>)
    series   <arch>[-b1][-aug][-gl0.5]-x8[-L15][@beta0]       seeds and k pooled (evaluate summaries)
    label    <arch>[ aug][ β=1][ λ=0.5][ @β0]                 a row of the seed tables (gsae summarize)

``gl`` is λ of the gradient loss term (``train.grid.grad_loss``, every architecture): written
only when nonzero, so names of variants trained without it are what they always were.

``@beta0`` (:data:`BETA0_SUFFIX`) marks a gradient-aware SAE evaluated without its gradient.
:func:`parse_variant` reads a variant name back (``gsae summarize`` when the SAE folders are absent).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pipeline.saes.registry import GRID_KEYS, REGISTRY, get_sae_class

BETA0_SUFFIX = "@beta0"
"""Appended to a variant (and series) name for its β = 0 evaluation."""

PREFIX = {"k": "k", "beta": "b", "expansion": "x", "grad_loss": "gl", "lr": "lr", "seed": "s"}
"""Numeric grid keys → the letters before their value in names."""
FLOAT_KEYS = ("beta", "grad_loss", "lr")
"""Numeric grid keys written as floats (``b1``, ``gl0.5``, ``lr0.001``)."""
SYMBOL = {"beta": "β", "grad_loss": "λ"}
"""Numeric hyper-parameters → their symbol in table labels."""
VALUE_ABBREV = {"value_mode": {"augmented": "aug", "selection": "sel"}}
"""Categorical grid keys → abbreviations of their values (written without a prefix)."""


def _part(key: str, value: Any) -> str:
    if key in VALUE_ABBREV:
        return VALUE_ABBREV[key].get(str(value), str(value))
    return f"{PREFIX[key]}{float(value) if key in FLOAT_KEYS else value:g}"


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
    grad_loss: float = 0.0,
) -> str:
    """Directory name of one trained variant: ``gsae-k32-b1-x8-aug[-gl0.5][-L15]-s0`` (``lr`` only
    if ``show_lr``; λ only when nonzero; the block only when the grid lists several,
    ``train.grid.layer``)."""
    read = {"k", *grid_hparams(architecture)}
    values = {**{k: v for k, v in hparams.items() if k in read}, "expansion": expansion}
    if grad_loss:
        values["grad_loss"] = grad_loss
    if show_lr:
        values["lr"] = lr
    parts = [architecture, *(_part(key, values[key]) for key in GRID_KEYS if key in values)]
    if layer is not None:
        parts.append(f"L{layer}")
    return "-".join([*parts, _part("seed", seed)])


def series_name(cfg: Mapping[str, Any], *, beta0: bool, with_layer: bool) -> str:
    """Series of a variant from its cfg.json: architecture + grid hyper-parameters other than k
    and seed (λ when nonzero), expansion, the block when several are evaluated:
    ``gsae-b1-aug-x8-L15@beta0``, ``topk-gl0.5-x8``."""
    arch = str(cfg["architecture"])
    parts = [arch, *(_part(key, cfg[key]) for key in grid_hparams(arch) if key in cfg)]
    if cfg.get("grad_loss"):
        parts.append(_part("grad_loss", cfg["grad_loss"]))
    parts.append(f"x{int(cfg['d_sae']) / int(cfg['d_in']):g}")
    if with_layer:
        parts.append(f"L{str(cfg['hook_name']).rpartition('.')[2]}")
    return "-".join(parts) + (BETA0_SUFFIX if beta0 else "")


def table_label(architecture: str, hparams: Mapping[str, Any], *, with_grad: bool = True) -> str:
    """Row label of the seed tables: ``gsae sel β=0.3``, ``gsae aug β=1 @β0``, ``topk``,
    ``topk λ=0.5`` (λ = ``grad_loss`` when nonzero)."""
    keys = [key for key in grid_hparams(architecture) if key in hparams]
    if hparams.get("grad_loss"):
        keys.append("grad_loss")
    parts = [architecture, *(_part(key, hparams[key]) for key in keys if key in VALUE_ABBREV)]
    parts += [f"{SYMBOL.get(key, key)}={float(hparams[key]):g}" for key in keys if key not in VALUE_ABBREV]
    return " ".join(parts) + ("" if with_grad else " @β0")


def base_variant(name: str) -> tuple[str, bool]:
    """``(variant folder name, evaluated with the gradient)`` of a metrics key."""
    return name.removesuffix(BETA0_SUFFIX), not name.endswith(BETA0_SUFFIX)


_NUMBER = r"[0-9]+(?:\.[0-9]*)?(?:e[+-]?[0-9]+)?"
_PARTS = (  # (key, pattern, type): lr before the one-letter prefixes it would otherwise not need
    ("lr", re.compile(rf"lr({_NUMBER})"), float),
    ("k", re.compile(r"k([0-9]+)"), int),
    ("beta", re.compile(rf"b({_NUMBER})"), float),
    ("expansion", re.compile(r"x([0-9]+)"), int),
    ("grad_loss", re.compile(rf"gl({_NUMBER})"), float),
    ("layer", re.compile(r"L([0-9]+)"), int),
    ("seed", re.compile(r"s([0-9]+)"), int),
)
_VALUE_NAMES = {
    abbrev: (key, value) for key, table in VALUE_ABBREV.items() for value, abbrev in table.items()
} | {value: (key, value) for key, table in VALUE_ABBREV.items() for value in table}


def parse_variant(name: str) -> dict[str, Any]:
    """The hyper-parameters written in a variant name (:func:`variant_name`'s inverse):
    ``architecture``, ``k`` and ``seed`` always, ``beta``, ``value_mode``, ``expansion``,
    ``grad_loss``, ``lr`` and ``layer`` when the name carries them. ``ValueError`` when the name is not one."""
    base = name.removesuffix(BETA0_SUFFIX)
    words = re.split(r"(?<![0-9]e)-", base)  # not the minus of an exponent (b1e-05)
    cut = next((i for i in range(len(words), 0, -1) if "-".join(words[:i]) in REGISTRY), 0)
    if not cut:
        raise ValueError(
            f"{name!r} does not start with a registered architecture ({', '.join(sorted(REGISTRY))})"
        )
    out: dict[str, Any] = {"architecture": "-".join(words[:cut])}
    for word in words[cut:]:
        for key, pattern, kind in _PARTS:
            match = pattern.fullmatch(word)
            if match and key not in out:
                out[key] = kind(match.group(1))
                break
        else:
            if word not in _VALUE_NAMES:
                raise ValueError(f"{name!r}: cannot read {word!r} as a hyper-parameter")
            key, value = _VALUE_NAMES[word]
            out[key] = value
    missing = [key for key in ("k", "seed") if key not in out]
    if missing:
        raise ValueError(f"{name!r} names no {' or '.join(missing)}")
    return out
