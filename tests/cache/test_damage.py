"""A damaged store is never trained on: each damage gives one ``CacheCorrupt`` line naming store, array, shard.

Every damage is tried on a store of the current format (``v2``: one commit object per shard)
and, where it applies, on the same store rewritten as format version 1 wrote it (``v1``: the
records in the ``committed`` attribute, :func:`tests._stores.downgrade_to_v1`).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml

from cache.attrs import act_path, grad_path
from cache.reader import BatchReader, open_store, read_rows
from cache.verify import verify
from pipeline.core.errors import CacheCorrupt, CacheIncomplete
from tests._stores import build_store, downgrade_to_v1
from tests.clirun import run_cli

HOOK = "model.layers.1"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    return Path(
        build_store(str(tmp_path_factory.mktemp("d") / "s.zarr"), n_tokens=1024, d=16, dtype="float16")
    )


@pytest.fixture()
def store(pristine, tmp_path) -> Path:
    copy = tmp_path / "s.zarr"
    shutil.copytree(pristine, copy)
    return copy


@pytest.fixture()
def store_v1(store) -> Path:
    downgrade_to_v1(str(store))
    return store


def _consume(url: Path, direct: bool = True) -> None:
    """Open the store as training does and read one full epoch."""
    info = open_store(str(url), hook=HOOK)
    reader = BatchReader(
        str(url), HOOK, batch_size=64, info=info, shuffle_buffer_shards=2, direct_shards=direct
    )
    for _ in reader.batches(0, reader.tokens_per_epoch // 64):
        pass


def _attrs(url: Path, edit: Callable[[dict], None], path: str = "zarr.json") -> None:
    meta = json.loads((url / path).read_text())
    edit(meta["attributes"] if path == "zarr.json" else meta)
    (url / path).write_text(json.dumps(meta))


def _shard(url: Path, array: str, shard: int) -> Path:
    folder = url / array / "c" / str(shard)
    return folder if array == "tokens" else folder / "0"


def _flip(path: Path, offset: int, mask: int = 0xFF) -> None:
    blob = bytearray(path.read_bytes())
    blob[offset] ^= mask
    path.write_bytes(bytes(blob))


DAMAGES: dict[str, tuple[Callable[[Path], None], str]] = {
    "flipped byte in a tokens shard": (lambda u: _flip(_shard(u, "tokens", 3), 20), "array tokens, shard 3"),
    "deleted tokens shard": (lambda u: _shard(u, "tokens", 5).unlink(), "array tokens, shard 5"),
    "flipped byte in an act shard": (
        lambda u: _flip(_shard(u, act_path(HOOK), 2), 100),
        f"array {HOOK}/act, shard 2",
    ),
    "deleted grad shard": (lambda u: _shard(u, grad_path(HOOK), 6).unlink(), f"array {HOOK}/grad, shard 6"),
    "truncated act shard": (
        lambda u: _shard(u, act_path(HOOK), 1).write_bytes(b"xx"),
        f"{HOOK}/act, shard 1",
    ),
    "n_tokens edited larger": (lambda u: _attrs(u, lambda a: a.update(n_tokens=4096)), "n_tokens 4096"),
    "context_length edited": (
        lambda u: _attrs(u, lambda a: a.update(context_length=32)),
        "attributes were edited",
    ),
    "d_model edited": (lambda u: _attrs(u, lambda a: a.update(d_model=32, attrs_sha256=None)), "shape"),
    "dtype edited": (lambda u: _attrs(u, lambda a: a.update(dtype="float32", attrs_sha256=None)), "dtype"),
    "tokens_per_shard edited": (
        lambda u: _attrs(u, lambda a: a.update(tokens_per_shard=256, attrs_sha256=None)),
        "shard length",
    ),
    "hook renamed": (
        lambda u: _attrs(u, lambda a: a.update(hooks=["model.layers.2"], attrs_sha256=None)),
        "array model.layers.2/act: array is missing",
    ),
    "complete as a string": (
        lambda u: _attrs(u, lambda a: a.update(complete="false")),
        "'complete' must be bool",
    ),
    "truncated group zarr.json": (
        lambda u: (u / "zarr.json").write_text((u / "zarr.json").read_text()[:50]),
        "not valid JSON",
    ),
    "truncated array zarr.json": (
        lambda u: (u / act_path(HOOK) / "zarr.json").write_text('{"zarr_format": 3, "node_t'),
        f"array {HOOK}/act",
    ),
    "array shape edited": (
        lambda u: _attrs(u, lambda m: m.update(shape=[2048, 16]), f"{act_path(HOOK)}/zarr.json"),
        "shape (2048, 16)",
    ),
}

V1_DAMAGES: dict[str, tuple[Callable[[Path], None], str]] = {
    "n_tokens edited smaller": (lambda u: _attrs(u, lambda a: a.update(n_tokens=512)), "n_tokens 512"),
    "complete with half the shards": (
        lambda u: _attrs(u, lambda a: a.update(committed=a["committed"][:4], n_tokens=512)),
        "marked complete with 4 of 8",
    ),
    "commit record out of order": (
        lambda u: _attrs(u, lambda a: a["committed"].__setitem__(1, {**a["committed"][1], "index": 5})),
        "shard 1",
    ),
}


def _record(index: int) -> str:
    return f"commits/{index}/zarr.json"


V2_DAMAGES: dict[str, tuple[Callable[[Path], None], str]] = {
    # the objects of shards 4-7 stay, but n_tokens decides what is committed
    "n_tokens edited smaller": (
        lambda u: _attrs(u, lambda a: a.update(n_tokens=512)),
        "marked complete with 4 of 8",
    ),
    "commit object deleted": (lambda u: (u / _record(3)).unlink(), "shard 3: commit record 3 is missing"),
    "commit object truncated": (
        lambda u: (u / _record(2)).write_text((u / _record(2)).read_text()[:40]),
        "shard 2: commit record 2 is unreadable",
    ),
    "commit record out of order": (
        lambda u: _attrs(u, lambda m: m["attributes"].update(index=5), _record(1)),
        "shard 1: commit record 1 is out of order",
    ),
    "commit record of other rows": (
        lambda u: _attrs(u, lambda m: m["attributes"].update(rows=[0, 128]), _record(2)),
        "shard 2: committed rows [0, 128]",
    ),
    "commit record without its checksum": (
        lambda u: _attrs(u, lambda m: m["attributes"].pop("sha256"), _record(6)),
        "shard 6: commit record has no checksum",
    ),
}

CASES = sorted([("v2", d) for d in [*DAMAGES, *V2_DAMAGES]] + [("v1", d) for d in [*DAMAGES, *V1_DAMAGES]])


@pytest.mark.parametrize(("fmt", "damage"), CASES, ids=[f"{f}-{d}" for f, d in CASES])
@pytest.mark.parametrize("direct", [True, False], ids=["direct", "zarr"])
def test_damaged_store_is_refused(store, fmt, damage, direct):
    if fmt == "v1":
        downgrade_to_v1(str(store))
    apply, needle = {**DAMAGES, **(V1_DAMAGES if fmt == "v1" else V2_DAMAGES)}[damage]
    apply(store)
    with pytest.raises(CacheCorrupt) as exc:
        _consume(store, direct)
    msg = str(exc.value)
    assert "\n" not in msg and str(store) in msg and needle in msg, msg


def test_pristine_store_reads(store):
    _consume(store)
    _consume(store, direct=False)


def test_pristine_v1_store_reads_and_verifies(store_v1):
    assert open_store(str(store_v1)).version == 1
    _consume(store_v1)
    _consume(store_v1, direct=False)
    report = verify(str(store_v1))
    assert report.ok and report.checked == 8


@pytest.mark.parametrize("fmt", ["v1", "v2"])
def test_verify_reports_a_broken_commit_record_in_one_line(store, fmt):
    if fmt == "v1":
        downgrade_to_v1(str(store))
        _attrs(store, lambda a: a["committed"][3].pop("sha256"))
    else:
        (store / _record(3)).unlink()
    report = verify(str(store))
    assert not report.ok and report.checked == 0 and len(report.bad) == 1
    assert "shard 3" in report.bad[0] and "commit record" in report.bad[0]


def test_300_random_flips_in_a_compressed_shard_are_all_caught(store):
    path = _shard(store, act_path(HOOK), 4)
    original = path.read_bytes()
    rng = np.random.default_rng(0)
    info = open_store(str(store), hook=HOOK)
    reader = BatchReader(str(store), HOOK, batch_size=64, info=info)
    out = np.empty((128, 16), np.float16)
    for i in range(300):
        blob = bytearray(original)
        pos = int(rng.integers(len(blob)))
        blob[pos] ^= 0xFF if i % 2 else 1 << int(rng.integers(8))
        path.write_bytes(bytes(blob))
        with pytest.raises(CacheCorrupt, match="shard 4"):
            reader._read_shard("act", 4, out)
    path.write_bytes(original)
    reader._read_shard("act", 4, out)


def test_missing_heldout_shard_is_an_error_not_zeros(store):
    _shard(store, grad_path(HOOK), 0).unlink()
    with pytest.raises(CacheCorrupt, match=f"array {HOOK}/grad, shard 0"):
        read_rows(str(store), HOOK, 0, 256)


def test_read_rows_refuses_uncommitted_rows(tmp_path):
    url = build_store(str(tmp_path / "p.zarr"), n_tokens=1024, shards=3)
    read_rows(url, HOOK, 0, 384)
    with pytest.raises(CacheIncomplete):
        read_rows(url, HOOK, 0, 400)


@pytest.mark.parametrize("fmt", ["v1", "v2"])
def test_verify_names_the_damaged_shard_and_array(store, fmt):
    if fmt == "v1":
        downgrade_to_v1(str(store))
    _flip(_shard(store, act_path(HOOK), 2), 100)
    report = verify(str(store))
    assert report.bad_shards == (2,) and f"{HOOK}/act" in report.bad[0]


def test_gsae_train_on_damaged_store_one_line(store, tmp_path, capsys):
    _flip(_shard(store, grad_path(HOOK), 3), 60)
    params = tmp_path / "p.yaml"
    params.write_text(
        yaml.safe_dump(
            {
                "model": {"name": "tiny-test-model"},
                "data": {"context_length": 16},
                "harvest": {"layers": [1], "tokens_per_shard": 128, "chunk_tokens": 64},
                "train": {
                    "store": str(store),
                    "out_dir": str(tmp_path / "saes"),
                    "tokens": 2048,
                    "batch_size": 128,
                    "device": "cpu",
                    "init_sample_tokens": 128,
                    "metrics_out": str(tmp_path / "m.json"),
                    "curves_dir": str(tmp_path / "c"),
                    "grid": {"architecture": ["topk"], "k": [4], "expansion": [2]},
                },
            }
        )
    )
    code, _, err = run_cli(["train", "-p", str(params)], capsys)
    lines = [line for line in err.splitlines() if line.startswith("gsae:")]
    assert code == 1 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("gsae: error: store ") and f"{HOOK}/grad, shard 3" in lines[0]
    assert not (tmp_path / "saes" / "topk-k4-x2-s0").exists()


def test_store_without_per_array_digests_is_checked_by_the_shard_sha256(store_v1, caplog):
    store = store_v1

    def strip(attrs: dict) -> None:
        for record in attrs["committed"]:
            record.pop("xxh3")

    _attrs(store, strip)  # a (version 1) store committed before the per-array digests existed
    _consume(store)
    assert "predates per-array checksums" in caplog.text
    from cache.integrity import ShardChecker
    from cache.store import open_group

    info = open_store(str(store), hook=HOOK)
    checker = ShardChecker(str(store), info, open_group(str(store)))
    rows = read_rows(str(store), HOOK, 0, 128, info=info)[1].astype(np.float16)
    rows[5, 3] += 1  # decodes fine, different value: only the SHA-256 can tell
    with pytest.raises(CacheCorrupt, match=f"array {HOOK}/act, shard 0: data does not match its checksum"):
        checker.check(0, act_path(HOOK), rows)
    _flip(_shard(store, grad_path(HOOK), 7), 30)
    with pytest.raises(CacheCorrupt, match=f"array {HOOK}/grad, shard 7"):
        _consume(store)
