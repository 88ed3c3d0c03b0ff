"""Stores on object storage: harvest to ``s3://`` on a real S3 server (moto) on loopback, and
the store's write lock there (a conditional PUT: of racing writers exactly one wins).

The server is moto's standalone ``ThreadedMotoServer`` bound to 127.0.0.1 on a free port;
the pipeline reaches it through s3fs with nothing but the standard AWS environment
variables (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL_S3``). The
DVC remote on the same server is the dvc-s3 plugin, configured with ``endpointurl`` only.
"""

from __future__ import annotations

import json
import logging
import socket

import pytest

from tests.clirun import run_cli
from tests.conftest import tiny_overrides
from tests.dvc_project import run

SECRET = "s3-test-secret-key-9f1c2b7d"
BUCKET = "gsae-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_server():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=_free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture()
def s3_env(s3_server, monkeypatch, tmp_path):
    """Credentials and endpoint from the environment only; a fresh bucket."""
    import boto3
    import fsspec

    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing-key-id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    fsspec.filesystem("s3").clear_instance_cache()  # s3fs caches clients across tests
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    yield s3_server
    fsspec.filesystem("s3").clear_instance_cache()
    for obj in s3.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        s3.delete_object(Bucket=BUCKET, Key=obj["Key"])
    s3.delete_bucket(Bucket=BUCKET)


def test_harvest_verify_train_from_s3(tiny_llama, s3_env, tmp_path, capsys, caplog):
    import boto3

    url = f"s3://{BUCKET}/stores/train.zarr"
    over = tiny_overrides(tiny_llama, url, tokens=512, layers="[1]")
    sets = [a for o in over for a in ("-s", o)]
    params = tmp_path / "p.yaml"
    params.write_text("{}")
    caplog.set_level(logging.INFO)
    code, out, err = run_cli(["harvest", "-p", str(params), *sets], capsys)
    assert code == 0, err
    logs = out + err + caplog.text
    code, out, err = run_cli(["cache", "verify", url], capsys)
    assert code == 0, err
    logs += out + err
    train = [
        "train.device=cpu",
        f"train.out_dir={tmp_path / 'saes'}",
        "train.tokens=1024",
        "train.batch_size=128",
        "train.init_sample_tokens=128",
        f"train.metrics_out={tmp_path / 'm.json'}",
        f"train.curves_dir={tmp_path / 'curves'}",
        "train.grid.architecture=[topk]",
        "train.grid.k=[4]",
        "train.grid.expansion=[2]",
        "train.grid.seed=[0]",
        "train.log_every=1",
    ]
    code, out, err = run_cli(
        ["train", "-p", str(params), *sets, *[a for o in train for a in ("-s", o)]], capsys
    )
    assert code == 0, err
    logs += out + err + caplog.text
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert len(metrics) == 1 and all(0 <= v["fvu"] < 2 for v in metrics.values())
    # the objects are really on the server, and nothing written or logged holds the secret
    s3 = boto3.client("s3")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="stores/")["Contents"]]
    assert "stores/train.zarr/zarr.json" in keys and any("/act/c/" in k for k in keys)
    assert not any(k.endswith((".lock", ".stream.json")) for k in keys)  # released / removed when complete
    attrs = s3.get_object(Bucket=BUCKET, Key="stores/train.zarr/zarr.json")["Body"].read().decode()
    assert json.loads(attrs)["attributes"]["complete"] is True
    for text in (attrs, logs, *(p.read_text() for p in (tmp_path / "saes").rglob("*.json"))):
        assert SECRET not in text and "testing-key-id" not in text


