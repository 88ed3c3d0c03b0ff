"""What ``benchmarks/peers/run.py`` prepares before it times anything (none of it is timed).

- one virtual environment per peer under ``.bench/venvs/<peer>/`` (CPU torch 2.13.0 first,
  then the pinned peer release), reused while its stamp file names the same pins;
- the embedded SmolLM2-135M GGUF converted once into an ordinary Hugging Face folder
  (``.bench/smollm2/``), because neither peer loads a GGUF file;
- the packed token contexts of our ``python-docs`` train split (``.bench/contexts.npy``,
  [n, 128] int32): exactly the contexts our harvest reads first, fed to both peers.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from benchmarks import ROOT

BENCH = ROOT / ".bench"
TORCH_PIN = "torch==2.13.0"
PEER_PINS = {"saelens": "sae-lens==6.54.12", "sparsify": "eai-sparsify==1.3.3"}
STAMP = ".installed"
log = logging.getLogger("peers")


def venv_python(peer: str) -> Path:
    return BENCH / "venvs" / peer / "bin" / "python"


def ensure_venv(peer: str) -> Path:
    """The peer's venv, created and installed unless its stamp already names the same pins."""
    folder = BENCH / "venvs" / peer
    stamp = folder / STAMP
    pins = f"{TORCH_PIN}\n{PEER_PINS[peer]}\n"
    if stamp.exists() and stamp.read_text() in (pins, PEER_PINS[peer] + "\n"):
        log.info("venv %s: reused (%s)", folder, PEER_PINS[peer])
        return venv_python(peer)
    log.info("venv %s: creating, installing %s then %s (minutes)", folder, TORCH_PIN, PEER_PINS[peer])
    shutil.rmtree(folder, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    pip = [str(venv_python(peer)), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, TORCH_PIN], check=True)  # first: the CPU build from local disk
    subprocess.run([*pip, PEER_PINS[peer]], check=True)
    stamp.write_text(pins)
    return venv_python(peer)


def converted_model() -> Path:
    """``.bench/smollm2``: the GGUF model dequantized to float32 and saved as a plain HF folder."""
    folder = BENCH / "smollm2"
    if (folder / "config.json").exists():
        return folder
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pipeline.lm.models import smollm2_gguf

    gguf = smollm2_gguf()
    log.info("converting %s to an HF folder %s (once)", gguf.name, folder)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    model.hf_quantizer = None  # a GGUF-loaded model refuses save_pretrained until these are cleared
    model.config.quantization_config = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = folder.with_suffix(".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(folder)
    return folder


def exported_contexts(tokens: int) -> Path:
    """``.bench/contexts.npy``: at least ``tokens`` tokens of our packed python-docs contexts."""
    path = BENCH / "contexts.npy"
    if path.exists() and np.load(path, mmap_mode="r").size >= tokens:
        return path
    from transformers import AutoTokenizer

    from pipeline.core.loader import load_params
    from pipeline.text.packing import pack_contexts
    from pipeline.text.sources import iter_documents

    params = load_params(ROOT / "params.yaml")
    tokenizer = AutoTokenizer.from_pretrained(converted_model())
    n = -(-tokens // params.data.context_length)
    log.info("exporting %d packed contexts of %s to %s", n, params.data.source, path)
    contexts = pack_contexts(iter_documents(params.data), tokenizer, params.data.context_length, n)
    np.save(path, contexts.astype(np.int32))
    return path


def bos_id() -> int:
    """The BOS token id (first position of every packed context)."""
    return int(np.load(BENCH / "contexts.npy", mmap_mode="r")[0, 0])
