"""Report, plot data and the compact metrics on synthetic results (no model)."""

from __future__ import annotations

import csv
import json
from types import SimpleNamespace

import numpy as np

from pipeline.report.entries import VariantResult
from pipeline.report.markdown import table, write_report
from pipeline.report.plotdata import summary, write_plot_data, write_summary
from pipeline.report.plots import make_plots, steering_boxes
from pipeline.report.style import series_colours


def _steer(seed: int) -> SimpleNamespace:
    rng = np.random.default_rng(seed)
    kl = np.sort(rng.uniform(1e-4, 1e-2, 4))
    return SimpleNamespace(latents=np.arange(4), alphas=np.ones(4), kl=kl, logit=kl * 10, token=np.arange(4))


def _results(ks: list[int], *, ce_zero: float = 5.0, extra: dict | None = None) -> list[VariantResult]:
    out = []
    for arch, group in (("topk", "topk-x8"), ("gsae", "gsae-b0.5-aug-x8")):
        for k in ks:
            for seed in (0, 1):
                m = {
                    "fvu": 0.2 + 0.01 * seed,
                    "l0": float(k),
                    "dead_frac": 0.1,
                    "train_dead_frac": 0.0,
                    "ce_clean": 3.0,
                    "ce_spliced": 3.2,
                    "ce_zero_ablation": ce_zero,
                    "loss_recovered": 0.9 + 0.01 * seed,
                    "kl": 0.1,
                    "steer_kl_median": 0.001,
                }
                if arch == "gsae":
                    m |= {"selection_shift": 0.05, **(extra or {})}
                name = f"{arch}-k{k}-x8-s{seed}"
                out.append(
                    VariantResult(name, group, arch, k, seed, m, _steer(k + seed), hook="model.layers.15")
                )
    return out


def test_summary_keys_are_stable_across_grids(tmp_path):
    a, b = summary(_results([16, 32])), summary(_results([32, 64]))
    assert set(a) == {"topk-x8", "gsae-b0p5-aug-x8", "baseline"}  # dots would split DVC's keys
    assert a["topk-x8"]["k32"].keys() == b["topk-x8"]["k32"].keys()
    assert a["topk-x8"]["k32"]["loss_recovered"] == b["topk-x8"]["k32"]["loss_recovered"] == 0.905
    assert a["topk-x8"]["k32"]["n_seeds"] == 2 and "selection_shift" in a["gsae-b0p5-aug-x8"]["k32"]
    assert a["baseline"] == {"ce_clean": 3.0, "ce_zero_ablation": 5.0}
    path = write_summary(tmp_path / "summary.json", _results([16]))
    assert "seconds" not in path.read_text() and json.loads(path.read_text())["topk-x8"]["k16"]


def test_plot_data_is_long_format(tmp_path):
    results = _results([16, 32])
    write_plot_data(tmp_path, results)
    long = (tmp_path / "metrics_long.csv").read_text().splitlines()
    assert long[0] == "variant,series,architecture,k,seed,metric,value"
    assert len(long) == 1 + sum(len(r.metrics) for r in results)
    steer = (tmp_path / "steering.csv").read_text().splitlines()
    assert steer[0].startswith("variant,series,architecture,k,seed,quantile,steer_kl")
    assert len(steer) == 1 + 4 * len(results)
    # the PNGs' colour of each series, so the Vega templates colour it alike
    colours = series_colours(r.group for r in results)
    for name in ("variants.csv", "steering.csv"):
        rows = list(csv.DictReader((tmp_path / name).read_text().splitlines()))
        assert rows and all(row["colour"] == colours[row["series"]] for row in rows), name
    assert len({row["colour"] for row in rows}) == 2


def test_training_plot_data_colours_each_curve_by_its_series(tmp_path):
    """training.csv: the curves of the evaluated variants with their series' colour (not per variant)."""
    results = _results([16])
    names = [r.name for r in results if not r.name.endswith("@beta0")]
    curves = [
        {"variant": n, "step": s, "tokens": 512.0 * s, "fvu": 1.0 / s, "loss": 1.0, "aux": 0.0}
        for n in [*names, "gone-variant-s0"]
        for s in (1, 2)
    ]
    write_plot_data(tmp_path, results, curves)
    rows = list(csv.DictReader((tmp_path / "training.csv").read_text().splitlines()))
    colours = series_colours(r.group for r in results)
    by_name = {r.name: r.group for r in results}
    assert sorted({row["variant"] for row in rows}) == sorted(names)  # an unevaluated variant is left out
    assert all(row["series"] == by_name[row["variant"]] for row in rows)
    assert all(row["colour"] == colours[row["series"]] for row in rows)
    assert {row["fvu"] for row in rows} == {"1.0", "0.5"}
    write_plot_data(tmp_path, results)  # no curves: a header-only file
    assert (tmp_path / "training.csv").read_text().count("\n") == 1


def test_steering_never_pools_values_of_k():
    labels = [b[1] for b in steering_boxes(_results([16, 32]))]
    assert labels == ["gsae-b0.5-aug-x8\nk=16", "gsae-b0.5-aug-x8\nk=32", "topk-x8\nk=16", "topk-x8\nk=32"]


