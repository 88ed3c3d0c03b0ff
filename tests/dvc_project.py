"""A throwaway DVC project (git repo + this project's dvc.yaml and code) with tiny params."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def tiny_params(model_dir: Path) -> dict:
    """The project's params.yaml shrunk to a tiny model, corpus slice and grid."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["model"].update(name=str(model_dir), device="cpu")
    params["data"].update(context_length=32)
    params["harvest"].update(layers=[1], tokens=1024, tokens_per_shard=256, chunk_tokens=128, batch_size=4)
    params["train"].update(tokens=2048, batch_size=128, dead_tokens=1024, warmup_steps=2)
    params["train"]["grid"].update(k=[4], expansion=[2], seed=[0])
    params["evaluate"].update(tokens=256, steer_latents=2, steer_contexts=2)
    return params


def make_project(tmp: Path, model_dir: Path) -> Path:
    """Create the repo, copy code and dvc.yaml, write tiny params, ``git init`` + ``dvc init``."""
    repo = tmp / "proj"
    repo.mkdir()
    for pkg in ("pipeline", "cache", "stages"):
        shutil.copytree(ROOT / pkg, repo / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dvc.yaml", repo / "dvc.yaml")
    shutil.copytree(ROOT / "plot_templates", repo / "plot_templates")
    write_params(repo, tiny_params(model_dir))
    run(["git", "init", "-q"], repo)
    run(["dvc", "init", "-q"], repo)
    (repo / ".dvcignore").write_text((ROOT / ".dvcignore").read_text())
    return repo


def write_params(repo: Path, params: dict) -> None:
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def run(cmd: list[str], cwd: Path) -> str:
    """Run a command with this interpreter's bin dir first on PATH; return stdout+stderr."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(cwd)
    env.setdefault("DVC_NO_ANALYTICS", "1")
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{out[-4000:]}")
    return out
