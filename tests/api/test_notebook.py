"""docs/api.ipynb, executed on the tiny project of tests/api/conftest.py by a real Jupyter kernel.

The kernel is this interpreter (a kernelspec written into a temporary ``JUPYTER_PATH``, so no
other Python on the machine can be picked up) and starts in a folder holding a ``pipeline.py``
and a ``cache.py``, as a user's notebook folder might: the API must not be shadowed by them.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from tests.api.conftest import GSAE, Project

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "docs" / "api.ipynb"
KERNEL = "gsae-notebook-test"


@pytest.fixture()
def kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A kernelspec named :data:`KERNEL` running ``sys.executable``."""
    spec = tmp_path / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": KERNEL, "language": "python"})
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")  # jupyter_core's migration warning otherwise
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return KERNEL


def outputs(nb) -> str:
    """Every stream and text/plain output of the executed notebook, concatenated."""
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", "") or out.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


def test_the_notebook_runs_on_a_tiny_project(
    project: Project, kernel: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GSAE_SAE", str(project.sae(GSAE)))
    monkeypatch.setenv("GSAE_STORE", project.heldout_store)
    monkeypatch.setenv("GSAE_LATENTS", str(project.latents / GSAE))
    folder = tmp_path / "notebooks"
    folder.mkdir()
    (folder / "pipeline.py").write_text("raise ImportError('the notebook folder shadowed the project')\n")
    (folder / "cache.py").write_text("raise ImportError('the notebook folder shadowed the project')\n")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    t0 = time.perf_counter()
    nbclient.NotebookClient(
        nb, kernel_name=kernel, timeout=180, resources={"metadata": {"path": str(folder)}}
    ).execute()
    elapsed = time.perf_counter() - t0
    text = outputs(nb)
    assert "| gradient-aware: True | hook: model.layers.1" in text
    assert "codes (4, 31, 64) | L0 4.0" in text
    assert "selections the gradient changed:" in text and "FVU " in text
    assert "248 tokens in 4 batches" in text  # 8 contexts × 31 positions, batches of 64
    assert "LatentTable('gsae-k4-b1-x2-aug-s0', 64 latents) | read with the gradient: True" in text
    assert text.count("[[") >= 1  # a context with its firing marked, decoded by the tiny tokenizer
    assert elapsed < 120, f"the notebook took {elapsed:.0f} s"
