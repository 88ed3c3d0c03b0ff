"""The project files a ``gsae`` command really loads, recorded while it runs in a child process.

The static closure (tests/import_closure.py) says what a command *can* import; this says what
one run *did* load: the child installs an audit hook before importing ``stages.cli`` that
notes every file opened under the repository (the import system opens each module's source
or its ``__pycache__`` bytecode through ``io.open_code``, and data files read with ``open``
raise the same ``open`` event), and an ``atexit`` hook that adds the ``__file__`` of every
module left in ``sys.modules``; then it runs ``stages.cli.main`` with the command's
arguments, as the ``gsae`` console script does. Bytecode files count as their source.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.import_closure import ROOT

_CHILD = r"""
import atexit, json, os, sys

root, out, args = sys.argv[1], sys.argv[2], sys.argv[3:]
opened = set()


def _audit(event, a):
    if event == "open" and isinstance(a[0], (str, bytes, os.PathLike)):
        opened.add(os.path.abspath(os.fsdecode(a[0])))


def _dump():
    files = set(opened)
    for module in list(sys.modules.values()):
        f = getattr(module, "__file__", None)
        if isinstance(f, str):
            files.add(os.path.abspath(f))
    with open(out, "w") as fh:
        json.dump(sorted(f for f in files if f.startswith(root + os.sep)), fh)


sys.addaudithook(_audit)
atexit.register(_dump)
import stages.cli

if not os.path.abspath(stages.cli.__file__).startswith(root + os.sep):
    sys.exit(f"stages.cli came from {stages.cli.__file__}, not {root}")
stages.cli.main(args)
"""


def _project_file(path: Path) -> str | None:
    """``ROOT/a/__pycache__/b.cpython-311.pyc`` → ``a/b.py``; None outside the project's own files."""
    rel = path.relative_to(ROOT)
    if rel.parts[0].startswith(".") or "site-packages" in rel.parts:  # .git, a .venv inside the repo
        return None
    if rel.parts[0].endswith(".egg-info"):  # the editable install's metadata (version, entry points)
        return None
    if rel.parent.name == "__pycache__" and rel.suffix == ".pyc":
        rel = rel.parent.parent / (rel.name.split(".")[0] + ".py")
    return rel.as_posix()


def loaded_files(args: list[str], cwd: Path, timeout: float = 300) -> set[str]:
    """Repository-relative paths of the project files ``gsae ARGS`` loads when run in ``cwd``."""
    out = cwd / f".loaded-{'-'.join(a.strip('-') for a in args)}.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(ROOT), str(out), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise AssertionError(f"gsae {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    files = {_project_file(Path(p)) for p in json.loads(out.read_text())}
    return {f for f in files if f is not None}
