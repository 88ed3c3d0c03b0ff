"""Harvest: stored activations/gradients equal an independent forward+backward; resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import zarr
from transformers import AutoModelForCausalLM

from cache.store import read_info
from pipeline.core.loader import params_from_dict
from pipeline.harvest.identity import store_key, store_url
from pipeline.harvest.run import run_harvest
from pipeline.stores import heldout_params
from tests._stores import downgrade_to_v1
from tests.conftest import tiny_overrides


def reference_act_grad(model_dir: Path, ids: np.ndarray, layers: list[int]) -> tuple[list, list]:
    """Independent computation: output_hidden_states + retain_grad, sum-CE backward."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ids_t = torch.from_numpy(ids).long()
    out = model(input_ids=ids_t, output_hidden_states=True, use_cache=False)
    hidden = [out.hidden_states[layer + 1] for layer in layers]
    for h in hidden:
        h.retain_grad()
    V = out.logits.shape[-1]
    F.cross_entropy(out.logits[:, :-1].reshape(-1, V), ids_t[:, 1:].reshape(-1), reduction="sum").backward()
    return [h.detach().numpy() for h in hidden], [h.grad.numpy() for h in hidden]


@pytest.mark.parametrize("family", ["tiny_llama", "tiny_gpt2"])
@pytest.mark.parametrize(("dtype", "rtol"), [("float16", 2e-3), ("float32", 1e-6)])
def test_stored_act_grad_match_direct_backward(family, dtype, rtol, request, tmp_path):
    model_dir = request.getfixturevalue(family)
    url = str(tmp_path / "s.zarr")
    params = params_from_dict(
        {}, [*tiny_overrides(model_dir, url, tokens=512, layers="[1,2]"), f"harvest.dtype={dtype}"]
    )
    run_harvest(params)
    group = zarr.open_group(url, mode="r")
    info = read_info(url)
    assert info.complete and info.committed_tokens == 512
    T = info.context_length
    ids = np.asarray(group["tokens"][:]).reshape(-1, T)
    acts, grads = reference_act_grad(model_dir, ids, [1, 2])
    for hook, act, grad in zip(info.hooks, acts, grads, strict=True):
        stored_act = np.asarray(group[f"{hook}/act"][:], dtype=np.float32).reshape(act.shape)
        stored_grad = np.asarray(group[f"{hook}/grad"][:], dtype=np.float32).reshape(grad.shape)
        # Relative to the tensor's scale: fp16 keeps ~3 significant digits.
        assert np.abs(stored_act - act).max() <= rtol * np.abs(act).max() + 1e-7
        assert np.abs(stored_grad - grad).max() <= rtol * np.abs(grad).max() + 1e-9
        assert np.all(stored_grad.reshape(-1, T, act.shape[-1])[:, -1] == 0)
        assert np.abs(grad).max() > 0
    loss = np.asarray(group["loss"][:]).reshape(-1, T)
    assert np.all(loss[:, -1] == 0) and np.all(loss[:, :-1] > 0)


def test_bos_starts_every_context(tiny_llama, tmp_path):
    url = str(tmp_path / "s.zarr")
    run_harvest(params_from_dict({}, tiny_overrides(tiny_llama, url, tokens=256)))
    ids = np.asarray(zarr.open_group(url, mode="r")["tokens"][:]).reshape(-1, 32)
    assert np.all(ids[:, 0] == 0)  # <bos> is id 0 of the test tokenizer
    assert np.all(ids[:, 1:] != 0)


def _store_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("fmt", ["v2", "v1"])
def test_resume_after_interrupt_is_byte_identical(tiny_llama, tmp_path, fmt):
    """``v1``: the interrupted store is rewritten as cache format version 1 wrote it; the resume
    upgrades it and the finished store is still byte-identical to an uninterrupted one."""
    full, part = tmp_path / "full.zarr", tmp_path / "part.zarr"
    run_harvest(params_from_dict({}, tiny_overrides(tiny_llama, str(full))))

    def stop_after_two(index: int) -> None:
        if index == 1:
            raise Interrupt

    params = params_from_dict({}, tiny_overrides(tiny_llama, str(part)))
    with pytest.raises(Interrupt):
        run_harvest(params, on_commit=stop_after_two)
    info = read_info(str(part))
    assert not info.complete and info.committed_shards == 2 and info.committed_tokens == 512
    if fmt == "v1":
        downgrade_to_v1(str(part))
        assert read_info(str(part)).version == 1

    seen: list[int] = []
    run_harvest(params, on_commit=seen.append)
    assert seen == [2, 3]  # only the missing shards were computed
    assert _store_bytes(part) == _store_bytes(full)


def test_complete_store_is_a_noop(tiny_llama, tmp_path):
    url = str(tmp_path / "s.zarr")
    params = params_from_dict({}, tiny_overrides(tiny_llama, url, tokens=256))
    run_harvest(params)
    seen: list[int] = []
    run_harvest(params, on_commit=seen.append)
    assert seen == []


def test_memory_fsspec_store(tiny_gpt2):
    url = "memory://gsae-test/store.zarr"
    run_harvest(params_from_dict({}, tiny_overrides(tiny_gpt2, url, tokens=256)))
    info = read_info(url)
    assert info.complete and info.hooks == ("transformer.h.1", "transformer.h.3")


def test_auto_store_path_is_key_derived_and_split_aware(tiny_llama, tmp_path):
    over = [*tiny_overrides(tiny_llama, "auto", tokens=256), f"harvest.cache_root={tmp_path}"]
    params = params_from_dict({}, over)
    key = store_key(params)
    assert store_url(params) == f"{tmp_path}/train/{key[:16]}.zarr"
    same = params_from_dict({}, over)
    assert store_key(same) == key
    held = heldout_params(params_from_dict({}, [*over, "evaluate.tokens=64"]))
    assert held.data.split == "heldout" and held.harvest.tokens == 64
    assert store_key(held) != key and "/heldout/" in store_url(held)
    changed = params_from_dict({}, [*over, "harvest.layers=[2]"])
    assert store_key(changed) != key


def test_train_and_heldout_tokens_differ(tiny_llama, tmp_path):
    over = [
        *tiny_overrides(tiny_llama, "auto", tokens=256),
        f"harvest.cache_root={tmp_path}",
        "evaluate.tokens=256",
    ]
    params = params_from_dict({}, over)
    train = zarr.open_group(run_harvest(params), mode="r")["tokens"][:]
    held = zarr.open_group(run_harvest(heldout_params(params)), mode="r")["tokens"][:]
    assert not np.array_equal(train, held)
