"""Slow path: a few hundred tokens of python-docs through the real embedded SmolLM2."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from cache.store import read_info
from cache.verify import verify
from pipeline.core.loader import params_from_dict
from pipeline.harvest.forward import forward_backward
from pipeline.harvest.run import run_harvest
from pipeline.lm.models import load_model

pytestmark = pytest.mark.slow


def test_smollm2_python_docs_harvest(tmp_path):
    url = str(tmp_path / "smol.zarr")
    params = params_from_dict(
        {},
        [
            "model.device=cpu",
            "harvest.layers=[15]",
            "harvest.tokens=256",
            f"harvest.store={url}",
            f"harvest.cache_root={tmp_path / 'cache'}",  # the DVC pointer too: nothing in the repo
            "harvest.tokens_per_shard=128",
            "harvest.chunk_tokens=128",
            "harvest.batch_size=2",
        ],
    )
    lm = load_model(params.model)
    assert (lm.block_path, lm.n_layers, lm.d_model) == ("model.layers", 30, 576)
    run_harvest(params, lm=lm)
    info = read_info(url)
    assert info.complete and info.committed_tokens == 256 and info.hooks == ("model.layers.15",)
    # identity that travels: the alias stays the model's name, the tokenizer is the hub id AutoTokenizer loads
    assert info.model == "smollm2-135m" and info.tokenizer == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert info.provenance.model_hub_id == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert info.provenance.model_weights is not None and "GGUF Q4_1" in info.provenance.model_weights
    assert lm.identity is not None and info.provenance.model_weights_sha256 == lm.identity.sha256
    assert verify(url).ok
    group = zarr.open_group(url, mode="r")
    act = np.asarray(group["model.layers.15/act"][:], dtype=np.float32)
    grad = np.asarray(group["model.layers.15/grad"][:], dtype=np.float32)
    assert np.isfinite(act).all() and np.isfinite(grad).all()
    # DESIGN §4: residual norms in the hundreds, per-token gradient norms ~0.1-1 (sum loss).
    body = np.arange(256) % 128 != 0
    assert 50 < np.linalg.norm(act[body], axis=1).mean() < 2000
    gnorm = np.linalg.norm(grad[body & (np.arange(256) % 128 != 127)], axis=1).mean()
    assert 0.01 < gnorm < 10
    # The stored fp16 gradient agrees with a fresh float32 computation.
    ids = np.asarray(group["tokens"][:128]).reshape(1, 128)
    import torch

    ref = forward_backward(lm, [15], torch.from_numpy(ids)).grads[15][0].numpy()
    assert np.abs(grad[:128] - ref).max() <= 2e-3 * np.abs(ref).max()


def test_converted_folder_computes_what_the_gguf_does():
    """load_model reads the GGUF converted once into a folder (pipeline.lm.gguf_folder): same tokens,
    same logits, bit for bit, as transformers' own GGUF load."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pipeline.lm.gguf_folder import DONE, converted_folder
    from pipeline.lm.models import smollm2_gguf

    gguf = smollm2_gguf()
    folder = converted_folder(gguf)
    assert (folder / DONE).is_file() and converted_folder(gguf) == folder
    text = "def read_rows(url, hook, start, stop):\n    return np.concatenate(parts)  # 3 × 4 ≠ 13"
    tok_gguf = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tok_folder = AutoTokenizer.from_pretrained(folder)
    ids = tok_gguf(text)["input_ids"]
    assert tok_folder(text)["input_ids"] == ids
    assert (tok_folder.bos_token_id, tok_folder.eos_token_id) == (
        tok_gguf.bos_token_id,
        tok_gguf.eos_token_id,
    )
    batch = torch.tensor([ids])
    with torch.no_grad():
        ref = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        want = ref.eval()(input_ids=batch).logits
        del ref
        got = load_model(params_from_dict({}, ["model.device=cpu"]).model).model(input_ids=batch).logits
    torch.testing.assert_close(got, want, rtol=0, atol=0)
