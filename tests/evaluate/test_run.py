"""Evaluate stage end to end on a tiny model: harvest train + held-out, two variants, run_evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cache.writer import ShardWriter, allocate
from pipeline.core.errors import CacheIncomplete, CacheMismatch, NothingToEvaluate
from pipeline.core.loader import params_from_dict
from pipeline.evaluate.run import run_evaluate
from pipeline.harvest.identity import store_key, store_url
from pipeline.harvest.run import run_harvest
from pipeline.stores import heldout_params
from pipeline.train.run import run_train
from tests.conftest import tiny_project_overrides

CORE_KEYS = {
    "fvu",
    "mse",
    "l0",
    "dead_frac",
    "ce_clean",
    "ce_spliced",
    "ce_zero_ablation",
    "loss_recovered",
    "kl",
    "ce_loss_score",
    "kl_div_score",
    "ce_loss_with_sae",
    "ce_loss_without_sae",
    "ce_loss_with_ablation",
    "kl_div_with_sae",
    "kl_div_with_ablation",
    "steer_kl_mean",
    "steer_kl_median",
    "steer_kl_p10",
    "steer_kl_p90",
    "steer_logit_mean",
    "steer_logit_median",
    "steer_logit_p10",
    "steer_logit_p90",
}


@pytest.fixture(scope="module")
def project(tiny_llama, tmp_path_factory):
    """Harvested train + held-out stores and four trained variants: (params, heldout url, key, overrides)."""
    root = tmp_path_factory.mktemp("evalproj")
    overrides = [
        *tiny_project_overrides(tiny_llama, root, ks="[2,4]"),
        f"evaluate.out={root / 'metrics' / 'evaluate.json'}",
        f"evaluate.summary={root / 'metrics' / 'summary.json'}",
        f"evaluate.report={root / 'reports' / 'report.md'}",
        f"evaluate.plots_dir={root / 'reports' / 'plots'}",
        "evaluate.batch_size=4",
        "evaluate.steer_latents=3",
        "evaluate.steer_contexts=2",
    ]
    params = params_from_dict({}, overrides)
    train_url = run_harvest(params)
    held = heldout_params(params)
    key = store_key(held)
    held_url = run_harvest(held)
    assert held_url == store_url(held, key)
    run_train(params, store_url=train_url, expected_key=None)
    return params, held_url, key, overrides


def test_end_to_end(project):
    params, url, key, _ = project
    metrics = run_evaluate(params, store_url=url, expected_key=key)
    names = {
        f"{v}{t}"
        for k in (2, 4)
        for v, t in (
            (f"topk-k{k}-x2-s0", ""),
            (f"gsae-k{k}-b1-x2-aug-s0", ""),
            (f"gsae-k{k}-b1-x2-aug-s0", "@beta0"),
        )
    }
    assert set(metrics) == names
    on_disk = json.loads(Path(params.evaluate.out).read_text())
    assert set(on_disk) == names
    for name in names:
        assert on_disk[name] == pytest.approx(metrics[name])
    for name, m in metrics.items():
        assert set(m) >= {k for k in CORE_KEYS if not (name.endswith("@beta0") and k.startswith("steer"))}, (
            name
        )
        assert all(isinstance(v, float) for v in m.values())
        assert (
            m["absorption_grad"] == 0.0 and m["absorption_letters"] >= 0
        )  # absorption ran (tiny vocabulary)
        assert 0 < m["l0"] <= (2 if "-k2-" in name else 4)
        assert 0 <= m["dead_frac"] <= 1
        assert 0 <= m["train_dead_frac"] <= 1
        assert m["ce_zero_ablation"] != m["ce_clean"]  # a random model: ablation may even help
        assert m["kl"] > 0
        assert m["fo_loss_err"] >= abs(m["fo_loss_delta"]) and m["fo_loss_err"] > 0  # the store has gradients
        if name.endswith("@beta0"):  # steering depends on the decoder only: twins are not steered again
            assert "steer_kl_mean" not in m and m["selection_shift"] == 0.0
            continue
        assert m["steer_kl_p10"] <= m["steer_kl_median"] <= m["steer_kl_p90"]
        assert m["steer_kl_ci_lo"] <= m["steer_kl_mean"] <= m["steer_kl_ci_hi"]
        if name.startswith("gsae"):  # β = 1 with √d-scaled gradients re-ranks a real share of selections
            assert 0.02 < m["selection_shift"] < 1
        else:
            assert "selection_shift" not in m
    ce_clean = {m["ce_clean"] for m in metrics.values()}
    assert len(ce_clean) == 1
    # SAELens's convention: one clean CE and one every-position ablation for all entries (one hook)
    assert len({m["ce_loss_without_sae"] for m in metrics.values()}) == 1
    assert len({(m["ce_loss_with_ablation"], m["kl_div_with_ablation"]) for m in metrics.values()}) == 1
    for m in metrics.values():
        assert m["ce_loss_with_ablation"] != pytest.approx(m["ce_zero_ablation"], abs=1e-4)  # BOS zeroed too
        assert m["ce_loss_score"] == pytest.approx(
            (m["ce_loss_with_ablation"] - m["ce_loss_with_sae"])
            / (m["ce_loss_with_ablation"] - m["ce_loss_without_sae"])
        )
        assert m["kl_div_score"] == pytest.approx(1 - m["kl_div_with_sae"] / m["kl_div_with_ablation"])
        assert m["kl_div_with_ablation"] > 0 and m["kl_div_with_sae"] > 0
    plots = Path(params.evaluate.plots_dir)
    for png in (
        "training_curves.png",
        "loss_recovered.png",
        "fvu_vs_loss_recovered.png",
        "steering.png",
    ):
        assert (plots / png).stat().st_size > 1000
    variants = (plots / "variants.csv").read_text().strip().splitlines()
    assert variants[0].startswith("variant,series,architecture,k,seed,") and len(variants) == 1 + len(names)
    long = (plots / "metrics_long.csv").read_text().strip().splitlines()
    assert long[0] == "variant,series,architecture,k,seed,metric,value"
    assert len(long) == 1 + sum(len(m) for m in metrics.values())
    steer = (plots / "steering.csv").read_text().strip().splitlines()
    assert sum(",topk-x2,topk," in row for row in steer) == 2 * 3  # two k values, three latents each
    summary = json.loads(Path(params.evaluate.summary).read_text())
    assert set(summary) == {"topk-x2", "gsae-b1-aug-x2", "gsae-b1-aug-x2@beta0", "baseline"}
    assert summary["topk-x2"]["k4"]["loss_recovered"] == pytest.approx(
        metrics["topk-k4-x2-s0"]["loss_recovered"]
    )
    assert summary["baseline"]["ce_clean"] == pytest.approx(metrics["topk-k4-x2-s0"]["ce_clean"])
    report = Path(params.evaluate.report).read_text()
    # opens with gsae summarize's paired table; the settings name commit, packages and training
    assert [line for line in report.splitlines() if line.startswith("## ")][0].startswith("## Comparison")
    assert "| 4 | gsae aug β=1 | 1 |" in report.split("## Reading", 1)[0]
    assert "| git commit | " in report and '| packages | {"torch": "' in report
    assert "| train.tokens | 1024 |" in report and "| train.batch_size | 128 |" in report
    assert "plots/loss_recovered.png" in report and "plots/training_curves.png" in report
    assert "topk-k4-x2-s0" in report and "## Settings" in report and "k = 4" in report and "k = 2" in report
    assert "CE of the clean model" in report and "dead (train)" in report
    assert "| loss rec. | CE loss score (SAELens) | KL | KL div score (SAELens) |" in report
    assert "zeroed at every position **" in report and "(ours " in report
    assert "FO loss err." in report and "## First-order loss error" in report
    assert "Spearman ρ with CE spliced − CE clean, computed across the 6 entries of this run" in report
    assert not list(plots.rglob("*.tmp"))
    live = plots / "live"  # each entry's figures as a DVCLive folder too
    assert sorted(p.name for p in live.iterdir()) == sorted(names)
    for name in names:
        shown = json.loads((live / name / "metrics.json").read_text())
        assert shown["loss_recovered"] == pytest.approx(metrics[name]["loss_recovered"])


def test_errors(project, tmp_path):
    params, url, key, _ = project
    with pytest.raises(CacheMismatch):
        run_evaluate(params, store_url=url, expected_key="0" * 64)
    empty = params_from_dict({}, [f"train.out_dir={tmp_path / 'none'}"])
    with pytest.raises(NothingToEvaluate, match="no trained SAE variants"):
        run_evaluate(empty, store_url=url, expected_key=None)
    # an incomplete store
    part = str(tmp_path / "part.zarr")
    allocate(
        part,
        {
            "key": key,
            "model": params.model.name,
            "model_revision": "x",
            "tokenizer": "x",
            "dataset": {},
            "context_length": 32,
            "loss": "x",
        },
        hooks=["model.layers.1"],
        d_model=32,
        total_tokens=512,
        tokens_per_shard=256,
        chunk_tokens=128,
        dtype="float16",
    )
    ShardWriter(part).write(
        0, np.zeros(256), {"model.layers.1": np.zeros((256, 32))}, {"model.layers.1": np.zeros((256, 32))}
    )
    with pytest.raises(CacheIncomplete):
        run_evaluate(params, store_url=part, expected_key=None)


def test_cli(project, tmp_path, capsys):
    from stages.cli import main

    params, _, _, overrides = project
    empty = tmp_path / "params.yaml"
    empty.write_text("{}\n")
    args = ["evaluate", "-p", str(empty)]
    for item in overrides:
        args += ["-s", item]
    main([*args, "-s", f"evaluate.out={tmp_path / 'cli.json'}"])
    assert set(json.loads((tmp_path / "cli.json").read_text())) >= {"topk-k2-x2-s0"}
    with pytest.raises(SystemExit) as exc:
        main([*args, "-s", f"train.out_dir={tmp_path / 'nothing'}"])
    assert exc.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("gsae: error: no trained SAE variants")


def _own_outputs(overrides: list[str], folder: Path, *grid: str):
    """The project's params with training and evaluation writing into ``folder`` (2 steered latents)."""
    return params_from_dict(
        {},
        [
            *overrides,
            f"train.out_dir={folder / 'saes'}",
            f"train.metrics_out={folder / 'train.json'}",
            f"train.curves_dir={folder / 'curves'}",
            f"evaluate.out={folder / 'evaluate.json'}",
            f"evaluate.summary={folder / 'summary.json'}",
            f"evaluate.report={folder / 'report.md'}",
            f"evaluate.plots_dir={folder / 'plots'}",
            "evaluate.steer_latents=2",
            *grid,
        ],
    )


