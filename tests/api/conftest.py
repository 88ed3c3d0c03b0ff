"""A tiny real project for the API tests and the notebook: harvest → train → held-out harvest → inspect
(tests/conftest.py's ``inspected_project``, shared with tests/inspect).

Everything is the project's own code on the tiny Llama of tests/conftest.py (block 1, d = 32):
a TopK and a g-SAE (β = 1, augmented values) at k = 4, 64 latents, described on 256 held-out tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import TinyProject

HOOK = "model.layers.1"
TOPK = "topk-k4-x2-s0"
GSAE = "gsae-k4-b1-x2-aug-s0"


@dataclass(frozen=True)
class Project:
    """Paths of the tiny project."""

    model: Path
    train_store: str
    heldout_store: str
    saes: Path
    latents: Path

    def sae(self, name: str) -> Path:
        return self.saes / name


@pytest.fixture(scope="session")
def project(tiny_llama: Path, inspected_project: TinyProject) -> Project:
    root = inspected_project.root
    return Project(
        tiny_llama,
        inspected_project.train_store,
        inspected_project.heldout_store,
        root / "saes",
        root / "latents",
    )
