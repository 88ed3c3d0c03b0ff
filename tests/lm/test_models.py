"""Generic block discovery across model families, freezing, and block-output editing."""

from __future__ import annotations

import pytest
import torch

from pipeline.core.config import ModelConfig
from pipeline.core.errors import ConfigError, ModelLoadError
from pipeline.lm.models import ModelSpec, edit_block_output, find_blocks, load_model, load_model_spec
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


def _same_layout(spec: ModelSpec, lm) -> None:
    """Everything a harvest's driver takes from the LM, identical from the spec and from the full load."""
    assert (spec.name, spec.revision, spec.tokenizer_name) == (lm.name, lm.revision, lm.tokenizer_name)
    assert (spec.block_path, spec.n_layers, spec.d_model, spec.max_length) == (
        lm.block_path,
        lm.n_layers,
        lm.d_model,
        lm.max_length,
    )
    assert [spec.hook_name(i) for i in range(spec.n_layers)] == [lm.hook_name(i) for i in range(lm.n_layers)]
    text = "def f(x):\n    return x + 1  # the same ids from both tokenizers"
    assert spec.tokenizer(text)["input_ids"] == lm.tokenizer(text)["input_ids"]
    # the spec holds no module, hence no weights: the blocks were found on a meta-device skeleton
    assert not any(isinstance(v, torch.nn.Module) for v in vars(spec).values())


@pytest.mark.parametrize("family", ["tiny_llama", "tiny_gpt2"])
def test_model_spec_gives_what_the_full_load_gives(family, request):
    cfg = ModelConfig(name=str(request.getfixturevalue(family)), device="cpu")
    spec = load_model_spec(cfg)
    _same_layout(spec, load_model(cfg))
    with pytest.raises(ConfigError, match="out of range"):
        spec.hook_name(spec.n_layers)


@pytest.mark.slow
def test_model_spec_of_the_embedded_smollm2():
    cfg = ModelConfig(name="smollm2-135m", device="cpu")
    spec = load_model_spec(cfg)
    assert (spec.block_path, spec.n_layers, spec.d_model) == ("model.layers", 30, 576)
    _same_layout(spec, load_model(cfg))


def test_model_spec_of_a_missing_folder_is_one_line(tmp_path):
    with pytest.raises(ModelLoadError, match="model folder not found"):
        load_model_spec(ModelConfig(name=str(tmp_path / "nothing-here")))