def test_batch_level_architectures_train_and_evaluate(project, tmp_path):
    """batchtopk / gbatchtopk from the grid, evaluated with their thresholds (and stored gradients)."""
    _, url, key, overrides = project
    params = _own_outputs(
        overrides,
        tmp_path,
        "train.grid.architecture=[batchtopk,gbatchtopk]",
        "train.grid.k=[4]",
        "train.grid.beta=[4.0]",
        "train.grid.value_mode=[selection]",
    )
    run_train(params, store_url=params.harvest.store, expected_key=None)
    metrics = run_evaluate(params, store_url=url, expected_key=key)
    twin = "gbatchtopk-k4-b4-x2-sel-s0@beta0"
    assert set(metrics) == {"batchtopk-k4-x2-s0", "gbatchtopk-k4-b4-x2-sel-s0", twin}
    for name, m in metrics.items():
        assert 1 < m["l0"] < 10, (name, m["l0"])  # a learned threshold: about k per token, not exactly
        assert m["kl"] > 0 and np.isfinite(m["loss_recovered"])
    assert "selection_shift" not in metrics["batchtopk-k4-x2-s0"]
    assert (
        0 < metrics["gbatchtopk-k4-b4-x2-sel-s0"]["selection_shift"] < 1
        and metrics[twin]["selection_shift"] == 0.0
    )
    cfg = json.loads((tmp_path / "saes" / "batchtopk-k4-x2-s0" / "cfg.json").read_text())
    assert cfg["architecture"] == "batchtopk" and cfg["threshold"] > 0
    assert set(json.loads(Path(params.evaluate.summary).read_text())) == {
        "batchtopk-x2",
        "gbatchtopk-b4-sel-x2",
        "gbatchtopk-b4-sel-x2@beta0",
        "baseline",
    }


