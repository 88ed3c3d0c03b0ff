"""sparsify's side of ``benchmarks/peers/run.py``, run in ``.bench/venvs/sparsify`` (eai-sparsify 1.3.3).

    sweep: TopK SAEs (4,608 latents) at each k of ``--ks`` on block 15 of the converted
           SmolLM2 folder, trained on the fly (sparsify runs the model forward for every batch
           and trains on the hooked output; it keeps no activation cache). One
           ``sparsify.Trainer`` run per k: it cannot sweep k in one run, but it trains several
           seeds of one configuration in one run (``init_seeds``), so each run trains both seeds
           from one model forward per batch. All runs share one process and one loaded model
           (its best case; its CLI would reload the model per run).

Nearest honest equivalents: sparsify's CLI loads the model with ``device_map`` on CUDA, so we
call ``sparsify.Trainer`` directly with the model on CPU (``AutoModel``: what its CLI loads for
the default ``fvu`` loss); optimizer Adam at our learning rate (its default is signum); the
BOS token is excluded (``exclude_tokens``), as our trainer excludes each context's first
position; batch 32 contexts x 128 = 4,096 tokens; one pass over the given contexts.

Prints one ``RESULT {json}`` line (benchmarks/peers/child_common.py).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import time
from pathlib import Path
from typing import Any

from benchmarks.peers.child_common import BATCH_TOKENS, CONTEXT, LAYER, WIDTH, emit, load_contexts, versions


def load_model(folder: Path) -> Any:
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(folder), dtype=torch.float32)
    model.requires_grad_(False)
    return model.eval()


def contexts_dataset(path: Path, tokens: int) -> Any:
    from datasets import Dataset

    contexts = load_contexts(path, tokens)
    return Dataset.from_dict({"input_ids": contexts.tolist()}).with_format("torch")


def train_config(k: int, seeds: list[int], args: argparse.Namespace) -> Any:
    from sparsify import SparseCoderConfig, TrainConfig

    return TrainConfig(
        SparseCoderConfig(num_latents=WIDTH, k=k),
        batch_size=BATCH_TOKENS // CONTEXT,
        optimizer="adam",
        lr=args.lr,
        lr_warmup_steps=args.warmup_steps,
        hookpoints=[f"layers.{LAYER}"],
        init_seeds=seeds,
        exclude_tokens=[args.bos],
        log_to_wandb=False,
        save_every=10**9,
        save_dir=str(args.work / f"k{k}"),
    )


def sweep(args: argparse.Namespace) -> dict[str, Any]:
    from sparsify import Trainer

    seeds = [int(s) for s in args.seeds.split(",")]
    model = load_model(args.model)
    dataset = contexts_dataset(args.contexts, args.tokens)
    runs = []
    for k in (int(k) for k in args.ks.split(",")):
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # its per-run prints would flood our log
            Trainer(train_config(k, seeds, args), dataset, model).fit()
        runs.append({"k": k, "seeds": seeds, "seconds": time.perf_counter() - start})
        logging.info("sparsify k=%d seeds=%s: %.1f s", k, seeds, runs[-1]["seconds"])
    return {"runs": runs, "tokens_per_run": len(dataset) * CONTEXT, "variants": len(runs) * len(seeds)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["sweep"])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--contexts", type=Path, required=True)
    ap.add_argument("--tokens", type=int, required=True)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--ks", default="16,32,64,128")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--bos", type=int, required=True)
    ap.add_argument("--lr", type=float, default=4e-4)
    ap.add_argument("--warmup-steps", type=int, default=20)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s child %(message)s", datefmt="%H:%M:%S")
    result = sweep(args)
    result["versions"] = versions("torch", "transformers", "eai-sparsify")
    emit(result)


if __name__ == "__main__":
    main()
