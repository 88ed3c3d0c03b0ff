"""SAELens's side of ``benchmarks/peers/run.py``, run in ``.bench/venvs/saelens`` (sae-lens 6.54.12).

    cache: ``CacheActivationsRunner`` on block 15 (``model.layers.15``) of the converted
           SmolLM2 folder (``model_class_name="AutoModelForCausalLM"``), float16, the given
           pre-tokenized contexts; times ``run()`` only, after a warm-up forward; bytes per
           token on disk (an Arrow dataset: activations + token ids, uncompressed).
    train: ``LanguageModelSAETrainingRunner`` with ``use_cached_activations=True`` on that
           cache, ``TopKTrainingSAEConfig`` k=32, 4,608 latents, batch 4,096 tokens; each
           ``SAETrainer.step`` is timestamped and the steady tok/s is read after the warm-up.
    sweep: one cache, then one training per (k, seed) on it, all in this one process; the
           model loaded once is handed to every training (its best case).

Nearest honest equivalents: the pre-tokenized contexts are handed over as an in-memory HF
``datasets`` dataset with an ``input_ids`` column (``override_dataset``); ``prepend_bos=False``
because each context already starts with BOS; the BOS token is excluded from training
(``exclude_special_tokens``), as our trainer excludes each context's first position;
``normalize_activations="none"`` and SAELens's own TopK defaults otherwise; Adam at our
learning rate with 20 warm-up steps; a 65,536-token mixing buffer (``n_batches_in_buffer``
= 512: its default buffer is smaller than one batch); no W&B, no evals, no checkpoints.

Prints one ``RESULT {json}`` line (benchmarks/peers/child_common.py).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

from benchmarks.peers.child_common import (
    BATCH_TOKENS,
    CONTEXT,
    D_MODEL,
    HOOK,
    WIDTH,
    StepClock,
    dir_bytes,
    emit,
    load_contexts,
    versions,
)

# SAELens 6's mixing buffer holds n_batches_in_buffer x context_size tokens: its default (20)
# is smaller than one 4,096-token batch and is refused, so 65,536 tokens, our shuffle buffer.
MIX_BUFFER_TOKENS = 65536


def contexts_dataset(path: Path, tokens: int) -> Any:
    from datasets import Dataset

    return Dataset.from_dict({"input_ids": load_contexts(path, tokens).tolist()})


def cache_config(args: argparse.Namespace, out: Path) -> Any:
    from sae_lens import CacheActivationsRunnerConfig

    per_shard = min(16384, args.tokens)  # one Arrow shard per 16,384 tokens, like our shards
    return CacheActivationsRunnerConfig(
        dataset_path=str(args.contexts),
        model_name=str(args.model),
        model_class_name="AutoModelForCausalLM",
        model_batch_size=8,
        hook_name=HOOK,
        d_in=D_MODEL,
        training_tokens=args.tokens,
        context_size=CONTEXT,
        new_cached_activations_path=str(out),
        dtype="float16",
        device="cpu",
        buffer_size_gb=(per_shard * D_MODEL * 2 + 0.5) / 1e9,
        prepend_bos=False,
        streaming=False,
        autocast_lm=args.autocast_lm,
    )


def build_cache(args: argparse.Namespace, out: Path) -> tuple[Any, dict[str, Any]]:
    """Run the cache runner into ``out``; returns its model and the figures."""
    import torch
    from sae_lens import CacheActivationsRunner

    dataset = contexts_dataset(args.contexts, args.tokens)
    runner = CacheActivationsRunner(cache_config(args, out), override_dataset=dataset)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.autocast_lm):
        runner.model(torch.tensor(dataset[:8]["input_ids"]))  # warm-up
    start = time.perf_counter()
    runner.run()
    seconds = time.perf_counter() - start
    size = dir_bytes(out)
    n = len(dataset) * CONTEXT
    figures = {
        "tokens": n,
        "seconds": seconds,
        "tok_s": n / seconds,
        "bytes": size,
        "bytes_per_token": size / n,
    }
    return runner.model, figures


def train_config(args: argparse.Namespace, k: int, seed: int, tokens: int, out: Path | None) -> Any:
    from sae_lens import LanguageModelSAERunnerConfig, LoggingConfig, TopKTrainingSAEConfig

    steps = tokens // BATCH_TOKENS
    return LanguageModelSAERunnerConfig(
        sae=TopKTrainingSAEConfig(k=k, d_in=D_MODEL, d_sae=WIDTH, device="cpu", dtype="float32"),
        model_name=str(args.model),
        model_class_name="AutoModelForCausalLM",
        hook_name=HOOK,
        dataset_path=str(args.contexts),
        is_dataset_tokenized=True,
        streaming=False,
        context_size=CONTEXT,
        use_cached_activations=True,
        cached_activations_path=str(args.cache),
        training_tokens=tokens,
        train_batch_size_tokens=BATCH_TOKENS,
        n_batches_in_buffer=MIX_BUFFER_TOKENS // CONTEXT,
        prepend_bos=False,
        exclude_special_tokens=[args.bos],
        lr=args.lr,
        lr_warm_up_steps=min(20, steps // 4),
        lr_decay_steps=steps // 5,
        device="cpu",
        seed=seed,
        logger=LoggingConfig(log_to_wandb=False),
        checkpoint_path=None,
        output_path=None if out is None else str(out),
        verbose=False,
    )


def train_one(args: argparse.Namespace, cfg: Any, model: Any | None = None) -> None:
    from sae_lens import LanguageModelSAETrainingRunner

    dataset = contexts_dataset(args.contexts, args.tokens)
    LanguageModelSAETrainingRunner(cfg, override_dataset=dataset, override_model=model).run()


def measure_train(args: argparse.Namespace) -> dict[str, Any]:
    from sae_lens.training.sae_trainer import SAETrainer

    clock = StepClock()
    step = SAETrainer.step

    def timed_step(self: Any, batch: Any) -> Any:
        clock.mark()
        return step(self, batch)

    SAETrainer.step = timed_step  # type: ignore[method-assign]
    start = time.perf_counter()
    train_one(args, train_config(args, 32, 0, args.steps * BATCH_TOKENS, None))
    result: dict[str, Any] = {"steps": len(clock.marks), "fit_s": time.perf_counter() - start}
    result.update(clock.steady_rate(args.warmup, BATCH_TOKENS))
    return result


def sweep(args: argparse.Namespace) -> dict[str, Any]:
    start = time.perf_counter()
    model, cache = build_cache(args, args.cache)
    trainings = []
    for k in (int(k) for k in args.ks.split(",")):
        for seed in (int(s) for s in args.seeds.split(",")):
            t0 = time.perf_counter()
            train_one(args, train_config(args, k, seed, args.tokens, args.work / f"k{k}-s{seed}"), model)
            trainings.append({"k": k, "seed": seed, "seconds": time.perf_counter() - t0})
            logging.info("SAELens k=%d seed=%d: %.1f s", k, seed, trainings[-1]["seconds"])
    return {"cache": cache, "trainings": trainings, "in_process_s": time.perf_counter() - start}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["cache", "train", "sweep"])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--contexts", type=Path, required=True)
    ap.add_argument("--tokens", type=int, required=True)
    ap.add_argument("--cache", type=Path, required=True, help="activation cache folder (written or read)")
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--bos", type=int, required=True)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=8)
    ap.add_argument("--ks", default="16,32,64,128")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--lr", type=float, default=4e-4)
    ap.add_argument("--autocast-lm", action="store_true", help="the cache's LM forward under bf16 autocast")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s child %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("sae_lens").setLevel(logging.WARNING)
    if args.what == "cache":
        result = build_cache(args, args.cache)[1]
    else:
        result = measure_train(args) if args.what == "train" else sweep(args)
    result["versions"] = versions("torch", "transformers", "sae-lens", "transformer-lens", "datasets")
    emit(result)


if __name__ == "__main__":
    main()
