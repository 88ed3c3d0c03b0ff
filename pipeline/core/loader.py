"""The one params loader: params.yaml (+ ``-s`` overrides) → :class:`~pipeline.core.config.Params`.

:func:`load_params` reads one or several YAML files (layered), applies dotted ``KEY=VALUE``
overrides (values parsed as YAML, so ``-s harvest.layers=[3,5]`` gives a list), checks the
mapping against the dataclasses' annotations (``Literal`` choices, unions, tuples, numbers),
rejects unknown keys, and builds the frozen dataclasses of :mod:`pipeline.core.config`, whose
``__post_init__`` does the cross-field checks. The checking is generic: adding a config field
never changes this module. Nothing else in the project reads params.yaml.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from pipeline.core.config import Params
from pipeline.core.errors import ConfigError
from pipeline.core.errors import config_check as check


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert lists to tuples."""
    origin = typing.get_origin(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return build(tp, value, key)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in typing.get_args(tp):
            return None
        errors = []
        for arg in typing.get_args(tp):
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{key}: bad value {value!r}")
    if origin is Literal:
        check(
            value in typing.get_args(tp), f"{key} must be one of {list(typing.get_args(tp))}, got {value!r}"
        )
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            value = [value]
        (item_tp, _) = typing.get_args(tp)
        return tuple(coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value))
    if tp is float:
        check(
            isinstance(value, (int, float)) and not isinstance(value, bool),
            f"{key} must be a number, got {value!r}",
        )
        return float(value)
    if tp is int:
        check(
            isinstance(value, int) and not isinstance(value, bool), f"{key} must be an integer, got {value!r}"
        )
        return value
    if tp is bool:
        check(isinstance(value, bool), f"{key} must be true or false, got {value!r}")
        return value
    if tp is str:
        check(
            isinstance(value, (str, int, float)) and not isinstance(value, bool),
            f"{key} must be a string, got {value!r}",
        )
        return str(value)
    raise ConfigError(f"{key}: unsupported type {tp}")


def _keys_under(cls: type, prefix: str = "") -> list[str]:
    """Dotted keys of ``cls``'s fields and of its nested sections' fields, relative to ``cls``."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        out.append(prefix + f.name)
        if isinstance(hints[f.name], type) and dataclasses.is_dataclass(hints[f.name]):
            out += _keys_under(hints[f.name], f"{prefix}{f.name}.")
    return out


def suggest_key(cls: type, name: str, where: str) -> str:
    """`` — did you mean 'X'?`` for the unknown key ``where + name`` in section ``cls`` ('' if nothing fits).

    A key that exists one section down under the same name (``train.lr`` → ``train.grid.lr``)
    comes first; otherwise the closest spelling among the section's keys (difflib)."""
    keys = _keys_under(cls)
    nested = [k for k in keys if "." in k and k.rsplit(".", 1)[1] == name]
    if nested:
        key = where + nested[0]
        sweep = " (train.grid keys take lists: one variant per value)" if ".grid." in key else ""
        return f" — did you mean '{key}'{sweep}?"
    close = difflib.get_close_matches(name, [k for k in keys if "." not in k], n=1, cutoff=0.6)
    close = close or difflib.get_close_matches(name, keys, n=1, cutoff=0.75)
    return f" — did you mean '{where}{close[0]}'?" if close else ""


def build(cls: type, raw: Any, prefix: str) -> Any:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys."""
    if raw is None:
        raw = {}
    check(isinstance(raw, dict), f"{prefix or 'params'} must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    where = f"{prefix}." if prefix else ""
    if unknown:
        raise ConfigError(
            f"unknown params key '{where}{unknown[0]}'{suggest_key(cls, unknown[0], where)} "
            f"(known: {', '.join(sorted(names))})"
        )
    kwargs = {name: coerce(value, hints[name], f"{where}{name}") for name, value in raw.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:  # pragma: no cover - guarded by the checks above
        raise ConfigError(str(exc)) from exc


def apply_override(raw: dict[str, Any], item: str) -> None:
    key, sep, text = item.partition("=")
    check(bool(sep) and bool(key.strip()), f"override must look like KEY=VALUE, got {item!r}")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {item!r}: value is not valid YAML ({exc.__class__.__name__})") from exc
    node = raw
    parts = key.strip().split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        check(isinstance(child, dict), f"override {key!r}: '{part}' is not a section")
        node = child
    node[parts[-1]] = value


def read_yaml(p: Path) -> dict[str, Any]:
    if not p.is_file():
        raise ConfigError(f"params file not found: {p}")
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"params file {p} cannot be read: {exc}") from exc
    check(
        isinstance(raw, dict), f"{p}: the top level must be a mapping of sections, got {type(raw).__name__}"
    )
    return raw


def merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``top`` merged in (mappings recursively, everything else replaced)."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def deep_copy(raw: Any) -> Any:
    if isinstance(raw, dict):
        return {k: deep_copy(v) for k, v in raw.items()}
    if isinstance(raw, list):
        return [deep_copy(v) for v in raw]
    return raw


def params_from_dict(raw: dict[str, Any], overrides: typing.Sequence[str] = ()) -> Params:
    """Build ``Params`` from a plain mapping plus dotted ``KEY=VALUE`` overrides."""
    raw = deep_copy(raw)
    for item in overrides:
        apply_override(raw, item)
    return build(Params, raw, "")


def load_params(
    path: str | Path | typing.Sequence[str | Path] | None = "params.yaml",
    overrides: typing.Sequence[str] = (),
) -> Params:
    """Read params.yaml (missing file = all defaults when ``path`` is None).

    Several files are layered in order: a later file's mappings merge into the earlier
    ones key by key, and its scalars and lists replace theirs (an experiment's sweep file
    over its shared params, say). The ``-s`` overrides apply last.
    """
    paths = [] if path is None else [path] if isinstance(path, (str, Path)) else list(path)
    raw: dict[str, Any] = {}
    for item in paths:
        raw = merge(raw, read_yaml(Path(item)))
    return params_from_dict(raw, overrides)


def params_to_dict(params: Any) -> Any:
    """Plain nested dict of a config (tuples as lists), for JSON and cfg files."""
    if dataclasses.is_dataclass(params):
        return {f.name: params_to_dict(getattr(params, f.name)) for f in dataclasses.fields(params)}
    if isinstance(params, tuple):
        return [params_to_dict(v) for v in params]
    return params
