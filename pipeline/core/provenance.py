"""Where a result came from: the code's git commit and the versions of the packages that ran.

Both are read when asked (never at import) and are run information for reports: a missing
git (an installed wheel, a tarball) or package gives ``None`` / is left out, never an error.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

REPORTED_PACKAGES = ("torch", "transformers", "zarr", "numpy", "sae-lens", "dvc", "dvclive")
"""The distributions a report names (those installed)."""
CODE_DIRS = ("pipeline", "cache", "stages", "gsae_pipeline")
"""The folders whose uncommitted changes mark the commit as not the whole story."""


def _git(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None


def git_revision(path: str | Path | None = None) -> str | None:
    """``<sha>`` of the git checkout holding ``path`` (default: this code), with
    `` (+ uncommitted changes)`` when its code folders differ from that commit; None outside git."""
    where = Path(path) if path is not None else Path(__file__).resolve().parents[2]
    head = _git(["rev-parse", "HEAD"], where)
    if head is None or head.returncode != 0:
        return None
    sha = head.stdout.strip()
    top = _git(["rev-parse", "--show-toplevel"], where)
    root = Path(top.stdout.strip()) if top is not None and top.returncode == 0 else where
    dirs = [d for d in CODE_DIRS if (root / d).exists()]
    diff = _git(["diff", "--quiet", "HEAD", "--", *dirs], root)
    if diff is not None and diff.returncode == 1:
        return f"{sha} (+ uncommitted changes to the code)"
    return sha


def package_versions(names: Iterable[str] = REPORTED_PACKAGES) -> dict[str, str]:
    """Distribution name → installed version, for those of ``names`` that are installed."""
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out
