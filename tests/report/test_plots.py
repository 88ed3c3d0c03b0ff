"""The report's plots compare at a glance: one colour per series in every plot (a g-SAE and its
``@beta0`` twin apart), no "vs k" strip with one k, no flat panel, readable ticks."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import matplotlib.colors as mcolors
import numpy as np
import pytest

from pipeline.report.entries import VariantResult
from pipeline.report.plots import PNGS, figures, make_plots
from pipeline.report.style import series_colours, short_number


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


SERIES = ("topk-x8", "gsae-b0.3-sel-x8", "gsae-b0.3-sel-x8@beta0")


def _steer(seed: int) -> SimpleNamespace:
    kl = np.sort(np.random.default_rng(seed).uniform(1e-3, 1e-1, 4))
    return SimpleNamespace(latents=np.arange(4), alphas=np.ones(4), kl=kl, logit=kl * 10, token=np.arange(4))


def _results(ks: list[int]) -> list[VariantResult]:
    out = []
    for series in SERIES:
        arch = series.split("-")[0]
        twin = series.endswith("@beta0")
        for k in ks:
            for seed in (0, 1, 2):
                base = f"{arch}-k{k}-b0.3-x8-sel-s{seed}" if arch == "gsae" else f"topk-k{k}-x8-s{seed}"
                m = {
                    "fvu": 0.1 + 0.01 * seed + 0.02 * twin,
                    "loss_recovered": 0.97 - 0.001 * seed + 0.002 * twin,
                    "ce_loss_score": 0.95 - 0.001 * seed,
                    "l0": float(k),
                }
                out.append(
                    VariantResult(
                        base + ("@beta0" if twin else ""),
                        series,
                        arch,
                        k,
                        seed,
                        m,
                        None if twin else _steer(seed),
                        hook="model.layers.15",
                    )
                )
    return out


def _curves(results: list[VariantResult], dead: float = 0.0) -> list[dict[str, Any]]:
    rows = []
    for r in results:
        if r.name.endswith("@beta0"):
            continue  # twins are not trained separately
        for step in range(1, 21):
            row = {"variant": r.name, "step": step * 10, "tokens": step * 20480, "fvu": 1.0 / step}
            row["dead_frac"] = dead * step
            if r.architecture == "gsae":
                row["selection_shift"] = 0.4 - 0.005 * step
            rows.append(row)
    return rows


def _legend_colours(fig: Any) -> dict[str, str]:
    """Series label → hex colour of its legend entry, over every legend of the figure."""
    out: dict[str, str] = {}
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None] + list(fig.legends)
    for legend in legends:
        for text, handle in zip(legend.get_texts(), legend.legend_handles, strict=True):
            out[text.get_text()] = mcolors.to_hex(handle.get_color())
    return out


@pytest.mark.parametrize("ks", [[32], [16, 32]])
def test_every_plot_gives_a_series_the_same_colour_and_twins_their_own(ks):
    results = _results(ks)
    figs = figures(results, _curves(results))
    assert set(figs) == set(PNGS)
    expected = series_colours(SERIES)
    assert expected["gsae-b0.3-sel-x8"] != expected["gsae-b0.3-sel-x8@beta0"]
    assert len(set(expected.values())) == len(SERIES)
    for key, fig in figs.items():
        legend = _legend_colours(fig)
        assert legend, key
        for series, colour in legend.items():
            assert colour == expected[series], (key, series)
        drawn = {
            mcolors.to_hex(line.get_color())
            for ax in fig.axes
            for line in ax.lines
            if len(line.get_xdata()) and mcolors.to_hex(line.get_color()) != "#000000"
        }
        assert drawn <= set(expected.values()), key  # no line in a colour outside the series map
    assert set(_legend_colours(figs["loss_recovered"])) == set(SERIES)
    assert set(_legend_colours(figs["training_curves"])) == {"topk-x8", "gsae-b0.3-sel-x8"}


def test_series_colours_do_not_depend_on_order():
    assert series_colours(SERIES) == series_colours(reversed(SERIES))


def test_one_k_draws_series_side_by_side_not_a_vs_k_strip():
    fig = figures(_results([32]), [])["loss_recovered"]
    fig.canvas.draw()
    for ax in fig.axes:
        assert ax.get_xlabel() != "k (active latents)" and "vs k" not in ax.get_title()
        assert [t.get_text() for t in ax.get_xticklabels()] == sorted(SERIES)
        assert "k = 32" in ax.get_title()
    several = figures(_results([16, 32]), [])["loss_recovered"]
    several.canvas.draw()
    ax = several.axes[0]
    assert ax.get_xlabel() == "k (active latents)"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["16", "32"]
    assert len(ax.containers) == len(SERIES)  # one error-bar line (mean ± sd) per series


def test_a_constant_training_panel_is_named_not_drawn():
    results = _results([32])
    fig = figures(results, _curves(results, dead=0.0))["training_curves"]
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["Training FVU", "g-SAE selection shift"]
    notes = " ".join(t.get_text() for t in fig.texts)
    assert "dead latents during training: 0 throughout for every variant" in notes
    moving = figures(results, _curves(results, dead=0.001))["training_curves"]
    assert [ax.get_title() for ax in moving.axes] == [
        "Training FVU",
        "Dead latents during training",
        "g-SAE selection shift",
    ]


def test_token_ticks_are_short_and_apart():
    results = _results([32])
    fig = figures(results, _curves(results))["training_curves"]
    fig.canvas.draw()
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels() if t.get_text()]
    assert 3 <= len(labels) <= 7
    assert all(len(label) <= 5 for label in labels), labels  # "200k", never "200000" or run-together digits
    assert any(label.endswith("k") for label in labels)
    y_labels = [t.get_text() for t in fig.axes[0].get_yticklabels(minor=True) if t.get_text()]
    assert y_labels and not any("times" in label or "^" in label for label in y_labels)  # 0.2, not 2×10⁻¹
    assert [short_number(v) for v in (0, 32, 500, 50_000, 1_200_000, 393_216)] == [
        "0",
        "32",
        "500",
        "50k",
        "1.2M",
        "393k",
    ]


def test_make_plots_writes_every_png(tmp_path):
    results = _results([32])
    paths = make_plots(tmp_path, results, _curves(results))
    assert {p.name for p in paths.values()} == set(PNGS.values())
    assert all(p.stat().st_size > 5000 for p in paths.values())


def test_training_curves_average_seeds_within_a_k_never_across_ks():
    results = _results([16, 32])
    curves = _curves(results)
    for row in curves:  # k = 32 trains to half the FVU of k = 16
        if "-k32-" in row["variant"]:
            row["fvu"] /= 2
    ax = figures(results, curves)["training_curves"].axes[0]
    means = [line for line in ax.lines if line.get_linewidth() > 1.5]
    assert len(means) == 2 * 2  # (topk, gsae) × (k16, k32); twins are not trained
    finals = sorted(round(float(line.get_ydata()[-1]), 4) for line in means)
    assert finals == [0.025, 0.025, 0.05, 0.05]
    assert sorted(t.get_text() for t in ax.texts) == ["k=16", "k=16", "k=32", "k=32"]
