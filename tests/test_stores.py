"""Which store train and evaluate read (pipeline.stores): the harvest's pointer and recorded key,
the settings check, a missing pointer, explicit stores; hub revisions keyed by their commit."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cache.store import read_info
from pipeline.core import hub
from pipeline.core.config import Params
from pipeline.core.errors import CacheMismatch, CacheNotFound
from pipeline.core.loader import params_from_dict
from pipeline.harvest.identity import store_key
from pipeline.harvest.run import run_harvest
from pipeline.stores import STORE_REF, evaluate_store, stage_dir, train_store
from pipeline.text import corpora
from tests.conftest import tiny_overrides


@pytest.fixture()
def corpus(tmp_path) -> Path:
    """A local folder of documents (its fingerprint hashes every file)."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    for i, doc in enumerate(corpora.python_docs()[:60]):
        (folder / f"{i:03d}.txt").write_text(doc)
    return folder


def _params(tiny_llama: Path, tmp_path: Path, corpus: Path, *extra: str) -> Params:
    overrides = [
        *tiny_overrides(tiny_llama, "auto", tokens=512),
        f"harvest.cache_root={tmp_path / 'cache'}",
        f"data.source={corpus}",
        *extra,
    ]
    return params_from_dict({}, overrides)


def test_train_reads_the_recorded_key_without_rehashing_the_corpus(tiny_llama, tmp_path, corpus):
    params = _params(tiny_llama, tmp_path, corpus)
    url = run_harvest(params)
    pointer = json.loads((stage_dir(params) / STORE_REF).read_text())
    assert pointer == {"store": url, "key": read_info(url).key, "split": "train"}
    # a new file changes the corpus fingerprint (and so the key the params would hash to now),
    # but train reads the store the harvest recorded, checked against the recorded key
    (corpus / "zzz.txt").write_text("a document added after the harvest")
    assert store_key(params) != pointer["key"]
    ref = train_store(params)
    assert (ref.url, ref.key) == (url, pointer["key"])


def test_stale_store_is_refused_with_the_setting_named(tiny_llama, tmp_path, corpus):
    params = _params(tiny_llama, tmp_path, corpus)
    run_harvest(params)
    changed = _params(tiny_llama, tmp_path, corpus, "harvest.tokens=256")
    with pytest.raises(CacheMismatch, match=r"harvest\.tokens: 512 stored, 256 in the params"):
        train_store(changed)


def test_without_a_pointer_train_asks_for_the_harvest_which_only_records_it(tiny_llama, tmp_path, corpus):
    params = _params(tiny_llama, tmp_path, corpus)
    url = run_harvest(params)
    (stage_dir(params) / STORE_REF).unlink()  # a store harvested before every store had a pointer
    with pytest.raises(CacheNotFound, match="run gsae harvest"):
        train_store(params)
    before = read_info(url)
    assert run_harvest(params) == url  # complete: nothing recomputed, only the pointer written
    assert read_info(url) == before
    ref = train_store(params)
    assert ref.url == url and ref.key == store_key(params)


def test_explicit_stores(tiny_llama, tmp_path, corpus):
    params = _params(tiny_llama, tmp_path, corpus)
    url = run_harvest(params)
    other = _params(tiny_llama, tmp_path, corpus, f"train.store={url}", "model.name=someone/else")
    with pytest.raises(CacheMismatch, match="holds model"):
        train_store(other)
    assert train_store(other, allow_other=True).key is None
    # evaluation refuses train-split text unless asked
    held = _params(tiny_llama, tmp_path, corpus, f"evaluate.store={url}")
    with pytest.raises(CacheMismatch, match="'train'-split text"):
        evaluate_store(held)
    assert evaluate_store(held, allow_train_split=True).url == url


def _hub_cache(root: Path, repo: str, commit: str, files: Path | None = None) -> None:
    """The local hub cache layout huggingface_hub writes: refs/main → snapshots/<commit>/."""
    folder = root / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text(commit)
    snapshot = folder / "snapshots" / commit
    if files is not None:
        shutil.copytree(files, snapshot)
    else:
        snapshot.mkdir(parents=True)


def test_resolve_commit_offline_reads_the_local_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.resolve_commit.cache_clear()
    commit = "1" * 40
    _hub_cache(tmp_path, "org/tiny", commit)
    assert hub.resolve_commit("org/tiny", None, cache_dir=str(tmp_path)) == commit
    assert hub.resolve_commit("org/tiny", "main", cache_dir=str(tmp_path)) == commit
    assert hub.resolve_commit("org/tiny", "2" * 40, cache_dir=str(tmp_path)) == "2" * 40  # a commit already
    assert hub.resolve_commit("org/other", None, cache_dir=str(tmp_path)) is None
    hub.resolve_commit.cache_clear()


def _harvest_hub_model(tmp_path: Path, hub_root: Path, tiny_llama: Path) -> str:
    """``gsae harvest`` of hub id org/tiny from the local hub cache, offline, in a fresh process."""
    env = {**os.environ, "HF_HUB_CACHE": str(hub_root), "HF_HUB_OFFLINE": "1"}
    params = tmp_path / "params.yaml"
    params.write_text("{}\n")
    sets = [
        *tiny_overrides(tiny_llama, "auto", tokens=256, layers="[1]"),
        "model.name=org/tiny",
        f"harvest.cache_root={tmp_path / 'cache'}",
    ]
    cmd = [
        sys.executable,
        "-m",
        "stages.cli",
        "harvest",
        "-p",
        str(params),
        *(a for s in sets for a in ("-s", s)),
    ]
    done = subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=300, cwd=Path(__file__).parents[1]
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def test_hub_model_is_keyed_by_the_commit_main_resolves_to(tiny_llama, tmp_path):
    hub_root = tmp_path / "hub"
    first, second = "a" * 40, "b" * 40
    _hub_cache(hub_root, "org/tiny", first, tiny_llama)
    url = _harvest_hub_model(tmp_path, hub_root, tiny_llama)
    assert read_info(url).model_revision == first
    # the same name now points at another commit: another store, recorded under that commit
    _hub_cache(hub_root, "org/tiny", second, tiny_llama)
    again = _harvest_hub_model(tmp_path, hub_root, tiny_llama)
    assert again != url and read_info(again).model_revision == second