def test_dvc_remote_on_s3_pushes_and_pulls_the_cache(tiny_llama, s3_env, tmp_path):
    from pipeline.core.loader import params_from_dict
    from pipeline.harvest.run import run_harvest

    repo = tmp_path / "repo"
    repo.mkdir()
    run(["git", "init", "-q"], repo)
    run(["dvc", "init", "-q"], repo)
    store = repo / "data" / "train.zarr"
    run_harvest(params_from_dict({}, tiny_overrides(tiny_llama, str(store), tokens=512, layers="[1]")))
    before = {p.relative_to(store): p.read_bytes() for p in store.rglob("*") if p.is_file()}
    run(["dvc", "add", "-q", "data/train.zarr"], repo)
    run(["dvc", "remote", "add", "-d", "s3remote", f"s3://{BUCKET}/dvc"], repo)
    run(["dvc", "remote", "modify", "s3remote", "endpointurl", s3_env], repo)
    config = (repo / ".dvc" / "config").read_text()
    assert SECRET not in config  # credentials stay in the environment
    run(["dvc", "push", "-q"], repo)
    import boto3

    pushed = boto3.client("s3").list_objects_v2(Bucket=BUCKET, Prefix="dvc/").get("KeyCount", 0)
    # one object per distinct file content (DVC's cache is content-addressed: the empty group
    # metadata of ``commits/`` and of a hook's group are one object), plus the directory listing
    assert pushed >= len(set(before.values())) + 1
    # forget everything local, then pull from the server
    import shutil

    shutil.rmtree(store)
    shutil.rmtree(repo / ".dvc" / "cache")
    out = run(["dvc", "pull"], repo)
    after = {p.relative_to(store): p.read_bytes() for p in store.rglob("*") if p.is_file()}
    assert after == before and len(after) > 3
    assert SECRET not in out


def test_two_dask_workers_write_the_same_objects_as_one_process(tiny_llama, s3_env, one_thread):
    """``local:2`` workers (spawned with the test's environment) harvest to S3: same objects, same bytes."""
    import boto3

    from pipeline.core.loader import params_from_dict
    from pipeline.harvest.run import run_harvest

    def objects(prefix: str) -> dict[str, bytes]:
        s3 = boto3.client("s3")
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])]
        return {k[len(prefix) :]: s3.get_object(Bucket=BUCKET, Key=k)["Body"].read() for k in keys}

    for name, scheduler in (("one", "none"), ("two", "local:2")):
        url = f"s3://{BUCKET}/{name}.zarr"
        over = [
            *tiny_overrides(tiny_llama, url, tokens=256 * 4, layers="[1]"),
            f"harvest.scheduler={scheduler}",
        ]
        run_harvest(params_from_dict({}, over))
    one, two = objects("one.zarr/"), objects("two.zarr/")
    assert len(one) > 4 and one == two


def test_racing_processes_on_s3_exactly_one_takes_the_lock(s3_env):
    """Processes released together by a barrier take ``StoreLock`` on one ``s3://`` store: the
    conditional PUT (``If-None-Match: *``) lets exactly one win, the others are refused naming it."""
    import multiprocessing

    import boto3

    from tests._lock_race import contend

    ctx = multiprocessing.get_context("spawn")
    racers = 3
    for attempt in range(3):
        url = f"s3://{BUCKET}/race-{attempt}.zarr"
        start, tried, results = ctx.Barrier(racers), ctx.Barrier(racers), ctx.Queue()
        procs = [ctx.Process(target=contend, args=(url, start, tried, results)) for _ in range(racers)]
        for p in procs:
            p.start()
        outcomes = [results.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(timeout=60)
        assert [kind for kind, _, _ in outcomes].count("holder") == 1, outcomes
        holder = next(pid for kind, pid, _ in outcomes if kind == "holder")
        for kind, _, message in outcomes:
            assert kind in ("holder", "locked"), message
            if kind == "locked":
                assert "is locked by " in message and f" pid {holder} " in message, message
        keys = boto3.client("s3").list_objects_v2(Bucket=BUCKET, Prefix=f"race-{attempt}").get("Contents", [])
        assert keys == []  # the holder released it


def test_lock_heartbeat_check_and_release_on_s3(s3_env):
    import time

    import boto3

    from cache.lock import StoreLock
    from pipeline.core.errors import CacheLocked

    url = f"s3://{BUCKET}/beat.zarr"
    with StoreLock(url, heartbeat_s=0.05) as lock:
        assert lock.kind == "conditional"
        first = lock.holder()["heartbeat"]
        deadline = time.monotonic() + 10
        while lock.holder()["heartbeat"] == first and time.monotonic() < deadline:
            time.sleep(0.05)
        assert lock.holder()["heartbeat"] > first  # refreshed by overwriting our own object
        lock.check()
        with pytest.raises(CacheLocked, match="locked by"), StoreLock(url):
            pass
    assert boto3.client("s3").list_objects_v2(Bucket=BUCKET, Prefix="beat").get("KeyCount") == 0
