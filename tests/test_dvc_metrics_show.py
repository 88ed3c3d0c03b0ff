"""`dvc metrics show` and `dvc exp show` at the repository root stay readable.

DVC collects the metrics of every ``dvc.yaml`` in the repository; the experiment's per-variant
files (experiments/gsae-vs-topk/runs/*/{train_metrics,evaluate}.json) declared as metrics made
the root's table 7 files and ~32,000 characters wide and ``dvc exp show`` ~1,200 columns. The
root must show the default run's compact ``metrics/summary.json`` only, while the experiment's
files stay readable when named. Run on a committed copy of the real dvc.yaml files, params
and metrics files (DVC reads the committed revision for ``exp show``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.dvc_project import ROOT, run

EXPERIMENT = "experiments/gsae-vs-topk"


def _copy(rel: str, dest: Path) -> None:
    src = ROOT / rel
    (dest / rel).parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dest / rel)
    else:
        shutil.copy(src, dest / rel)


def _repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    files = ["dvc.yaml", "dvc.lock", "params.yaml", "plot_templates", "metrics/summary.json"]
    files += [f"{EXPERIMENT}/{name}" for name in ("dvc.yaml", "dvc.lock", "params.yaml", "sweeps")]
    files += [
        str(p.relative_to(ROOT))
        for p in sorted((ROOT / EXPERIMENT / "runs").glob("*/*.json"))
        if p.name in ("train_metrics.json", "evaluate.json")
    ]
    for rel in files:
        _copy(rel, repo)
    run(["git", "init", "-q"], repo)
    run(["dvc", "init", "-q"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "copy"], repo)
    return repo


def test_root_metrics_show_is_the_default_runs_summary_only(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    assert list((repo / EXPERIMENT / "runs").glob("*/evaluate.json"))  # the experiment's files are there
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], repo).splitlines()[-1])
    files = set(shown[""]["data"])
    assert files == {"metrics/summary.json"}
    table = run(["dvc", "metrics", "show"], repo)
    # one row; its width grows with the families in summary.json (3 in the default run: ~1,200)
    assert len(table.strip().splitlines()) == 2
    assert max(len(line) for line in table.splitlines()) < 2500

    columns = run(["dvc", "exp", "show", "--csv"], repo).splitlines()[0].split(",")
    assert len(columns) < 300, len(
        columns
    )  # ~200 (params, summary.json, deps); ~1,200 with the experiment's metrics
    assert not any("runs/" in c and ".json:" in c for c in columns)  # deps columns name runs/ folders

    # the experiment's figures stay one command away
    named = f"{EXPERIMENT}/runs/topk/evaluate.json"
    one = json.loads(run(["dvc", "metrics", "show", "--json", named], repo).splitlines()[-1])
    assert set(one[""]["data"]) == {named}


@pytest.mark.parametrize("dvc_yaml", sorted(ROOT.glob("experiments/*/dvc.yaml")), ids=lambda p: p.parent.name)
def test_no_experiment_declares_metrics(dvc_yaml):
    """Any experiment's metrics would be collected by the root's ``dvc metrics show`` too."""
    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    declaring = [name for name, stage in stages.items() if "metrics" in stage.get("do", stage)]
    assert declaring == [], f"{dvc_yaml.relative_to(ROOT)}: declare these files as outs"
