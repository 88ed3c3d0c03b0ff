"""The project files a ``gsae`` command can execute, found statically with :mod:`ast`.

A command's closure starts from stages/cli.py's module-level imports, the imports in the
command's function body and in the cli.py helpers it calls by name (transitively), the
``cli`` group and ``main`` that every command runs through, and every decorator of cli.py
(they run when the module is imported, e.g. a ``click.Choice`` built from a registry). From there every project module
contributes all of its imports, function-level ones included (a lazy import still runs),
plus the ``__init__.py`` of each package on the way.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "cache", "stages")
CLI = ROOT / "stages" / "cli.py"
ALWAYS = ("cli", "main")


def _module_file(name: str) -> Path | None:
    """``pipeline.saes.io`` → pipeline/saes/io.py (or the package's __init__.py)."""
    parts = name.split(".")
    if parts[0] not in PACKAGES:
        return None
    base = ROOT.joinpath(*parts)
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def _imports(nodes: list[ast.AST]) -> set[str]:
    """Dotted module names imported anywhere inside ``nodes`` (``from a import b`` gives a and a.b)."""
    names: set[str] = set()
    for top in nodes:
        for node in ast.walk(top):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _files_of(names: set[str]) -> set[Path]:
    files: set[Path] = set()
    for name in names:
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # parent packages' __init__ run first
            f = _module_file(".".join(parts[:i]))
            if f is not None:
                files.add(f)
    return files


def closure(start: set[Path], expanded: frozenset[Path] = frozenset()) -> set[Path]:
    """Every project file reachable from ``start`` through imports (``expanded``: already walked)."""
    todo, seen = [f for f in start if f not in expanded], set(start)
    while todo:
        f = todo.pop()
        for g in _files_of(_imports([ast.parse(f.read_text())])):
            if g not in seen:
                seen.add(g)
                todo.append(g)
    return seen


def command_closure(command: str) -> set[Path]:
    """Project files ``gsae <command>`` can execute (stages/cli.py included)."""
    tree = ast.parse(CLI.read_text())
    funcs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    if command not in funcs:
        raise KeyError(f"stages/cli.py has no function {command!r}")
    top = [n for n in tree.body if not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    decorators = [d for f in funcs.values() for d in f.decorator_list]  # run at import
    top += decorators
    used: set[str] = set()
    todo = [*ALWAYS, command, *(n.id for d in decorators for n in ast.walk(d) if isinstance(n, ast.Name))]
    while todo:
        name = todo.pop()
        if name in used or name not in funcs:
            continue
        used.add(name)
        fn = funcs[name]
        todo += [n.id for n in ast.walk(fn) if isinstance(n, ast.Name) and n.id in funcs]
    start = _files_of(_imports(top + [funcs[n] for n in used])) | _files_of({"stages.cli"})
    return closure(start, frozenset({CLI}))


def rel(paths: set[Path]) -> set[str]:
    """Paths relative to the repository root, as dvc.yaml writes them."""
    return {str(p.relative_to(ROOT)) for p in paths}
