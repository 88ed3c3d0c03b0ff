"""Metadata a shard commit writes, and the time to open a store, cache format version 1 against 2.

    .venv/bin/python -m benchmarks.components.commit_metadata [--shards 100 1000 5000]
        [--measure-old 1000] [--open-shards 2000] [--s3]

(a) Bytes of metadata written per commit. Version 2 (today's writer) writes the commit
object ``commits/<i>/zarr.json`` and the group's ``zarr.json`` (constant size); version 1
rewrote the group's ``zarr.json``, whose ``committed`` list grew by one record per shard.
Both are measured on real stores through the real write path, with records of a default-run
layout (one hook, act + grad + tokens + loss digests) and 65,536-token shards, without
shard data (a commit does not read it): version 2 through ``ShardWriter.commit``, version 1
by the attribute update its writer made (``group.attrs.update`` of ``n_tokens``,
``committed``, ``complete``). Version 1 is measured up to ``--measure-old`` shards and
computed beyond from the measured sizes (its group metadata at commit i is base + i ·
record bytes, checked against the measured points).

Version 2 is measured on the first 2,000 commits and, beyond, computed at its largest
measured size (only the digits of the numbers grow).

(b) ``open_store`` of a store with ``--open-shards`` committed shards (validation and every
commit record loaded), version 2 (one object per shard, fetched 64 at a time) against the
same store rewritten as version 1 (the records in the attributes): on the local disk, on
``memory://`` and with ``--s3`` on a moto S3 server on loopback (installed with the dev
dependencies). moto answers one request at a time (~8 ms each here, concurrent or not), so
its figure is N × moto's per-request time, not what a real bucket's parallel GETs take.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import zarr

from cache.reader import open_store
from cache.schema import attrs_digest
from cache.store import open_group
from cache.writer import ShardWriter, allocate

HOOK, D, SHARD, T = "model.layers.15", 576, 65_536, 128
NAMES = ["tokens", f"{HOOK}/act", f"{HOOK}/grad", "loss"]
PROVENANCE = {
    "key": "0" * 64,
    "model": "smollm2-135m",
    "model_revision": "gguf-smollm2-135m-instruct-q8_0.gguf-144803936",
    "model_dtype": "float32",
    "tokenizer": "smollm2-135m",
    "dataset": {"source": "python-docs", "split": "train", "revision": "3.11.9", "fingerprint": "f" * 16},
    "context_length": T,
    "layers": [15],
    "loss": "L_seq = sum_{p=0}^{T-2} CE(logits_p, token_{p+1}) (sum, not mean)",
    "harvest": {"layers": [15], "tokens_per_shard": SHARD, "chunk_tokens": 2048, "dtype": "float16"},
}


def record(i: int) -> dict[str, Any]:
    """A commit record of shard ``i`` as the writer makes it (digests of the right length)."""
    h = hashlib.sha256(str(i).encode()).hexdigest()
    return {"index": i, "rows": [i * SHARD, (i + 1) * SHARD], "sha256": h, "xxh3": {n: h[:16] for n in NAMES}}


def fresh_store(url: str, n_shards: int) -> None:
    allocate(
        url,
        dict(PROVENANCE),
        hooks=[HOOK],
        d_model=D,
        total_tokens=n_shards * SHARD,
        tokens_per_shard=SHARD,
        chunk_tokens=2048,
        dtype="float16",
        store_loss=True,
    )


def as_v1(url: str) -> zarr.Group:
    """The allocated store's attributes as version 1 had them (``committed: []``, its seal)."""
    group = open_group(url, "r+")
    attrs = {k: v for k, v in dict(group.attrs).items() if k not in ("n_tokens", "complete", "attrs_sha256")}
    attrs.update(gsae_cache_version=1, n_tokens=0, committed=[], complete=False)
    attrs["attrs_sha256"] = attrs_digest(attrs)
    group.attrs.put(attrs)
    return group


def size(path: Path) -> int:
    return path.stat().st_size


def per_commit_new(root: Path, n: int) -> list[int]:
    """Bytes written by each of ``n`` version 2 commits (commit object + group metadata)."""
    url = str(root / "v2.zarr")
    fresh_store(url, n)
    writer = ShardWriter(url)
    out = []
    for i in range(n):
        writer.commit(record(i))
        out.append(
            size(root / "v2.zarr" / "commits" / str(i) / "zarr.json") + size(root / "v2.zarr" / "zarr.json")
        )
    return out


def per_commit_old(root: Path, n: int) -> tuple[list[int], float]:
    """Bytes written by each of ``n`` version 1 commits (the whole group metadata), and their seconds."""
    url = str(root / "v1.zarr")
    fresh_store(url, n)
    group = as_v1(url)
    records: list[dict[str, Any]] = []
    out = []
    t0 = time.perf_counter()
    for i in range(n):
        records.append(record(i))
        group.attrs.update({"n_tokens": (i + 1) * SHARD, "committed": list(records), "complete": False})
        out.append(size(root / "v1.zarr" / "zarr.json"))
    return out, time.perf_counter() - t0


