"""The floor plan's rules, checked on the import graph of pipeline/, cache/, stages/ and gsae_pipeline/.

Every ``import`` counts, module-level or inside a function (a lazy import still runs), and
``from a import b`` counts as an import of ``a.b`` when that is a module. The rules (README
"Code map", DESIGN §2):

- no import cycle anywhere;
- the stage folders ``harvest``, ``train``, ``evaluate``, ``inspect`` and ``finetune`` never import each other;
- ``cache/`` imports nothing from ``pipeline/`` or ``stages/``; ``pipeline/`` never imports ``stages/``;
- ``core`` imports no other folder of ``pipeline``; ``lm`` and ``text`` import only ``core``;
- ``train`` never imports the LM loader or the text (``lm``, ``text``);
- ``report`` and ``saes`` import no stage; the top level of ``pipeline/`` holds only the seams;
- the API facade ``gsae_pipeline/`` imports only ``cache`` and ``pipeline``'s ``core``, ``saes``
  and ``lm``, and nothing imports it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "cache", "stages", "gsae_pipeline")
STAGES = ("harvest", "train", "evaluate", "inspect", "finetune")
SEAMS = {"__init__.py", "stores.py", "curves.py"}
"""The only modules at pipeline/'s top level: the store lookup and the curves hand-off."""
MAY_IMPORT = {
    "core": set(),
    "lm": {"core"},
    "text": {"core"},
    "saes": {"core"},
    "report": {"core", "saes", "curves"},
    "harvest": {"core", "lm", "text", "stores"},
    "train": {"core", "saes", "stores", "curves"},
    "evaluate": {"core", "lm", "saes", "report", "stores", "curves"},
    "inspect": {"core", "lm", "saes", "report", "stores"},
    "finetune": {"core", "lm", "saes", "stores"},
    "stores": {"core"},
    "curves": {"core"},
}
"""Folder (or seam) of pipeline/ → the other folders and seams of pipeline/ it may import."""
FACADE = "gsae_pipeline"
FACADE_MAY_IMPORT = {"core", "saes", "lm"}
"""The rooms of pipeline/ the API facade may import (besides cache/): no stage, no CLI."""


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for f in (ROOT / pkg).rglob("*.py"):
            name = ".".join(f.relative_to(ROOT).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = f
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports_of(module: str, path: Path) -> set[str]:
    is_pkg = path.name == "__init__.py"
    package = module if is_pkg else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        for n in names:
            target = _resolve(n)
            # a package's own __init__ (imported on the way to any of its modules) is no edge
            if target and target != module and not module.startswith(target + "."):
                found.add(target)
    return found


GRAPH = {m: _imports_of(m, p) for m, p in MODULES.items()}


def _cycles() -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    for root in GRAPH:
        if root in index:
            continue
        work = [(root, iter(sorted(GRAPH[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(GRAPH[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def _room(module: str) -> str | None:
    """pipeline.train.trainer → ``train``; pipeline.stores → ``stores``; None outside pipeline/."""
    parts = module.split(".")
    if parts[0] != "pipeline" or len(parts) < 2:
        return None
    return parts[1]


def test_no_import_cycles():
    assert _cycles() == []


def test_the_cycle_finder_finds_a_cycle(monkeypatch):
    monkeypatch.setitem(
        GRAPH, "pipeline.core.config", GRAPH["pipeline.core.config"] | {"pipeline.core.loader"}
    )
    assert ["pipeline.core.config", "pipeline.core.loader"] in _cycles()


def test_function_level_imports_count():
    """stages/cli.py imports the stages inside its commands: those edges are in the graph."""
    assert {"pipeline.train.run", "pipeline.evaluate.run", "pipeline.harvest.run"} <= GRAPH["stages.cli"]


@pytest.mark.parametrize("room", sorted(MAY_IMPORT))
def test_each_room_imports_only_what_it_may(room):
    bad = sorted(
        f"{m} -> {t}"
        for m, targets in GRAPH.items()
        if _room(m) == room
        for t in targets
        if t.startswith("stages") or (_room(t) not in (None, room) and _room(t) not in MAY_IMPORT[room])
    )
    assert bad == []


def test_stage_folders_never_import_each_other():
    for a in STAGES:
        assert not {b for b in STAGES if b != a} & MAY_IMPORT[a]
    assert not {"lm", "text", "harvest", "evaluate"} & MAY_IMPORT["train"]


def test_cache_imports_nothing_from_the_library():
    bad = sorted(
        f"{m} -> {t}"
        for m, ts in GRAPH.items()
        if m.startswith("cache")
        for t in ts
        if not t.startswith("cache")
    )
    assert bad == []


def test_the_facade_imports_only_cache_and_the_shared_floors():
    edges = {(m, t) for m, ts in GRAPH.items() if m.split(".")[0] == FACADE for t in ts}
    assert {t.split(".")[0] for _, t in edges} <= {FACADE, "cache", "pipeline"}
    assert {_room(t) for _, t in edges} - {None} <= FACADE_MAY_IMPORT
    assert ("gsae_pipeline.saes", "pipeline.saes.io") in edges  # the graph sees the facade's imports


def test_nothing_imports_the_facade():
    bad = sorted(
        f"{m} -> {t}"
        for m, ts in GRAPH.items()
        if m.split(".")[0] != FACADE
        for t in ts
        if t.split(".")[0] == FACADE
    )
    assert bad == []


def test_pipeline_top_level_holds_the_stage_folders_and_the_seams():
    pipeline = ROOT / "pipeline"
    assert {p.name for p in pipeline.glob("*.py")} == SEAMS
    folders = {p.name for p in pipeline.iterdir() if (p / "__init__.py").is_file()}
    assert folders == set(MAY_IMPORT) - {"stores", "curves"}
    for folder in folders:  # each folder says what it holds and its rule
        doc = ast.get_docstring(ast.parse((pipeline / folder / "__init__.py").read_text()))
        assert doc and "Rule" in doc, folder


def test_every_room_is_known():
    rooms = {_room(m) for m in MODULES} - {None}
    assert rooms == set(MAY_IMPORT)
