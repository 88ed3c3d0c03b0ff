"""On-paper estimate for docs/scaling.md: harvesting N tokens of a d-wide model and training V variants.

    .venv/bin/python -m benchmarks.scaleup.estimate                     # the 1B and 8B cases of the doc
    .venv/bin/python -m benchmarks.scaleup.estimate --d 4096 --params 8e9 --tokens 1e9

Every figure is arithmetic on the stated inputs (printed with the result); the inputs
marked "assumed" (sustained FLOP rates, object-store price, commit-record size) are not
measured here. Store bytes follow the cache format exactly: per token and hooked layer
one activation and one gradient row of d values in the storage dtype, plus the int32
token id and the float32 loss; lossless codecs save only a few percent on float data
(``--codec-ratio``, measured by benchmarks/scaleup/cpu_figures.py (b)).
"""

from __future__ import annotations

import argparse

GB = 1e9


def estimate(a: argparse.Namespace) -> dict[str, float]:
    item = 2 if a.dtype == "float16" else 4
    raw_per_token = a.layers * 2 * a.d * item + 4 + 4
    store = a.tokens * raw_per_token * a.codec_ratio
    shard_bytes = a.tokens_per_shard * a.d * item  # one act (or grad) shard file of one layer
    n_shards = a.tokens / a.tokens_per_shard
    # forward 2·P FLOPs/token, activation-only backward through the blocks above the hook ≈ 2·P·f
    harvest_flops = a.tokens * 2 * a.params * (1 + a.above)
    harvest_s = harvest_flops / a.harvest_flops
    harvest_tok_s = a.tokens / harvest_s
    n_latents = a.expansion * a.d
    # dense encoder fwd+bwd (6·d·n), g-SAE's |W_dec g| (2·d·n), sparse decoder negligible
    train_flops = a.variants * a.train_tokens * 8 * a.d * n_latents
    train_s = train_flops / a.train_flops
    per_variant_gb = 4 * a.d * n_latents * 2 * 4 / GB  # W_enc, W_dec fp32 + grads + two Adam moments
    by_memory = int(a.gpu_gb * 0.7 // per_variant_gb)
    on_gpu = -(-a.variants // a.gpus)  # variants each GPU trains (train.parallel: variants)
    per_gpu_tok_s = a.train_flops / (on_gpu * 8 * a.d * n_latents)  # all its variants share one batch stream
    return {
        "raw_bytes_per_token": raw_per_token,
        "store_tb": store / 1e12,
        "store_usd_month": store / GB * a.usd_per_gb_month,
        "shard_file_mb": shard_bytes / 1e6,
        "n_shards": n_shards,
        "shards_per_worker": n_shards / a.gpus,
        "harvest_gpu_hours": harvest_s / 3600,
        "harvest_tok_s_per_gpu": harvest_tok_s,
        "harvest_write_mb_s_per_gpu": harvest_tok_s * raw_per_token / 1e6,
        "commit_json_mb_at_end": n_shards * a.record_bytes / 1e6,
        "commit_json_total_gb": n_shards**2 / 2 * a.record_bytes / GB,
        "train_gpu_hours": train_s / 3600,
        "variant_gb": per_variant_gb,
        "variants_per_gpu_by_memory": by_memory,
        "variants_per_gpu": on_gpu,
        "train_tok_s_per_gpu": per_gpu_tok_s,
        "reader_mb_s_per_gpu": per_gpu_tok_s * (2 * a.d * item + 8) / 1e6,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--d", type=int, nargs="+", default=[2048, 4096], help="model width(s)")
    ap.add_argument(
        "--params", type=float, nargs="+", default=[1.2e9, 8e9], help="LM parameters (one per --d)"
    )
    ap.add_argument("--tokens", type=float, default=1e9)
    ap.add_argument("--layers", type=int, default=1, help="hooked layers per store")
    ap.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    ap.add_argument(
        "--codec-ratio",
        type=float,
        default=0.93,
        help="disk/raw bytes (benchmarks/scaleup/cpu_figures.py (b))",
    )
    ap.add_argument("--tokens-per-shard", type=int, default=65536)
    ap.add_argument("--above", type=float, default=0.5, help="fraction of blocks above the hooked one")
    ap.add_argument(
        "--harvest-flops", type=float, default=300e12, help="assumed sustained bf16 FLOP/s per GPU"
    )
    ap.add_argument("--train-flops", type=float, default=150e12, help="assumed sustained TF32 FLOP/s per GPU")
    ap.add_argument("--variants", type=int, default=32)
    ap.add_argument("--train-tokens", type=float, default=1e9, help="tokens each variant trains on")
    ap.add_argument("--expansion", type=int, default=16)
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--gpu-gb", type=float, default=141, help="GPU memory (H200)")
    ap.add_argument("--usd-per-gb-month", type=float, default=0.023, help="assumed object-store list price")
    ap.add_argument(
        "--record-bytes",
        type=float,
        default=250,
        help="bytes of one commit record in zarr.json (~210 + hook names)",
    )
    a = ap.parse_args()
    print(
        f"inputs: tokens={a.tokens:.0e} layers={a.layers} dtype={a.dtype} codec_ratio={a.codec_ratio} "
        f"tokens_per_shard={a.tokens_per_shard} gpus={a.gpus} variants={a.variants} expansion={a.expansion} "
        f"harvest_flops={a.harvest_flops:.2g} train_flops={a.train_flops:.2g} $/GB-month={a.usd_per_gb_month}"
    )
    rows = []
    for d, p in zip(a.d, a.params, strict=True):
        a.d, a.params = d, p
        rows.append((f"d={d} P={p:.1e}", estimate(a)))
    keys = list(rows[0][1])
    print(f"{'':28}" + "".join(f"{name:>20}" for name, _ in rows))
    for k in keys:
        print(f"{k:28}" + "".join(f"{r[k]:>20,.1f}" for _, r in rows))


if __name__ == "__main__":
    main()
