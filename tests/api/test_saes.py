"""``gsae_pipeline.load_sae``: our trained folders and SAELens-written ones, used on stored rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import gsae_pipeline as gp
from cache.reader import read_rows
from pipeline.core.errors import SAEFormatError
from tests.api.conftest import GSAE, HOOK, TOPK, Project

pytest.importorskip("sae_lens")  # imported here as tests/saes/test_saelens.py does (its import warns)
from sae_lens import (  # noqa: E402
    JumpReLUSAE,
    JumpReLUSAEConfig,
    StandardSAE,
    StandardSAEConfig,
    TopKSAE,
    TopKSAEConfig,
)

T = 32


def stored(project: Project) -> tuple[torch.Tensor, torch.Tensor]:
    """Held-out activations and gradients as [contexts, T, d]."""
    _, act, grad = read_rows(project.heldout_store, HOOK, 0, 256)
    return torch.from_numpy(act).view(-1, T, 32), torch.from_numpy(grad).view(-1, T, 32)


def test_our_gsae_on_stored_contexts(project: Project) -> None:
    sae = gp.load_sae(project.sae(GSAE))
    assert isinstance(sae, gp.SAE) and sae.uses_grad and not sae.training
    assert sae.cfg["hook_name"] == HOOK and sae.cfg["architecture"] == "gsae"
    x, g = stored(project)
    codes = sae.encode(x[:, 1:], g[:, 1:])
    assert codes.shape == (8, T - 1, 64)
    rows = sae(x[:, 1:].reshape(-1, 32), g[:, 1:].reshape(-1, 32))
    assert torch.equal(codes.reshape(-1, 64), rows.acts)
    assert ((codes > 0).sum(-1) <= 4).all()
    twin = sae.gradient_free_twin()
    assert twin is not None and not torch.equal(twin.encode(x[:, 1:]), codes)
    x_hat = sae.decode(codes)
    assert torch.allclose(x_hat.reshape(-1, 32), rows.x_hat, atol=1e-5)
    with pytest.raises(ValueError, match="gradient"):
        sae.encode(x)


def test_our_topk_needs_no_gradient(project: Project) -> None:
    sae = gp.load_sae(project.sae(TOPK))
    x, _ = stored(project)
    out = sae(x)
    assert out.x_hat.shape == x.shape and out.indices.shape == (8, T, 4)


def test_a_saelens_topk_folder_loads_and_encodes_as_saelens_does(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ref = TopKSAE(TopKSAEConfig(d_in=16, d_sae=48, k=5))
    with torch.no_grad():
        ref.b_enc.normal_()
        ref.b_dec.normal_()
    ref.save_model(str(tmp_path / "topk"))
    sae = gp.load_sae(tmp_path / "topk")
    x = torch.randn(3, 7, 16)
    with torch.no_grad():
        assert torch.allclose(sae.encode(x), ref.encode(x), atol=1e-5)
        assert torch.allclose(sae(x).x_hat, ref(x), atol=1e-5)
        assert torch.allclose(sae.decode(sae.encode(x)), ref.decode(ref.encode(x)), atol=1e-5)


@pytest.mark.parametrize(
    ("arch", "make"),
    [
        ("standard", lambda: StandardSAE(StandardSAEConfig(d_in=8, d_sae=16))),
        ("jumprelu", lambda: JumpReLUSAE(JumpReLUSAEConfig(d_in=8, d_sae=16))),
    ],
)
def test_other_saelens_architectures_are_refused_by_name(tmp_path: Path, arch: str, make) -> None:
    make().save_model(str(tmp_path / arch))
    with pytest.raises(SAEFormatError, match=rf"architecture '{arch}' is not one this project.*sae_lens"):
        gp.load_sae(tmp_path / arch)


def test_a_rescaled_saelens_topk_is_refused(tmp_path: Path) -> None:
    TopKSAE(TopKSAEConfig(d_in=8, d_sae=16, k=2, rescale_acts_by_decoder_norm=True)).save_model(
        str(tmp_path / "r")
    )
    assert json.loads((tmp_path / "r" / "cfg.json").read_text())["rescale_acts_by_decoder_norm"] is True
    with pytest.raises(SAEFormatError, match="rescale_acts_by_decoder_norm=false"):
        gp.load_sae(tmp_path / "r")
