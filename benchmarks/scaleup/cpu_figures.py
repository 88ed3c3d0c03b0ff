"""CPU figures for docs/scaling.md: per-shard harvest time, bytes/token per dtype, reader rate per process.

    .venv/bin/python -m benchmarks.scaleup.cpu_figures [--model smollm2-135m] [--shards 3] [--tokens-per-shard 1024]

(a) ``run_harvest`` of ``--shards`` shards, in process and with ``harvest.scheduler=local:2``:
    seconds per shard (from commit times; the first shard, which includes warm-up, is
    left out of the median) and the two runs' tokens/s side by side.
(b) bytes on disk per token of the harvested store for float16 and float32, next to the
    uncompressed figure 2·d·layers·itemsize + 4 (token id) + 4 (loss).
(c) reader throughput (tokens/s of act+grad batches, benchmarks/common/synthetic_store.py's
    d = 576 float16 store) of one reader process alone and of each of two run at once.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import ROOT
from benchmarks.common.child import child_env, module_argv


def harvest_run(args: argparse.Namespace, url: str, dtype: str, scheduler: str, shards: int) -> dict:
    """Harvest ``shards`` shards; per-shard seconds and bytes/token of the store."""
    from cache.store import read_info
    from pipeline.core.loader import params_from_dict
    from pipeline.harvest.run import run_harvest

    params = params_from_dict(
        {},
        [
            f"model.name={args.model}",
            "model.device=cpu",
            f"harvest.layers={args.layers}",
            f"data.context_length={args.context_length}",
            f"harvest.tokens={shards * args.tokens_per_shard}",
            f"harvest.tokens_per_shard={args.tokens_per_shard}",
            f"harvest.chunk_tokens={args.tokens_per_shard // 2}",
            f"harvest.batch_size={args.batch_size}",
            f"harvest.store={url}",
            f"harvest.dtype={dtype}",
            f"harvest.scheduler={scheduler}",
            f"harvest.cache_root={Path(url).parent / 'root'}",
        ],
    )
    stamps: list[float] = []
    t0 = time.perf_counter()
    run_harvest(params, on_commit=lambda _: stamps.append(time.perf_counter()))
    total = time.perf_counter() - t0
    per_shard = [b - a for a, b in zip([t0, *stamps], stamps, strict=False)]
    info = read_info(url)
    size = sum(p.stat().st_size for p in Path(url).rglob("*") if p.is_file())
    d, n_layers, item = info.d_model, len(info.hooks), 2 if dtype == "float16" else 4
    return {
        "dtype": dtype,
        "scheduler": scheduler,
        "tokens": info.committed_tokens,
        "seconds": total,
        "tok_per_s": info.committed_tokens / total,
        "shard_s_median": statistics.median(per_shard[1:] or per_shard),
        "bytes_per_token": size / info.committed_tokens,
        "raw_bytes_per_token": 2 * d * n_layers * item + 4 + 4,
        "d": d,
    }


def reader_child(url: str, seconds: float) -> None:
    """Print the steady tok/s of one reader over about ``seconds``."""
    from benchmarks.common.synthetic_store import reader_rate

    n = 8
    while True:
        t0 = time.perf_counter()
        _, rate = reader_rate(url, 4096, n)
        if time.perf_counter() - t0 > seconds or n > 4096:
            break
        n *= 2
    print(json.dumps({"tok_per_s": rate}))


def reader_rates(url: str, processes: int) -> list[float]:
    cmd = module_argv(__spec__.name, "--reader-child", url)
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT, env=child_env())
        for _ in range(processes)
    ]
    return [json.loads(p.communicate()[0].strip().splitlines()[-1])["tok_per_s"] for p in procs]


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--reader-child":
        reader_child(sys.argv[2], 5.0)
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--layers", default="[15]")
    ap.add_argument("--context-length", type=int, default=128)
    ap.add_argument("--tokens-per-shard", type=int, default=1024)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--shards", type=int, default=3)
    ap.add_argument("--parts", default="abc")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        if "a" in args.parts or "b" in args.parts:
            runs = [harvest_run(args, f"{tmp}/f16.zarr", "float16", "none", args.shards)]
            if "a" in args.parts:
                runs.append(harvest_run(args, f"{tmp}/f16d.zarr", "float16", "local:2", args.shards))
            if "b" in args.parts:
                runs.append(harvest_run(args, f"{tmp}/f32.zarr", "float32", "none", max(1, args.shards - 1)))
            print(
                f"model={args.model} layers={args.layers} T={args.context_length} "
                f"tokens_per_shard={args.tokens_per_shard} d={runs[0]['d']}"
            )
            print(
                f"{'dtype':8} {'scheduler':9} {'tokens':>7} {'tok/s':>7} {'s/shard':>8} {'B/tok disk':>10} {'B/tok raw':>9}"
            )
            for r in runs:
                print(
                    f"{r['dtype']:8} {r['scheduler']:9} {r['tokens']:>7} {r['tok_per_s']:>7.1f} "
                    f"{r['shard_s_median']:>8.1f} {r['bytes_per_token']:>10.1f} {r['raw_bytes_per_token']:>9}"
                )
        if "c" in args.parts:
            from benchmarks.common.synthetic_store import build

            url = build(f"{tmp}/synthetic.zarr", 8)
            one = reader_rates(url, 1)
            two = reader_rates(url, 2)
            print(
                f"reader tok/s, 1 process: {one[0]:.0f}; 2 processes at once: "
                f"{', '.join(f'{r:.0f}' for r in two)} (sum {sum(two):.0f})"
            )


if __name__ == "__main__":
    main()
