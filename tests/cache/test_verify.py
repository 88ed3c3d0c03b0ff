"""``gsae cache verify`` / ``info`` on good, corrupted and truncated stores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cache.verify import verify
from tests._stores import build_store
from tests.clirun import run_cli


@pytest.fixture()
def store(tmp_path) -> Path:
    """A synthetic store of the harvest's layout: two hooks, four shards (verify needs no LM)."""
    url = tmp_path / "s.zarr"
    build_store(str(url), n_tokens=1024, tokens_per_shard=256, hooks=("model.layers.1", "model.layers.3"))
    return url


def _shard_file(store: Path) -> Path:
    return store / "model.layers.1" / "grad" / "c" / "2" / "0"


def test_verify_ok_and_info(store, capsys):
    code, out, _ = run_cli(["cache", "verify", str(store)], capsys)
    assert code == 0 and "4 committed shards verified" in out
    code, out, _ = run_cli(["cache", "info", str(store)], capsys)
    info = json.loads(out)
    assert code == 0 and info["complete"] and info["n_tokens"] == 1024 and info["bytes"] > 0
    assert info["hooks"] == ["model.layers.1", "model.layers.3"]


def test_verify_catches_flipped_bytes(store, capsys):
    f = _shard_file(store)
    data = bytearray(f.read_bytes())
    data[len(data) // 3] ^= 0xFF
    f.write_bytes(bytes(data))
    assert not verify(str(store)).ok
    code, _, err = run_cli(["cache", "verify", str(store)], capsys)
    assert code != 0 and "shard 2" in err


def test_verify_catches_truncated_shard(store, capsys):
    f = _shard_file(store)
    f.write_bytes(f.read_bytes()[:100])
    report = verify(str(store))
    assert not report.ok and any("shard 2" in b for b in report.bad)
    code, _, err = run_cli(["cache", "verify", str(store)], capsys)
    assert code != 0 and err.strip().splitlines()[-1].startswith("gsae: error:")


def test_verify_missing_store(tmp_path, capsys):
    code, _, err = run_cli(["cache", "verify", str(tmp_path / "nope.zarr")], capsys)
    assert code == 1 and "no cache store" in err