def part_a(shards: list[int], measure_old: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        n_new = min(max(shards), 2000)  # constant per commit: measured on the first 2,000
        t0 = time.perf_counter()
        new = per_commit_new(root, n_new)
        new_s = time.perf_counter() - t0
        old, old_s = per_commit_old(root, measure_old)
    per_record = (old[-1] - old[0]) / (len(old) - 1)
    base = old[0] - per_record

    def old_at(i: int) -> float:  # group metadata after commit i (1-based)
        return old[i - 1] if i <= len(old) else base + i * per_record

    print(f"(a) metadata bytes per commit, {len(NAMES)} digests per record, {SHARD:,}-token shards")
    print(f"    version 1: group zarr.json = {base:,.0f} B + {per_record:,.1f} B per committed shard")
    print(
        f"    version 2: {min(new):,}-{max(new):,} B per commit (commit object + zarr.json), any shard count"
    )
    print(
        f"    {'shards':>8} {'v1 last commit':>16} {'v2 last commit':>16} {'v1 whole harvest':>18} {'v2 whole harvest':>18}"
    )
    for n in [*shards, 15_300, 61_000]:
        whole_old = (
            sum(old_at(i) for i in range(1, n + 1))
            if n <= len(old)
            else n * base + per_record * n * (n + 1) / 2
        )
        last_new, whole_new = (new[n - 1], sum(new[:n])) if n <= len(new) else (max(new), n * max(new))
        how = [v for v, measured in (("v1", n <= len(old)), ("v2", n <= len(new))) if not measured]
        note = f"  ({' and '.join(how)} computed)" if how else ""
        print(
            f"    {n:>8,} {old_at(n):>14,.0f} B {last_new:>14,} B {_human(whole_old):>18} "
            f"{_human(whole_new):>18}{note}"
        )
    print(
        f"    time for {len(old):,} commits: version 1 {old_s:.2f} s, version 2 ({n_new:,} commits) {new_s:.2f} s"
    )


def _human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000:
            return f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n:,.1f} PB"


def _committed_store(url: str, n: int) -> None:
    fresh_store(url, n)
    writer = ShardWriter(url)
    for i in range(n):
        writer.commit(record(i))


def _v1_copy(src: str, dst: str) -> None:
    """``dst``: the version 2 store ``src`` with its records moved into the attributes (version 1)."""
    info = open_store(src, require_complete=False)
    fresh_store(dst, info.n_shards)
    group = as_v1(dst)
    group.attrs.update({"n_tokens": info.committed_tokens, "committed": list(info.records)})


def _time_open(url: str, rounds: int = 3) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        info = open_store(url, require_complete=False)
        best = min(best, time.perf_counter() - t0)
    assert len(info.records) == info.committed_shards
    return best


def part_b(n: int, s3: bool) -> None:
    print(
        f"(b) open_store of a store with {n:,} committed shards (best of 3; every record loaded and checked)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        roots = {"local disk": tmp, "memory://": "memory://bench-open"}
        server = _moto() if s3 else None
        if server is not None:
            roots["s3 (moto, loopback)"] = "s3://bench"
        try:
            for where, root in roots.items():
                v2, v1 = f"{root}/v2.zarr", f"{root}/v1.zarr"
                _committed_store(v2, n)
                _v1_copy(v2, v1)
                t2, t1 = _time_open(v2), _time_open(v1)
                print(
                    f"    {where:<20} version 2 {t2 * 1000:8.1f} ms   version 1 {t1 * 1000:8.1f} ms   ratio {t2 / t1:.2f}"
                )
        finally:
            if server is not None:
                server.stop()


def _moto() -> Any:
    """A moto S3 server on a free loopback port, reached through the AWS environment variables."""
    import boto3
    import fsspec
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL_S3=f"http://127.0.0.1:{port}",
    )
    fsspec.filesystem("s3").clear_instance_cache()
    boto3.client("s3").create_bucket(Bucket="bench")
    return server


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shards", type=int, nargs="+", default=[100, 1000, 5000])
    ap.add_argument(
        "--measure-old", type=int, default=1000, help="version 1 commits measured (beyond: computed)"
    )
    ap.add_argument("--open-shards", type=int, default=2000)
    ap.add_argument("--s3", action="store_true", help="also time the open on a moto S3 server")
    ap.add_argument("--parts", default="ab")
    args = ap.parse_args()
    if "a" in args.parts:
        part_a(sorted(args.shards), args.measure_old)
    if "b" in args.parts:
        part_b(args.open_shards, args.s3)


if __name__ == "__main__":
    main()
