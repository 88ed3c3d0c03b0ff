"""``dvc repro`` end to end in a temp git repo: harvest → train → evaluate on tiny params.

Then a ``train.*`` change reruns train and evaluate but never a harvest, and
``dvc metrics show`` lists every variant.
"""

from __future__ import annotations

import json

from tests.dvc_project import make_project, run, tiny_params, write_params


def _ran(out: str) -> set[str]:
    return {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage '")}


def test_dvc_repro_end_to_end_and_train_only_rerun(tiny_llama, tmp_path):
    repo = make_project(tmp_path, tiny_llama)
    out = run(["dvc", "repro"], repo)
    assert _ran(out) == {"harvest", "harvest_heldout", "train", "evaluate"}
    metrics = json.loads((repo / "metrics" / "evaluate.json").read_text())
    assert {"topk-k4-x2-s0", "gsae-k4-b1-x2-aug-s0", "gsae-k4-b1-x2-aug-s0@beta0"} <= set(metrics)
    assert (repo / "reports" / "report.md").is_file()

    shown = run(["dvc", "metrics", "show", "--json"], repo)
    assert "topk-k4-x2-s0" in shown and "loss_recovered" in shown

    params = tiny_params(tiny_llama)
    params["train"]["grid"]["k"] = [3]
    write_params(repo, params)
    again = run(["dvc", "repro"], repo)
    assert _ran(again) == {"train", "evaluate"}
    metrics = json.loads((repo / "metrics" / "evaluate.json").read_text())
    assert "topk-k3-x2-s0" in metrics and "topk-k4-x2-s0" not in metrics

    assert _ran(run(["dvc", "repro", "train"], repo)) == set()
    assert _ran(run(["dvc", "repro", "--force", "--single-item", "train"], repo)) == {"train"}
