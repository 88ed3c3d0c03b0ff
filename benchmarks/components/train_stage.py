"""Train-stage benchmark on a synthetic store of realistic width (d = 576, float16, zstd).

Figures (printed, one run):
  (a) reader steady throughput / trainer consumption rate (1 variant, topk k32 x8)   target >= 20
      (also: the reader through zarr instead of the direct shard decoder, side by side)
  (b) wall time of 8 variants in one pass / sum of the 8 variants run alone  target <= 1.1
  (c) peak RSS of a reader streaming a full epoch of a 10x larger cache / 1x (subprocesses)
      target ~1 (flat)
  (d) 8 equal-shape variants: batched bmm step time / python-loop step time (decides stacking)
  (e) g-SAE / TopK step time, one variant each (k32 x8, batch 4096): the g-SAE's one extra
      [B, d] x [d, n] product for |W_dec g|
  (f) one TopK variant's step (k32 x8, batch 4096), the CPU trainer's sparse encoder gradient
      vs autograd's dense one, without AuxK and with AuxK on (the dead latents counted)

Run: .venv/bin/python -m benchmarks.components.train_stage [--quick] [--parts abcdef]

The store is benchmarks/common/synthetic_store.py's.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.common.child import run_module
from benchmarks.common.synthetic_store import HOOK, SHARD, D, build, reader_rate
from cache.reader import BatchReader
from pipeline.core.config import GridConfig, TrainConfig
from pipeline.train.sweep import expand_grid
from pipeline.train.trainer import Trainer
from stages.allocator import tune_allocator

logger = logging.getLogger("bench")


def trainer_for(grid: GridConfig, steps: int, batch: int) -> Trainer:
    cfg = TrainConfig(batch_size=batch, grid=grid, warmup_steps=1, dead_tokens=10**9)
    return Trainer(expand_grid(grid), D, cfg, total_steps=steps, act_scale=0.25, grad_scale=100.0)


def fit_time(url: str, grid: GridConfig, steps: int, batch: int) -> tuple[float, float]:
    """(wall, process CPU) seconds of ``steps`` training steps fed by a fresh reader."""
    tr = trainer_for(grid, steps + 1, batch)
    r = BatchReader(url, HOOK, batch_size=batch, seed=0, shuffle_buffer_shards=4, prefetch=2)
    it = r.batches(0, steps + 1)
    tr.train_step(*next(it))  # warm-up step (allocations), not timed
    t, c = time.perf_counter(), time.process_time()
    tr.fit(it, log_every=0, progress=False)
    return time.perf_counter() - t, time.process_time() - c


def stacking(batch: int, reps: int) -> tuple[float, float]:
    """Step time of 8 topk variants (x8, k32): the trainer's python loop vs the same math stacked.

    The stacked step does what the trainer does per variant (encoder with the b_dec
    vector trick, TopK, embedding-bag decoder, FVU loss, backward, parallel-gradient
    removal, fused Adam, row renormalisation) on [V, ...] parameters with one bmm.
    """
    V, n, k = 8, 8 * D, 32
    tr = trainer_for(GridConfig(architecture=("topk",), k=(k,), seed=tuple(range(V))), 10, batch)
    x = torch.randn(batch, D)
    w = torch.randn(V, n, D)
    wd = torch.nn.Parameter(w / w.norm(dim=-1, keepdim=True))
    we = torch.nn.Parameter(wd.detach().transpose(1, 2).clone())
    be, bd = torch.nn.Parameter(torch.zeros(V, 1, n)), torch.nn.Parameter(torch.zeros(V, 1, D))
    opt = torch.optim.Adam([we, wd, be, bd], lr=1e-4, fused=True)
    offsets = torch.arange(V).view(V, 1, 1) * n

    def stacked() -> None:
        z = torch.matmul(x, we) + (be - torch.bmm(bd, we))  # [V, B, n]
        top = torch.topk(z, k, dim=-1, sorted=False)
        idx = (top.indices + offsets).reshape(V * batch, k)
        vals = top.values.relu().reshape(V * batch, k)
        xh = (
            F.embedding_bag(idx, wd.view(V * n, D), per_sample_weights=vals, mode="sum").view(V, batch, D)
            + bd
        )
        loss = ((xh - x).pow(2).sum(dim=(1, 2)) / (x - x.mean(0)).pow(2).sum()).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        with torch.no_grad():
            u = wd / wd.norm(dim=-1, keepdim=True)
            wd.grad.sub_((wd.grad * u).sum(-1, keepdim=True) * u)
        opt.step()
        with torch.no_grad():
            wd.div_(wd.norm(dim=-1, keepdim=True))

    def loop() -> None:
        tr.train_step(x, x)

    times: dict[str, list[float]] = {"loop": [], "stacked": []}
    loop()
    stacked()
    for _ in range(reps):  # interleaved, best of reps: robust to other load on the machine
        for name, fn in (("loop", loop), ("stacked", stacked)):
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return min(times["loop"]), min(times["stacked"])


def gsae_topk_steps(batch: int, reps: int) -> tuple[float, float]:
    """Best-of-``reps`` step time of one topk and one gsae variant (same k, width, batch), interleaved."""
    grids = {
        "topk": GridConfig(architecture=("topk",), k=(32,), expansion=(8,)),
        "gsae": GridConfig(
            architecture=("gsae",), k=(32,), expansion=(8,), beta=(1.0,), value_mode=("selection",)
        ),
    }
    trainers = {name: trainer_for(grid, reps + 2, batch) for name, grid in grids.items()}
    x, g = torch.randn(batch, D), torch.randn(batch, D)
    times: dict[str, list[float]] = {name: [] for name in trainers}
    for tr in trainers.values():
        tr.train_step(x, g)  # warm-up (allocations)
    for _ in range(reps):
        for name, tr in trainers.items():
            t = time.perf_counter()
            tr.train_step(x, g)
            times[name].append(time.perf_counter() - t)
    return min(times["topk"]), min(times["gsae"])


def sparse_vs_dense(batch: int, reps: int, aux: bool) -> tuple[float, float, int]:
    """Best-of-``reps`` step time of one topk variant with the sparse and the dense encoder gradient,
    and how many latents were dead (AuxK's latents) at the end."""
    grid = GridConfig(architecture=("topk",), k=(32,), expansion=(8,))
    times: dict[bool, list[float]] = {True: [], False: []}
    x = torch.randn(batch, D)
    trainers = {}
    for sparse in (True, False):
        cfg = TrainConfig(batch_size=batch, grid=grid, warmup_steps=1, dead_tokens=batch if aux else 10**9)
        tr = Trainer(expand_grid(grid), D, cfg, total_steps=reps + 4, act_scale=0.25)
        tr.sparse_encoder_grad = sparse
        for _ in range(2):  # warm-up; past dead_tokens, so AuxK runs when ``aux``
            tr.train_step(x, None)
        trainers[sparse] = tr
    for _ in range(reps):
        for sparse, tr in trainers.items():
            t = time.perf_counter()
            tr.train_step(x, None)
            times[sparse].append(time.perf_counter() - t)
    v = next(iter(trainers[True].variants.values()))
    return min(times[True]), min(times[False]), int((v.since_fired >= trainers[True].cfg.dead_tokens).sum())


def rss_child(url: str) -> None:
    """Stream one full epoch; print tokens and peak RSS in MiB (VmHWM: this process only)."""
    tune_allocator()
    r = BatchReader(url, HOOK, batch_size=4096, seed=0, shuffle_buffer_shards=4, prefetch=2)
    n = sum(a.shape[0] for a, _ in r.batches(0, r.tokens_per_epoch // 4096))
    hwm = next(
        line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM")
    )
    print(n, int(hwm.split()[1]) / 1024)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps")
    ap.add_argument("--parts", default="abcdef", help="which figures to measure, e.g. 'ab'")
    ap.add_argument("--rss-child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_child:
        rss_child(args.rss_child)
        return
    logging.basicConfig(level=logging.WARNING)
    print(f"glibc allocator tuned (as gsae train does): {tune_allocator()}")
    steps = 2 if args.quick else 3
    batch = 2048
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        small = build(f"{tmp}/small.zarr", 8)
        big = build(f"{tmp}/big.zarr", 80) if "c" in args.parts else small
        print(
            f"stores: 8 and 80 shards of {SHARD} tokens, d={D}, float16 ({time.perf_counter() - t:.0f}s to write)"
        )

        # (a)
        if "a" in args.parts:
            # 40 batches of 4096 = 2.5 epochs of the small store, crossing buffers and epochs
            runs = [reader_rate(small, 4096, 40, direct) for _ in range(2) for direct in (True, False)]
            first, rate_r = min(r[0] for r in runs[::2]), max(r[1] for r in runs[::2])
            rate_z = max(r[1] for r in runs[1::2])
            one = GridConfig(architecture=("topk",), k=(32,), expansion=(8,))
            tr = trainer_for(one, 10, 4096)
            x, g = torch.randn(4096, D), torch.randn(4096, D)
            tr.train_step(x, g)
            t = time.perf_counter()
            for _ in range(steps):
                tr.train_step(x, g)
            rate_t = steps * 4096 / (time.perf_counter() - t)
            print(
                f"(a) reader {rate_r:,.0f} tok/s steady (first batch after {first:.2f}s; through zarr "
                f"{rate_z:,.0f} tok/s, direct/zarr {rate_r / rate_z:.2f}), trainer (1 variant topk k32 x8) "
                f"{rate_t:,.0f} tok/s, ratio {rate_r / rate_t:.1f}  (target >= 20)"
            )

        # (b)
        if "b" in args.parts:
            eight = GridConfig(architecture=("topk", "gsae"), k=(32, 64), expansion=(8,), seed=(0, 1))
            specs = expand_grid(eight)
            all_w = all_c = float("inf")
            alone_w, alone_c = [float("inf")] * len(specs), [float("inf")] * len(specs)
            for _ in range(2):  # best of two interleaved rounds: the machine may be shared
                w, c = fit_time(small, eight, steps, batch)
                all_w, all_c = min(all_w, w), min(all_c, c)
                for i, s in enumerate(specs):
                    grid = GridConfig(
                        architecture=(s.architecture,),
                        k=(s.k,),
                        expansion=(8,),
                        seed=(s.seed,),
                        beta=(1.0,) if s.architecture == "gsae" else (0.0,),
                    )
                    w, c = fit_time(small, grid, steps, batch)
                    alone_w[i], alone_c[i] = min(alone_w[i], w), min(alone_c[i], c)
            print(
                f"(b) 8 variants in one pass {all_w:.1f}s wall / {all_c:.1f}s CPU; sum of the 8 alone "
                f"{sum(alone_w):.1f}s wall / {sum(alone_c):.1f}s CPU; ratio wall {all_w / sum(alone_w):.2f}, "
                f"CPU {all_c / sum(alone_c):.2f}  (target <= 1.1; {steps} steps of {batch} tokens)"
            )

        # (c)
        if "c" in args.parts:
            rss = []
            for url in (small, big):
                out = run_module(__spec__.name, "--rss-child", url).split()
                rss.append((int(out[0]), float(out[1])))
            print(
                f"(c) peak RSS streaming an epoch: 1x cache ({rss[0][0]:,} tok) {rss[0][1]:.0f} MiB, "
                f"10x cache ({rss[1][0]:,} tok) {rss[1][1]:.0f} MiB, ratio {rss[1][1] / rss[0][1]:.2f}  (target ~1)"
            )

    # (d)
    if "d" in args.parts:
        t_loop, t_stack = stacking(batch, steps)
        print(
            f"(d) 8 equal-shape variants, step of {batch} tokens: loop {t_loop:.2f}s, stacked bmm {t_stack:.2f}s, "
            f"stacked/loop {t_stack / t_loop:.2f}  (stacking implemented only if < ~0.9)"
        )

    # (e)
    if "e" in args.parts:
        t_topk, t_gsae = gsae_topk_steps(4096, 3 if args.quick else 6)
        print(
            f"(e) one variant, step of 4096 tokens (k32 x8): topk {t_topk * 1e3:.0f} ms, gsae {t_gsae * 1e3:.0f} ms, "
            f"g-SAE / TopK step time {t_gsae / t_topk:.2f}"
        )

    # (f)
    if "f" in args.parts:
        for aux in (False, True):
            t_sparse, t_dense, dead = sparse_vs_dense(4096, 3 if args.quick else 5, aux)
            state = f"on, {dead} dead latents" if aux else "off"
            print(
                f"(f) one topk variant, step of 4096 tokens, AuxK {state}: sparse encoder "
                f"gradient {t_sparse * 1e3:.0f} ms, dense {t_dense * 1e3:.0f} ms, dense/sparse {t_dense / t_sparse:.2f}"
            )


if __name__ == "__main__":
    main()
