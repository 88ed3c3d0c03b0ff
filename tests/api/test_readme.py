"""The README's "Python API" example runs as printed, in a folder laid out as after ``make repro``.

The folder holds the tiny project of tests/api/conftest.py under the default run's names
(``data/saes/gsae-k32-b0.3-x8-sel-s0``, ``data/cache/heldout/store.json``,
``reports/latents/gsae-k32-b0.3-x8-sel-s0``); the example runs unchanged in a fresh interpreter there.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.api.conftest import GSAE, Project

ROOT = Path(__file__).resolve().parents[2]
NAME = "gsae-k32-b0.3-x8-sel-s0"


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert blocks, "README's Python API section has no python example"
    return blocks[0]


def test_the_readme_example_runs(project: Project, tmp_path: Path) -> None:
    shutil.copytree(project.sae(GSAE), tmp_path / "data" / "saes" / NAME)
    (tmp_path / "data" / "cache" / "heldout").mkdir(parents=True)
    (tmp_path / "data" / "cache" / "heldout" / "store.json").write_text(
        json.dumps({"store": project.heldout_store})
    )
    shutil.copytree(project.latents / GSAE, tmp_path / "reports" / "latents" / NAME)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run(
        [sys.executable, "-c", readme_example()],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.strip().splitlines()
    assert len(lines) == 3 and all(float(line.split()[0]) > 0 for line in lines)