def test_matryoshka_architectures_and_the_gradient_loss_term_evaluate(project, tmp_path):
    """matryoshka / gmatryoshka (λ = 0 and 0.5) from the grid: evaluated with their thresholds, λ in
    the names and the evaluation series, the twin of the gradient-aware one evaluated too."""
    _, url, key, overrides = project
    params = _own_outputs(
        overrides,
        tmp_path,
        "train.grid.architecture=[matryoshka,gmatryoshka]",
        "train.grid.k=[4]",
        "train.grid.beta=[4.0]",
        "train.grid.value_mode=[selection]",
        "train.grid.grad_loss=[0.0,0.5]",
    )
    run_train(params, store_url=params.harvest.store, expected_key=None)
    metrics = run_evaluate(params, store_url=url, expected_key=key)
    plain, weighted = "matryoshka-k4-x2-s0", "gmatryoshka-k4-b4-x2-sel-gl0.5-s0"
    assert {plain, "matryoshka-k4-x2-gl0.5-s0", weighted, weighted + "@beta0"} <= set(metrics)
    for name, m in metrics.items():
        assert 1 < m["l0"] < 10, (name, m["l0"])  # threshold inference: about k per token
        assert m["kl"] > 0 and np.isfinite(m["loss_recovered"])
    assert (
        0 < metrics[weighted]["selection_shift"] < 1
        and metrics[weighted + "@beta0"]["selection_shift"] == 0.0
    )
    summary = set(json.loads(Path(params.evaluate.summary).read_text()))  # keys: "." written "p"
    assert {"matryoshka-x2", "matryoshka-gl0p5-x2", "gmatryoshka-b4-sel-gl0p5-x2@beta0"} <= summary


