"""How ``benchmarks/peers.py`` runs each timed side: one child process per measurement and
side, offline, its stderr kept in ``.bench/logs/<label>.log`` and its result read from the
``RESULT {json}`` line it prints (benchmarks/peers_child.py)."""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from peers_child import RESULT_PREFIX
from peers_setup import BENCH, ROOT

LOGS = BENCH / "logs"
log = logging.getLogger("peers")


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        WANDB_MODE="disabled",
        TOKENIZERS_PARALLELISM="false",
        PYTHONWARNINGS="ignore",
    )
    return env


def run_process(label: str, argv: list[str]) -> tuple[dict[str, Any] | None, float]:
    """Run one process (stderr to ``.bench/logs/<label>.log``); returns its RESULT dict and wall seconds."""
    LOGS.mkdir(parents=True, exist_ok=True)
    log.info("[%s] %s", label, shlex.join(argv))
    start = time.perf_counter()
    with open(LOGS / f"{label}.log", "w") as err:
        proc = subprocess.run(argv, cwd=ROOT, env=child_env(), stdout=subprocess.PIPE, stderr=err, text=True)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"[{label}] exited {proc.returncode}; see {LOGS / f'{label}.log'}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    result = json.loads(lines[-1][len(RESULT_PREFIX) :]) if lines else None
    log.info("[%s] done in %.1f s", label, wall)
    return result, wall


def fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
