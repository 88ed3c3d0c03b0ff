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
