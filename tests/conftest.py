"""Shared fixtures: tiny saved LMs and small params for harvest tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import pytest

from tests.lm_factory import save_tiny_lm

_REPO_CACHE = Path(__file__).resolve().parents[1] / "data" / "cache"


def _repo_pointers() -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(_REPO_CACHE.glob("*/store.json"))}


@pytest.fixture(scope="session", autouse=True)
def _repo_store_pointers_untouched():
    """No test may write the DVC pointers of the repository's own stores (a harvest with a custom
    ``harvest.store`` still writes ``<harvest.cache_root>/<split>/store.json``): one did, and
    ``dvc commit`` then recorded a pointer into a pytest temp folder."""
    before = _repo_pointers()
    yield
    assert _repo_pointers() == before, (
        "a test wrote data/cache/*/store.json: give its harvest a harvest.cache_root under tmp_path"
    )


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-block Llama-style model (d=32) saved to disk with its tokenizer."""
    return save_tiny_lm(tmp_path_factory.mktemp("llama"), "llama")


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-block GPT-2-style model (d=32) saved to disk with its tokenizer."""
    return save_tiny_lm(tmp_path_factory.mktemp("gpt2"), "gpt2")


def tiny_overrides(model_dir: Path, store: str, *, tokens: int = 1024, layers: str = "[1,3]") -> list[str]:
    """``-s`` overrides for a fast harvest of python-docs through a tiny model.

    ``harvest.cache_root`` points into the test's temporary folders, so nothing a harvest
    writes beside a custom store (the DVC pointer ``store.json``) lands in the repository.
    """
    local = "://" not in store and store != "auto"
    root = (Path(store).parent if local else model_dir.parent) / "cache_root"
    return [
        f"harvest.cache_root={root}",
        f"model.name={model_dir}",
        "model.device=cpu",
        "data.context_length=32",
        f"harvest.layers={layers}",
        f"harvest.tokens={tokens}",
        f"harvest.store={store}",
        "harvest.tokens_per_shard=256",
        "harvest.chunk_tokens=128",
        "harvest.batch_size=4",
    ]


def tiny_project_overrides(model_dir: Path, root: Path, *, ks: str = "[4]") -> list[str]:
    """``-s`` overrides of a tiny real project under ``root``.

    A 512-token harvest of block 1 (``root/train.zarr``), 256 held-out tokens
    (``root/heldout.zarr``), a TopK and a g-SAE (β = 1) per k in ``ks`` at 2× width trained on
    1,024 tokens (``root/saes``), and the inspect stage's outputs under ``root``.
    """
    return [
        *tiny_overrides(model_dir, str(root / "train.zarr"), tokens=512, layers="[1]"),
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
        f"train.grid.k={ks}",
        "train.grid.expansion=[2]",
        "train.grid.beta=[1.0]",
        f"inspect.out_dir={root / 'latents'}",
        f"inspect.report={root / 'latents.md'}",
        f"inspect.metrics={root / 'inspect.json'}",
        "inspect.tokens=256",
        "inspect.top_n=5",
        "inspect.logit_tokens=3",
    ]


class TinyProject(NamedTuple):
    """A tiny project after harvest → train → held-out harvest → inspect (read it, don't write it)."""

    params: Any
    """The :class:`pipeline.core.config.Params` of :func:`tiny_project_overrides`."""
    overrides: list[str]
    root: Path
    train_store: str
    heldout_store: str
    inspect_metrics: dict[str, Any]


@pytest.fixture(scope="session")
def inspected_project(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> TinyProject:
    """:func:`tiny_project_overrides`' project, run once per session by the project's own code."""
    from pipeline.core.loader import params_from_dict
    from pipeline.harvest.run import run_harvest
    from pipeline.inspect.run import run_inspect
    from pipeline.stores import heldout_params
    from pipeline.train.run import run_train

    root = tmp_path_factory.mktemp("tinyproject")
    overrides = tiny_project_overrides(tiny_llama, root)
    params = params_from_dict({}, overrides)
    train_store = run_harvest(params)
    run_train(params, store_url=train_store, expected_key=None)
    heldout = run_harvest(heldout_params(params))
    metrics = run_inspect(params, store_url=heldout)
    return TinyProject(params, overrides, root, train_store, heldout, metrics)


@pytest.fixture()
def one_thread():
    """Run a test with one torch thread (bit-exact comparisons, no oversubscription)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def store_files(url: Path) -> dict[str, bytes]:
    """Every file of a local store, by path inside it (byte-identity checks)."""
    return {str(p.relative_to(url)): p.read_bytes() for p in sorted(url.rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def reference(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted harvest of the tiny Llama with :func:`tiny_overrides`' settings."""
    from pipeline.core.loader import params_from_dict
    from pipeline.harvest.run import run_harvest

    url = tmp_path_factory.mktemp("ref") / "s.zarr"
    run_harvest(params_from_dict({}, tiny_overrides(tiny_llama, str(url))))
    return url
