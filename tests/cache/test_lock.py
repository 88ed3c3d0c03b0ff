"""The store's write lock where it is not a local file: ``memory://`` (atomic within the process)
and a filesystem with no atomic create (refused unless a best-effort lock is asked for).
The S3 lock (a conditional PUT) is tested against a real S3 server in tests/test_s3.py."""

from __future__ import annotations

import sys
import threading

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from cache.errors import CacheLocked, CacheLockUnsupported
from cache.lock import StoreLock
from cache.store import read_info
from tests.clirun import run_cli
from tests.conftest import tiny_overrides


class PlainFileSystem(MemoryFileSystem):
    """A genuine fsspec filesystem the lock knows nothing about (it stands for sftp://, webdav://, ...:
    no conditional create), with a dict of its own."""

    protocol = ("plainfs",)
    store: dict = {}  # noqa: RUF012  (fsspec's own class attribute, as in MemoryFileSystem)
    pseudo_dirs = [""]  # noqa: RUF012


fsspec.register_implementation("plainfs", PlainFileSystem, clobber=True)


def _race(url: str, start: threading.Barrier, won: list[StoreLock], refused: list[str]) -> None:
    lock = StoreLock(url, heartbeat_s=60)
    start.wait()
    try:
        lock.acquire()
        won.append(lock)
    except CacheLocked as exc:
        refused.append(str(exc))


def test_racing_threads_on_memory_exactly_one_takes_the_lock():
    """The GIL is made to switch threads every microsecond: an unguarded check-then-create lets two
    threads win here (tried by hand), the lock around it lets one."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        _race_rounds()
    finally:
        sys.setswitchinterval(old)


def _race_rounds() -> None:
    for attempt in range(20):
        url = f"memory://lock-race/{attempt}.zarr"
        racers, start = 8, threading.Barrier(8)
        won: list[StoreLock] = []
        refused: list[str] = []
        threads = [threading.Thread(target=_race, args=(url, start, won, refused)) for _ in range(racers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(won) == 1 and len(refused) == racers - 1
        assert all("is locked by" in m for m in refused)
        won[0].release()
        assert not MemoryFileSystem().exists(f"/lock-race/{attempt}.zarr.lock")


def test_a_filesystem_without_atomic_create_is_refused_in_one_line():
    url = "plainfs://bucket/s.zarr"
    with pytest.raises(CacheLockUnsupported) as exc, StoreLock(url):
        pass
    msg = str(exc.value)
    assert "\n" not in msg and "(plainfs://) cannot create the write lock atomically" in msg
    assert "--unsafe-lock" in msg and not PlainFileSystem().exists("bucket/s.zarr.lock")


def test_best_effort_lock_when_asked(caplog):
    url = "plainfs://bucket/asked.zarr"
    with StoreLock(url, unsafe=True) as lock:
        assert lock.held() and "best-effort lock" in caplog.text
        with pytest.raises(CacheLocked, match="is locked by"), StoreLock(url, unsafe=True):
            pass
    assert not PlainFileSystem().exists("bucket/asked.zarr.lock")


def test_gsae_harvest_refuses_then_takes_a_best_effort_lock(tiny_gpt2, tmp_path, capsys):
    url = "plainfs://bucket/harvest.zarr"
    params = tmp_path / "p.yaml"
    params.write_text("{}")
    sets = [a for o in tiny_overrides(tiny_gpt2, url, tokens=256) for a in ("-s", o)]
    code, _, err = run_cli(["harvest", "-p", str(params), *sets], capsys)
    lines = [line for line in err.splitlines() if line.startswith("gsae:")]
    assert code == 1 and len(lines) == 1 and "--unsafe-lock" in lines[0], err
    code, _, err = run_cli(["harvest", "-p", str(params), *sets, "--unsafe-lock"], capsys)
    assert code == 0, err
    assert read_info(url).complete and not PlainFileSystem().exists("bucket/harvest.zarr.lock")
