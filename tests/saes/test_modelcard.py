"""The model card ``gsae push`` writes: front matter, model identity, evaluation and loading
sections follow the pushed folders' ``cfg.json`` (the architectures, the hub model, the weights)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from pipeline.saes.modelcard import DISTRIBUTION, SAELENS_NATIVE, SAELENS_PLUGIN, CardVariant, model_card
from tests.saes.conftest import GSAE_SEL, TOPK, Trained

ROOT = Path(__file__).resolve().parents[2]
HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
SHA = "b" * 64


def _variant(trained: Trained, name: str, **identity: str) -> CardVariant:
    cfg = json.loads((trained.dirs[name] / "cfg.json").read_text())
    return CardVariant(name, {**cfg, **identity})


def _front(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_names_are_the_projects_own():
    project = (ROOT / "pyproject.toml").read_text().split("[project]\n", 1)[1]
    assert re.match(r'name = "([^"]+)"', project)[1] == DISTRIBUTION  # type: ignore[index]
    saelens_plugin = pytest.importorskip("pipeline.saes.saelens_plugin")
    assert saelens_plugin.ARCHITECTURE in SAELENS_PLUGIN
    from sae_lens.registry import SAE_CLASS_REGISTRY

    assert all(a in SAE_CLASS_REGISTRY for a in SAELENS_NATIVE)


def test_one_hub_model_becomes_the_base_model_and_its_weights_are_named(trained: Trained):
    ident = {"model_hub_id": HUB_ID, "model_weights": "GGUF Q4_1, dequantized", "model_weights_sha256": SHA}
    variants = [_variant(trained, TOPK, **ident), _variant(trained, GSAE_SEL, **ident)]
    card = model_card("me/saes", variants, version="1.2.3")
    assert _front(card) == {
        "library_name": "saelens",
        "tags": ["sparse-autoencoder", "saelens", DISTRIBUTION, "g-sae"],
        "base_model": HUB_ID,
    }
    assert f"- all SAEs: model `{HUB_ID}`, weights GGUF Q4_1, dequantized (sha256 `{SHA}`)" in card
    assert f'pip install "{DISTRIBUTION}[interop]==1.2.3"' in card
    assert "## Evaluation" not in card  # no evaluate.json given
    other = model_card("me/saes", variants, version="1.2.3", figures={"some-other-sae": {"fvu": 0.5}})
    assert "## Evaluation" not in other  # figures of other SAEs only: no empty table


def test_different_models_are_listed_per_sae_and_no_base_model_is_claimed(trained: Trained):
    a = _variant(trained, TOPK, model_hub_id=HUB_ID, model_weights="float32", model_weights_sha256=SHA)
    b = _variant(
        trained, GSAE_SEL, model_hub_id="other/model", model_weights="bf16", model_weights_sha256="c" * 64
    )
    card = model_card("me/saes", [a, b], version="1.2.3")
    assert "base_model" not in _front(card)
    assert f"- `{TOPK}`: model `{HUB_ID}`, weights float32" in card
    assert f"- `{GSAE_SEL}`: model `other/model`, weights bf16" in card


def test_a_topk_only_card_needs_no_plugin(trained: Trained):
    local = _variant(trained, TOPK, model_name="models/tiny-llama")  # model.name, a local folder
    card = model_card("me/saes", [local], version="unknown")
    assert "base_model" not in _front(card)  # only a recorded model_hub_id is claimed as the base model
    assert "saelens_plugin" not in card and "g-sae" not in _front(card)["tags"]
    assert 'SAE.from_pretrained("me/saes", "topk-k4-x4-s0")' in card
    assert f"pip install {DISTRIBUTION}`" in card  # an unknown version is not pinned


def test_a_folder_from_before_the_identity_fields_says_so():
    old = CardVariant(
        "topk-k4-x4-s0", {"architecture": "topk", "k": 4, "d_in": 16, "d_sae": 64, "model": "gpt2"}
    )
    card = model_card("me/saes", [old], version="1.2.3")
    assert "- all SAEs: model `gpt2`, weights not recorded (trained before they were)\n" in card
    assert "| `topk-k4-x4-s0` | topk | – | 16 | 64 | 4 | – | – | – | – |" in card
