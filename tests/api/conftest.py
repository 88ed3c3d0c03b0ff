"""A tiny real project for the API tests and the notebook: harvest → train → held-out harvest → inspect.

Everything is the project's own code on the tiny Llama of tests/conftest.py (block 1, d = 32):
a TopK and a g-SAE (β = 1, augmented values) at k = 4, 64 latents, described on 256 held-out tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.core.loader import params_from_dict
from pipeline.harvest.run import run_harvest
from pipeline.inspect.run import run_inspect
from pipeline.stores import heldout_params
from pipeline.train.run import run_train
from tests.conftest import tiny_overrides

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
def project(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Project:
    root = tmp_path_factory.mktemp("apiproj")
    overrides = [
        *tiny_overrides(tiny_llama, str(root / "train.zarr"), tokens=512, layers="[1]"),
        f"evaluate.store={root / 'heldout.zarr'}",
        "evaluate.tokens=256",
        f"train.out_dir={root / 'saes'}",
        f"train.metrics_out={root / 'metrics' / 'train.json'}",
        f"train.curves_dir={root / 'metrics' / 'curves'}",
        "train.tokens=1024",
        "train.batch_size=128",
        "train.warmup_steps=1",
        "train.init_sample_tokens=256",
        "train.device=cpu",
        "train.grid.architecture=[topk,gsae]",
        "train.grid.k=[4]",
        "train.grid.expansion=[2]",
        "train.grid.beta=[1.0]",
        f"inspect.out_dir={root / 'latents'}",
        f"inspect.report={root / 'latents.md'}",
        f"inspect.metrics={root / 'inspect.json'}",
        "inspect.tokens=256",
        "inspect.top_n=5",
        "inspect.logit_tokens=3",
    ]
    params = params_from_dict({}, overrides)
    train_store = run_harvest(params)
    run_train(params, store_url=train_store, expected_key=None)
    heldout = run_harvest(heldout_params(params))
    run_inspect(params, store_url=heldout)
    return Project(tiny_llama, train_store, heldout, root / "saes", root / "latents")