def test_first_order_estimate_matches_the_true_loss_change(project):
    """fo_loss_delta (mean g·(x̂ − x) over the non-first rows, g the stored gradient of the summed
    loss) is the first-order change of the spliced CE (mean over the T − 1 predictions), in the
    same units (no T/(T − 1) factor). The tiny random model is very curved at its small
    activation scale, so the comparison is with the central difference (CE(x + δ) − CE(x − δ)) / 2,
    whose second-order term cancels; the one-sided change approaches the estimate as δ shrinks."""
    import torch

    from cache.reader import open_store
    from cache.schema import usable_rows
    from pipeline.evaluate.heldout import read_held_out
    from pipeline.evaluate.metrics import recon_stats
    from pipeline.evaluate.splice import Edit, sae_editor, splice_losses
    from pipeline.lm.models import load_model
    from tests.evaluate.test_metrics import near_identity_sae

    params, url, _, _ = project
    info = open_store(url)
    lm = load_model(params.model)
    data = read_held_out(url, info, ["model.layers.1"], 0, 4)
    rows = usable_rows(0, data.ids.numel(), data.ids.shape[1])
    act, grad = data.acts["model.layers.1"], data.grads["model.layers.1"]
    assert grad is not None
    one_sided = []
    for eps in (1e-4, 3e-5):  # activations have sd ≈ 0.02 here: δ is 2–7 % of them
        saes = {
            "+": near_identity_sae(info.d_model, eps, shift=10.0),
            "-": near_identity_sae(info.d_model, -eps, shift=10.0),
        }
        st = recon_stats(saes["+"], act[rows], grad[rows])
        with torch.no_grad():
            edits = {s: Edit(1, sae_editor(sae, None)) for s, sae in saes.items()}
            res = splice_losses(lm, data.ids, edits, batch_size=4)
        plus, minus = res.ce["+"] - res.ce_clean, res.ce["-"] - res.ce_clean
        assert st.fo_loss_delta is not None and st.fo_loss_err is not None
        assert st.fo_loss_err >= abs(st.fo_loss_delta) > 1e-5
        assert st.fo_loss_delta == pytest.approx((plus - minus) / 2, rel=0.05), eps
        one_sided.append(abs(plus / st.fo_loss_delta - 1))
    assert one_sided[1] < one_sided[0]


