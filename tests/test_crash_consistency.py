"""Crash consistency, the store lock, pickle-free checkpoints and output permissions (issue 10)."""

from __future__ import annotations

import json
import os
import pickle
import socket
import stat
from pathlib import Path

import numpy as np
import pytest

import cache.writer as writer_mod
from cache.lock import StoreLock
from cache.store import read_attrs, read_info
from cache.verify import verify
from cache.writer import ShardWriter, allocate
from pipeline.core.checkpoint import load_checkpoint
from pipeline.core.errors import CacheLocked, NonFiniteError, OutputError
from pipeline.core.fileio import atomic_write_text, check_writable
from pipeline.core.loader import params_from_dict
from pipeline.harvest.run import run_harvest
from tests._stores import build_store
from tests.clirun import run_cli
from tests.conftest import store_files, tiny_overrides


class _Killed(Exception):
    """Stands for SIGKILL in-process: raised at a fault point, nothing after it runs."""


def _raise_at(monkeypatch, phase: str) -> None:
    def point(name: str) -> None:
        if name == phase:
            raise _Killed(name)

    monkeypatch.setattr(writer_mod, "fault_point", point)


def test_interrupted_allocation_is_redone(tiny_llama, tmp_path, monkeypatch, reference, capsys):
    url = tmp_path / "s.zarr"
    params = params_from_dict({}, tiny_overrides(tiny_llama, str(url)))
    _raise_at(monkeypatch, "allocation")
    with pytest.raises(_Killed):
        run_harvest(params)
    assert read_attrs(str(url)).get("gsae_allocating") is True
    code, _, err = run_cli(["cache", "verify", str(url)], capsys)
    assert code == 1 and "allocation was interrupted" in err
    monkeypatch.undo()
    run_harvest(params)
    assert store_files(url) == store_files(reference)


def test_legacy_half_allocated_store_is_redone(tiny_llama, tmp_path, reference):
    url = tmp_path / "s.zarr"
    import zarr

    group = zarr.open_group(str(url), mode="w", zarr_format=3)  # what a kill left before the marker existed
    group.create_array("tokens", shape=(1024,), dtype="int32")
    run_harvest(params_from_dict({}, tiny_overrides(tiny_llama, str(url))))
    assert store_files(url) == store_files(reference)


@pytest.mark.parametrize("phase", ["shard_write", "commit", "commit_record", "finalize"])
def test_kill_at_phase_then_resume_is_byte_identical(tiny_llama, tmp_path, monkeypatch, reference, phase):
    url = tmp_path / "s.zarr"
    params = params_from_dict({}, tiny_overrides(tiny_llama, str(url)))
    _raise_at(monkeypatch, phase)
    with pytest.raises(_Killed):
        run_harvest(params)
    assert not read_info(str(url)).complete
    if phase == "commit_record":  # killed between shard 0's commit object and n_tokens: not committed
        assert (url / "commits" / "0" / "zarr.json").exists() and read_info(str(url)).committed_tokens == 0
    debris = url / "model.layers.1" / "act" / "c" / "0.4f2a.partial"  # what a killed zarr write leaves
    debris.parent.mkdir(parents=True, exist_ok=True)
    debris.write_bytes(b"")
    (url / "zarr.9c1e.partial").write_bytes(b"{")
    monkeypatch.undo()
    run_harvest(params)
    assert store_files(url) == store_files(reference)
    assert verify(str(url)).ok


def test_second_writer_is_refused_naming_the_holder(tiny_llama, tmp_path, capsys):
    url = tmp_path / "s.zarr"
    holder = {
        "user": "alice",
        "host": socket.gethostname(),
        "pid": 1,
        "command": "gsae harvest",
        "started": 0.0,
        "heartbeat": 0.0,
    }
    Path(f"{url}.lock").write_text(json.dumps(holder))
    over = sum((["-s", o] for o in tiny_overrides(tiny_llama, str(url))), [])
    params = tmp_path / "p.yaml"
    params.write_text("{}")
    code, _, err = run_cli(["harvest", "-p", str(params), *over], capsys)
    assert code == 1 and "is locked by alice@" in err and "pid 1" in err and "--break-lock" in err
    assert not url.exists()
    code, _, err = run_cli(["harvest", "-p", str(params), *over, "--break-lock"], capsys)
    assert code == 0, err
    assert read_info(str(url)).complete and not Path(f"{url}.lock").exists()


