"""The training-length table (pipeline/report/lengths.py, ``gsae lengths``): paired
differences against hand-computed ones, which pairs are formed, the files and the refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.core.errors import NothingToEvaluate
from pipeline.report.lengths import comparisons, length_table, write_lengths
from tests.clirun import run_cli


def _figures(shift: float) -> dict[str, dict[str, float]]:
    """Two seeds of TopK, the g-SAE (+ twin), BatchTopK, its twin and TopK with λ = 1."""
    out: dict[str, dict[str, float]] = {}
    for seed in (0, 1):
        base = 0.90 + 0.01 * seed + shift

        def fig(lr: float, fvu: float) -> dict[str, float]:
            return {"loss_recovered": lr, "fvu": fvu, "kl": 1 - lr, "ce_loss_score": lr - 0.02}

        out[f"topk-k32-x8-s{seed}"] = fig(base, 0.30)
        out[f"gsae-k32-b0.3-x8-sel-s{seed}"] = fig(base - 0.01 * (seed + 1), 0.32)
        out[f"gsae-k32-b0.3-x8-sel-s{seed}@beta0"] = fig(base - 0.002, 0.31)
        out[f"batchtopk-k32-x8-s{seed}"] = fig(base + 0.004, 0.28)
        out[f"gbatchtopk-k32-b0.3-x8-sel-s{seed}"] = fig(base + 0.001, 0.29)
        out[f"topk-k32-x8-gl1-s{seed}"] = fig(base - 0.1, 0.7)
    return out


def test_pairs_are_formed_within_families_and_by_seed() -> None:
    diffs = comparisons(_figures(0.0))
    assert set(diffs) == {
        "k32 gsae − topk",
        "k32 gsae@β0 − topk",
        "k32 gbatchtopk − batchtopk",
        "k32 batchtopk − topk",
        "k32 topk λ=1 − topk",
    }
    assert diffs["k32 gsae − topk"]["loss_recovered"] == pytest.approx([-0.01, -0.02])
    assert diffs["k32 gbatchtopk − batchtopk"]["loss_recovered"] == pytest.approx([-0.003, -0.003])
    assert diffs["k32 topk λ=1 − topk"]["fvu"] == pytest.approx([0.4, 0.4])
    table = length_table({1000: _figures(0.0), 4000: _figures(0.05)})
    mean, sd, n = table["k32 gsae − topk"]["loss_recovered"][4000]
    assert (mean, n) == (pytest.approx(-0.015), 2) and sd == pytest.approx(0.00707107, rel=1e-5)


def test_cli_writes_table_json_and_plot_and_refuses_bad_points(tmp_path: Path, capsys) -> None:
    files = []
    for tokens, shift in ((524288, 0.0), (1048576, 0.02)):
        path = tmp_path / f"{tokens}.json"
        path.write_text(json.dumps(_figures(shift)))
        files.append(f"{tokens}={path}")
    out, png = tmp_path / "lengths.md", tmp_path / "lengths.png"
    code, stdout, err = run_cli(["lengths", *files, "-o", str(out), "--plot", str(png)], capsys)
    assert code == 0, err
    assert "5 comparisons at 2 lengths" in stdout
    text = out.read_text()
    assert "| k32 gsae − topk | Δ loss_recovered | -0.0150 ± 0.0071 (n=2) | -0.0150 ± 0.0071 (n=2) |" in text
    assert "524k tokens" in text and "1.05M tokens" in text
    assert json.loads(out.with_suffix(".json").read_text())["k32 batchtopk − topk"]["fvu"]["524288"][
        0
    ] == pytest.approx(-0.02)
    assert png.stat().st_size > 10_000
    code, _, err = run_cli(["lengths", "abc", "-o", str(out)], capsys)
    assert code != 0 and len(err.strip().splitlines()) == 1 and "TOKENS[+TAG]=EVALUATE_JSON" in err
    code, _, err = run_cli(["lengths", f"5={tmp_path / 'none.json'}", "-o", str(out)], capsys)
    assert code != 0 and len(err.strip().splitlines()) == 1 and "no such evaluate.json" in err


def test_nothing_to_pair_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "e.json"
    path.write_text(json.dumps({"topk-k32-x8-s0": {"loss_recovered": 0.9, "fvu": 0.3}}))
    with pytest.raises(NothingToEvaluate, match="no comparison pairs up"):
        write_lengths({100: path}, tmp_path / "o.md", tmp_path / "o.png")


def test_files_of_one_length_merge_like_one_file_and_levels_are_tabled(tmp_path: Path, capsys) -> None:
    figures = _figures(0.0)
    seeds = {s: {n: f for n, f in figures.items() if f"-s{s}" in n} for s in (0, 1)}
    for s, part in seeds.items():
        (tmp_path / f"s{s}.json").write_text(json.dumps(part))
    (tmp_path / "all.json").write_text(json.dumps(figures))
    merged = write_lengths(
        {100: [tmp_path / "s0.json", tmp_path / "s1.json"]}, tmp_path / "m.md", tmp_path / "m.png"
    )
    single = write_lengths({100: tmp_path / "all.json"}, tmp_path / "a.md", tmp_path / "a.png")
    assert merged == single and merged["k32 gsae − topk"]["loss_recovered"]["100"][2] == 2
    # the levels: TopK's loss recovered is 0.90 and 0.91 over the two seeds
    assert "| k32 topk | loss_recovered | 0.9050 ± 0.0071 (n=2) |" in (tmp_path / "m.md").read_text()
    code, stdout, err = run_cli(
        [
            "lengths",
            f"100={tmp_path / 's0.json'}",
            f"100={tmp_path / 's1.json'}",
            "-o",
            str(tmp_path / "c.md"),
            "--plot",
            str(tmp_path / "c.png"),
        ],
        capsys,
    )
    assert code == 0 and "at 1 lengths" in stdout, err
    code, _, err = run_cli(
        [
            "lengths",
            f"100={tmp_path / 's0.json'}",
            f"100={tmp_path / 'all.json'}",
            "-o",
            str(tmp_path / "d.md"),
        ],
        capsys,
    )
    assert code != 0 and len(err.strip().splitlines()) == 1 and "is also in another file" in err


def test_tagged_files_compare_with_their_untagged_selves_the_gradient_and_each_other(
    tmp_path: Path, capsys
) -> None:
    """4M+klft / 4M+mseft: fine-tuned TopK against plain TopK, the g-SAE against it, KL vs MSE."""
    figures = _figures(0.0)
    (tmp_path / "plain.json").write_text(json.dumps(figures))

    def tuned(lr: float, kl: float, fvu: float, absorption: float) -> dict[str, dict[str, float]]:
        """Two seeds of a fine-tuned TopK, loss recovered lr + 0.01 · seed."""
        fig = {"kl": kl, "fvu": fvu, "absorption_full": absorption}
        return {f"topk-k32-x8-s{s}": {"loss_recovered": lr + 0.01 * s, **fig} for s in (0, 1)}

    klft, mseft = tuned(0.93, 0.05, 0.31, 0.1), tuned(0.91, 0.09, 0.29, 0.3)
    (tmp_path / "klft.json").write_text(json.dumps(klft))
    (tmp_path / "mseft.json").write_text(json.dumps(mseft))
    code, _, err = run_cli(
        [
            "lengths",
            f"100={tmp_path / 'plain.json'}",
            f"100+klft={tmp_path / 'klft.json'}",
            f"100+mseft={tmp_path / 'mseft.json'}",
            "-o",
            str(tmp_path / "t.md"),
            "--plot",
            str(tmp_path / "t.png"),
        ],
        capsys,
    )
    assert code == 0, err
    gaps = json.loads((tmp_path / "t.json").read_text())
    # plain TopK's loss recovered is 0.90 and 0.91; the g-SAE's 0.89 and 0.89
    assert gaps["k32 topk+klft − topk"]["loss_recovered"]["100"][:2] == pytest.approx([0.03, 0.0])
    assert gaps["k32 gsae − topk+klft"]["loss_recovered"]["100"][0] == pytest.approx(-0.045)
    assert gaps["k32 topk+klft − topk+mseft"]["kl"]["100"][:2] == pytest.approx([-0.04, 0.0])
    assert gaps["k32 topk+mseft − topk"]["fvu"]["100"][0] == pytest.approx(-0.01)
    assert gaps["k32 topk+klft − topk+mseft"]["absorption_full"]["100"][:2] == pytest.approx([-0.2, 0.0])
    assert "absorption_full" not in gaps["k32 topk+klft − topk"]  # plain TopK was not scored
    assert not any(label.startswith("k32 topk+mseft − topk+klft") for label in gaps)
    assert "| k32 topk+klft | loss_recovered | 0.9350 ± 0.0071 (n=2) |" in (tmp_path / "t.md").read_text()
    code, _, err = run_cli(
        ["lengths", f"100+k-l={tmp_path / 'klft.json'}", "-o", str(tmp_path / "u.md")], capsys
    )
    assert code != 0 and "TOKENS[+TAG]=EVALUATE_JSON" in err
