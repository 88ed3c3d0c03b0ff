"""GPU benchmarks in one process: matmul ceiling, harvest MFU, trainer and reader throughput.

    python -m benchmarks.gpu.run [--parts peak,harvest,hpipe,train,reader,e2e] [--json out.json] [--smoke]

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
these models). FLOPs are counted from the shapes (see ``harvest_flops`` in benchmarks/gpu/shapes.py). ``--smoke``
shrinks everything so the script can be checked on a CPU. Each part lives in its own module:
``peak`` in measure.py, ``harvest`` / ``hpipe`` / ``writer`` in harvest.py, ``train`` / ``reader``
in train.py, ``e2e`` in e2e.py.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

import numpy as np
import torch

from benchmarks.gpu.e2e import part_e2e
from benchmarks.gpu.harvest import harvest_pipeline_ratio, part_harvest, part_writer
from benchmarks.gpu.measure import RESULTS, log, part_peak
from benchmarks.gpu.train import part_reader, part_train


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
