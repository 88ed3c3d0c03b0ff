"""The train parts of the GPU benchmark (benchmarks/gpu/run.py): ``train``, trainer tokens/s
from host float16 batches (what the reader yields) per architecture, precision and variant
count, the sparse encoder gradient and bf16 autocast against the default path, the previous
commit's trainer side by side (``.gpu/old_trainer.py`` when present) and wider SAEs for the
scaling estimates; ``reader``, ``BatchReader`` steady tokens/s on this host and the trainer
fed by it (benchmarks/common/synthetic_store.py's store)."""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
import time

import torch

from benchmarks import ROOT
from benchmarks.common import synthetic_store
from benchmarks.gpu.measure import RESULTS, record, sync
from pipeline.core.config import GridConfig, TrainConfig
from pipeline.train.sweep import expand_grid
from pipeline.train.trainer import Trainer


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


def part_reader(dev: torch.device, smoke: bool) -> None:
    from cache.reader import BatchReader

    shards, B = (4, 1024) if smoke else (32, 4096)
    with tempfile.TemporaryDirectory() as tmp:
        url = synthetic_store.build(f"{tmp}/r.zarr", shards)
        for direct in (True, False):
            r = BatchReader(
                url,
                synthetic_store.HOOK,
                batch_size=B,
                seed=0,
                shuffle_buffer_shards=4,
                prefetch=2,
                direct_shards=direct,
            )
            n_batches = shards * synthetic_store.SHARD // B - 2
            it = r.batches(0, n_batches)
            next(it)
            t = time.perf_counter()
            n = sum(a.shape[0] for a, _ in it)
            record("reader", f"direct={direct}", tok_s=n / (time.perf_counter() - t), threads=os.cpu_count())
        grid = GridConfig(architecture=("topk",), k=(32,), expansion=(8,))
        steps = shards * synthetic_store.SHARD // B - 2
        cfg = TrainConfig(batch_size=B, grid=grid, warmup_steps=1, dead_tokens=10**9)
        tr = Trainer(
            expand_grid(grid),
            synthetic_store.D,
            cfg,
            total_steps=steps,
            act_scale=0.25,
            grad_scale=100.0,
            device=dev,
        )
        r = BatchReader(url, synthetic_store.HOOK, batch_size=B, seed=0, shuffle_buffer_shards=4, prefetch=2)
        t = time.perf_counter()
        tr.fit(r.batches(0, steps), log_every=50, progress=False)
        sync(dev)
        record("reader", "trainer_fed_by_reader/topk", tok_s=steps * B / (time.perf_counter() - t))
