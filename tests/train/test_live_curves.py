"""Training writes each variant's curves in DVCLive's format while it runs, and DVC reads them."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from pipeline.train.run import run_train
from pipeline.train.trainer import Trainer
from tests.train.test_trainer import make_params, store  # noqa: F401  (the module's store fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = ("topk-k4-x4-s0", "gsae-k4-b1-x4-aug-s0")


def _rows(tsv: Path) -> list[dict[str, str]]:
    if not tsv.is_file():
        return []
    return list(csv.DictReader(tsv.read_text().splitlines(), delimiter="\t"))


def test_live_folders_appear_and_grow_during_training(store: str, tmp_path: Path, monkeypatch) -> None:  # noqa: F811
    live = tmp_path / "metrics" / "curves" / "live"
    seen: list[tuple[int, int, int | None]] = []  # (trainer step, fvu.tsv rows, metrics.json step)
    real_step = Trainer.train_step

    def watching_step(self: Trainer, act: torch.Tensor, grad: torch.Tensor, **kw: bool):
        folder = live / NAMES[0]
        summary = folder / "metrics.json"
        step = json.loads(summary.read_text())["step"] if summary.is_file() else None
        seen.append((self.step, len(_rows(folder / "plots" / "metrics" / "fvu.tsv")), step))
        return real_step(self, act, grad, **kw)

    monkeypatch.setattr(Trainer, "train_step", watching_step)
    run_train(make_params(tmp_path, checkpoint_every=0), store_url=store, expected_key=None)

    # log_every = 3 over 12 steps: the files hold 1, 2, 3 rows before steps 4, 7, 10 (while training)
    assert [(s, n, j) for s, n, j in seen if s in (0, 3, 4, 7, 10)] == [
        (0, 0, None),
        (3, 1, 3),
        (4, 1, 3),
        (7, 2, 6),
        (10, 3, 9),
    ]
    assert sorted(p.name for p in live.iterdir()) == sorted(NAMES)
    curves = list(csv.DictReader((tmp_path / "metrics" / "curves" / "curves.csv").read_text().splitlines()))
    for name in NAMES:
        fvu = _rows(live / name / "plots" / "metrics" / "fvu.tsv")
        assert [int(r["step"]) for r in fvu] == [3, 6, 9, 12]
        mine = [r for r in curves if r["variant"] == name]
        for a, b in zip(fvu, mine, strict=True):  # the same figures as curves.csv (6 digits there)
            assert float(a["fvu"]) == pytest.approx(float(b["fvu"]), rel=1e-5)
        summary = json.loads((live / name / "metrics.json").read_text())
        assert summary["step"] == 12 and summary["tokens"] == 128 * 12
        params = yaml.safe_load((live / name / "params.yaml").read_text())
        assert params["k"] == 4 and params["architecture"] == name.split("-")[0]
    assert "selection_shift" in json.loads((live / NAMES[1] / "metrics.json").read_text())


def test_a_new_grid_removes_the_old_variants_folders(store: str, tmp_path: Path) -> None:  # noqa: F811
    run_train(make_params(tmp_path, checkpoint_every=0), store_url=store, expected_key=None)
    grid = {"architecture": ["topk"], "k": [3], "expansion": [4], "lr": [3e-3]}
    run_train(make_params(tmp_path, checkpoint_every=0, grid=grid), store_url=store, expected_key=None)
    live = tmp_path / "metrics" / "curves" / "live"
    assert [p.name for p in live.iterdir()] == ["topk-k3-x4-s0"]


def test_resumed_run_logs_each_step_once(store: str, tmp_path: Path, monkeypatch) -> None:  # noqa: F811
    real_step = Trainer.train_step

    def crashing_step(self: Trainer, act: torch.Tensor, grad: torch.Tensor, **kw: bool):
        if self.step == 7:  # after the log at step 6, with the checkpoint at step 4
            raise KeyboardInterrupt
        return real_step(self, act, grad, **kw)

    monkeypatch.setattr(Trainer, "train_step", crashing_step)
    with pytest.raises(KeyboardInterrupt):
        run_train(make_params(tmp_path / "run"), store_url=store, expected_key=None)
    fvu = tmp_path / "run" / "metrics" / "curves" / "live" / NAMES[0] / "plots" / "metrics" / "fvu.tsv"
    assert [int(r["step"]) for r in _rows(fvu)] == [3, 6]
    monkeypatch.setattr(Trainer, "train_step", real_step)
    run_train(make_params(tmp_path / "run"), store_url=store, expected_key=None)
    run_train(make_params(tmp_path / "ref"), store_url=store, expected_key=None)
    ref = tmp_path / "ref" / "metrics" / "curves" / "live" / NAMES[0] / "plots" / "metrics" / "fvu.tsv"
    assert [int(r["step"]) for r in _rows(fvu)] == [3, 6, 9, 12]
    assert fvu.read_text() == ref.read_text()


def test_dvc_plots_reads_a_live_folder(store: str, tmp_path: Path) -> None:  # noqa: F811
    run_train(make_params(tmp_path, checkpoint_every=0), store_url=store, expected_key=None)
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    dvc = str(Path(sys.executable).parent / "dvc")
    subprocess.run([dvc, "init", "-q"], cwd=tmp_path, check=True)
    target = f"metrics/curves/live/{NAMES[0]}/plots/metrics/fvu.tsv"
    out = subprocess.run(
        [dvc, "plots", "show", "--json", "-x", "step", "-y", "fvu", target],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    values = json.loads(out)["data"][target][0]["content"]["data"]["values"]
    assert [int(v["step"]) for v in values] == [3, 6, 9, 12]
    assert [v["fvu"] for v in values] == [r["fvu"] for r in _rows(tmp_path / target)]
    shown = subprocess.run(
        [dvc, "metrics", "show", "--json", f"metrics/curves/live/{NAMES[0]}/metrics.json"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert '"fvu"' in shown and '"step": 12' in shown
