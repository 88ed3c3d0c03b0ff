"""The files ``gsae train`` writes: SAELens 6's layout, unit decoder rows, legacy folders still load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from pipeline.saes.io import LEGACY_WEIGHTS, WEIGHTS, find_variants, load_sae, save_sae
from tests.saes.conftest import GSAE_AUG, HOOK, TOPK, Trained

pytestmark = pytest.mark.usefixtures("one_thread")


def test_trained_folders_have_the_saelens_layout(trained: Trained) -> None:
    for name, d in trained.dirs.items():
        assert sorted(p.name for p in d.iterdir()) == ["cfg.json", WEIGHTS], name
        cfg = json.loads((d / "cfg.json").read_text())
        arch = name.split("-")[0]
        assert cfg["architecture"] == arch and cfg["d_in"] == 16 and cfg["d_sae"] == 64 and cfg["k"] == 4
        assert int(cfg["sae_lens_version"].split(".")[0]) >= 6
        assert cfg["metadata"]["sae_lens_version"] == cfg["sae_lens_version"]
        assert cfg["metadata"]["hook_name"] == "blocks.1.hook_resid_post"
        assert cfg["metadata"]["hf_hook_name"] == cfg["hook_name"] == HOOK
        assert cfg["metadata"]["model_name"] == cfg["model"] == "tiny-test-model"
        assert cfg["dtype"] == "float32" and cfg["apply_b_dec_to_input"] is True
        assert cfg["normalize_activations"] == "none" and cfg["cache_key"] == "k" * 64
        assert "activation_fn_str" not in cfg and "activation_fn" not in cfg  # no pre-6 "topk" hint
        assert cfg["grad_scale"] == cfg["train_grad_scale"] and cfg["train_act_scale"] != 1.0
        assert cfg["beta"] == (4.0 if arch == "gsae" else 0.0)
        w = load_file(str(d / WEIGHTS))
        assert {k: tuple(v.shape) for k, v in w.items()} == {
            "W_enc": (16, 64),
            "b_enc": (64,),
            "W_dec": (64, 16),
            "b_dec": (16,),
        }
        assert all(v.dtype == torch.float32 for v in w.values())
        assert (w["W_dec"].norm(dim=1) - 1).abs().max() < 1e-6, name


def _write_legacy(src: Path, dest: Path) -> None:
    """The same model as the folder ``src`` in the pre-SAELens layout (c folded into W_enc / W_dec)."""
    cfg = json.loads((src / "cfg.json").read_text())
    w = load_file(str(src / WEIGHTS))
    c = cfg["train_act_scale"]
    legacy = {"W_enc": w["W_enc"] * c, "b_enc": w["b_enc"] * c, "W_dec": w["W_dec"] / c, "b_dec": w["b_dec"]}
    old_cfg = {k: v for k, v in cfg.items() if k not in ("sae_lens_version", "metadata", "decoder_rows")}
    old_cfg.update(
        grad_scale=c * cfg["grad_scale"], activation_fn_str="topk", activation_fn_kwargs={"k": cfg["k"]}
    )
    dest.mkdir(parents=True)
    save_file(legacy, str(dest / LEGACY_WEIGHTS))
    (dest / "cfg.json").write_text(json.dumps(old_cfg))


@pytest.mark.parametrize("name", [TOPK, GSAE_AUG])
def test_legacy_folders_still_load(trained: Trained, tmp_path: Path, name: str) -> None:
    _write_legacy(trained.dirs[name], tmp_path / "saes" / "old")
    new, _ = load_sae(trained.dirs[name])
    old, cfg = load_sae(tmp_path / "saes" / "old")
    c = cfg["train_act_scale"]
    a, b = new(trained.x, trained.g), old(trained.x, trained.g)
    assert torch.equal(a.indices.sort(1).values, b.indices.sort(1).values)
    assert torch.equal(a.values.sort(1).values * c, b.values.sort(1).values)  # legacy latents are c× larger
    assert torch.equal(a.x_hat, b.x_hat)
    save_sae(new, tmp_path / "saes" / "new", {"hook_name": HOOK})
    assert find_variants(tmp_path / "saes") == [tmp_path / "saes" / "new", tmp_path / "saes" / "old"]


def test_save_replaces_a_legacy_weights_file(trained: Trained, tmp_path: Path) -> None:
    _write_legacy(trained.dirs[TOPK], tmp_path / "v")
    sae, _ = load_sae(tmp_path / "v")
    save_sae(sae, tmp_path / "v", {"hook_name": HOOK})
    assert sorted(p.name for p in (tmp_path / "v").iterdir()) == ["cfg.json", WEIGHTS]