def test_report_baselines_dead_latents_and_extra_keys(tmp_path):
    results = _results([16], extra={"steer_kl_ci_lo": 0.0005, "steer_kl_ci_hi": 0.002})
    pngs = make_plots(tmp_path / "plots", results, [])
    text = write_report(tmp_path / "report.md", results, {"wall time (s)": 1.0}, pngs).read_text()
    assert "CE of the clean model: **3.0000**" in text and "zeroed: **5.0000**" in text
    assert "Warning" not in text
    assert "dead (train)" in text and "dead (held out)" in text and "Two dead-latent figures" in text
    assert "| selection shift |" in text
    assert "steer_kl_ci_hi" in text and "steer_kl_ci_lo" in text  # unknown figures rendered generically
    assert "plots/steering.png" in text


def test_report_warns_when_zero_ablation_does_not_hurt(tmp_path):
    results = _results([16], ce_zero=2.9)
    text = write_report(tmp_path / "report.md", results, {}, {}).read_text()
    assert "**Warning**: zero ablation does not raise CE" in text


def test_selection_shift_column_only_when_present():
    plain = [r for r in _results([16]) if r.architecture == "topk"]
    assert "selection shift" not in table(plain)
    assert "selection shift" in table(_results([16]))


def test_report_shows_saelens_scores_labelled_beside_ours(tmp_path):
    """ce_loss_score / kl_div_score: columns beside loss rec. and KL, the convention's baselines
    once (not per variant), and per series its mean ± sd beside our loss recovered."""
    results = _results([16])
    for r in results:
        r.metrics |= {
            "ce_loss_score": 0.95 + 0.01 * (r.seed or 0),
            "kl_div_score": 0.9,
            "ce_loss_with_sae": 3.5,
            "ce_loss_without_sae": 3.1,
            "ce_loss_with_ablation": 10.8,
            "kl_div_with_sae": 0.2,
            "kl_div_with_ablation": 7.5,
        }
    head = table(results).splitlines()[0]
    assert "| loss rec. | CE loss score (SAELens) | KL | KL div score (SAELens) |" in head
    assert "CE loss score" not in table(_results([16]))  # older metrics without the keys
    text = write_report(tmp_path / "report.md", results, {}, {}).read_text()
    assert "zero-ablate every position, BOS included" in text and "keeps position 0 (BOS) clean" in text
    assert "zeroed at every position **10.8000**" in text and "of that ablation **7.5000**" in text
    assert "`topk-x8` 0.9550 ± 0.0071 (ours 0.9050 ± 0.0071)" in text
    other = text.split("### Other figures", 1)[1]
    assert "ce_loss_with_sae" in other and "ce_loss_with_ablation" not in other  # baselines shown once


def test_report_opens_with_the_paired_table(tmp_path):
    """The report's first section is gsae summarize's table of the same entries (names parsed
    when no SAE folder is at hand), paired Δ vs TopK included, before the reading."""
    from pipeline.evaluate.outputs import paired_table

    results = _results([16])
    metrics = {r.name.replace("gsae-k16-x8", "gsae-k16-b0.5-x8-aug"): r.metrics for r in results}
    paired = paired_table(metrics, tmp_path / "no-saes")
    assert paired is not None
    text = write_report(tmp_path / "report.md", results, {}, {}, paired=paired).read_text()
    sections = [line for line in text.splitlines() if line.startswith("## ")]
    assert sections[0].startswith("## Comparison (mean ± sd over seeds")
    first = text.split("## Reading", 1)[0]
    assert "| k | variant | seeds | loss rec." in first and "Δ loss rec. vs TopK (paired)" in first
    assert "| 16 | gsae aug β=0.5 | 2 |" in first and "+0.0000 ± 0.0000 (n=2)" in first


def test_counts_print_without_decimals():
    text = table(_results([16]))
    l0 = text.splitlines()[0].split(" | ").index("l0")
    cells = [row.split(" | ")[l0] for row in text.splitlines()[2:]]
    assert cells and all(c == "16" for c in cells)  # TopK's L0 = k, not "16.0000"
    assert "| 0.2000 |" in text  # other figures keep their 4 decimals


def test_settings_name_the_commit_the_packages_and_the_training(tmp_path):
    from pipeline.core.provenance import git_revision, package_versions
    from pipeline.evaluate.outputs import training_settings
    from tests.dvc_project import ROOT

    sha = git_revision(ROOT)
    assert sha is not None and len(sha.split()[0]) == 40 and int(sha.split()[0], 16) >= 0
    assert git_revision(tmp_path) is None  # not a checkout: no commit, no error
    versions = package_versions()
    assert {"torch", "transformers", "zarr", "numpy"} <= set(versions)
    train = {"tokens": 4096, "lr": 4e-4, "grid": None, "out_dir": "x", "device": "cpu"}
    cfgs = [
        {"architecture": "topk", "k": 32, "beta": 0.0, "expansion": 8, "training": {**train, "init_seed": 1}},
        {"architecture": "gsae", "k": 32, "beta": 0.3, "expansion": 8, "training": {**train, "init_seed": 0}},
    ]
    assert training_settings(cfgs) == {  # run-only keys (out_dir, device) left out; β only where read
        "train.grid.architecture": ["gsae", "topk"],
        "train.grid.beta": 0.3,
        "train.grid.expansion": 8,
        "train.grid.k": 32,
        "train.init_seed": [0, 1],
        "train.lr": 4e-4,
        "train.tokens": 4096,
    }
    settings = {"git commit": sha, "packages": versions, **training_settings(cfgs)}
    text = write_report(tmp_path / "report.md", _results([16]), settings, {}).read_text()
    assert f"| git commit | {sha} |" in text and '"torch": "' in text and "| train.tokens | 4096 |" in text
