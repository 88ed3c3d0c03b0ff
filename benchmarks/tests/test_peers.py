"""The peers benchmark's bookkeeping (benchmarks/peers/): rows over repeated rounds and the flags it refuses."""

from __future__ import annotations

import argparse

import pytest

from benchmarks.peers.report import median_row


def test_median_row_one_round_is_the_plain_ratio() -> None:
    r = median_row("x", [30.0], [60.0], "<= 0.5", "s")
    assert r["ratio"] == pytest.approx(0.5)
    assert "ratio_min" not in r


def test_median_row_takes_the_median_of_per_round_ratios() -> None:
    # per-round ratios 0.4, 0.5, 0.2: their median is 0.4, not median(ours) / median(peer) = 0.5
    r = median_row("x", [40.0, 50.0, 40.0], [100.0, 100.0, 200.0], "<= 0.5", "s")
    assert r["ratio"] == pytest.approx(0.4)
    assert (r["ratio_min"], r["ratio_max"]) == (pytest.approx(0.2), pytest.approx(0.5))
    assert (r["ours"], r["peer"]) == (40.0, 100.0)


def test_median_row_needs_paired_rounds() -> None:
    with pytest.raises(ValueError):
        median_row("x", [1.0, 2.0], [1.0], "", "s")


def _args(**over: object) -> argparse.Namespace:
    base = dict(
        quick=True,
        only="1,2,3",
        tokens=None,
        sweep_tokens=None,
        steps=None,
        warmup=None,
        our_model="folder",
        sweep_peers="all",
        repeat=1,
        lm_autocast="none",
    )
    return argparse.Namespace(**{**base, **over})


def test_sizes_refuse_bad_repeat_and_autocast_with_sparsify() -> None:
    from benchmarks.peers.run import sizes_of

    assert sizes_of(_args(repeat=3, lm_autocast="bfloat16", sweep_peers="saelens")).repeat == 3
    with pytest.raises(SystemExit, match="--repeat"):
        sizes_of(_args(repeat=0))
    with pytest.raises(SystemExit, match="sparsify"):
        sizes_of(_args(lm_autocast="bfloat16"))
