"""``gsae train``: grid listing from the registry, and one-line errors on a bad cache."""

from __future__ import annotations

from pipeline.saes import REGISTRY
from tests.clirun import run_cli


def test_dry_run_lists_grid(tmp_path, capsys):
    params = tmp_path / "p.yaml"
    params.write_text("train:\n  grid:\n    architecture: [topk, gsae]\n    k: [8, 16]\n    seed: [0, 1]\n")
    code, out, _ = run_cli(["train", "-p", str(params), "--dry-run"], capsys)
    names = out.split()
    assert code == 0 and len(names) == 8 and "gsae-k16-b1-x8-aug-s1" in names
    code, out, _ = run_cli(["train", "-p", str(params), "--dry-run", "-a", "topk"], capsys)
    assert out.split() == ["topk-k8-x8-s0", "topk-k8-x8-s1", "topk-k16-x8-s0", "topk-k16-x8-s1"]


def test_architecture_choices_come_from_registry(tmp_path, capsys):
    code, _, err = run_cli(["train", "-p", str(tmp_path / "none.yaml"), "-a", "nope"], capsys)
    assert code == 2 and all(name in err for name in REGISTRY)


def test_missing_cache_is_one_line(tmp_path, capsys):
    params = tmp_path / "p.yaml"
    params.write_text(f"train:\n  store: {tmp_path / 'missing.zarr'}\n")
    code, _, err = run_cli(["train", "-p", str(params)], capsys)
    assert code == 1 and err.strip().startswith("gsae: error: no cache store") and "Traceback" not in err


def test_new_architectures_train_from_the_grid_and_bad_values_are_one_line(tmp_path, capsys):
    params = tmp_path / "p.yaml"
    params.write_text("train:\n  grid:\n    value_mode: [selection]\n    beta: [0.5]\n")
    code, out, _ = run_cli(
        ["train", "-p", str(params), "--dry-run", "-a", "batchtopk", "-a", "gbatchtopk"], capsys
    )
    assert code == 0 and out.split() == ["batchtopk-k32-x8-s0", "gbatchtopk-k32-b0.5-x8-sel-s0"]
    code, _, err = run_cli(
        ["train", "-p", str(params), "--dry-run", "-a", "gbatchtopk", "-s", "train.grid.value_mode=[x]"],
        capsys,
    )
    assert code == 1 and len(err.strip().splitlines()) == 1 and "value_mode must be one of" in err, err
