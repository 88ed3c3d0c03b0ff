"""Generic block discovery across model families, freezing, and block-output editing."""

from __future__ import annotations

import pytest
import torch

from pipeline.core.config import ModelConfig
from pipeline.core.errors import ConfigError, ModelLoadError
from pipeline.lm.models import edit_block_output, find_blocks, load_model
from tests.lm_factory import build_model


@pytest.mark.parametrize(
    ("kind", "path"), [("llama", "model.layers"), ("gpt2", "transformer.h"), ("neox", "gpt_neox.layers")]
)
def test_find_blocks(kind, path):
    model = build_model(kind, vocab_size=64, n_layers=3)
    found, blocks = find_blocks(model)
    assert found == path and len(blocks) == 3


def test_find_blocks_gemma():
    from transformers import AutoModelForCausalLM, GemmaConfig

    cfg = GemmaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=8,
    )
    assert find_blocks(AutoModelForCausalLM.from_config(cfg))[0] == "model.layers"


def test_load_freezes_and_names_hooks(tiny_gpt2):
    lm = load_model(ModelConfig(name=str(tiny_gpt2), device="cpu"))
    assert not any(p.requires_grad for p in lm.model.parameters())
    assert not lm.model.training
    assert lm.hook_name(2) == "transformer.h.2" and lm.max_length == 256
    with pytest.raises(ConfigError, match="out of range"):
        lm.hook_name(4)
    with pytest.raises(ConfigError, match="out of range"):
        lm.hook_name(-1)


def test_edit_block_output_replaces_hidden(tiny_llama):
    lm = load_model(ModelConfig(name=str(tiny_llama), device="cpu"))
    ids = torch.tensor([[0, 5, 6, 7, 8]])
    clean = lm.model(input_ids=ids).logits
    with edit_block_output(lm.blocks[1], lambda h: h * 0):
        ablated = lm.model(input_ids=ids).logits
    with edit_block_output(lm.blocks[1], lambda h: None):
        same = lm.model(input_ids=ids).logits
    after = lm.model(input_ids=ids).logits
    assert not torch.allclose(clean, ablated)
    assert torch.equal(clean, same) and torch.equal(clean, after)


def test_missing_model_folder(tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        load_model(ModelConfig(name=str(tmp_path / "missing")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(ModelConfig(name=str(tmp_path / "empty")))
