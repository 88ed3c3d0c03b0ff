"""The activation sinks of the gsae-v2 training store, and what they do to a batch top-k.

Prints, for the first ``--tokens`` cached tokens (default 131,072): the median activation
norm of positions ≥ 1, how many tokens lie above ``--multiple`` × it (default 10), at which
positions and with which norms; then, for one freshly initialised BatchTopK SAE (k = 32, x8,
seed 0) on the first batch of 2,048 training rows, the largest number of latents the batch
top-k gives one token (the padded row width) and the mean.

Run from the repository root: .venv/bin/python experiments/gsae-v2/scripts/sinks.py
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from cache.reader import BatchReader, open_store, read_rows
from pipeline.core.config import GridConfig, TrainConfig
from pipeline.saes.batchtopk import batch_mask
from pipeline.train.normalize import activation_scale, gradient_scale
from pipeline.train.sweep import expand_grid
from pipeline.train.trainer import Trainer

POINTER = Path("experiments/gsae-v2/data/cache/train")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=131072)
    ap.add_argument("--multiple", type=float, default=10.0)
    args = ap.parse_args()
    url = str(POINTER / Path(json.loads((POINTER / "store.json").read_text())["store"]).name)
    info = open_store(url)
    hook, T = info.hooks[0], info.context_length
    _, act, _ = read_rows(url, hook, 0, args.tokens, info)
    norms = np.linalg.norm(act.astype(np.float32), axis=1)
    pos = np.arange(len(norms)) % T
    median = float(np.median(norms[pos > 0]))
    big = np.nonzero((norms > args.multiple * median) & (pos > 0))[0]
    contexts = len(norms) // T
    print(f"{len(norms):,} tokens, {contexts:,} contexts; median norm (positions >= 1) {median:.1f}")
    print(
        f"{len(big)} tokens above {args.multiple:g}x the median ({100 * len(set(big // T)) / contexts:.1f} % of "
        f"contexts), at positions {sorted(set(pos[big].tolist()))}, norms {norms[big].min():.0f} to {norms[big].max():.0f}"
    )
    rows = next(BatchReader(url, hook, batch_size=2048, seed=0).batches(0, 1))
    x, g = (t.float() for t in rows)
    c, gamma = activation_scale(x.numpy()), gradient_scale(g.numpy())
    grid = GridConfig(architecture=("batchtopk",), k=(32,), expansion=(8,), seed=(0,))
    trainer = Trainer(
        expand_grid(grid), x.shape[1], TrainConfig(grid=grid), total_steps=10, act_scale=c, grad_scale=gamma
    )
    sae = next(iter(trainer.variants.values())).sae
    with torch.no_grad():
        counts = batch_mask(sae.encode_pre(x * c), 32).sum(dim=1)
    print(
        f"fresh BatchTopK, first batch of 2,048 rows: latents per token max {int(counts.max())}, mean {float(counts.float().mean()):.1f}"
    )


if __name__ == "__main__":
    main()