def test_summarize_recomputes_the_first_order_loss_error(project, tmp_path, capsys):
    """`gsae first-order` recomputes fo_loss_err from the store and SAE files (no LM): equal to
    the evaluation's figure, with the rank correlation file; a different window is refused."""
    from stages.cli import main

    params, url, key, _ = project
    out = Path(params.evaluate.out)
    metrics = (
        json.loads(out.read_text())
        if out.is_file()
        else run_evaluate(params, store_url=url, expected_key=key)
    )
    base = ["first-order", "--evaluate", str(out), "--saes", params.train.out_dir, "--store", url]
    md = tmp_path / "r.md"
    main([*base, "--tokens", "256", "-o", str(md), "--plots-dir", str(tmp_path / "p")])
    printed = capsys.readouterr().out
    for name, m in metrics.items():
        assert f"{name}: fo_loss_err {m['fo_loss_err']:.5f}" in printed
    rho = json.loads((tmp_path / "r.tracking.json").read_text())
    assert rho["fo_loss_err"]["n"] == len(metrics) and -1 <= rho["fo_loss_err"]["rho"] <= 1
    assert "FO loss err." in md.read_text()
    with pytest.raises(SystemExit) as exc:
        main([*base, "--tokens", "128", "-o", str(md), "--plots-dir", str(tmp_path / "p")])
    assert exc.value.code == 1 and "not the window the run was evaluated on" in capsys.readouterr().err


def test_saelens_scores_equal_saelens_run_evals(project):
    """One trained TopK variant's ce_loss_score and kl_div_score (and the five means) in
    evaluate.json equal ``sae_lens.evals.run_evals`` (defaults) run by SAELens itself on the
    evaluated held-out contexts (tests/evaluate/test_conventions.py: how SAELens is run)."""
    from cache.reader import open_store
    from pipeline.evaluate.heldout import read_held_out
    from tests.evaluate.test_conventions import assert_same_as_saelens, saelens_run_evals

    pytest.importorskip("sae_lens")
    params, url, key, _ = project
    out = Path(params.evaluate.out)
    metrics = (
        json.loads(out.read_text())
        if out.is_file()
        else run_evaluate(params, store_url=url, expected_key=key)
    )
    ids = read_held_out(url, open_store(url), ["model.layers.1"], 0, 256 // 32).ids
    theirs = saelens_run_evals(Path(params.model.name), Path(params.train.out_dir) / "topk-k4-x2-s0", ids, 4)
    assert_same_as_saelens(metrics["topk-k4-x2-s0"], theirs)
    assert theirs["ce_loss_score"] != pytest.approx(metrics["topk-k4-x2-s0"]["loss_recovered"], abs=1e-3)


def test_tokens_left_out_of_training_are_left_out_of_fvu_and_kept_clean(project, tmp_path, caplog):
    """SAEs trained with ``train.max_norm_multiple``: evaluation leaves the held-out positions
    above that multiple of the median norm out of FVU (checked against recon_stats on the kept
    rows) and keeps them clean in our splice (the splice itself: tests/evaluate/test_conventions.py)."""
    import logging

    import torch

    from cache.reader import open_store, read_rows
    from pipeline.evaluate.metrics import recon_stats
    from pipeline.saes.io import load_sae

    _, url, key, overrides = project
    params = _own_outputs(
        [*overrides, "train.max_norm_multiple=1.2"],
        tmp_path / "filtered",
        "train.grid.architecture=[batchtopk]",
        "train.grid.k=[4]",
    )
    run_train(params, store_url=params.harvest.store, expected_key=None)
    with caplog.at_level(logging.INFO, logger="pipeline.evaluate.run"):
        m = run_evaluate(params, store_url=url, expected_key=key)["batchtopk-k4-x2-s0"]
    assert any("kept clean and out of FVU" in r.getMessage() for r in caplog.records)
    info = open_store(url)
    hook = info.hooks[0]
    n = params.evaluate.tokens
    _, act, grad = read_rows(url, hook, 0, n, info)
    norms = np.linalg.norm(act, axis=1).reshape(-1, info.context_length)
    later = norms[:, 1:]
    keep = np.zeros_like(norms, dtype=bool)
    keep[:, 1:] = later <= 1.2 * np.median(later)
    assert 0 < (~keep[:, 1:]).sum() < keep[:, 1:].size  # some positions left out, not all
    sae, _ = load_sae(tmp_path / "filtered" / "saes" / "batchtopk-k4-x2-s0")
    with torch.no_grad():
        direct = recon_stats(sae, act[keep.flatten()], grad[keep.flatten()])
    assert m["fvu"] == pytest.approx(direct.fvu, rel=1e-6)
    left_out = int((~keep[:, 1:]).sum())
    positions = (
        f"FVU/L0 on {keep[:, 1:].sum()} non-first positions ({left_out} activation outliers kept clean)"
    )
    assert positions in Path(params.evaluate.report).read_text()
