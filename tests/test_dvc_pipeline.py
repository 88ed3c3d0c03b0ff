"""``dvc repro`` end to end in a temp git repo: harvest → train → evaluate, inspect on tiny params.

Then a ``train.*`` change reruns train, evaluate and inspect but never a harvest, and
``dvc metrics show`` lists every variant.
"""

from __future__ import annotations

import json

from cache.store import read_info
from tests.dvc_project import make_project, run, tiny_params, write_params


def _ran(out: str) -> set[str]:
    return {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage '")}


def test_dvc_repro_end_to_end_and_train_only_rerun(tiny_llama, tmp_path):
    repo = make_project(tmp_path, tiny_llama)
    out = run(["dvc", "repro"], repo)
    assert _ran(out) == {"harvest", "harvest_heldout", "train", "evaluate", "inspect"}
    stores = sorted((repo / "data" / "cache").glob("*/*.zarr"))
    assert [s.parent.name for s in stores] == ["heldout", "train"]
    assert all(read_info(str(s)).complete for s in stores)
    for store in stores:  # the harvest's pointer names the store train/evaluate read, with its key
        ref = json.loads((store.parent / "store.json").read_text())
        assert (
            ref["store"].endswith(f"{store.parent.name}/{store.name}")
            and ref["key"] == read_info(str(store)).key
        )
    metrics = json.loads((repo / "metrics" / "evaluate.json").read_text())
    assert {"topk-k4-x2-s0", "gsae-k4-b0.3-x2-sel-s0", "gsae-k4-b0.3-x2-sel-s0@beta0"} <= set(metrics)
    assert (repo / "reports" / "report.md").is_file()
    browser = (repo / "reports" / "latents" / "index.html").read_text()
    assert all(f"{name}/index.html" in browser for name in metrics)  # every entry described

    shown = json.loads(run(["dvc", "metrics", "show", "--json"], repo))
    flat = json.dumps(shown)
    assert '"topk-x2"' in flat and '"k4"' in flat and "loss_recovered" in flat and "topk-k4-x2-s0" not in flat
    assert "seconds" not in flat  # wall time is run information, not a metric
    plots = json.loads(run(["dvc", "plots", "show", "--json"], repo))["data"]
    assert {"training_fvu", "loss_recovered", "fvu_vs_loss_recovered", "steering_kl"} <= set(plots)
    training = plots["training_fvu"][0]["content"]
    assert training["encoding"]["color"]["field"] == "series"  # coloured by series, one line per variant
    assert training["encoding"]["detail"]["field"] == "variant"
    assert {row["variant"] for row in training["data"]["values"]} == {
        "topk-k4-x2-s0",
        "gsae-k4-b0.3-x2-sel-s0",
    }
    assert {row["series"] for row in training["data"]["values"]} == {"topk-x2", "gsae-b0.3-sel-x2"}
    assert any(p.endswith("training_curves.png") for p in plots)
    assert (repo / "reports" / "plots" / "training_curves.png").stat().st_size > 1000

    params = tiny_params(tiny_llama)
    params["train"]["grid"]["k"] = [3]
    write_params(repo, params)
    again = run(["dvc", "repro"], repo)
    assert _ran(again) == {"train", "evaluate", "inspect"}
    metrics = json.loads((repo / "metrics" / "evaluate.json").read_text())
    assert "topk-k3-x2-s0" in metrics and "topk-k4-x2-s0" not in metrics

    assert _ran(run(["dvc", "repro", "train"], repo)) == set()
    assert _ran(run(["dvc", "repro", "--force", "--single-item", "train"], repo)) == {"train"}

    # Two experiments with different k grids share the metric columns of the k they have in common.
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "k3"], repo)
    run(["dvc", "exp", "run", "-n", "k34", "-S", "train.grid.k=[3,4]"], repo)
    table = run(["dvc", "exp", "show", "--csv"], repo).splitlines()
    header = table[0].split(",")
    col = header.index("topk-x2.k3.loss_recovered")
    k4 = header.index("topk-x2.k4.loss_recovered")
    rows = {line.split(",")[0]: line.split(",") for line in table[1:]}
    assert rows["k34"][col] and rows["k34"][k4]  # the experiment fills both k3 and k4
    assert [r for name, r in rows.items() if name != "k34" and r[col]]  # the committed run fills k3 too


def test_dvc_repro_with_custom_stores(tiny_llama, tmp_path):
    """Stores outside the DVC outputs (a plain path and a new file:// URL) work in dvc repro."""
    repo = make_project(tmp_path, tiny_llama)
    params = tiny_params(tiny_llama)
    train_store = tmp_path / "stores" / "train.zarr"
    held_store = tmp_path / "stores" / "new" / "folder" / "heldout.zarr"
    params["harvest"]["store"] = str(train_store)
    params["evaluate"]["store"] = f"file://{held_store}"
    write_params(repo, params)
    out = run(["dvc", "repro"], repo)
    assert _ran(out) == {"harvest", "harvest_heldout", "train", "evaluate", "inspect"}
    assert (train_store / "zarr.json").is_file() and (held_store / "zarr.json").is_file()
    ref = json.loads((repo / "data" / "cache" / "train" / "store.json").read_text())
    assert ref["store"] == str(train_store) and len(ref["key"]) == 64
    held_ref = json.loads((repo / "data" / "cache" / "heldout" / "store.json").read_text())
    assert held_ref["store"] == f"file://{held_store}"
    assert "topk-k4-x2-s0" in json.loads((repo / "metrics" / "evaluate.json").read_text())
    assert _ran(run(["dvc", "repro"], repo)) == set()
