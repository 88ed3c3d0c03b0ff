"""``gsae harvest --repair`` / ``gsae cache repair`` re-harvest only the damaged shards (issue 10)."""

from __future__ import annotations

import json
import logging
import shutil

import pytest

from cache.lock import StoreLock
from cache.verify import verify
from pipeline.core.errors import CacheLocked
from pipeline.core.fileio import dumps_json
from pipeline.core.loader import params_from_dict
from pipeline.harvest.run import run_harvest
from tests._stores import downgrade_to_v1
from tests.clirun import run_cli
from tests.conftest import store_files, tiny_overrides


@pytest.mark.parametrize("command", [["harvest", "--repair"], ["cache", "repair"]])
def test_repair_rewrites_only_the_damaged_shards(tiny_llama, reference, tmp_path, capsys, caplog, command):
    url = tmp_path / "s.zarr"
    shutil.copytree(reference, url)
    act = url / "model.layers.3" / "act" / "c" / "2" / "0"
    blob = bytearray(act.read_bytes())
    blob[40] ^= 0x10
    act.write_bytes(bytes(blob))
    (url / "tokens" / "c" / "0").unlink()
    assert verify(str(url)).bad_shards == (0, 2)
    params = tmp_path / "p.yaml"
    params.write_text("{}")
    args = sum((["-s", o] for o in tiny_overrides(tiny_llama, str(url))), [])
    with caplog.at_level(logging.INFO, logger="pipeline.harvest.run"):
        code, _, err = run_cli([*command, "-p", str(params), *args], capsys)
    assert code == 0, err
    repaired = [r.getMessage() for r in caplog.records if r.getMessage().startswith("repaired shard")]
    assert [m.split()[2] for m in repaired] == ["0", "2"]
    assert store_files(url) == store_files(reference)


def test_repair_of_a_v1_store_upgrades_it(tiny_llama, reference, tmp_path):
    url = tmp_path / "s.zarr"
    shutil.copytree(reference, url)
    downgrade_to_v1(str(url))
    (url / "model.layers.1" / "grad" / "c" / "1" / "0").unlink()
    assert verify(str(url)).bad_shards == (1,)
    run_harvest(params_from_dict({}, tiny_overrides(tiny_llama, str(url))), repair=True)
    assert store_files(url) == store_files(reference)


def test_repair_of_a_sound_store_changes_nothing(tiny_llama, reference, tmp_path, caplog):
    url = tmp_path / "s.zarr"
    shutil.copytree(reference, url)
    with caplog.at_level(logging.INFO, logger="pipeline.harvest.run"):
        run_harvest(params_from_dict({}, tiny_overrides(tiny_llama, str(url))), repair=True)
    assert "nothing to repair" in caplog.text and store_files(url) == store_files(reference)


def test_repair_refuses_damaged_attributes(tiny_llama, reference, tmp_path, capsys):
    url = tmp_path / "s.zarr"
    shutil.copytree(reference, url)
    meta = json.loads((url / "zarr.json").read_text())
    meta["attributes"]["n_tokens"] = 256
    (url / "zarr.json").write_text(json.dumps(meta))
    params = tmp_path / "p.yaml"
    params.write_text("{}")
    args = sum((["-s", o] for o in tiny_overrides(tiny_llama, str(url))), [])
    code, _, err = run_cli(["harvest", "--repair", "-p", str(params), *args], capsys)
    assert code == 1 and "cannot be repaired shard by shard" in err and "--overwrite" in err


def test_a_writer_whose_lock_was_broken_stops(tmp_path):
    url = str(tmp_path / "s.zarr")
    with (
        StoreLock(url) as mine,
        StoreLock(url, break_lock=True),
        pytest.raises(CacheLocked, match="lock was broken"),
    ):
        mine.check()


def test_metrics_json_never_holds_bare_nan():
    text = dumps_json({"a": {"fvu": float("nan"), "kl": float("inf"), "l0": 3.0}})
    assert json.loads(text) == {"a": {"fvu": None, "kl": None, "l0": 3.0}} and "NaN" not in text
