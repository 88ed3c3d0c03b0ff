"""``gsae --version``, ``gsae params`` and what ``-v`` logs."""

from __future__ import annotations

import logging

from stages.logs import NOISY_LOGGERS, setup_logging
from stages.paramdoc import leaf_fields
from tests.clirun import run_cli


def test_version(capsys):
    code, out, _ = run_cli(["--version"], capsys)
    assert code == 0 and out.startswith("gsae ") and out.strip() != "gsae"


def test_params_lists_every_key_with_default_and_doc(capsys):
    code, out, _ = run_cli(["params"], capsys)
    assert code == 0
    for fd in leaf_fields():
        assert f"  {fd.key} = " in out, fd.key
        assert fd.doc, f"{fd.key} has no docstring in pipeline/core/config.py"
    assert "train.aux_coef = 0.03125" in out and "AuxK loss coefficient" in out
    assert "model.device = auto" in out and "reruns: nothing (runtime only)" in out


def test_verbose_keeps_third_party_loggers_quiet():
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    try:
        setup_logging(True)
        assert logging.getLogger("pipeline.harvest.run").isEnabledFor(logging.DEBUG)
        for name in NOISY_LOGGERS:
            assert not logging.getLogger(name).isEnabledFor(logging.DEBUG), name
        assert not logging.getLogger("matplotlib.font_manager").isEnabledFor(logging.DEBUG)
    finally:
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]


def test_verbose_matplotlib_import_logs_no_font_lines(tmp_path):
    import subprocess
    import sys

    code = (
        "from stages.logs import setup_logging; setup_logging(True);"
        "import matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot as plt;"
        "fig = plt.figure(); fig.text(0.5, 0.5, 'x'); fig.savefig('x.png')"
    )
    env = {"MPLCONFIGDIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "DEBUG matplotlib" not in proc.stderr and "findfont" not in proc.stderr


def test_params_headings_are_the_sections_own_docstrings(capsys):
    code, out, _ = run_cli(["params"], capsys)
    assert code == 0
    grid = next(line for line in out.splitlines() if line.startswith("[train.grid]"))
    assert grid.startswith("[train.grid]  Sweep grid: every combination of these lists is one variant"), grid
    assert "str(object=" not in out and "(continued)" in out  # [train] goes on after the grid


def test_params_shows_the_effective_values_of_the_params_files(tmp_path, capsys):
    base, top = tmp_path / "base.yaml", tmp_path / "top.yaml"
    base.write_text("train:\n  tokens: 1234\n  batch_size: 512\n")
    top.write_text("train:\n  batch_size: 256\n")
    args = ["params", "-p", str(base), "-p", str(top), "-s", "train.grid.k=[8,16]"]
    code, out, _ = run_cli(args, capsys)
    assert code == 0, out
    assert "  train.tokens = 1234  (int; code default 262144)" in out
    assert "  train.batch_size = 256  (int; code default 4096)" in out  # the later file wins
    assert "  train.grid.k = [8, 16]  (tuple[int, ...]; code default [32])" in out
    assert "  train.warmup_steps = 50  (int)" in out  # unset: the code default, nothing beside
    assert out.startswith(f"# values: {base} + {top}, 1 override(s)")
    code, _, err = run_cli(["params", "-p", str(tmp_path / "none.yaml")], capsys)
    assert code == 1 and "params file not found" in err


def test_params_outside_a_project_lists_the_code_defaults(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no params.yaml here
    code, out, _ = run_cli(["params"], capsys)
    assert code == 0 and out.startswith("# values: code defaults")
    assert "  train.tokens = 262144  (int)" in out and "code default" not in out.split("\n", 1)[1]


def test_a_log_line_is_not_glued_to_an_active_progress_bar(tmp_path):
    """A record logged while a tqdm bar is drawn starts its own line: the bar is cleared first."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import logging\n"
        "from tqdm.auto import tqdm\n"
        "from stages.logs import setup_logging\n"
        "setup_logging(False)\n"
        "bar = tqdm(total=10, desc='harvest', mininterval=0)\n"
        "for i in range(10):\n"
        "    bar.update(1)\n"
        "    if i == 4:\n"
        "        logging.getLogger('pipeline.harvest.run').info('shard 0 committed')\n"
        "bar.close()\n"
    )
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)},
    )
    assert proc.returncode == 0, proc.stderr
    assert "harvest:  50%" in proc.stderr  # the bar was drawn before the record
    line = next(x for x in proc.stderr.split("\n") if "shard 0 committed" in x)
    # what a terminal shows of that line: the text after its last carriage return
    assert line.split("\r")[-1] == "INFO pipeline.harvest.run: shard 0 committed", repr(line)
