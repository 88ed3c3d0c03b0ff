"""Every params.yaml key with its value, default and docstring, read from the config dataclasses.

``pipeline/core/config.py`` documents each field with a string literal right below it (the
attribute-docstring convention) and each section's class with its own docstring. Those
strings are not kept at run time (a dataclass without a docstring even gets a generated
one), so they are read back from the source with :mod:`ast`. ``gsae params`` prints the
result with the effective values of a params file; the stage completeness test
(tests/test_dvc_stages.py) uses :func:`leaf_fields` as the list of keys.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
import typing
from dataclasses import dataclass
from typing import Any

from pipeline.core.config import Params
from pipeline.core.loader import params_to_dict


@dataclass(frozen=True)
class FieldDoc:
    """One leaf params key."""

    key: str
    """Dotted key, e.g. ``train.grid.k``."""
    default: Any
    """Code default as plain YAML-able data (tuples as lists)."""
    type: str
    """The annotation as written in pipeline/core/config.py."""
    doc: str
    """The field's docstring (one paragraph)."""


def _attribute_docs(cls: type) -> dict[str, str]:
    """``{field: docstring}`` of a dataclass, from the string literal after each field."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, nxt in zip(body, body[1:], strict=False):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _class_doc(cls: type) -> str:
    """The docstring written in ``cls``'s own body ('' when none: not a generated or inherited one)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    doc = ast.get_docstring(tree.body[0]) if isinstance(tree.body[0], ast.ClassDef) else None
    return " ".join(doc.split()) if doc else ""


def _annotations(cls: type) -> dict[str, str]:
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    return {
        n.target.id: ast.unparse(n.annotation)
        for n in body
        if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)
    }


def leaf_fields(cls: type = Params, prefix: str = "") -> list[FieldDoc]:
    """Every leaf key under ``cls`` (nested dataclasses expanded), in declaration order."""
    docs, notes = _attribute_docs(cls), _annotations(cls)
    hints = typing.get_type_hints(cls)
    default = cls()
    out: list[FieldDoc] = []
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(hints[f.name]):
            out.extend(leaf_fields(hints[f.name], key + "."))
        else:
            value = params_to_dict(getattr(default, f.name))
            out.append(FieldDoc(key, value, notes.get(f.name, str(hints[f.name])), docs.get(f.name, "")))
    return out


def section_docs(cls: type = Params, prefix: str = "") -> dict[str, str]:
    """Headings of the sections (``model``, ``data``, ..., ``train.grid``): the section class's own
    docstring, else the docstring of the field that holds it."""
    docs, hints = _attribute_docs(cls), typing.get_type_hints(cls)
    out: dict[str, str] = {}
    for f in dataclasses.fields(cls):
        sub = hints[f.name]
        if isinstance(sub, type) and dataclasses.is_dataclass(sub):
            key = f"{prefix}{f.name}"
            out[key] = _class_doc(sub) or docs.get(f.name, "")
            out.update(section_docs(sub, key + "."))
    return out


def _yaml_value(value: Any) -> str:
    import yaml

    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def _value_at(params: Params, key: str) -> Any:
    value: Any = params
    for part in key.split("."):
        value = getattr(value, part)
    return params_to_dict(value)


def render(tracked_by: dict[str, list[str]] | None = None, params: Params | None = None) -> str:
    """Plain-text listing: ``key = value  (type)`` then the docstring, section by section.

    ``params``: the effective configuration (a params file with its overrides); each key then
    shows its value there, and ``code default X`` beside it where the two differ. Without it
    the values are the code defaults. ``tracked_by`` maps a key to the DVC stages whose
    params list it (``runtime only`` when none does), so the listing also says what a change
    reruns.
    """
    lines: list[str] = []
    sections = section_docs()
    current, shown = None, set()
    for fd in leaf_fields():
        section = fd.key.rsplit(".", 1)[0]
        if section != current:
            current = section
            heading = "(continued)" if section in shown else sections.get(section, "")
            lines += ["", f"[{section}]  {heading}".rstrip()]
            shown.add(section)
        value = fd.default if params is None else _value_at(params, fd.key)
        note = "" if value == fd.default else f"; code default {_yaml_value(fd.default)}"
        lines.append(f"  {fd.key} = {_yaml_value(value)}  ({fd.type}{note})")
        if fd.doc:
            lines.append(f"      {fd.doc}")
        if tracked_by is not None:
            stages = tracked_by.get(fd.key, [])
            idle = (
                "nothing (gsae finetune only)" if fd.key.startswith("finetune.") else "nothing (runtime only)"
            )
            lines.append(f"      reruns: {', '.join(stages) if stages else idle}")
    return "\n".join(lines).lstrip("\n") + "\n"
