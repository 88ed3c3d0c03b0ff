"""How the inspect stage's cost grows with described rows and latents (synthetic, d = 576, k = 32).

    .venv/bin/python -m benchmarks.components.inspect_stage [--repeats 2]

For a random TopK SAE and a g-SAE (β = 0.3, selection values) at each (rows, latents) of a
2 × 2 grid, times the stage's per-entry parts on random activations and gradients:
``collect`` (encode, attributions, for the g-SAE its β = 0 selection: rows × latents × d
multiply-adds), ``figures`` (the per-latent lists: a Python loop over latents plus sorting
the firings, rows × k of them) and ``json`` (writing latents.json). Prints seconds (best of
``--repeats``) and each part's ratio to the smallest cell, so the scaling reads off directly:
a part that grows with rows × latents doubles along each axis.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def _time(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def cell(arch: str, rows: int, latents: int, repeats: int) -> dict[str, float]:
    import torch

    from pipeline.inspect.describe import collect_firings, latent_figures
    from pipeline.inspect.firings import TokenTable
    from pipeline.saes import get_sae_class

    torch.manual_seed(0)
    d = 576
    hp = {"k": 32} if arch == "topk" else {"k": 32, "beta": 0.3, "value_mode": "selection"}
    sae = get_sae_class(arch)(d, latents, **hp)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows, d), dtype=np.float32)
    g = rng.standard_normal((rows, d), dtype=np.float32) * 0.01
    row_ids = np.arange(rows, dtype=np.int64)
    tokens = TokenTable(
        0, 128, rng.integers(0, 1000, rows).astype(np.int32), {i: f"t{i}" for i in range(1000)}
    )
    t_collect, (firings, removed) = _time(
        lambda: collect_firings(sae, x, g, row_ids, with_gradient=arch == "gsae"), repeats
    )
    t_fig, lat = _time(
        lambda: latent_figures(
            firings, rows, tokens, top_n=24, quantile_bins=5, quantile_samples=4, seed=0, removed=removed
        ),
        repeats,
    )
    t_json, _ = _time(lambda: json.dumps({"latents": lat}), repeats)
    return {"collect": t_collect, "figures": t_fig, "json": t_json}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--rows", type=int, nargs=2, default=[4096, 8192])
    ap.add_argument("--latents", type=int, nargs=2, default=[2304, 4608])
    args = ap.parse_args()
    for arch in ("topk", "gsae"):
        base: dict[str, float] | None = None
        for rows in args.rows:
            for latents in args.latents:
                t = cell(arch, rows, latents, args.repeats)
                base = base or t
                parts = "  ".join(f"{k} {v:6.2f} s (×{v / base[k]:.2f})" for k, v in t.items())
                print(f"{arch:5} rows {rows:6} latents {latents:5}: {parts}  total {sum(t.values()):6.2f} s")


if __name__ == "__main__":
    main()
