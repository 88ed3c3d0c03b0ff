"""``harvest.gradients: false``: activation-only stores, the early-exit forward, and what reads them.

The stored activations must equal a gradient harvest's bit for bit (the forward up to the
deepest hooked block is the same computation); nothing after that block may run; the reader
yields (act, None) in the same order; gradient-free architectures train and evaluate on
such stores, and a g-SAE is refused in one line.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from cache.reader import BatchReader, open_store, read_rows
from cache.verify import describe, verify
from pipeline.core.errors import CacheMismatch
from pipeline.core.loader import params_from_dict
from pipeline.evaluate.run import run_evaluate
from pipeline.harvest.forward import forward_activations, forward_backward
from pipeline.harvest.identity import store_key
from pipeline.harvest.run import run_harvest
from pipeline.lm.models import load_model
from pipeline.stores import heldout_params
from pipeline.train.run import run_train
from tests.clirun import run_cli
from tests.conftest import tiny_overrides

HOOKS = ("model.layers.1", "model.layers.3")


@pytest.fixture(scope="module")
def pair(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, list[str]]:
    """(gradient store, activation-only store, the latter's overrides) of the same tokens."""
    root = tmp_path_factory.mktemp("actonly")
    full, only = str(root / "full.zarr"), str(root / "only.zarr")
    run_harvest(params_from_dict({}, tiny_overrides(tiny_llama, full, tokens=512)))
    overrides = [*tiny_overrides(tiny_llama, only, tokens=512), "harvest.gradients=false"]
    run_harvest(params_from_dict({}, overrides))
    return full, only, overrides


def test_activations_equal_a_gradient_harvest_bit_for_bit(pair) -> None:
    full, only, _ = pair
    a, b = zarr.open_group(full, mode="r"), zarr.open_group(only, mode="r")
    np.testing.assert_array_equal(a["tokens"][:], b["tokens"][:])
    for hook in HOOKS:
        np.testing.assert_array_equal(a[f"{hook}/act"][:], b[f"{hook}/act"][:])
        assert f"{hook}/grad" not in b
    assert "loss" in a and "loss" not in b  # no logits were computed


def test_the_store_says_what_it_holds(pair, tiny_llama) -> None:
    full, only, overrides = pair
    info_full, info_only = open_store(full), open_store(only)
    assert info_full.has_grad and not info_only.has_grad
    assert info_only.array_names == ["tokens", f"{HOOKS[0]}/act", f"{HOOKS[1]}/act"]
    assert describe(only)["kind"] == "activations only" and describe(only)["has_grad"] is False
    assert describe(full)["kind"] == "activations and gradients"
    # the content key separates the two kinds; gradient stores keep the key they had before the option
    with_grad = params_from_dict({}, tiny_overrides(tiny_llama, full, tokens=512))
    assert store_key(params_from_dict({}, overrides)) != store_key(with_grad) == info_full.key
    report = verify(only)
    assert report.ok and report.complete and report.checked == info_only.n_shards


def test_forward_stops_after_the_deepest_hooked_block(tiny_llama) -> None:
    lm = load_model(params_from_dict({}, tiny_overrides(tiny_llama, "auto")).model)
    calls: dict[str, int] = {"block2": 0, "block3": 0, "head": 0}
    hooks = [
        lm.blocks[2].register_forward_hook(lambda *_: calls.__setitem__("block2", calls["block2"] + 1)),
        lm.blocks[3].register_forward_hook(lambda *_: calls.__setitem__("block3", calls["block3"] + 1)),
        lm.model.get_output_embeddings().register_forward_hook(
            lambda *_: calls.__setitem__("head", calls["head"] + 1)
        ),
    ]
    ids = torch.randint(1, 300, (2, 16))
    try:
        acts = forward_activations(lm, [0, 1], ids)
        assert calls == {"block2": 0, "block3": 0, "head": 0}
        reference = forward_backward(lm, [0, 1], ids)
        assert calls == {"block2": 1, "block3": 1, "head": 1}
    finally:
        for h in hooks:
            h.remove()
    for layer in (0, 1):
        assert not acts[layer].requires_grad
        torch.testing.assert_close(acts[layer], reference.acts[layer], rtol=0, atol=0)


def test_reader_yields_the_same_activations_and_no_gradients(pair) -> None:
    full, only, _ = pair
    kw = {"batch_size": 64, "seed": 3, "shuffle_buffer_shards": 1}
    with_grad = list(BatchReader(full, HOOKS[1], **kw).batches(0, 6))
    act_only = list(BatchReader(only, HOOKS[1], **kw).batches(0, 6))
    for (a, g), (b, none) in zip(with_grad, act_only, strict=True):
        assert g is not None and none is None
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    tokens, act, grad = read_rows(only, HOOKS[0], 10, 300)
    assert grad is None and act.shape == (290, 32) and tokens.shape == (290,)


def _project(overrides: list[str], root: Path, architectures: str) -> list[str]:
    return [
        *overrides,
        "harvest.layers=[1]",
        f"harvest.store={root / 'train.zarr'}",
        f"evaluate.store={root / 'heldout.zarr'}",
        "evaluate.tokens=256",
        "evaluate.batch_size=4",
        "evaluate.steer_latents=2",
        "evaluate.steer_contexts=2",
        f"evaluate.out={root / 'evaluate.json'}",
        f"evaluate.summary={root / 'summary.json'}",
        f"evaluate.report={root / 'report.md'}",
        f"evaluate.plots_dir={root / 'plots'}",
        f"train.out_dir={root / 'saes'}",
        f"train.metrics_out={root / 'train.json'}",
        f"train.curves_dir={root / 'curves'}",
        "train.tokens=512",
        "train.batch_size=128",
        "train.warmup_steps=1",
        "train.init_sample_tokens=256",
        "train.device=cpu",
        f"train.grid.architecture={architectures}",
        "train.grid.k=[4]",
        "train.grid.expansion=[2]",
        "train.grid.beta=[1.0]",
    ]


def test_topk_trains_and_evaluates_on_activation_only_stores(pair, tmp_path) -> None:
    _, _, overrides = pair
    params = params_from_dict({}, _project(overrides, tmp_path, "[topk,batchtopk]"))
    train_url = run_harvest(params)
    held = heldout_params(params)
    assert not held.harvest.gradients  # the held-out harvest follows harvest.gradients
    held_url = run_harvest(held)
    assert not open_store(held_url).has_grad
    run_train(params, store_url=train_url, expected_key=None)
    cfg = json.loads((tmp_path / "saes" / "topk-k4-x2-s0" / "cfg.json").read_text())
    assert cfg["grad_scale"] == 1.0
    metrics = run_evaluate(params, store_url=held_url, expected_key=store_key(held))
    assert set(metrics) == {"topk-k4-x2-s0", "batchtopk-k4-x2-s0"}
    for m in metrics.values():
        assert 0 < m["fvu"] < 1.5 and np.isfinite(m["loss_recovered"]) and m["kl"] > 0
        assert "fo_loss_err" not in m and "fo_loss_delta" not in m  # no gradients, no first-order figures
    assert "fo_loss_err" not in (tmp_path / "curves" / "curves.csv").read_text()
    assert all("fo_loss_err" not in m for m in json.loads((tmp_path / "train.json").read_text()).values())


def test_a_gsae_is_refused_in_one_line(pair, tmp_path, capsys) -> None:
    _, only, overrides = pair
    params = tmp_path / "p.yaml"
    params.write_text("{}\n")
    args = ["train", "-p", str(params)]
    for o in _project(overrides, tmp_path, "[topk,gsae]"):
        args += ["-s", o]
    args += ["-s", f"train.store={only}", "-s", "harvest.layers=[1,3]"]
    code, _, err = run_cli(args, capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert "holds activations only" in err and "gsae-k4-b1-x2-aug-s0" in err
    assert not (tmp_path / "saes").exists()
    with pytest.raises(CacheMismatch, match="harvest.gradients: true"):
        run_train(
            params_from_dict({}, [*_project(overrides, tmp_path, "[gsae]"), "harvest.layers=[1,3]"]),
            store_url=only,
            expected_key=None,
        )
