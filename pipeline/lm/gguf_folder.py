"""A GGUF model converted once into an ordinary Hugging Face folder, kept in the user's cache.

transformers parses and dequantizes the whole GGUF file on every ``from_pretrained`` (the
tokenizer, the config and the weights each read it): ~35 s for SmolLM2-135M on 2 CPU cores,
where the same weights saved as safetensors load in ~1.5 s. The first load of a GGUF file
converts it (float32 weights, tokenizer, config) into
``<cache>/gguf/<file stem>-<sha256[:16]>/``, with ``<cache>`` = ``$GSAE_MODEL_CACHE`` or
``<XDG cache>/gsae``; later loads read that folder. The folder is written beside its final
name and renamed into place, so a killed conversion never leaves a half folder that counts.
Its contents come from the GGUF file alone (named by its hash), so what a model computes
and every cache key are unchanged (``tests/test_smollm2_slow.py`` compares both loads).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import torch

from pipeline.lm.filehash import file_digests

log = logging.getLogger(__name__)

DONE = "gsae-converted.json"
"""Written last inside a converted folder: its presence marks the conversion finished."""


def cache_root() -> Path:
    """``$GSAE_MODEL_CACHE``, else ``<XDG cache>/gsae``."""
    explicit = os.environ.get("GSAE_MODEL_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gsae"


def converted_folder(gguf: Path) -> Path:
    """The HF folder converted from ``gguf`` (converted now when missing)."""
    digest = file_digests([gguf])[0]
    target = cache_root() / "gguf" / f"{gguf.stem}-{digest[:16]}"
    if (target / DONE).is_file():
        return target
    log.info("converting %s into %s (once; later loads read the folder)", gguf.name, target)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _convert(gguf, tmp)
        (tmp / DONE).write_text(f'{{"gguf": "{gguf.name}", "sha256": "{digest}"}}\n')
        if (target / DONE).is_file():  # another process finished first: keep its folder
            shutil.rmtree(tmp)
        else:
            shutil.rmtree(target, ignore_errors=True)  # an unfinished folder from an older version
            tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _convert(gguf: Path, folder: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # A GGUF-loaded model refuses save_pretrained ("quantized with gguf") until these are cleared.
    model.hf_quantizer = None  # type: ignore[assignment]  # an attribute transformers sets, not a submodule
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
