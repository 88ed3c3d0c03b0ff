"""A local model folder is keyed by the content of its files; hashes are memoised."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from pipeline.core.loader import params_from_dict
from pipeline.harvest.identity import store_key
from pipeline.harvest.run import run_harvest
from pipeline.lm import filehash
from pipeline.lm.models import _fingerprint_dir
from tests.conftest import tiny_overrides


@pytest.fixture(autouse=True)
def memo(tmp_path, monkeypatch):
    path = tmp_path / "memo" / "file-hashes.json"
    monkeypatch.setenv("GSAE_HASH_CACHE", str(path))
    return path


def _weights(folder: Path) -> Path:
    return next(folder.glob("*.safetensors"))


def test_same_bytes_at_two_paths_give_the_same_key(tiny_llama, tmp_path):
    copy = Path(shutil.copytree(tiny_llama, tmp_path / "elsewhere" / "model"))
    assert _fingerprint_dir(copy) == _fingerprint_dir(tiny_llama)
    a = params_from_dict({}, tiny_overrides(tiny_llama, "memory://a.zarr"))
    b = params_from_dict({}, tiny_overrides(copy, "memory://a.zarr"))
    assert store_key(a) == store_key(b)


def test_overwritten_weights_change_the_key_and_reharvest(tiny_llama, tmp_path):
    model = Path(shutil.copytree(tiny_llama, tmp_path / "model"))
    params = params_from_dict(
        {}, tiny_overrides(model, str(tmp_path / "store.zarr"), tokens=256, layers="[1]")
    )
    before = store_key(params)
    run_harvest(params)
    weights = _weights(model)
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 0xFF  # same size, different bytes (the last byte of a float tensor)
    weights.write_bytes(bytes(blob))
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 1_000_000))
    after = store_key(params)
    assert after != before
    from pipeline.core.errors import CacheMismatch

    with pytest.raises(CacheMismatch):  # the old store is not silently reused
        run_harvest(params)


def test_hashes_are_memoised_by_path_size_and_mtime(tiny_llama, memo, monkeypatch):
    _fingerprint_dir(tiny_llama)
    entries = json.loads(memo.read_text())
    assert str(_weights(tiny_llama).resolve()) in entries
    calls = []
    real = filehash.sha256_file
    monkeypatch.setattr(filehash, "sha256_file", lambda p: calls.append(p) or real(p))
    _fingerprint_dir(tiny_llama)
    assert calls == []  # nothing rehashed
    os.utime(_weights(tiny_llama))  # touched: rehash that file only
    _fingerprint_dir(tiny_llama)
    assert [p.name for p in calls] == [_weights(tiny_llama).name]
