"""``gsae export --format sparsify``: TopK variants load in the real sparsify install; g-SAEs are refused."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from pipeline.core.errors import ExportError
from pipeline.saes import REGISTRY
from pipeline.saes.export import export_sae
from pipeline.saes.io import load_sae, save_sae
from tests.clirun import run_cli
from tests.saes.conftest import GSAE_AUG, GSAE_SEL, TOPK, Trained
from tests.saes.test_contract import data, make

sparsify = pytest.importorskip("sparsify")
SparseCoder = sparsify.SparseCoder

pytestmark = pytest.mark.usefixtures("one_thread")
TOL = 1e-5  # max abs difference allowed, relative to the activation scale (mean ‖x‖)


def test_topk_export_loads_in_sparsify_with_equal_encode_decode(
    trained: Trained, tmp_path: Path, capsys, caplog
) -> None:
    dest = tmp_path / "sparsify" / "layers.1"
    code, out, err = run_cli(["export", "--format", "sparsify", str(trained.dirs[TOPK]), str(dest)], capsys)
    assert code == 0, err
    assert out.strip() == str(dest)
    with caplog.at_level(logging.WARNING):
        sc = SparseCoder.load_from_disk(dest)
    assert "Dropping extra args" not in caplog.text  # sparsify knows every cfg.json field
    ours, _ = load_sae(trained.dirs[TOPK])
    assert (sc.d_in, sc.num_latents, sc.cfg.k, sc.cfg.activation) == (16, 64, 4, "topk")
    x = trained.x
    with torch.no_grad():
        ref = ours(x)
        enc = sc.encode(x)
        dense = torch.zeros(x.shape[0], 64).scatter(1, enc.top_indices, enc.top_acts)
        enc_diff = (dense - ref.acts).abs().max().item()
        dec_diff = (sc.decode(ref.values, ref.indices) - ref.x_hat).abs().max().item()
        fwd_diff = (sc(x).sae_out - ref.x_hat).abs().max().item()
    assert max(enc_diff, dec_diff, fwd_diff) <= TOL * trained.scale, (enc_diff, dec_diff, fwd_diff)
    assert (ref.acts != 0).sum(1).float().mean() > 2  # a non-trivial code
    assert json.loads((dest / "cfg.json").read_text())["num_latents"] == 64
    assert json.loads((dest / "gsae_source.json").read_text())["variant"] == TOPK
    # the source folder is untouched and the export is a separate folder
    assert sorted(p.name for p in trained.dirs[TOPK].iterdir()) == ["cfg.json", "sae_weights.safetensors"]


@pytest.mark.parametrize("name", [GSAE_AUG, GSAE_SEL])
def test_gsae_export_is_refused_in_one_line(trained: Trained, tmp_path: Path, capsys, name: str) -> None:
    dest = tmp_path / "out"
    code, _, err = run_cli(["export", "--format", "sparsify", str(trained.dirs[name]), str(dest)], capsys)
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("gsae: error:") and "'gsae' cannot be exported to sparsify" in lines[0]
    assert not dest.exists()


def test_export_refuses_to_overwrite_a_variant_folder(trained: Trained, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="overwrite"):
        export_sae(trained.dirs[TOPK], trained.dirs[TOPK], "sparsify")
    with pytest.raises(ExportError, match="holds a trained variant"):
        export_sae(trained.dirs[TOPK], trained.dirs[GSAE_AUG], "sparsify")
    with pytest.raises(ExportError, match="unknown export format"):
        export_sae(trained.dirs[TOPK], tmp_path / "x", "nope")


@pytest.mark.parametrize("arch", sorted(REGISTRY))
def test_only_topk_exports_to_sparsify(arch: str, tmp_path: Path) -> None:
    """Contract over the registry: sparsify gets exactly TopK models; anything else is refused."""
    save_sae(make(arch), tmp_path / "v", {"hook_name": "model.layers.3"}, act_scale=0.5)
    if arch != "topk":
        with pytest.raises(ExportError, match=f"'{arch}' cannot be exported"):
            export_sae(tmp_path / "v", tmp_path / "out", "sparsify")
        assert not (tmp_path / "out").exists()
        return
    export_sae(tmp_path / "v", tmp_path / "out", "sparsify")
    sc = SparseCoder.load_from_disk(tmp_path / "out")
    ours, _ = load_sae(tmp_path / "v")
    x, _ = data(scale=4.0)
    with torch.no_grad():
        ref, enc = ours(x), sc.encode(x)
    dense = torch.zeros_like(ref.acts).scatter(1, enc.top_indices, enc.top_acts)
    assert (dense - ref.acts).abs().max().item() <= TOL * float(x.norm(dim=1).mean())
