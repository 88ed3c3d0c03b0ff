"""Training-token selection (pipeline/train/tokens.py) and the training-length snapshots
(``train.snapshot_tokens``): the outlier filter against direct norms, its refusals, and
snapshots that are the run's weights at that length."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.core.errors import ConfigError
from pipeline.saes.io import load_sae
from pipeline.train.run import run_train
from pipeline.train.tokens import OutlierFilter, drop_outliers, norm_limit
from tests._stores import build_store, tiny_train_params

pytestmark = pytest.mark.usefixtures("one_thread")


def test_norm_limit_is_the_multiple_of_the_median_norm_and_zero_turns_it_off() -> None:
    act = np.array([[3.0, 4.0], [0.0, 1.0], [6.0, 8.0]], dtype=np.float32)  # norms 5, 1, 10
    assert norm_limit(act, 0.0) is None
    assert norm_limit(act, 2.0) == pytest.approx(10.0)
    kept, grad = drop_outliers(act, -act, 9.0)
    assert kept.tolist() == [[3.0, 4.0], [0.0, 1.0]] and grad.tolist() == [[-3.0, -4.0], [-0.0, -1.0]]


def test_outlier_filter_drops_exactly_the_rows_above_the_limit_and_counts_them() -> None:
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(3):
        act = torch.randn(64, 8, generator=g, dtype=torch.float32).half()
        act[::9] *= 50.0  # planted sinks
        batches.append((act, torch.arange(64.0)[:, None].expand(64, 8).clone()))
    limit = 10.0
    filt = OutlierFilter(iter(batches), limit)
    out = list(filt)
    expected_drop = 0
    for (act, grad), (kept, kept_grad) in zip(batches, out, strict=True):
        norms = torch.linalg.vector_norm(act.float(), dim=1)
        keep = norms <= limit
        expected_drop += int((~keep).sum())
        assert torch.equal(kept, act[keep])
        assert torch.equal(kept_grad, grad[keep])  # the gradient rows stay aligned
    assert filt.seen == 192 and filt.dropped == expected_drop > 0


def _params(tmp: Path, **train: object):  # noqa: ANN202
    grid = {"architecture": ["topk", "batchtopk"], "k": [4], "expansion": [4], "lr": [3e-3]}
    return tiny_train_params(tmp, grid, **train)


def test_run_train_leaves_out_the_outliers_and_trains_on_the_rest(tmp_path: Path, caplog) -> None:
    store = build_store(str(tmp_path / "s.zarr"), n_tokens=512, seed=2)
    with caplog.at_level(logging.INFO, logger="pipeline.train.tokens"):
        metrics = run_train(_params(tmp_path, max_norm_multiple=1.05), store_url=store, expected_key=None)
    line = next(r.getMessage() for r in caplog.records if "left out" in r.getMessage())
    dropped, seen = (int(w) for w in line.split()[2:5:2])
    assert seen == 512 and 0 < dropped < 256, line  # a tight limit on Gaussian rows drops some
    for figures in metrics.values():
        assert figures["tokens"] == seen - dropped


def test_snapshots_hold_the_weights_of_that_length(tmp_path: Path) -> None:
    store = build_store(str(tmp_path / "s.zarr"), n_tokens=512, seed=2)
    run_train(
        _params(tmp_path / "a", checkpoint_every=1, snapshot_tokens=[256]), store_url=store, expected_key=None
    )
    run_train(_params(tmp_path / "b", tokens=256, decay_fraction=0.0), store_url=store, expected_key=None)
    for name in ("topk-k4-x4-s0", "batchtopk-k4-x4-s0"):
        snap = tmp_path / "a" / "saes" / ".snapshots" / "256" / name
        final, _ = load_sae(tmp_path / "a" / "saes" / name)
        early, _ = load_sae(snap)
        assert json.loads((snap / "cfg.json").read_text())["architecture"] == name.split("-")[0]
        assert not torch.equal(early.W_enc, final.W_enc)  # the run went on after it
        # the first 256 tokens are at full lr in both runs (decay starts later in the 512-token
        # run; none in the 256-token one), so the snapshot is the short run's result
        short, _ = load_sae(tmp_path / "b" / "saes" / name)
        torch.testing.assert_close(early.W_enc, short.W_enc, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("train", "message"),
    [
        (
            {"snapshot_tokens": [200], "checkpoint_every": 1},
            "not a multiple of batch_size x checkpoint_every",
        ),
        ({"snapshot_tokens": [512], "checkpoint_every": 1}, "below train.tokens"),
        ({"snapshot_tokens": [256]}, "not a multiple of batch_size x checkpoint_every (0)"),
        ({"max_norm_multiple": 0.5}, "must be 0 (off) or > 1"),
        ({"max_norm_multiple": 10, "parallel": "data"}, "needs train.parallel: variants"),
    ],
)
def test_bad_settings_are_refused(tmp_path: Path, train: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        _params(tmp_path, **train)
    assert message in str(info.value)
