"""``gsae train``: grid listing from the registry, and one-line errors on a bad cache."""

from __future__ import annotations

import json

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


def test_train_and_evaluate_before_harvest_say_what_to_run(tmp_path, capsys):
    params = tmp_path / "p.yaml"
    params.write_text(f"harvest:\n  cache_root: {tmp_path / 'cache'}\n")
    code, _, err = run_cli(["train", "-p", str(params)], capsys)
    assert (
        code == 1
        and "no harvest of the train split recorded" in err
        and "run gsae harvest (or dvc repro)" in err
    )
    code, _, err = run_cli(["evaluate", "-p", str(params)], capsys)
    assert code == 1 and "run gsae harvest --heldout (or dvc repro)" in err, err
    # a pointer whose store is gone (deleted, or never pulled): the store error says what to run
    pointer = tmp_path / "cache" / "train" / "store.json"
    pointer.parent.mkdir(parents=True)
    pointer.write_text(json.dumps({"store": str(tmp_path / "gone.zarr"), "key": "k" * 64, "split": "train"}))
    code, _, err = run_cli(["train", "-p", str(params)], capsys)
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1, err
    assert (
        lines[0]
        == f"gsae: error: no cache store at {tmp_path / 'gone.zarr'}: run gsae harvest (or dvc repro)"
    )


def test_an_explicit_store_that_is_missing_names_the_setting_to_harvest_it(tmp_path, capsys):
    missing = tmp_path / "missing.zarr"
    params = tmp_path / "p.yaml"
    params.write_text(f"harvest:\n  cache_root: {tmp_path / 'cache'}\n")
    code, _, err = run_cli(["train", "-p", str(params), "-s", f"train.store={missing}"], capsys)
    assert code == 1 and f"run gsae harvest -s harvest.store={missing} (or dvc repro)" in err, err
    code, _, err = run_cli(["evaluate", "-p", str(params), "-s", f"evaluate.store={missing}"], capsys)
    assert code == 1 and f"run gsae harvest --heldout -s evaluate.store={missing} (or dvc repro)" in err, err