def test_lock_of_a_dead_process_is_taken_over(tmp_path):
    url = str(tmp_path / "s.zarr")
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    Path(f"{url}.lock").write_text(json.dumps({"host": socket.gethostname(), "pid": pid, "started": 1.0}))
    with StoreLock(url) as lock:
        assert lock.held()
    assert not Path(f"{url}.lock").exists()


def test_lock_heartbeat_and_release(tmp_path):
    url = str(tmp_path / "s.zarr")
    with StoreLock(url, heartbeat_s=0.05) as lock:
        first = lock.holder()["heartbeat"]
        import time

        time.sleep(0.3)
        assert lock.holder()["heartbeat"] > first
        with pytest.raises(CacheLocked, match="locked by"), StoreLock(url):
            pass
    assert not Path(f"{url}.lock").exists()


def test_nonfinite_values_are_not_committed(tmp_path):
    url = str(tmp_path / "s.zarr")
    build_store(url, n_tokens=512, shards=1, dtype="float16")
    w = ShardWriter(url)
    acts = {"model.layers.1": np.full((128, 16), 1e6, np.float32)}  # beyond float16: inf
    grads = {"model.layers.1": np.zeros((128, 16), np.float32)}
    with pytest.raises(
        NonFiniteError, match=r"model.layers.1/act: 128 token\(s\).*rows \[128, 256\).*float32"
    ):
        w.write(1, np.zeros(128, np.int32), acts, grads)
    info = read_info(url)
    assert info.committed_tokens == 128 and not info.complete


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {_Evil.marker}",))


def test_checkpoint_is_loaded_without_pickle(tmp_path):
    folder = tmp_path / ".checkpoints"
    folder.mkdir()
    _Evil.marker = tmp_path / "pwned"
    fingerprint = {"train": {"seed": 0}}
    (folder / "state-4.pt").write_bytes(pickle.dumps({"trainer": _Evil()}))
    (folder / "state.json").write_text(
        json.dumps({"fingerprint": fingerprint, "file": "state-4.pt", "step": 4})
    )
    assert load_checkpoint(folder, fingerprint) is None
    assert (
        load_checkpoint(folder, {"train": {"seed": 1}}) is None
    )  # fingerprint first: the file is not opened
    (folder / "state.json").unlink()
    (folder / "state.pt").write_bytes(pickle.dumps(_Evil()))  # pre-format checkpoint: never unpickled
    assert load_checkpoint(folder, fingerprint) is None
    assert not _Evil.marker.exists()


def test_atomic_write_honours_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "a.json", "{}")
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        os.umask(0o077)
        assert stat.S_IMODE(atomic_write_text(tmp_path / "b.json", "{}").stat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_allocate_then_finalize_validates(tmp_path):
    url = str(tmp_path / "s.zarr")
    allocate(
        url,
        {
            "key": "k",
            "model": "m",
            "model_revision": "r",
            "tokenizer": "t",
            "dataset": {},
            "context_length": 16,
        },
        hooks=["h.1"],
        d_model=4,
        total_tokens=32,
        tokens_per_shard=32,
        chunk_tokens=16,
        dtype="float32",
    )
    w = ShardWriter(url)
    w.write(0, np.arange(32), {"h.1": np.ones((32, 4))}, {"h.1": np.ones((32, 4))})
    import shutil

    shutil.rmtree(tmp_path / "s.zarr" / "h.1" / "grad")  # what a concurrent overwrite did
    with pytest.raises(Exception, match="array h.1/grad: array is missing"):
        w.finalize()
    assert not read_info(url).complete


def test_sigint_prints_the_resume_hint(monkeypatch, tmp_path, capsys):
    import pipeline.harvest.run

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline.harvest.run, "run_harvest", interrupted)
    params = tmp_path / "p.yaml"
    params.write_text("{}")
    code, _, err = run_cli(["harvest", "-p", str(params)], capsys)
    assert code == 130 and "rerun the same command to resume" in err


def test_unwritable_output_is_an_oserror(tmp_path):
    """A folder that cannot be created (a file in the way) raises OutputError, caught as OSError too."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OSError) as caught:
        check_writable(blocker / "sub", "train.out_dir")
    assert isinstance(caught.value, OutputError) and "train.out_dir" in str(caught.value)


def test_lock_removes_the_folders_it_created_when_they_stay_empty(tmp_path):
    url = tmp_path / "a" / "b" / "s.zarr"
    with StoreLock(str(url)):
        assert url.parent.is_dir()
    assert not (tmp_path / "a").exists()  # nothing was written: no empty folders left
    with StoreLock(str(url)):
        url.mkdir()  # the store was written meanwhile
    assert url.is_dir() and not Path(f"{url}.lock").exists()
