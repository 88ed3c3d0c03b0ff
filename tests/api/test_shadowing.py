"""``import gsae_pipeline`` works from a folder holding a ``pipeline.py`` and a ``cache/`` package.

Real interpreters in a temporary "notebook folder": ``python -c`` puts that folder first on
``sys.path`` (as Jupyter does with a notebook's folder); the project is reached through
``PYTHONPATH`` after it, as an installed copy would be.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def notebook_folder(tmp_path: Path) -> Path:
    (tmp_path / "pipeline.py").write_text("WHO = 'the notebook author'\n")
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "__init__.py").write_text("WHO = 'the notebook author'\n")
    return tmp_path


def python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_the_shadow_breaks_a_plain_import(notebook_folder: Path) -> None:
    """Without the facade the notebook's files win (what the facade is for)."""
    run = python("import sys; print(sys.path[0] in ('', '.')); import pipeline.saes.io", notebook_folder)
    assert run.stdout.splitlines()[0] == "True"
    assert run.returncode != 0 and "'pipeline' is not a package" in run.stderr


def test_the_facade_loads_its_own_packages_first(notebook_folder: Path) -> None:
    code = (
        "import gsae_pipeline as gp, pipeline.saes.io, cache.reader, pipeline, cache\n"
        "print(pipeline.__file__); print(cache.__file__)\n"
        "print(gp.load_sae is not None and cache.reader.BatchReader.__name__)\n"
    )
    run = python(code, notebook_folder)
    assert run.returncode == 0, run.stderr
    pipeline_file, cache_file, reader = run.stdout.splitlines()
    assert Path(pipeline_file) == ROOT / "pipeline" / "__init__.py"
    assert Path(cache_file) == ROOT / "cache" / "__init__.py"
    assert reader == "BatchReader"


@pytest.mark.parametrize(("name", "shadow"), [("pipeline", "pipeline.py"), ("cache", "cache")])
def test_a_foreign_module_imported_first_is_named(notebook_folder: Path, name: str, shadow: str) -> None:
    run = python(f"import {name}\nimport gsae_pipeline", notebook_folder)
    assert run.returncode != 0
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("gsae_pipeline._bootstrap.ShadowedPackageError:")
    assert str(notebook_folder / shadow) in last and str(ROOT / name) in last


def test_importing_twice_and_after_our_own_packages_is_fine() -> None:
    """In this process ``pipeline`` and ``cache`` are already ours (pytest imported them)."""
    import cache
    import gsae_pipeline
    import pipeline

    gsae_pipeline._bootstrap.load_project_packages()
    assert Path(pipeline.__file__ or "").parent == ROOT / "pipeline"
    assert Path(cache.__file__ or "").parent == ROOT / "cache"
