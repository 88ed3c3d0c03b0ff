"""The built wheel: what it holds, and that it installs and runs on its own.

The wheel is built from a copy of the packaging inputs (pyproject.toml, README.md and the four
packages), so no ``build/`` folder of an earlier build in the checkout can leak stale modules
into it, and installed into a fresh venv that sees the running interpreter's third-party
packages (torch, transformers, ...) through a ``.pth`` line: path lines of a ``.pth`` file are
appended to ``sys.path``, but the ``.pth`` files *inside* that folder are not processed, so the
checkout's editable install (its finder is started by such a file) stays inactive and every
``import pipeline`` must come from the installed wheel. The installed ``gsae`` then harvests,
trains and stages a push (``--dry-run``), with a cwd outside the repository and without
``PYTHONPATH``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.conftest import tiny_project_overrides

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "stages", "cache", "gsae_pipeline")
"""The top-level packages the wheel installs (pyproject.toml's packages.find include)."""
DIST = "gsae-pipeline"


def _package_files() -> set[str]:
    """Every file of the four packages in the checkout (sources and run-time data), as wheel paths."""
    return {
        p.relative_to(ROOT).as_posix()
        for pkg in PACKAGES
        for p in (ROOT / pkg).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }


def _clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without ``PYTHONPATH`` (the checkout must not be importable)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(extra)
    return env


def _run(args: list[str | Path], cwd: Path, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=_clean_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, (
        f"{args}: exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    )
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel pip builds from a clean copy of the packaging inputs (no build isolation: offline)."""
    src = tmp_path_factory.mktemp("wheel_src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp_path_factory.mktemp("wheel_dist")
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index"]
    build = _run([*pip, "-w", dist, src], cwd=dist)
    assert "Warning" not in build.stdout + build.stderr  # e.g. setuptools' deprecations of pyproject fields
    (found,) = dist.glob("gsae_pipeline-*-py3-none-any.whl")
    return found


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed, then given the running interpreter's packages."""
    root = tmp_path_factory.mktemp("venv") / "v"
    _run([sys.executable, "-m", "venv", "--without-pip", root], cwd=root.parent)
    python = root / "bin" / "python"
    # pip of the running interpreter installs into the venv (--python); done before the .pth
    # line below exists, so pip sees an empty environment and installs the wheel for sure
    _run(
        [sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", wheel],
        cwd=root,
    )
    site = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=root)
    host = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    Path(site.stdout.strip(), "_host_packages.pth").write_text("".join(f"{p}\n" for p in sorted(host)))
    return root


def test_the_wheel_holds_every_package_file_and_nothing_else(wheel: Path):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        entry_points = zf.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
        metadata = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    payload = {n for n in names if ".dist-info/" not in n}
    missing = sorted(_package_files() - payload)
    assert missing == [], "not in the wheel: list them under pyproject.toml's [tool.setuptools.package-data]"
    assert sorted(payload - _package_files()) == []  # nothing but the packages' own files
    assert (
        "pipeline/inspect/assets/browser.js" in payload and "pipeline/inspect/assets/browser.css" in payload
    )
    assert not any(n.startswith(("tests/", "benchmarks/", "docs/")) for n in names)
    assert "gsae = stages.cli:main" in entry_points
    assert f"Name: {DIST}\n" in metadata


def test_installed_wheel_imports_from_the_venv_and_runs_version(venv: Path, tmp_path: Path):
    python = venv / "bin" / "python"
    probe = (
        "import json, sys, importlib.metadata as md, pipeline, stages, cache, gsae_pipeline, "
        "pipeline.inspect.browser as b\n"
        "print(json.dumps({'files': [m.__file__ for m in (pipeline, stages, cache, gsae_pipeline)],"
        " 'dist': str(md.distribution('gsae-pipeline').locate_file('')),"
        " 'asset': len(b._asset('browser.js')), 'path': sys.path}))"
    )
    found = json.loads(_run([python, "-c", probe], cwd=tmp_path).stdout)
    site = Path(found["dist"]).resolve()
    assert site.is_relative_to(venv.resolve())
    for file in found["files"]:
        assert Path(file).resolve().is_relative_to(site), file
    assert found["asset"] > 0  # the browser's script is read from the installed package data
    assert not any(p and Path(p).resolve() == ROOT for p in found["path"])
    version = _run([venv / "bin" / "gsae", "--version"], cwd=tmp_path).stdout.strip()
    assert version == f"gsae {_metadata_version(python, tmp_path)}" and version != "gsae unknown"


def _metadata_version(python: Path, cwd: Path) -> str:
    code = f"import importlib.metadata as md; print(md.version({DIST!r}))"
    return _run([python, "-c", code], cwd=cwd).stdout.strip()


def test_installed_console_script_harvests_trains_and_stages_a_push(
    venv: Path, tiny_llama: Path, tmp_path: Path
):
    work = tmp_path / "project"
    work.mkdir()
    (work / "params.yaml").write_text("{}\n")
    overrides = [arg for o in tiny_project_overrides(tiny_llama, work) for arg in ("-s", o)]
    gsae = venv / "bin" / "gsae"
    env = {"GSAE_HASH_CACHE": str(tmp_path / "hashes.json"), "HF_HUB_OFFLINE": "1"}
    harvest = _run([gsae, "harvest", *overrides], cwd=work, **env)
    store = Path(harvest.stdout.strip().splitlines()[-1])
    assert store == work / "train.zarr" and (store / "zarr.json").is_file()
    _run([gsae, "train", *overrides], cwd=work, **env)
    variants = sorted(p.name for p in (work / "saes").iterdir() if (p / "sae_weights.safetensors").is_file())
    assert [v.split("-")[0] for v in variants] == ["gsae", "topk"], variants
    cfg = json.loads((work / "saes" / variants[0] / "cfg.json").read_text())
    assert cfg["architecture"] == "gsae" and cfg["d_in"] == 32 and cfg["k"] == 4
    staged = tmp_path / "to-upload"
    _run([gsae, "push", "me/tiny-saes", *overrides, "--dry-run", staged], cwd=work, **env)
    assert sorted(p.relative_to(staged).as_posix() for p in staged.rglob("*") if p.is_file()) == [
        "README.md",
        *(f"{v}/{f}" for v in variants for f in ("cfg.json", "sae_weights.safetensors")),
    ]
    assert 'SAE.from_pretrained("me/tiny-saes", ' in (staged / "README.md").read_text()
    code, _ = _cli_error(gsae, work, env)
    assert code == 1


def _cli_error(gsae: Path, cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    """A bad key through the installed script: one line, exit 1 (the error path runs from the wheel too)."""
    proc = subprocess.run(
        [str(gsae), "train", "-s", "train.nope=1"],
        cwd=cwd,
        env=_clean_env(**env),
        capture_output=True,
        text=True,
    )
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("gsae: error: "), proc.stderr
    return proc.returncode, proc.stderr
