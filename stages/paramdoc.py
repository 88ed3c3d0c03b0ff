"""Every params.yaml key with its default and docstring, read from the config dataclasses.

``pipeline/core/config.py`` documents each field with a string literal right below it (the
attribute-docstring convention). Those strings are not kept at run time, so they are read
back from the source with :mod:`ast`. ``gsae params`` prints the result; the stage
completeness test (tests/test_dvc_stages.py) uses :func:`leaf_fields` as the list of keys.
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


def section_docs() -> dict[str, str]:
    """Docstrings of the sections (``model``, ``data``, ..., ``train.grid``)."""
    out = dict(_attribute_docs(Params))
    grid_doc = inspect.getdoc(typing.get_type_hints(Params)["train"].__dataclass_fields__["grid"].type)
    if grid_doc:
        out["train.grid"] = " ".join(grid_doc.split())
    return out


def _yaml_value(value: Any) -> str:
    import yaml

    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def render(tracked_by: dict[str, list[str]] | None = None) -> str:
    """Plain-text listing: ``key = default  (type)`` then the docstring, section by section.

    ``tracked_by`` maps a key to the DVC stages whose params list it (``runtime only`` when
    none does), so the listing also says what a change reruns.
    """
    lines: list[str] = []
    sections = section_docs()
    current = None
    for fd in leaf_fields():
        section = fd.key.rsplit(".", 1)[0]
        if section != current:
            current = section
            lines += ["", f"[{section}]  {sections.get(section, '')}".rstrip()]
        lines.append(f"  {fd.key} = {_yaml_value(fd.default)}  ({fd.type})")
        if fd.doc:
            lines.append(f"      {fd.doc}")
        if tracked_by is not None:
            stages = tracked_by.get(fd.key, [])
            lines.append(f"      reruns: {', '.join(stages) if stages else 'nothing (runtime only)'}")
    return "\n".join(lines).lstrip("\n") + "\n"
