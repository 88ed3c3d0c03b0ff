"""A benchmark module run in a fresh interpreter, as a child process.

Peak RSS (``ru_maxrss``) and process-wide settings (glibc's ``mallopt``) belong to a
process, so several benchmarks measure in children: ``python -m <module> ...`` started from
the repository root with the root first on ``PYTHONPATH``. The child then imports this
checkout's ``benchmarks``, ``pipeline``, ``cache`` and ``stages`` whatever the interpreter
has installed (the peers' venvs install none of them).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping

from benchmarks import ROOT


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """``os.environ`` with the repository root first on ``PYTHONPATH``, then ``extra``."""
    env = dict(os.environ)
    paths = [str(ROOT), *(p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p)]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env.update(extra or {})
    return env


def module_argv(module: str, *args: str, python: str | os.PathLike[str] = sys.executable) -> list[str]:
    """The command line running ``module`` (dotted name) with ``python``."""
    return [str(python), "-m", module, *args]


def run_module(module: str, *args: str, env: Mapping[str, str] | None = None) -> str:
    """Run ``python -m module args`` from the repository root to its end; its stdout.

    Raises ``subprocess.CalledProcessError`` (with the child's stderr) when it fails."""
    done = subprocess.run(
        module_argv(module, *args), cwd=ROOT, env=child_env(env), check=True, capture_output=True, text=True
    )
    return done.stdout
