"""A hub model or dataset without the hub fails in seconds with one line (no network here)."""

from __future__ import annotations

import socket
import time

import pytest

from pipeline.core import hub
from tests.clirun import run_cli

MODEL = "nonexistent-org/not-a-model-gsae"


@pytest.fixture(autouse=True)
def fresh_probe(monkeypatch):
    for name in (
        "HF_HUB_OFFLINE",
        "TRANSFORMERS_OFFLINE",
        "HF_DATASETS_OFFLINE",
        "HTTPS_PROXY",
        "https_proxy",
    ):
        monkeypatch.delenv(name, raising=False)
    hub._reachable.cache_clear()
    yield
    hub._reachable.cache_clear()


def _harvest(tmp_path, capsys, *sets: str) -> tuple[int, str, float]:
    params = tmp_path / "params.yaml"
    params.write_text("{}\n")
    t0 = time.perf_counter()
    code, _, err = run_cli(
        [
            "harvest",
            "-p",
            str(params),
            "-s",
            f"harvest.store={tmp_path / 's.zarr'}",
            "-s",
            f"harvest.cache_root={tmp_path / 'cache'}",
            *(arg for item in sets for arg in ("-s", item)),
        ],
        capsys,
    )
    return code, err, time.perf_counter() - t0


def test_hub_model_with_hf_hub_offline(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, err, seconds = _harvest(tmp_path, capsys, f"model.name={MODEL}")
    assert code == 1 and seconds < 10
    assert err.strip().count("\n") == 0 and "HF_HUB_OFFLINE is set" in err and MODEL in err


def test_hub_model_with_unreachable_endpoint(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: refused at once
    code, err, seconds = _harvest(tmp_path, capsys, f"model.name={MODEL}")
    assert code == 1 and seconds < 10
    assert err.strip().count("\n") == 0 and "unreachable" in err


def test_hub_dataset_offline(tiny_llama, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, err, seconds = _harvest(
        tmp_path,
        capsys,
        f"model.name={tiny_llama}",
        "model.device=cpu",
        "data.source=someone/some-dataset",
        "data.context_length=32",
        "harvest.layers=[1]",
        "harvest.tokens=256",
        "harvest.tokens_per_shard=256",
        "harvest.chunk_tokens=128",
    )
    assert code == 1 and seconds < 30
    lines = [line for line in err.splitlines() if line.startswith("gsae:")]  # (model loading drew a bar)
    assert len(lines) == 1 and "someone/some-dataset" in lines[0] and "HF_HUB_OFFLINE" in lines[0]


def test_probe_times_out_on_a_silent_server(monkeypatch):
    """A server that accepts the connection but never answers costs PROBE_TIMEOUT_S, once."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(4)  # the kernel completes the handshake; nobody ever reads or answers
        monkeypatch.setattr(hub, "PROBE_TIMEOUT_S", 0.5)
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
        t0 = time.perf_counter()
        why = hub.hub_access()
        assert why is not None and "unreachable" in why and time.perf_counter() - t0 < 2
        t1 = time.perf_counter()
        assert hub.hub_access() == why and time.perf_counter() - t1 < 0.1  # asked once per process
