"""Our side of ``benchmarks/peers/run.py``, run in ``.venv`` (one measurement per process).

    harvest: an activation-only float16 harvest through ``run_harvest`` (what ``gsae harvest``
             calls) with the model already loaded; times the harvest only, after a warm-up
             forward; bytes per token on disk; checks the store's tokens equal the contexts
             given to the peers.
    train:   ``run_train`` (what ``gsae train`` calls) on that store, one TopK k=32 x8 SAE,
             batch 4,096; the reader is wrapped to timestamp each batch as the trainer takes
             it, and the steady tok/s is read after the warm-up steps.

Prints one ``RESULT {json}`` line (benchmarks/peers/child_common.py).
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import ROOT
from benchmarks.peers.child_common import (
    BATCH_TOKENS,
    CONTEXT,
    LAYER,
    StepClock,
    dir_bytes,
    emit,
    load_contexts,
    versions,
)


def harvest_overrides(
    tokens: int, store: Path, cache_root: Path, model: str, autocast: str = "none"
) -> list[str]:
    """``-s`` overrides of an activation-only float16 harvest of ``tokens`` tokens of ``model`` into
    ``store``, the LM under ``autocast`` (``none`` or ``bfloat16``)."""
    per_shard = min(16384, tokens)
    return [
        f"model.name={model}",
        f"harvest.tokens={tokens}",
        f"harvest.store={store}",
        f"harvest.cache_root={cache_root}",
        f"harvest.layers=[{LAYER}]",
        "harvest.dtype=float16",
        f"harvest.tokens_per_shard={per_shard}",
        f"harvest.chunk_tokens={min(2048, per_shard)}",
        "model.device=cpu",
        f"harvest.autocast={autocast}",
        "harvest.gradients=false",
    ]


def train_overrides(tokens: int, work: Path, ks: list[int], seeds: list[int], sample: int) -> list[str]:
    """``-s`` overrides training TopK x8 SAEs at ``ks`` x ``seeds``, batch 4,096, outputs under ``work``."""
    return [
        f"train.tokens={tokens}",
        f"train.batch_size={BATCH_TOKENS}",
        "train.grid.architecture=[topk]",
        f"train.grid.k=[{','.join(map(str, ks))}]",
        f"train.grid.seed=[{','.join(map(str, seeds))}]",
        "train.grid.expansion=[8]",
        f"train.init_sample_tokens={sample}",
        f"train.out_dir={work / 'saes'}",
        f"train.metrics_out={work / 'metrics' / 'train_metrics.json'}",
        f"train.curves_dir={work / 'metrics' / 'curves'}",
        "train.device=cpu",
    ]


def params_for(overrides: list[str]) -> Any:
    from pipeline.core.loader import load_params

    return load_params(ROOT / "params.yaml", overrides)


def same_tokens(store: Path, contexts: np.ndarray) -> bool:
    import zarr

    stored = np.asarray(zarr.open_group(str(store), mode="r")["tokens"][:])
    return bool(np.array_equal(stored, contexts.reshape(-1)[: stored.size]))


def measure_harvest(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from pipeline.harvest.forward import forward_activations
    from pipeline.harvest.run import run_harvest
    from pipeline.lm.models import load_model
    from stages.allocator import tune_allocator

    tune_allocator()  # as `gsae harvest` does
    params = params_for(
        harvest_overrides(args.tokens, args.store, args.cache_root, args.model, args.autocast)
    )
    lm = load_model(params.model)
    contexts = load_contexts(args.contexts, args.tokens)
    forward_activations(lm, [LAYER], torch.from_numpy(contexts[:8].astype(np.int64)))  # warm-up
    start = time.perf_counter()
    run_harvest(params, lm=lm, overwrite=True)
    seconds = time.perf_counter() - start
    n = contexts.size
    return {
        "tokens": n,
        "seconds": seconds,
        "tok_s": n / seconds,
        "bytes": dir_bytes(args.store),
        "bytes_per_token": dir_bytes(args.store) / n,
        "same_tokens_as_peers": same_tokens(args.store, contexts),
    }


def timed_reader(clock: StepClock) -> type:
    """A ``BatchReader`` whose batches are timestamped as the trainer takes them."""
    from cache.reader import BatchReader

    class TimedReader(BatchReader):
        def batches(self, start_batch: int = 0, n_batches: int | None = None) -> Iterator[Any]:
            for batch in super().batches(start_batch, n_batches):
                clock.mark()
                yield batch

    return TimedReader


def measure_train(args: argparse.Namespace) -> dict[str, Any]:
    import pipeline.train.run
    from pipeline.stores import train_store
    from stages.allocator import tune_allocator

    overrides = harvest_overrides(args.tokens, args.store, args.cache_root, args.model, args.autocast)
    overrides += train_overrides(args.steps * BATCH_TOKENS, args.work, [32], [0], min(16384, args.tokens))
    params = params_for(overrides)
    clock = StepClock()
    pipeline.train.run.BatchReader = timed_reader(clock)  # type: ignore[attr-defined,misc]
    store = train_store(params)
    tune_allocator()  # as `gsae train` does
    start = time.perf_counter()
    pipeline.train.run.run_train(params, store_url=store.url, expected_key=store.key)
    result: dict[str, Any] = {"steps": len(clock.marks), "fit_s": time.perf_counter() - start}
    result.update(clock.steady_rate(args.warmup, BATCH_TOKENS))
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["harvest", "train"])
    ap.add_argument("--tokens", type=int, required=True, help="tokens harvested (a multiple of 128)")
    ap.add_argument("--store", type=Path, required=True)
    ap.add_argument("--cache-root", type=Path, required=True)
    ap.add_argument("--contexts", type=Path, default=ROOT / ".bench" / "contexts.npy")
    ap.add_argument("--work", type=Path, default=ROOT / ".bench" / "work" / "ours-train")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=8)
    ap.add_argument("--model", default="smollm2-135m", help="model.name: the alias or the converted folder")
    ap.add_argument("--autocast", choices=["none", "bfloat16"], default="none", help="harvest.autocast")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    assert args.tokens % CONTEXT == 0
    result = measure_harvest(args) if args.what == "harvest" else measure_train(args)
    result["versions"] = versions("torch", "transformers", "gsae-pipeline")
    emit(result)


if __name__ == "__main__":
    main()
