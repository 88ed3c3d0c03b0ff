"""gsae finetune end to end on the tiny project: outputs, lower KL, resume after a kill, bad input."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.numpy import load_file

from pipeline.saes.io import load_sae
from tests.clirun import run_cli

ROOT = Path(__file__).resolve().parents[2]
VARIANTS = ("topk-k4-x2-s0", "gsae-k4-b1-x2-aug-s0")


def _sets(project, out: Path, *extra: str) -> list[str]:
    sets = [
        *project.overrides,
        f"finetune.out_dir={out}",
        "finetune.tokens=512",
        "finetune.batch_contexts=2",
        "finetune.lr=0.003",
        "finetune.checkpoint_every=2",
        *extra,
    ]
    return [a for s in sets for a in ("-s", s)]


def _gsae(args: list[str], fault: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("GSAE_FAULT", None)
    if fault:
        env["GSAE_FAULT"] = fault
    return subprocess.run(
        [sys.executable, "-P", "-m", "stages.cli", "finetune", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )


def test_finetune_writes_loadable_variants_and_lowers_the_kl(inspected_project, tmp_path, capsys):
    out = tmp_path / "klft"
    code, _, err = run_cli(["finetune", *_sets(inspected_project, out)], capsys)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == sorted([*VARIANTS, "finetune_curves.csv"])
    rows = list(csv.DictReader((out / "finetune_curves.csv").read_text().splitlines()))
    assert len(rows) == 2 * 8  # 512 tokens = 16 contexts of 32, 2 per step: 8 steps per variant
    for name in VARIANTS:
        sae, cfg = load_sae(out / name)
        assert cfg["finetune"]["steps"] == 8 and cfg["finetune"]["source"].endswith(name)
        assert cfg["hook_name"] == "model.layers.1"
        before = load_file(str(inspected_project.root / "saes" / name / "sae_weights.safetensors"))
        after = load_file(str(out / name / "sae_weights.safetensors"))
        assert (before["W_dec"] != after["W_dec"]).any()
        kl = [float(r["kl"]) for r in rows if r["variant"] == name]
        assert sum(kl[-3:]) < sum(kl[:3]), kl  # the objective it descends went down
    assert not (out / ".checkpoints").exists()


def test_a_killed_finetune_resumes_bit_identical(inspected_project, tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    done = _gsae(_sets(inspected_project, whole))
    assert done.returncode == 0, done.stderr[-2000:]
    # SIGKILL during the second checkpoint (step 4): its state file is written, its index not
    cut = _gsae(_sets(inspected_project, killed), fault="checkpoint_write:2")
    assert cut.returncode == -signal.SIGKILL
    assert json.loads((killed / ".checkpoints" / "state.json").read_text())["step"] == 2
    again = _gsae(_sets(inspected_project, killed))
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resumed at step 2" in again.stderr
    for name in VARIANTS:
        a = (whole / name / "sae_weights.safetensors").read_bytes()
        b = (killed / name / "sae_weights.safetensors").read_bytes()
        assert a == b, name
    assert (whole / "finetune_curves.csv").read_text() == (killed / "finetune_curves.csv").read_text()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["finetune.variants=[nope]"], "finetune.variants: nope not in"),
        (["finetune.tokens=100000"], "needs 3125 contexts, the store holds 16"),
        (["finetune.lr=0"], "finetune.lr must be positive"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(inspected_project, tmp_path, capsys, extra, message):
    out = tmp_path / "klft"
    code, _, err = run_cli(["finetune", *_sets(inspected_project, out, *extra)], capsys)
    assert code != 0
    lines = [line for line in err.splitlines() if line.strip() and "Loading weights" not in line]
    assert len(lines) == 1 and message in lines[0], err
    assert not out.exists()


def test_the_mse_only_control_writes_strict_json_and_lowers_the_nmse(inspected_project, tmp_path, capsys):
    out = tmp_path / "mseft"
    code, _, err = run_cli(["finetune", *_sets(inspected_project, out, "finetune.kl_coef=0")], capsys)
    assert code == 0, err
    rows = list(csv.DictReader((out / "finetune_curves.csv").read_text().splitlines()))
    for name in VARIANTS:
        cfg = json.loads((out / name / "cfg.json").read_text(), parse_constant=lambda c: pytest.fail(c))
        assert cfg["finetune"]["final_kl"] is None and cfg["finetune"]["kl_coef"] == 0
        nmse = [float(r["nmse"]) for r in rows if r["variant"] == name]
        assert sum(nmse[-3:]) < sum(nmse[:3]), nmse
        assert all(r["kl"] == "nan" for r in rows if r["variant"] == name)
