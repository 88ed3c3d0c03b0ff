"""harvest.scheduler: shards harvested by dask.distributed workers give the in-process store, byte for byte.

One 2-worker LocalCluster per module (the ``cluster`` fixture: the cluster ``local:2``
starts, :func:`scheduler_client`), reached by the harvests as ``tcp://…``. Every comparison is
against an in-process harvest run with one torch thread, the thread count dask gives its
workers (bit-identical float arithmetic).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from cache.store import read_info
from cache.verify import verify
from pipeline.core.loader import params_from_dict
from pipeline.harvest.identity import store_key
from pipeline.harvest.run import run_harvest
from tests.conftest import tiny_overrides

SHARDS = 8


def _store_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _params(model_dir: Path, url: Path, scheduler: str = "none"):
    return params_from_dict(
        {}, [*tiny_overrides(model_dir, str(url), tokens=256 * SHARDS), f"harvest.scheduler={scheduler}"]
    )


@pytest.fixture(scope="module")
def cluster():
    from pipeline.harvest.distributed import scheduler_client

    with scheduler_client("local:2") as client:
        assert len(client.nthreads()) == 2 and set(client.nthreads().values()) == {1}
        yield client.scheduler.address, client


@pytest.fixture(scope="module")
def reference(tiny_llama, tmp_path_factory):
    """The in-process store (one torch thread) every distributed store must equal."""
    import torch

    url = tmp_path_factory.mktemp("ref") / "s.zarr"
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_harvest(_params(tiny_llama, url))
    finally:
        torch.set_num_threads(old)
    return _store_bytes(url)


class Interrupt(Exception):
    pass


def test_two_workers_store_is_byte_identical_and_scheduler_is_not_in_the_key(
    tiny_llama, reference, cluster, tmp_path, monkeypatch
):
    """The driver (this process) reads the LM's tokenizer and config only: ``load_model`` is never
    called here (the workers, other processes, load the weights), ``load_model_spec`` once."""
    import pipeline.harvest.run as run_module
    from pipeline.lm.models import load_model_spec

    def no_weights_in_the_driver(cfg):
        raise AssertionError("the driver of a distributed harvest loaded the LM's weights")

    specs = []

    def spec_spy(cfg):
        specs.append(load_model_spec(cfg))
        return specs[-1]

    monkeypatch.setattr(run_module, "load_model", no_weights_in_the_driver)
    monkeypatch.setattr(run_module, "load_model_spec", spec_spy)
    url = tmp_path / "s.zarr"
    params = _params(tiny_llama, url, cluster[0])
    assert store_key(params) == store_key(_params(tiny_llama, url))
    seen: list[int] = []
    run_harvest(params, on_commit=seen.append)
    assert len(specs) == 1 and specs[0].hook_name(1) == "model.layers.1"
    assert seen == list(range(SHARDS))  # committed strictly in order
    assert read_info(str(url)).complete
    assert _store_bytes(url) == reference
    assert not (tmp_path / "s.zarr.stream.json").exists() and not (tmp_path / "s.zarr.lock").exists()


def test_killed_worker_is_survived_with_identical_store(tiny_llama, reference, cluster, tmp_path):
    address, client = cluster
    url = tmp_path / "s.zarr"
    killed: list[int] = []

    def kill_one_worker(index: int) -> None:
        # the window holds the next shards' tasks: at the first commit where a worker is running
        # one, kill it (on a loaded machine the workers can drain the window before commit 0)
        busy = [addr for addr, tasks in client.processing().items() if tasks]
        if not killed and busy and index < SHARDS - 1:
            pid = client.run(os.getpid)[busy[0]]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    run_harvest(_params(tiny_llama, url, address), on_commit=kill_one_worker)
    assert killed, "no worker was running a shard task at any commit"
    assert read_info(str(url)).complete
    assert _store_bytes(url) == reference  # no temp file of the killed writer left either
    assert not verify(str(url)).bad  # every committed shard's digests check out
    client.wait_for_workers(2, timeout=60)  # the nanny restarted it for the next test


@pytest.mark.parametrize(("first", "second"), [("distributed", "none"), ("none", "distributed")])
def test_interrupted_harvest_resumes_with_either_scheduler(
    tiny_llama, reference, cluster, tmp_path, first, second, one_thread
):
    address, _ = cluster
    url = tmp_path / "s.zarr"
    scheduler = {"distributed": address, "none": "none"}

    def stop_after_three(index: int) -> None:
        if index == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        run_harvest(_params(tiny_llama, url, scheduler[first]), on_commit=stop_after_three)
    info = read_info(str(url))
    assert not info.complete and info.committed_shards == 3
    assert (tmp_path / "s.zarr.stream.json").exists()  # where shard 3 starts in the text
    seen: list[int] = []
    run_harvest(_params(tiny_llama, url, scheduler[second]), on_commit=seen.append)
    assert seen == list(range(3, SHARDS))
    assert _store_bytes(url) == reference


def test_unreachable_scheduler_is_one_clear_error(tiny_llama, tmp_path):
    import dask

    from pipeline.core.errors import SchedulerError

    with (
        dask.config.set({"distributed.comm.timeouts.connect": "2s"}),
        pytest.raises(SchedulerError, match="cannot reach the dask scheduler"),
    ):
        run_harvest(_params(tiny_llama, tmp_path / "s.zarr", "tcp://127.0.0.1:9"))


def test_bad_scheduler_value_is_rejected():
    from pipeline.core.errors import ConfigError

    for bad in ("local:0", "local:x", "slurm", "local"):
        with pytest.raises(ConfigError, match="harvest.scheduler"):
            params_from_dict({}, [f"harvest.scheduler={bad}"])
