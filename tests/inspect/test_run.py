"""gsae inspect end to end on a tiny model, and its figures recomputed independently from the files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr
from safetensors.numpy import load_file

from pipeline.core.errors import CacheMismatch, SAEFormatError
from pipeline.core.loader import params_from_dict
from pipeline.harvest.run import run_harvest
from pipeline.inspect.run import run_inspect
from pipeline.stores import heldout_params
from tests.clirun import run_cli

T = 32


@pytest.fixture(scope="module")
def project(inspected_project):
    """Train + held-out stores of a tiny Llama (block 1) and a TopK and a g-SAE trained on them
    (tests/conftest.py's ``inspected_project``): (params, held-out url, overrides, inspect metrics)."""
    p = inspected_project
    return p.params, p.heldout_store, p.overrides, p.inspect_metrics


def _doc(params, entry: str) -> dict:
    return json.loads((Path(params.inspect.out_dir) / entry / "latents.json").read_text())


def _independent_code(sae_dir: Path, store: str, beta0: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, dense code [rows, n], raw gradient [rows, d]) with the DESIGN §1 formulas in numpy,
    straight from the safetensors file, cfg.json and the Zarr arrays (no project code)."""
    w = load_file(str(sae_dir / "sae_weights.safetensors"))
    cfg = json.loads((sae_dir / "cfg.json").read_text())
    group = zarr.open_group(store, mode="r")
    hook = cfg["hook_name"]
    x = np.asarray(group[f"{hook}/act"][:256], dtype=np.float64)
    g = np.asarray(group[f"{hook}/grad"][:256], dtype=np.float64)
    keep = np.arange(256) % T != 0
    x, g = x[keep], g[keep]
    z = (x - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
    beta = 0.0 if beta0 else float(cfg["beta"])
    s = z + beta * z * np.abs((g * float(cfg["grad_scale"])) @ w["W_dec"].T)
    top = np.argsort(-s, axis=1)[:, : int(cfg["k"])]
    value = s if cfg["value_mode"] == "augmented" else z
    code = np.zeros_like(z)
    np.put_along_axis(code, top, np.maximum(np.take_along_axis(value, top, axis=1), 0.0), axis=1)
    return np.nonzero(keep)[0], code, g @ w["W_dec"].T


@pytest.mark.parametrize("entry", ["topk-k4-x2-s0", "gsae-k4-b1-x2-aug-s0", "gsae-k4-b1-x2-aug-s0@beta0"])
def test_listed_figures_match_an_independent_recomputation(project, entry):
    params, held_url, _, _ = project
    doc = _doc(params, entry)
    variant = entry.removesuffix("@beta0")
    rows, code, along = _independent_code(
        Path(params.train.out_dir) / variant, held_url, entry.endswith("@beta0")
    )
    assert doc["rows"] == [0, 256] and doc["n_rows_described"] == rows.size
    assert doc["with_gradient"] == (entry.startswith("gsae") and not entry.endswith("@beta0"))
    rng = np.random.default_rng(0)
    alive = [lat for lat in doc["latents"] if lat["density"] > 0]
    assert len(doc["latents"]) == code.shape[1] and alive
    for lat in rng.choice(alive, size=min(4, len(alive)), replace=False):
        i = lat["id"]
        fired = np.nonzero(code[:, i] > 0)[0]
        assert lat["density"] == pytest.approx(fired.size / rows.size, rel=1e-6)
        assert lat["mean_act"] == pytest.approx(code[fired, i].mean(), rel=1e-4)
        want = sorted((-code[r, i], rows[r]) for r in fired)[: params.inspect.top_n]
        got = [(row, act, attr) for row, act, attr in lat["top_act"]]
        assert [r for r, _, _ in got] == [int(r) for _, r in want]
        for row, act, attr in got:
            local = int(np.searchsorted(rows, row))
            assert act == pytest.approx(code[local, i], rel=1e-4, abs=1e-6)
            assert attr == pytest.approx(-code[local, i] * along[local, i], rel=1e-3, abs=1e-7)
        attrs = -code[fired, i] * along[fired, i]
        assert lat["mean_abs_attr"] == pytest.approx(np.abs(attrs).mean(), rel=1e-3, abs=1e-9)
        assert [abs(a) for _, _, a in lat["top_attr"]] == pytest.approx(
            sorted(np.abs(attrs), reverse=True)[: params.inspect.top_n], rel=1e-3, abs=1e-9
        )


def test_every_entry_is_described_and_listed(project):
    params, _, _, metrics = project
    root = Path(params.inspect.out_dir)
    names = {"topk-k4-x2-s0", "gsae-k4-b1-x2-aug-s0", "gsae-k4-b1-x2-aug-s0@beta0"}
    assert set(metrics["entries"]) == names
    assert {p.name for p in root.iterdir() if p.is_dir()} == names
    assert not root.with_name(root.name + ".partial").exists()
    g = _doc(params, "gsae-k4-b1-x2-aug-s0")
    added = sum(lat["grad_added"] for lat in g["latents"])
    assert added == sum(lat["grad_removed"] for lat in g["latents"])  # per-token top-k: one in, one out
    assert "grad_added" not in _doc(params, "gsae-k4-b1-x2-aug-s0@beta0")["latents"][0]
    for lat in g["latents"]:
        assert len(lat["logits_up"]) == 3 and len(lat["logits_down"]) == 3
        assert lat["logits_up"][0][1] >= lat["logits_up"][-1][1] >= lat["logits_down"][-1][1]
        if lat["density"] > 0:
            assert sum(lat["hist"]) == round(lat["density"] * g["n_rows_described"])


def _copy_variant(params, tmp_path: Path, edit) -> list[str]:
    """A train.out_dir holding a copy of the TopK variant with its cfg.json edited."""
    out = tmp_path / "saes"
    shutil.copytree(Path(params.train.out_dir) / "topk-k4-x2-s0", out / "topk-k4-x2-s0")
    cfg_path = out / "topk-k4-x2-s0" / "cfg.json"
    cfg_path.write_text(json.dumps(edit(json.loads(cfg_path.read_text()))))
    return [
        f"train.out_dir={out}",
        f"inspect.out_dir={tmp_path / 'latents'}",
        f"inspect.metrics={tmp_path / 'm.json'}",
    ]


def test_an_sae_of_another_hook_is_refused_in_one_line(project, tmp_path, monkeypatch, capsys):
    params, held_url, overrides, _ = project
    extra = _copy_variant(params, tmp_path, lambda c: {**c, "hook_name": "model.layers.0"})
    code, _, err = run_cli(["inspect", *(a for o in overrides + extra for a in ("-s", o))], capsys)
    assert code != 0 and len(err.strip().splitlines()) == 1
    assert "model.layers.0" in err and "topk-k4-x2-s0" in err
    assert not (tmp_path / "latents").exists()


def test_an_sae_folder_that_does_not_load_is_refused(project, tmp_path):
    params, held_url, overrides, _ = project
    extra = _copy_variant(params, tmp_path, lambda c: c)
    (tmp_path / "saes" / "topk-k4-x2-s0" / "sae_weights.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(SAEFormatError, match="safetensors"):
        run_inspect(params_from_dict({}, overrides + extra), store_url=held_url)
    assert not (tmp_path / "latents").exists()


def test_a_store_of_another_model_is_refused(project, tmp_path):
    params, held_url, overrides, _ = project
    extra = _copy_variant(params, tmp_path, lambda c: {**c, "model": "someone/else"})
    with pytest.raises(CacheMismatch, match="someone/else"):
        run_inspect(params_from_dict({}, overrides + extra), store_url=held_url)


def test_a_store_without_gradients_describes_activations_only(project, tmp_path, caplog):
    params, _, overrides, _ = project
    extra = [
        f"inspect.store={tmp_path / 'nograd.zarr'}",
        f"inspect.out_dir={tmp_path / 'latents'}",
        f"inspect.metrics={tmp_path / 'm.json'}",
        f"inspect.report={tmp_path / 'r.md'}",
    ]
    held = heldout_params(params_from_dict({}, overrides))
    nograd = params_from_dict(
        {}, [*overrides, "harvest.gradients=false", f"evaluate.store={tmp_path / 'nograd.zarr'}"]
    )
    run_harvest(heldout_params(nograd))
    assert held.harvest.gradients  # the fixture's store has gradients; this one does not
    p = params_from_dict({}, overrides + extra)
    with caplog.at_level("WARNING"):
        metrics = run_inspect(p, store_url=str(tmp_path / "nograd.zarr"))
    assert "attribution is unavailable" in caplog.text
    assert set(metrics["entries"]) == {"topk-k4-x2-s0", "gsae-k4-b1-x2-aug-s0@beta0"}
    doc = json.loads((tmp_path / "latents" / "topk-k4-x2-s0" / "latents.json").read_text())
    assert doc["gradient_available"] is False
    assert all(lat["mean_abs_attr"] is None and lat["top_attr"] == [] for lat in doc["latents"])


def test_the_browser_pages_and_the_report_are_written(project):
    params, _, _, metrics = project
    root = Path(params.inspect.out_dir)
    start = (root / "index.html").read_text()
    for name in metrics["entries"]:
        assert (root / name / "index.html").stat().st_size > 1000
        assert f"{name}/index.html" in start
    report = Path(params.inspect.report).read_text()
    assert "| topk-x2 | 1 |" in report and "(same-init)" in report  # entries table, matching section
    assert metrics["matching"]["directions"][0]["kind"] == "same-init"


def test_gsae_match_compares_two_folders(project, capsys):
    params, _, _, _ = project
    root, saes = Path(params.inspect.out_dir), Path(params.train.out_dir)
    args = ["match", str(saes / "topk-k4-x2-s0"), str(saes / "topk-k4-x2-s0")]
    args += ["--latents-a", str(root / "topk-k4-x2-s0" / "latents.json"), "--threshold", "0.9"]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    assert "| median_best_cos | 1 | 1 |" in out and "| share_unmatched@0.9 | 0 | 0 |" in out
