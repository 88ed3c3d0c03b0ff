"""Loading the embedded SmolLM2: ``load_model`` (the GGUF converted once into a cached HF
folder, pipeline/lm/gguf_folder.py) vs transformers' own GGUF load, in one process; and the
peak RSS of what a distributed harvest's driver loads (``load_model_spec``: tokenizer and
config, blocks found on a meta-device skeleton) vs the full ``load_model``, each in a fresh
process.

    .venv/bin/python -m benchmarks.components.model_load [--parts time rss] [--dtypes float32 bfloat16]

``time``: imports and the one-time conversion happen before either timing (a first
``load_model``); prints both times and their ratio. ``rss``: one child per loader and
``model.dtype`` (after the conversion): ``ru_maxrss`` and wall seconds of the load, the
baseline of the child having imported torch and transformers' auto classes, and the bytes
of parameter storage the loaded object holds. The converted folder is float32
safetensors, which transformers maps from the file: a float32 load touches few pages until
the model runs, while another dtype copies every weight into memory.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import time

import torch

from benchmarks.common.child import run_module
from pipeline.core.loader import params_from_dict
from pipeline.lm.models import load_model, load_model_spec, smollm2_gguf

MODULE = "benchmarks.components.model_load"


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(loader: str, dtype: str) -> dict[str, float]:
    """Peak RSS before and after one load of the embedded SmolLM2 with ``loader`` (``full`` | ``spec``)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer  # noqa: F401  (the baseline)

    cfg = params_from_dict({}, ["model.device=cpu", f"model.dtype={dtype}"]).model
    before = _peak_mib()
    start = time.perf_counter()
    loaded = load_model(cfg) if loader == "full" else load_model_spec(cfg)
    seconds = time.perf_counter() - start
    assert loaded.d_model == 576
    held = [v for v in vars(loaded).values() if isinstance(v, torch.nn.Module)]
    distinct = {id(p): p for m in held for p in m.parameters()}  # the blocks are part of the model
    params = sum(p.numel() * p.element_size() for p in distinct.values())
    return {"baseline_mib": before, "peak_mib": _peak_mib(), "seconds": seconds, "param_mib": params / 2**20}


def part_time() -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

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


def part_rss(dtypes: list[str]) -> None:
    load_model_spec(params_from_dict({}, ["model.device=cpu"]).model)  # the conversion, if missing, here
    for dtype in dtypes:
        print(f"model.dtype={dtype}")
        for name, label in (("full", "load_model (driver before)"), ("spec", "load_model_spec (driver now)")):
            g = json.loads(run_module(MODULE, "--child", name, "--dtypes", dtype))
            print(
                f"  {label:<29}: peak RSS {g['peak_mib']:6.0f} MiB (+{g['peak_mib'] - g['baseline_mib']:4.0f} "
                f"over the imports), parameters held {g['param_mib']:4.0f} MiB, {g['seconds']:.2f} s"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", nargs="+", default=["time", "rss"], choices=["time", "rss"])
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    ap.add_argument("--child", choices=["full", "spec"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.child:
        print(json.dumps(child(args.child, args.dtypes[0])))
        return
    if "time" in args.parts:
        part_time()
    if "rss" in args.parts:
        part_rss(args.dtypes)


if __name__ == "__main__":
    main()
