"""Loading the embedded SmolLM2: ``load_model`` (the GGUF converted once into a cached HF
folder, pipeline/lm/gguf_folder.py) vs transformers' own GGUF load, in one process.

    .venv/bin/python -m benchmarks.components.model_load

Imports and the one-time conversion happen before either timing (a first ``load_model``).
Prints both times and their ratio.
"""

from __future__ import annotations

import argparse
import logging
import time

import torch

from pipeline.core.loader import params_from_dict
from pipeline.lm.models import load_model, smollm2_gguf


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()  # no options: --help only
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logging.basicConfig(level=logging.WARNING)
    cfg = params_from_dict({}, ["model.device=cpu"]).model
    load_model(cfg)  # converts once when the folder is missing; imports transformers' modules
    start = time.perf_counter()
    load_model(cfg)
    folder = time.perf_counter() - start
    gguf = smollm2_gguf()
    start = time.perf_counter()
    AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    direct = time.perf_counter() - start
    print(f"load_model(smollm2-135m), converted folder : {folder:6.1f} s")
    print(f"transformers' GGUF load (tokenizer + model): {direct:6.1f} s")
    print(f"ratio GGUF / folder                         : {direct / folder:6.0f}x")


if __name__ == "__main__":
    main()
