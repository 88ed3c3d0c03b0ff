"""GPU benchmarks in one process: matmul ceiling, harvest MFU, trainer and reader throughput.

    python benchmarks/gpu.py [--parts peak,harvest,hpipe,train,reader,e2e] [--json out.json] [--smoke]

- ``peak``: the ceilings measured here (bf16 and float32/tf32 matrix products).
- ``harvest``: tokens/s and model-FLOP utilisation of the harvest's forward + activation
  backward (``pipeline.harvest.forward.forward_backward``) and of the activation-only forward
  (``forward_activations``) for randomly initialised models of the SmolLM2-135M,
  Llama-3.2-1B and Llama-3.1-8B shapes (``--shapes``), at float32, bf16 autocast and bf16
  weights; ``hpipe``: ``run_harvest`` (text, copies, fp16, zstd, shard commits) against that
  bare loop, with the text read from a JSON-lines copy (``.gpu/docstrings.jsonl`` if carried).
- ``train``: trainer tokens/s from host float16 batches (what the reader yields), the
  g-SAE / TopK step ratio, 8 variants in one pass, float32 vs tf32 matmuls, the sparse
  encoder gradient and bf16 autocast against the default path, the trainer of
  the previous commit (``.gpu/old_trainer.py`` when present) side by side, and wider SAEs
  for the scaling estimates (memory per variant; ``GSAE_BENCH_WIDE=0`` skips them).
- ``reader``: ``BatchReader`` steady tokens/s on this host and the trainer fed by it.
- ``e2e``: ``gsae harvest / train / evaluate`` commands on CUDA, timed.

Weights are random: throughput does not depend on them (no data-dependent control flow in
these models). FLOPs are counted from the shapes (see ``harvest_flops`` in benchmarks/gpu_harvest.py). ``--smoke``
shrinks everything so the script can be checked on a CPU.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_common import RESULTS, ROOT, log, median_time, record, sync  # noqa: E402
from gpu_harvest import harvest_pipeline_ratio, part_harvest, part_writer, smollm2_folder  # noqa: E402

from pipeline.core.config import GridConfig, TrainConfig  # noqa: E402
from pipeline.train.sweep import expand_grid  # noqa: E402
from pipeline.train.trainer import Trainer  # noqa: E402

# ---------------------------------------------------------------------------------- peak


def part_peak(dev: torch.device, smoke: bool) -> None:
    n = 512 if smoke else 8192
    for name, dtype, tf32 in (
        ("bf16", torch.bfloat16, False),
        ("fp32", torch.float32, False),
        ("tf32", torch.float32, True),
    ):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        a, b = torch.randn(n, n, device=dev, dtype=dtype), torch.randn(n, n, device=dev, dtype=dtype)
        t = median_time(lambda a=a, b=b: a @ b, dev, reps=3 if smoke else 10)
        record("peak", name, tflops=2 * n**3 / t / 1e12)
    torch.backends.cuda.matmul.allow_tf32 = False


# ---------------------------------------------------------------------------------- train


def old_trainer_class() -> type | None:
    path = ROOT / ".gpu" / "old_trainer.py"
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location("old_trainer", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["old_trainer"] = mod  # dataclasses look their module up while the class is built
    spec.loader.exec_module(mod)
    return mod.Trainer


def host_batches(d: int, B: int, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [
        ((torch.randn(B, d, generator=g) * 4).half(), (torch.randn(B, d, generator=g) * 0.01).half())
        for _ in range(n)
    ]


def trainer_rate(
    cls: type,
    grid: GridConfig,
    d: int,
    B: int,
    steps: int,
    dev: torch.device,
    batches,
    sparse: bool | None = None,
    amp: str = "none",
) -> tuple[float, float]:
    """Trainer tokens/s and peak memory; ``sparse`` forces the sparse encoder gradient on or
    off, ``amp`` runs each step under ``torch.autocast`` in that dtype."""
    cfg = TrainConfig(batch_size=B, grid=grid, warmup_steps=1, dead_tokens=10**9)
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    tr = cls(expand_grid(grid), d, cfg, total_steps=steps + 3, act_scale=0.25, grad_scale=100.0, device=dev)
    if sparse is not None:
        tr.sparse_encoder_grad = sparse
    autocast = torch.autocast(
        dev.type, dtype=getattr(torch, amp) if amp != "none" else None, enabled=amp != "none"
    )
    with autocast:
        for i in range(3):
            tr.train_step(*batches[i % len(batches)])
        sync(dev)
        t = time.perf_counter()
        for i in range(steps):
            tr.train_step(*batches[i % len(batches)])
        tr.flush_log()  # the trainer's statistics reach the host once per log interval
        sync(dev)
    rate = steps * B / (time.perf_counter() - t)
    mem = torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else 0.0
    return rate, mem


def part_train(dev: torch.device, smoke: bool) -> None:
    d, B, steps = (64, 256, 5) if smoke else (576, 4096, 50)
    batches = host_batches(d, B, 4)
    old = old_trainer_class()
    topk = GridConfig(architecture=("topk",), k=(32,), expansion=(8,))
    gsae = GridConfig(architecture=("gsae",), k=(32,), expansion=(8,), beta=(0.3,), value_mode=("selection",))
    eight = GridConfig(architecture=("topk",), k=(32,), expansion=(8,), seed=tuple(range(8)))
    for precision in ("highest", "high"):
        torch.set_float32_matmul_precision(precision)
        for label, grid in (("topk", topk), ("gsae", gsae), ("topk-x8variants", eight)):
            n = steps // 4 if "x8" in label else steps
            rate, mem = trainer_rate(Trainer, grid, d, B, n, dev, batches)
            values = {"tok_s": rate, "peak_mem_gib": mem}
            if old is not None:
                values["old_tok_s"] = trainer_rate(old, grid, d, B, n, dev, batches)[0]
                values["new_over_old"] = rate / values["old_tok_s"]
            record("train", f"d{d}-n{8 * d}-k32-B{B}/{label}/{precision}", **values)
        t, g = (
            RESULTS["train"][f"d{d}-n{8 * d}-k32-B{B}/{x}/{precision}"]["tok_s"] for x in ("topk", "gsae")
        )
        record("train", f"gsae_over_topk_step_time/{precision}", ratio=t / g)
    torch.set_float32_matmul_precision("highest")
    # the sparse encoder gradient (the CPU default) and bf16 autocast, each against the default path
    for label, grid in (("topk", topk), ("gsae", gsae)):
        base = RESULTS["train"][f"d{d}-n{8 * d}-k32-B{B}/{label}/highest"]["tok_s"]
        for variant, kw in (
            ("sparse_encoder_grad", {"sparse": True}),
            ("autocast_bf16", {"amp": "bfloat16"}),
        ):
            rate = trainer_rate(Trainer, grid, d, B, steps, dev, batches, **kw)[0]
            record("train_variants", f"{label}/{variant}", tok_s=rate, over_default=rate / base)
    if os.environ.get("GSAE_BENCH_WIDE", "1") == "0":
        return
    for d_big, mult in () if smoke else ((2048, 16), (4096, 16)):
        big = host_batches(d_big, B, 2)
        for arch, grid in (
            ("topk", GridConfig(architecture=("topk",), k=(64,), expansion=(mult,))),
            (
                "gsae",
                GridConfig(
                    architecture=("gsae",), k=(64,), expansion=(mult,), beta=(0.3,), value_mode=("selection",)
                ),
            ),
        ):
            for precision in ("highest", "high"):
                torch.set_float32_matmul_precision(precision)
                rate, mem = trainer_rate(Trainer, grid, d_big, B, 20, dev, big)
                record(
                    "train_wide",
                    f"d{d_big}-n{mult * d_big}-k64-B{B}/{arch}/{precision}",
                    tok_s=rate,
                    peak_mem_gib=mem,
                )
        del big
    torch.set_float32_matmul_precision("highest")


# ---------------------------------------------------------------------------------- reader


def part_reader(dev: torch.device, smoke: bool) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import train as bench_train  # benchmarks/train.py: synthetic store of SmolLM2 width

    from cache.reader import BatchReader

    shards, B = (4, 1024) if smoke else (32, 4096)
    with tempfile.TemporaryDirectory() as tmp:
        url = bench_train.build(f"{tmp}/r.zarr", shards)
        for direct in (True, False):
            r = BatchReader(
                url,
                bench_train.HOOK,
                batch_size=B,
                seed=0,
                shuffle_buffer_shards=4,
                prefetch=2,
                direct_shards=direct,
            )
            n_batches = shards * bench_train.SHARD // B - 2
            it = r.batches(0, n_batches)
            next(it)
            t = time.perf_counter()
            n = sum(a.shape[0] for a, _ in it)
            record("reader", f"direct={direct}", tok_s=n / (time.perf_counter() - t), threads=os.cpu_count())
        grid = GridConfig(architecture=("topk",), k=(32,), expansion=(8,))
        steps = shards * bench_train.SHARD // B - 2
        cfg = TrainConfig(batch_size=B, grid=grid, warmup_steps=1, dead_tokens=10**9)
        tr = Trainer(
            expand_grid(grid),
            bench_train.D,
            cfg,
            total_steps=steps,
            act_scale=0.25,
            grad_scale=100.0,
            device=dev,
        )
        r = BatchReader(url, bench_train.HOOK, batch_size=B, seed=0, shuffle_buffer_shards=4, prefetch=2)
        t = time.perf_counter()
        tr.fit(r.batches(0, steps), log_every=50, progress=False)
        sync(dev)
        record("reader", "trainer_fed_by_reader/topk", tok_s=steps * B / (time.perf_counter() - t))


# ---------------------------------------------------------------------------------- e2e


def part_e2e(dev: torch.device, smoke: bool) -> None:
    """The stage commands on this device: harvest, held-out harvest, train (8 variants), evaluate."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = smollm2_folder(dev, smoke, Path(tmp))
        layer = 2 if smoke else 15
        tokens = 16384 if smoke else 1048576
        common = [
            f"model.name={folder}",
            f"model.device={dev}",
            f"harvest.layers=[{layer}]",
            "data.source=python-docstrings",
            f"harvest.cache_root={tmp}/cache",
            f"harvest.tokens={tokens}",
            f"harvest.batch_size={16 if smoke else 256}",
            f"harvest.tokens_per_shard={tokens // 8}",
            f"harvest.chunk_tokens={tokens // 32}",
            "harvest.autocast=bfloat16",
            f"train.out_dir={tmp}/saes",
            f"train.tokens={tokens}",
            f"train.batch_size={1024 if smoke else 4096}",
            "train.grid.architecture=[topk,gsae]",
            "train.grid.k=[16,32,64,128]",
            "train.grid.seed=[0]",
            f"evaluate.tokens={4096 if smoke else 65536}",
            f"evaluate.out={tmp}/evaluate.json",
            f"evaluate.summary={tmp}/summary.json",
            f"evaluate.report={tmp}/report.md",
            f"evaluate.plots_dir={tmp}/plots",
            f"evaluate.batch_size={8 if smoke else 64}",
        ]
        gsae = [sys.executable, "-c", "from stages.cli import main; main()"]
        for stage in (["harvest"], ["harvest", "--heldout"], ["train"], ["evaluate"]):
            t = time.perf_counter()
            sets = [arg for item in common for arg in ("-s", item)]
            res = subprocess.run(
                [*gsae, *stage, "-p", str(ROOT / "params.yaml"), *sets],
                cwd=tmp,
                capture_output=True,
                text=True,
            )
            wall = time.perf_counter() - t
            if res.returncode != 0:
                print(res.stdout[-3000:], res.stderr[-3000:])
            record("e2e", " ".join(stage), wall_s=wall, rc=res.returncode)
        if Path(f"{tmp}/evaluate.json").exists():
            RESULTS["e2e"]["evaluate_json"] = json.loads(Path(f"{tmp}/evaluate.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="peak,harvest,hpipe,train,reader,e2e")
    ap.add_argument("--json", default=None, help="Write every figure to this JSON file.")
    ap.add_argument("--smoke", action="store_true", help="Tiny sizes, to check the script on a CPU.")
    ap.add_argument("--shapes", default="all", help="harvest part: model shapes, e.g. smollm2-135m+llama-1b")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    RESULTS["env"] = {
        "device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "numpy": np.__version__,
    }
    print(RESULTS["env"], flush=True)
    parts = args.parts.split(",")
    try:
        if "peak" in parts:
            part_peak(dev, args.smoke)
        peak_bf16 = RESULTS.get("peak", {}).get("bf16", {}).get("tflops", 0.0) * 1e12
        for name, fn in (
            ("harvest", lambda: part_harvest(dev, args.smoke, peak_bf16, args.shapes)),
            ("hpipe", lambda: harvest_pipeline_ratio(dev, args.smoke)),
            ("writer", lambda: part_writer(dev, args.smoke)),
            ("train", lambda: part_train(dev, args.smoke)),
            ("reader", lambda: part_reader(dev, args.smoke)),
            ("e2e", lambda: part_e2e(dev, args.smoke)),
        ):
            if name in parts:
                try:
                    fn()
                except Exception as exc:  # one part failing must not lose the others' figures
                    log.exception("part %s failed", name)
                    RESULTS.setdefault("errors", {})[name] = repr(exc)
    finally:
        if args.json:
            Path(args.json).write_text(json.dumps(RESULTS, indent=1, default=str))


if __name__ == "__main__":
    main()
