"""Reader-speed cost of checking every shard against its commit-record digest (issue 10).

Side by side in one process on the store of benchmarks/common/synthetic_store.py (d = 576, float16, zstd,
8192-token shards): a full-epoch read by ``BatchReader`` with the per-array XXH3 check
(the default) and with the check switched off, the two variants interleaved round by
round, best of each reported (so background load hurts both alike).

Run: .venv/bin/python -m benchmarks.components.checksum_cost [--shards 8] [--rounds 5]
"""

from __future__ import annotations

import argparse
import tempfile
import time

from benchmarks.common.synthetic_store import HOOK, build
from cache.reader import BatchReader


def epoch_rate(url: str, mode: str, batch: int = 4096) -> tuple[float, float]:
    """(tokens per wall second, tokens per CPU second of this process) of one full epoch.

    ``mode``: ``off`` (no check), ``data`` (act/grad digests only: every epoch after the
    first of a run, since each tokens shard is checked once per reader) or ``full``
    (act/grad digests plus the one-time tokens check: a run's first epoch).
    """
    reader = BatchReader(url, HOOK, batch_size=batch, shuffle_buffer_shards=4, prefetch=2)
    if mode != "full":
        reader._tokens_ok.update(range(reader.n_shards))
    if mode == "off":
        reader._checker.check = lambda *a, **k: None  # type: ignore[method-assign]
    n = reader.tokens_per_epoch // batch
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in reader.batches(0, n):
        pass
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return n * batch / wall, n * batch / cpu


def per_shard(url: str, reps: int) -> tuple[float, float]:
    """(best seconds to read + decode one act shard, best seconds to hash it), interleaved, one thread."""
    import numpy as np

    from cache.integrity import array_digest

    reader = BatchReader(url, HOOK, batch_size=4096)
    fast = reader._files["act"]
    out = np.empty((reader.info.tokens_per_shard, reader.info.d_model), reader.info.dtype)
    read, hashed = [], []
    for i in range(reps):
        t0 = time.perf_counter()
        fast.read_into(i % reader.n_shards, out)
        t1 = time.perf_counter()
        array_digest(out)
        hashed.append(time.perf_counter() - t1)
        read.append(t1 - t0)
    return min(read), min(hashed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = build(f"{tmp}/s.zarr", args.shards)
        rates: dict[str, list[tuple[float, float]]] = {"off": [], "data": [], "full": []}
        modes = list(rates)
        for r in range(args.rounds):
            for mode in modes[r % 3 :] + modes[: r % 3]:  # rotate the order: no variant always runs first
                rates[mode].append(epoch_rate(url, mode))
        read, hashed = per_shard(url, 10 * args.rounds)
        print(
            f"one shard: read + decode {read * 1e3:.2f} ms, XXH3 {hashed * 1e3:.2f} ms "  # noqa: T201
            f"({100 * hashed / read:.1f} % of the read)"
        )
        for i, unit in enumerate(("wall", "CPU")):
            best = {mode: max(x[i] for x in r) for mode, r in rates.items()}
            for mode in ("data", "full"):
                print(
                    f"{mode}: {best[mode]:,.0f} tok/{unit}-s vs off {best['off']:,.0f} (best of "  # noqa: T201
                    f"{args.rounds}): cost {100 * (1 - best[mode] / best['off']):.1f} %"
                )


if __name__ == "__main__":
    main()
