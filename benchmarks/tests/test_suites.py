"""The layout of benchmarks/: every script indexed in benchmarks/README.md and runnable as a
module, no import-path manipulation, a docstring opening each file and none over 400 lines,
and no test under tests/ importing the benchmarks."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from benchmarks import ROOT

HERE = ROOT / "benchmarks"
FILES = sorted(p for p in HERE.rglob("*.py") if "__pycache__" not in p.parts)
MODULES = [".".join(p.relative_to(ROOT).with_suffix("").parts) for p in FILES]
README = (HERE / "README.md").read_text()


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _runnable(path: Path) -> bool:
    """A script: it has an ``if __name__ == "__main__":`` block."""
    return any(isinstance(node, ast.If) and "__main__" in ast.unparse(node.test) for node in _tree(path).body)


SCRIPTS = [m for m, p in zip(MODULES, FILES, strict=True) if _runnable(p)]


def test_there_are_suites_of_scripts() -> None:
    suites = {m.split(".")[1] for m in SCRIPTS}
    assert {"components", "gpu", "peers", "scaleup"} <= suites
    assert not [p for p in HERE.glob("*.py") if p.name != "__init__.py"], "scripts belong in a suite folder"


@pytest.mark.parametrize("module", SCRIPTS)
def test_every_script_is_indexed_in_the_readme(module: str) -> None:
    assert module in README, f"benchmarks/README.md does not mention {module}"


@pytest.mark.parametrize("path", FILES, ids=MODULES)
def test_files_open_with_a_docstring_stay_short_and_leave_sys_path_alone(path: Path) -> None:
    tree = _tree(path)
    assert ast.get_docstring(tree), f"{path} opens without a docstring"
    assert len(path.read_text().splitlines()) <= 400
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "path":
            assert ast.unparse(node.value) != "sys", f"{path}:{node.lineno} touches sys.path"


@pytest.mark.parametrize("module", MODULES)
def test_every_module_imports(module: str) -> None:
    importlib.import_module(module)


def test_no_test_under_tests_imports_the_benchmarks() -> None:
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for node in ast.walk(_tree(path)):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            bad = [n for n in names if n == "benchmarks" or n.startswith("benchmarks.")]
            assert not bad, f"{path}:{node.lineno} imports {bad}: shared code belongs in the library"
