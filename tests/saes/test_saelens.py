"""Trained variant folders in the real SAELens 6 install: TopK loads as TopKSAE, a g-SAE only via our plug-in."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipeline.saes import REGISTRY, get_sae_class
from pipeline.saes.io import load_sae, save_sae
from tests.saes.conftest import GSAE_AUG, GSAE_SEL, TOPK, Trained
from tests.saes.test_contract import data, make

sae_lens = pytest.importorskip("sae_lens")
from sae_lens import SAE  # noqa: E402
from sae_lens.loading.pretrained_sae_loaders import handle_config_defaulting  # noqa: E402
from sae_lens.registry import SAE_CLASS_REGISTRY  # noqa: E402
from sae_lens.saes.topk_sae import TopKSAE  # noqa: E402

from pipeline.saes import saelens_plugin  # noqa: E402  (registers "gsae")

pytestmark = pytest.mark.usefixtures("one_thread")
TOL = 1e-5  # max abs difference allowed, relative to the activation scale (mean ‖x‖)


def test_topk_loads_as_saelens_topk_with_equal_encode_decode(trained: Trained) -> None:
    sl = SAE.load_from_disk(trained.dirs[TOPK])
    ours, _ = load_sae(trained.dirs[TOPK])
    assert type(sl) is TopKSAE and sl.cfg.k == 4 and sl.cfg.d_in == 16 and sl.cfg.d_sae == 64
    assert sl.cfg.metadata.hook_name == "blocks.1.hook_resid_post"
    x = trained.x
    with torch.no_grad():
        out = ours(x)
        acts = sl.encode(x)
        enc_diff = (acts - out.acts).abs().max().item()
        dec_diff = (sl.decode(out.acts) - out.x_hat).abs().max().item()
        fwd_diff = (sl(x) - out.x_hat).abs().max().item()
    assert max(enc_diff, dec_diff, fwd_diff) <= TOL * trained.scale, (
        enc_diff,
        dec_diff,
        fwd_diff,
        trained.scale,
    )
    same = ((acts != 0) == (out.acts != 0)).all(dim=1).float().mean().item()
    assert same >= 0.99  # the same latents fire (up to near-ties)
    assert (out.acts != 0).sum(1).float().mean() > 2  # a non-trivial code


@pytest.mark.parametrize("name", [GSAE_AUG, GSAE_SEL])
def test_gsae_loads_through_the_plugin_with_our_exact_selection(trained: Trained, name: str) -> None:
    sl = SAE.load_from_disk(trained.dirs[name])
    ours, cfg = load_sae(trained.dirs[name])
    assert type(sl) is saelens_plugin.GSAELensSAE
    assert (sl.cfg.k, sl.cfg.beta, sl.cfg.value_mode, sl.cfg.grad_scale) == (
        cfg["k"],
        cfg["beta"],
        cfg["value_mode"],
        cfg["grad_scale"],
    )
    x, g = trained.x, trained.g
    with torch.no_grad():
        out = ours(x, g)
        idx, vals = sl.select(x, g)
        acts = sl.encode(x, g)
        x_hat = sl(x, g)
        topk_idx = torch.topk(out.pre, 4, dim=1).indices
    assert torch.equal(idx.sort(1).values, out.indices.sort(1).values)  # the same latents, exactly
    assert torch.equal(acts, out.acts)
    assert (x_hat - out.x_hat).abs().max().item() <= TOL * trained.scale
    # the gradient matters here: read as TopK, the selection would differ on many tokens
    differs = (topk_idx.sort(1).values != out.indices.sort(1).values).any(1).float().mean().item()
    assert differs > 0.2, differs
    with pytest.raises(ValueError, match="gradient"):
        sl.encode(x)
    with pytest.raises(ValueError, match="gradient"):
        sl(x)


def test_without_the_plugin_a_gsae_folder_is_refused(trained: Trained, monkeypatch) -> None:
    monkeypatch.delitem(SAE_CLASS_REGISTRY, "gsae")
    with pytest.raises(KeyError, match="gsae"):
        SAE.load_from_disk(trained.dirs[GSAE_AUG])
    cfg = json.loads((trained.dirs[GSAE_AUG] / "cfg.json").read_text())
    assert handle_config_defaulting(dict(cfg))["architecture"] == "gsae"  # no pre-6 rewrite
    # even a cfg stripped of its version (SAELens's pre-6 migration) stays gsae: no topk hint in it
    stripped = {k: v for k, v in cfg.items() if k not in ("sae_lens_version", "metadata")}
    with pytest.raises(KeyError, match="gsae"):
        handle_config_defaulting(stripped)


def test_fresh_interpreter_without_plugin(trained: Trained) -> None:
    """What a SAELens user gets without importing the plug-in: TopK loads, the g-SAE raises."""
    code = (
        "import sys\nfrom sae_lens import SAE\n"
        "print(type(SAE.load_from_disk(sys.argv[1])).__name__)\n"
        "try:\n    s = SAE.load_from_disk(sys.argv[2])\n    print('LOADED', type(s).__name__)\n"
        "except Exception as e:\n    print('REFUSED', type(e).__name__, e)\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code, str(trained.dirs[TOPK]), str(trained.dirs[GSAE_AUG])],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).parent,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[-2:] == ["TopKSAE", "REFUSED KeyError 'gsae'"], res.stdout


@pytest.mark.parametrize("arch", sorted(REGISTRY))
def test_every_registered_architecture_loads_as_itself_or_is_refused(arch: str, tmp_path: Path) -> None:
    """Contract: SAELens gives the same architecture with our encode, or raises; never another model."""
    sae = make(arch, beta=3.0) if "beta" in get_sae_class(arch).grid_hparams else make(arch)
    sae.grad_scale = 7.0
    save_sae(sae, tmp_path / "v", {"hook_name": "model.layers.3", "model": "m"}, act_scale=2.0**-2)
    ours, _ = load_sae(tmp_path / "v")
    try:
        sl = SAE.load_from_disk(tmp_path / "v")
    except KeyError as exc:  # an architecture SAELens does not know (no plug-in): refused by name
        assert exc.args == (arch,)
        return
    assert sl.cfg.architecture() == arch
    x, g = data(scale=4.0)
    with torch.no_grad():
        out = ours(x, g)
        acts = sl.encode(x, g) if ours.uses_grad else sl.encode(x)
    assert (acts - out.acts).abs().max().item() <= TOL * float(x.norm(dim=1).mean())


@pytest.mark.parametrize("arch", ["batchtopk", "matryoshka"])
def test_threshold_saes_export_as_saelens_jumprelu_with_equal_encode(
    arch: str, tmp_path: Path, capsys
) -> None:
    """SAELens runs BatchTopK (and saves Matryoshka BatchTopK) at inference as JumpReLU with θ
    everywhere: the export gives our code."""
    from sae_lens.saes.jumprelu_sae import JumpReLUSAE

    from tests.clirun import run_cli

    sae = make(arch)
    for seed in range(4):  # training passes: the threshold
        sae(data(seed=20 + seed, scale=4.0 * 2.0**-2)[0])
    save_sae(sae, tmp_path / "v", {"hook_name": "model.layers.3", "model": "m"}, act_scale=2.0**-2)
    code, out, err = run_cli(
        ["export", "--format", "saelens", str(tmp_path / "v"), str(tmp_path / "sl")], capsys
    )
    assert code == 0, err
    sl = SAE.load_from_disk(tmp_path / "sl")
    ours, cfg = load_sae(tmp_path / "v")
    assert type(sl) is JumpReLUSAE and torch.equal(sl.threshold, torch.full((64,), cfg["threshold"]))
    x, _ = data(scale=4.0)
    with torch.no_grad():
        ref, acts = ours(x), sl.encode(x)
        x_hat = sl.decode(ref.acts)
    agree = (acts != 0) == (ref.acts != 0)
    assert agree.all(dim=1).float().mean() >= 0.95  # the same latents fire (up to near-ties at θ)
    assert (ref.acts != 0).sum(1).float().mean() > 1
    assert (acts - ref.acts)[agree].abs().max().item() <= TOL * float(x.norm(dim=1).mean())
    assert (x_hat - ref.x_hat).abs().max().item() <= TOL * float(x.norm(dim=1).mean())


@pytest.mark.parametrize("arch", ["topk", "gsae", "gbatchtopk", "gmatryoshka"])
def test_saelens_export_refuses_other_architectures(arch: str, tmp_path: Path) -> None:
    from pipeline.core.errors import ExportError
    from pipeline.saes.export import export_sae

    save_sae(make(arch), tmp_path / "v", {"hook_name": "model.layers.3"})
    with pytest.raises(ExportError, match=f"'{arch}' is not exported to saelens"):
        export_sae(tmp_path / "v", tmp_path / "out", "saelens")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("arch", ["topk", "gsae"])
def test_saelens_sees_the_hub_id_and_the_exact_weights(arch: str, tmp_path: Path) -> None:
    """What a SAELens user reads: model_name is the hub id to pair with, model_weights what the SAE
    was fit on (the default run's Q4_1-dequantized SmolLM2), both in ``sae.cfg.metadata``."""
    weights = "SmolLM2-135M-Instruct GGUF Q4_1 (SmolLM2-135M-Instruct.Q4_1.gguf), dequantized to float32"
    provenance = {
        "model": "smollm2-135m",
        "model_name": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "model_weights": weights,
        "model_weights_sha256": "ab" * 32,
        "hook_name": "model.layers.15",
    }
    save_sae(make(arch), tmp_path / arch, provenance)
    sl = SAE.load_from_disk(tmp_path / arch)
    assert sl.cfg.metadata.model_name == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert sl.cfg.metadata.model_weights == weights and sl.cfg.metadata.model_weights_sha256 == "ab" * 32
    cfg = json.loads((tmp_path / arch / "cfg.json").read_text())
    assert cfg["model"] == "smollm2-135m" and cfg["model_name"] == sl.cfg.metadata.model_name
