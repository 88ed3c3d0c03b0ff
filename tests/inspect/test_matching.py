"""pipeline.inspect.matching: decoder-cosine matching of two SAEs, the run's pairs, the report."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from pipeline.inspect.matching import LatentStats, greedy_one_to_one, match
from pipeline.inspect.matching_report import matching_markdown, write_matching_plot
from pipeline.inspect.pairing import compare, group_of, pairings, seed_of

D = 16


def _unit(rng: np.random.Generator, n: int, d: int = D) -> np.ndarray:
    w = rng.standard_normal((n, d)).astype(np.float32)
    return w / np.linalg.norm(w, axis=1, keepdims=True)


def _stats(name: str, w: np.ndarray, cfg: dict[str, Any] | None = None, **arrays: np.ndarray) -> LatentStats:
    n = w.shape[0]
    return LatentStats(
        name=name,
        cfg=cfg or {},
        W_dec=w,
        density=arrays.get("density", np.full(n, 0.01)),
        mean_act=arrays.get("mean_act", np.ones(n)),
        mean_abs_attr=arrays.get("mean_abs_attr", np.ones(n)),
    )


def _cfg(arch: str, seed: int, k: int = 4, **extra: Any) -> dict[str, Any]:
    cfg = {"architecture": arch, "k": k, "d_in": D, "d_sae": 4 * D, "hook_name": "model.layers.3"}
    cfg.update(extra, training={"init_seed": seed})
    return cfg


def test_identical_saes_match_perfectly() -> None:
    w = _unit(np.random.default_rng(0), 40)
    m = match(_stats("a", w), _stats("b", w.copy()), 0.7)
    for side in (m.a_to_b, m.b_to_a):
        np.testing.assert_allclose(side.best_cos, 1.0, atol=1e-5)
        np.testing.assert_allclose(side.one_to_one_cos, 1.0, atol=1e-5)
        assert side.share_unmatched == 0.0
        assert side.unmatched.n == 0 and math.isnan(side.unmatched.mean["density"])
    np.testing.assert_array_equal(m.pairs[:, 0], m.pairs[:, 1])
    assert m.method == "lsa"


@pytest.mark.parametrize("lsa_max", [10_000, 1])
def test_one_to_one_recovers_a_permutation(lsa_max: int) -> None:
    rng = np.random.default_rng(1)
    w = _unit(rng, 64)
    perm = rng.permutation(64)
    m = match(_stats("a", w), _stats("b", w[perm]), 0.7, lsa_max=lsa_max)
    assert m.method == ("lsa" if lsa_max > 64 else "greedy")
    # b's latent j is a's latent perm[j]: a's latent i pairs with b's latent argsort(perm)[i]
    mapping = dict(zip(m.pairs[:, 0].tolist(), m.pairs[:, 1].tolist(), strict=True))
    inverse = np.argsort(perm)
    assert all(mapping[i] == inverse[i] for i in range(64))
    np.testing.assert_array_equal(m.a_to_b.best_index, inverse)


def test_greedy_is_one_to_one_on_ties_and_rectangles() -> None:
    cos = np.ones((5, 3), np.float32)
    rows, cols = greedy_one_to_one(cos, candidates=2)
    assert len(set(rows.tolist())) == 3 and sorted(cols.tolist()) == [0, 1, 2]


def test_planted_latents_are_exactly_the_unmatched_ones() -> None:
    """Latents of a living in coordinates b never uses are unmatched, with their own stats."""
    rng = np.random.default_rng(2)
    shared = np.zeros((30, D), np.float32)
    shared[:, :12] = _unit(rng, 30, 12)
    planted = np.zeros((4, D), np.float32)
    planted[:, 12:] = np.eye(4, dtype=np.float32)
    w_a = np.concatenate([shared, planted])
    density = np.r_[np.full(30, 0.02), np.full(4, 0.001)]
    mean_act = np.r_[np.full(30, 2.0), np.full(4, 0.5)]
    attr = np.r_[np.full(30, 0.1), np.full(4, 0.8)]
    a = _stats("a", w_a, density=density, mean_act=mean_act, mean_abs_attr=attr)
    b = _stats("b", shared[rng.permutation(30)] + 1e-3 * rng.standard_normal((30, D)).astype(np.float32))
    side = match(a, b, 0.7).a_to_b
    unmatched = side.latents[side.best_cos < 0.7]
    np.testing.assert_array_equal(unmatched, np.arange(30, 34))
    assert side.share_unmatched == pytest.approx(4 / 34)
    assert side.unmatched.n == 4 and side.matched.n == 30
    assert side.unmatched.mean == pytest.approx({"density": 0.001, "mean_act": 0.5, "mean_abs_attr": 0.8})
    assert side.matched.median == pytest.approx({"density": 0.02, "mean_act": 2.0, "mean_abs_attr": 0.1})
    fig = side.figures()
    assert fig["ratio_mean_abs_attr"] == pytest.approx(8.0)
    assert fig["ratio_mean_act"] == pytest.approx(0.25)
    assert np.isnan(side.one_to_one_cos[30:]).all()  # b has only 30 latents, a's planted ones get none


def test_dead_latents_take_no_part() -> None:
    rng = np.random.default_rng(3)
    w = _unit(rng, 20)
    dens_a = np.full(20, 0.01)
    dens_a[[0, 5]] = 0.0
    dens_b = np.full(20, 0.01)
    dens_b[7] = 0.0
    m = match(_stats("a", w, density=dens_a), _stats("b", w.copy(), density=dens_b), 0.9)
    side = m.a_to_b
    assert side.n_dead == 2 and 0 not in side.latents and 5 not in side.latents
    assert 7 not in side.best_index  # dead target latents are no candidates
    # a's latent 7 lost its twin (dead in b): its best match is some other direction
    assert side.share_unmatched == pytest.approx(1 / 18)
    assert m.b_to_a.n_dead == 1 and m.b_to_a.share_unmatched == pytest.approx(2 / 19)
    assert not np.isin(m.pairs[:, 0], [0, 5]).any() and 7 not in m.pairs[:, 1]


def test_seed_and_group_names() -> None:
    cfg = _cfg("gsae", 2, beta=0.3, value_mode="selection")
    assert group_of(cfg) == "gsae-k4-b0.3-sel-x4"
    assert seed_of(_stats("whatever", np.eye(2, dtype=np.float32), cfg)) == 2
    assert seed_of(_stats("topk-k4-x4-s5", np.eye(2, dtype=np.float32), {"architecture": "topk"})) == 5


def _run(rng: np.random.Generator) -> list[LatentStats]:
    entries = []
    for seed in (0, 1, 2):
        entries.append(_stats(f"topk-k4-x4-s{seed}", _unit(rng, 24), _cfg("topk", seed)))
    for seed in (0, 1):
        g = _cfg("gsae", seed, beta=0.3, value_mode="selection")
        w = _unit(rng, 24)
        entries.append(_stats(f"gsae-k4-b0.3-x4-sel-s{seed}", w, g))
        entries.append(_stats(f"gsae-k4-b0.3-x4-sel-s{seed}@beta0", w, g))
    entries.append(_stats("topk-k8-x4-s0", _unit(rng, 24), _cfg("topk", 0, k=8)))
    return entries


def test_pairings_form_cross_pairs_and_controls() -> None:
    found = {(kind, a.name, b.name) for kind, _, _, a, b in pairings(_run(np.random.default_rng(4)))}
    assert found == {
        ("same-init", "gsae-k4-b0.3-x4-sel-s0", "topk-k4-x4-s0"),
        ("same-init", "gsae-k4-b0.3-x4-sel-s1", "topk-k4-x4-s1"),
        ("cross", "gsae-k4-b0.3-x4-sel-s0", "topk-k4-x4-s1"),
        ("cross", "gsae-k4-b0.3-x4-sel-s0", "topk-k4-x4-s2"),
        ("cross", "gsae-k4-b0.3-x4-sel-s1", "topk-k4-x4-s0"),
        ("cross", "gsae-k4-b0.3-x4-sel-s1", "topk-k4-x4-s2"),
        ("control", "gsae-k4-b0.3-x4-sel-s0", "gsae-k4-b0.3-x4-sel-s1"),
        ("control", "topk-k4-x4-s0", "topk-k4-x4-s1"),
        ("control", "topk-k4-x4-s0", "topk-k4-x4-s2"),
        ("control", "topk-k4-x4-s1", "topk-k4-x4-s2"),
    }  # no @beta0 entry, no k8 (other k) pair


def test_compare_aggregates_per_direction_and_markdown_shows_them(tmp_path: Any) -> None:
    result = compare(_run(np.random.default_rng(5)), 0.7)
    dirs = {(d["kind"], d["source"], d["target"]): d for d in result["directions"]}
    assert [d["kind"] for d in result["directions"]] == ["same-init"] * 2 + ["cross"] * 2 + ["control"] * 2
    assert set(dirs) == {
        ("same-init", "gsae-k4-b0.3-sel-x4", "topk-k4-x4"),
        ("same-init", "topk-k4-x4", "gsae-k4-b0.3-sel-x4"),
        ("cross", "gsae-k4-b0.3-sel-x4", "topk-k4-x4"),
        ("cross", "topk-k4-x4", "gsae-k4-b0.3-sel-x4"),
        ("control", "gsae-k4-b0.3-sel-x4", "gsae-k4-b0.3-sel-x4"),
        ("control", "topk-k4-x4", "topk-k4-x4"),
    }
    same = dirs[("same-init", "topk-k4-x4", "gsae-k4-b0.3-sel-x4")]
    assert same["pairs"] == [
        ["topk-k4-x4-s0", "gsae-k4-b0.3-x4-sel-s0"],
        ["topk-k4-x4-s1", "gsae-k4-b0.3-x4-sel-s1"],
    ]
    cross = dirs[("cross", "topk-k4-x4", "gsae-k4-b0.3-sel-x4")]
    assert len(cross["pairs"]) == 4
    share = cross["figures"]["share_unmatched"]
    assert share["mean"] == pytest.approx(np.mean(share["values"]))
    assert share["sd"] == pytest.approx(np.std(share["values"], ddof=1))
    single = dirs[("control", "gsae-k4-b0.3-sel-x4", "gsae-k4-b0.3-sel-x4")]["figures"]["median_best_cos"]
    assert len(single["values"]) == 1 and math.isnan(single["sd"])
    assert sum(cross["histogram"]["mean"]) == pytest.approx(1.0)
    assert result["groups"]["gsae-k4-b0.3-sel-x4"] == {
        "0": "gsae-k4-b0.3-x4-sel-s0",
        "1": "gsae-k4-b0.3-x4-sel-s1",
    }

    text = matching_markdown(result, plot="matching.png")
    median = dirs[("control", "topk-k4-x4", "topk-k4-x4")]["figures"]["median_best_cos"]
    assert f"{median['mean']:.3g} ± {median['sd']:.2g}" in text
    assert f"{share['mean']:.3g} ± {share['sd']:.2g}" in text
    assert "**0.7**" in text and "unmatched < 0.9" in text and "(control)" in text
    assert "topk-k4-x4-s1 ~ topk-k4-x4-s2" in text and "![best-match cosines](matching.png)" in text
    png = write_matching_plot(tmp_path / "matching.png", result)
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_no_pairs_and_no_gradients() -> None:
    rng = np.random.default_rng(6)
    lone = _stats("topk-k4-x4-s0", _unit(rng, 8), _cfg("topk", 0))
    result = compare([lone])
    assert result["directions"] == [] and "No pair" in matching_markdown(result)
    a = LatentStats("a", {}, _unit(rng, 8), np.full(8, 0.1), np.ones(8), None)
    fig = match(a, a, 0.7).a_to_b.figures()
    assert math.isnan(fig["matched_mean_abs_attr"]) and math.isnan(fig["ratio_mean_abs_attr"])
