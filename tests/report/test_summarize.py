"""Aggregation over seeds: means, sample sds, paired deltas against TopK, tables and plots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.core.errors import NothingToEvaluate, SAEFormatError
from pipeline.report.summarize import load_rows, markdown_table, summarize, write_results


def _variant(
    run: Path, name: str, arch: str, k: int, seed: int, beta: float = 0.0, mode: str = "selection"
) -> None:
    folder = run / "saes" / name
    folder.mkdir(parents=True)
    cfg = {"architecture": arch, "k": k, "beta": beta, "value_mode": mode, "training": {"init_seed": seed}}
    (folder / "cfg.json").write_text(json.dumps(cfg))


def _run(tmp_path: Path, ks: tuple[int, ...] = (8,)) -> Path:
    run = tmp_path / "run"
    metrics = {}
    lr_topk = {0: 0.90, 1: 0.92, 2: 0.94}
    for k in ks:
        _seeds(run, metrics, lr_topk, k)
    (run / "evaluate.json").write_text(json.dumps(metrics))
    return run


def _seeds(run: Path, metrics: dict, lr_topk: dict, k: int) -> None:
    for seed, lr in lr_topk.items():
        _variant(run, f"topk-k{k}-s{seed}", "topk", k, seed)
        metrics[f"topk-k{k}-s{seed}"] = {"loss_recovered": lr, "l0": float(k), "fvu": 0.2, "kl": 0.5}
        _variant(run, f"gsae-k{k}-b1-sel-s{seed}", "gsae", k, seed, beta=1.0)
        # g-SAE beats TopK by 0.01 + 0.001·seed on every seed: a small but consistent paired gain
        metrics[f"gsae-k{k}-b1-sel-s{seed}"] = {
            "loss_recovered": lr + 0.01 + 0.001 * seed,
            "l0": float(k),
            "fvu": 0.25,
            "kl": 0.4,
            "selection_shift": 0.3,
        }
        metrics[f"gsae-k{k}-b1-sel-s{seed}@beta0"] = {
            "loss_recovered": lr - 0.02,
            "l0": float(k),
            "fvu": 0.3,
            "kl": 0.6,
            "selection_shift": 0.0,
        }


def test_means_sds_and_paired_deltas(tmp_path):
    summary = summarize(load_rows([_run(tmp_path)]))
    assert set(summary) == {"k8 topk", "k8 gsae sel β=1", "k8 gsae sel β=1 @β0"}
    topk = summary["k8 topk"]
    assert topk["loss_recovered"] == pytest.approx([0.92, 0.02])  # sample sd of 0.90, 0.92, 0.94
    assert topk["seeds"] == [0, 1, 2] and "delta_vs_topk" not in topk
    delta = summary["k8 gsae sel β=1"]["delta_vs_topk"]["loss_recovered"]
    assert delta == pytest.approx([0.011, 0.001, 3.0])  # paired: the seed spread of 0.02 cancels
    assert summary["k8 gsae sel β=1 @β0"]["delta_vs_topk"]["loss_recovered"][0] == pytest.approx(-0.02)
    assert summary["k8 gsae sel β=1"]["selection_shift"] == pytest.approx([0.3, 0.0])


def test_write_results_table_and_plots(tmp_path):
    run = _run(tmp_path, ks=(8, 16))
    out = tmp_path / "res" / "results.md"
    write_results([run], out, tmp_path / "res" / "plots")
    text = out.read_text()
    assert "| 8 | gsae sel β=1 | 3 | 0.9310 ± 0.0210 |" in text
    assert "+0.0110 ± 0.0010 (n=3)" in text
    assert json.loads((out.parent / "results.json").read_text())["k8 topk"]["k"] == 8
    for name in ("loss_recovered_vs_l0.png", "fvu_vs_l0.png"):
        assert (tmp_path / "res" / "plots" / name).stat().st_size > 5000


def test_missing_evaluation_is_a_clear_error(tmp_path):
    with pytest.raises(NothingToEvaluate, match="evaluate.json not found"):
        load_rows([tmp_path])


def test_explicit_metrics_and_sae_folder_pair_reads_like_a_run(tmp_path):
    run = _run(tmp_path)
    as_pair = load_rows([], pairs=[(run / "evaluate.json", run / "saes")])
    assert summarize(as_pair) == summarize(load_rows([run]))


EXPERIMENT = Path(__file__).resolve().parents[2] / "experiments" / "gsae-vs-topk"


def test_committed_runs_summarize_from_their_evaluate_json_alone(tmp_path, capsys):
    """The experiment's SAE folders are DVC outputs a clone lacks: `gsae summarize` reads the
    hyper-parameters from the entry names, says so, and gives the committed results."""
    from tests.clirun import run_cli

    runs = []
    for name in ("topk", "gsae"):
        run = tmp_path / "runs" / name
        run.mkdir(parents=True)
        (run / "evaluate.json").write_bytes((EXPERIMENT / "runs" / name / "evaluate.json").read_bytes())
        runs.append(str(run))
    out = tmp_path / "results.md"
    code, stdout, err = run_cli(
        ["summarize", *runs, "-o", str(out), "--plots-dir", str(tmp_path / "p")], capsys
    )
    assert code == 0, err
    assert stdout.strip() == f"9 groups → {out}"
    assert "were read from their names" in out.read_text() and "27 of the 27 entries" in out.read_text()
    ours = json.loads(out.with_suffix(".json").read_text())
    committed = json.loads((EXPERIMENT / "results" / "results.json").read_text())
    assert set(ours) == set(committed)
    for group, entry in ours.items():
        for key in ("k", "seeds", "architecture", "beta", "value_mode", "with_grad", "loss_recovered"):
            assert entry[key] == pytest.approx(committed[group][key]), (group, key)
        if "delta_vs_topk" in committed[group]:
            delta = committed[group]["delta_vs_topk"]["loss_recovered"]
            assert entry["delta_vs_topk"]["loss_recovered"] == pytest.approx(delta), group
    # one evaluate.json alone, without --saes
    code, stdout, _ = run_cli(
        [
            "summarize",
            "--evaluate",
            f"{runs[0]}/evaluate.json",
            "-o",
            str(tmp_path / "t.md"),
            "--plots-dir",
            str(tmp_path / "p"),
        ],
        capsys,
    )
    assert code == 0 and stdout.startswith("3 groups")


def test_cfg_json_wins_over_the_name_and_a_bad_name_is_one_error(tmp_path):
    run = _run(tmp_path)
    rows = load_rows([run])
    assert not any(r.from_name for r in rows)  # every variant has its cfg.json
    cfg_path = run / "saes" / "topk-k8-s0" / "cfg.json"
    cfg_path.unlink()
    rows = load_rows([run])
    assert [r.from_name for r in rows].count(True) == 1
    assert summarize(rows) == summarize(load_rows([_run(tmp_path / "again")]))  # the name says the same
    metrics = json.loads((run / "evaluate.json").read_text())
    metrics["mystery-entry"] = {"loss_recovered": 0.5}
    (run / "evaluate.json").write_text(json.dumps(metrics))
    with pytest.raises(SAEFormatError, match="cannot tell the hyper-parameters of 'mystery-entry'"):
        load_rows([run])


def test_saelens_scores_are_columns_beside_ours(tmp_path):
    """ce_loss_score / kl_div_score: mean ± sd beside loss rec. and KL; '–' for runs evaluated
    before they existed."""
    run = _run(tmp_path)
    metrics = json.loads((run / "evaluate.json").read_text())
    for name, m in metrics.items():
        if name.startswith("topk"):
            m |= {"ce_loss_score": m["loss_recovered"] - 0.015, "kl_div_score": 0.9}
    (run / "evaluate.json").write_text(json.dumps(metrics))
    out = tmp_path / "res" / "results.md"
    write_results([run], out, tmp_path / "res" / "plots")
    lines = out.read_text().splitlines()
    head = next(line for line in lines if line.startswith("| k |"))
    assert "| loss rec. | CE loss score (SAELens) | CE spliced | KL | KL div score (SAELens) |" in head
    topk = "| 8 | topk | 3 | 0.9200 ± 0.0200 | 0.9050 ± 0.0200 | – | 0.5000 ± 0.0000 | 0.9000 ± 0.0000 |"
    assert any(line.startswith(topk) for line in lines), lines
    assert any(line.startswith("| 8 | gsae sel β=1 | 3 | 0.9310 ± 0.0210 | – |") for line in lines)


def test_a_gradient_loss_term_makes_its_own_group(tmp_path):
    """Variants trained with λ > 0 (cfg.json ``grad_loss``, or ``-gl`` in the name) are not pooled
    with their λ = 0 twins, and are paired against plain TopK."""
    run = _run(tmp_path)
    metrics = json.loads((run / "evaluate.json").read_text())
    for seed in range(3):
        name = f"topk-k8-x8-gl0.5-s{seed}"
        _variant(run, name, "topk", 8, seed)
        cfg_path = run / "saes" / name / "cfg.json"
        cfg_path.write_text(json.dumps({**json.loads(cfg_path.read_text()), "grad_loss": 0.5}))
        metrics[name] = {"loss_recovered": 0.93 + 0.01 * seed, "l0": 8.0, "fvu": 0.21, "kl": 0.45}
    (run / "evaluate.json").write_text(json.dumps(metrics))
    summary = summarize(load_rows([run]))
    assert summary["k8 topk"]["seeds"] == [0, 1, 2] and summary["k8 topk"]["loss_recovered"][
        0
    ] == pytest.approx(0.92)
    weighted = summary["k8 topk λ=0.5"]
    assert (
        weighted["grad_loss"] == 0.5
        and weighted["seeds"] == [0, 1, 2]
        and "grad_loss" not in summary["k8 topk"]
    )
    assert weighted["delta_vs_topk"]["loss_recovered"][:2] == pytest.approx([0.02, 0.01])  # 0.03, 0.02, 0.01
    (run / "saes").rename(run / "gone")  # from the names alone: the same groups
    assert {"k8 topk", "k8 topk λ=0.5"} <= set(summarize(load_rows([run])))


def test_paired_delta_of_saelens_ce_loss_score(tmp_path):
    """Δ CE loss score vs TopK, paired by seed, beside Δ loss recovered (column only when present)."""
    run = _run(tmp_path)
    metrics = json.loads((run / "evaluate.json").read_text())
    for name, m in metrics.items():
        seed = int(name.removesuffix("@beta0")[-1])
        m["ce_loss_score"] = m["loss_recovered"] - 0.015 + (0.002 * seed if name.startswith("gsae") else 0.0)
    (run / "evaluate.json").write_text(json.dumps(metrics))
    summary = summarize(load_rows([run]))
    delta = summary["k8 gsae sel β=1"]["delta_vs_topk"]["ce_loss_score"]
    assert delta == pytest.approx([0.011 + 0.002, 0.001 + 0.002, 3.0])
    table = markdown_table(summary)
    head = table.splitlines()[0]
    assert head.endswith("| Δ loss rec. vs TopK (paired) | Δ CE loss score vs TopK (paired) |")
    assert "+0.0130 ± 0.0030 (n=3)" in table
    assert "| 8 |" in table.splitlines()[2]  # L0 = k on every seed: a bare integer, not "8.0 ± 0.0"
    assert "8.0 ± 0.0" not in table
    without = markdown_table(summarize(load_rows([_run(tmp_path / "plain")])))
    assert "Δ CE loss score" not in without
