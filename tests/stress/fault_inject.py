"""Fault injection: SIGKILL ``gsae harvest`` and ``gsae train`` at random moments and at every named
phase, resume, and compare with an uninterrupted run.

    .venv/bin/python -m tests.stress.fault_inject                 # full count (a few minutes)
    .venv/bin/python -m tests.stress.fault_inject --random 3      # fewer random kills
    .venv/bin/python -m tests.stress.fault_inject --out figures.json

Everything runs on a tiny Llama built in-process (tests/lm_factory.py) and the embedded
python-docs text, in a temporary folder, each command a real ``python -m stages.cli``
subprocess with one thread (bit-exact on one machine). Random kills land uniformly between
the command's first log line (the end of the interpreter start-up) and the time an
uninterrupted run took from there to its exit; phase kills use
``GSAE_FAULT=<phase>[:N]`` (:mod:`cache.faults`): the process SIGKILLs itself at that
point. After each kill the same command is rerun to completion, then:

- harvest: every file of the store must be byte-identical to the uninterrupted store (no
  debris, no lock left), and ``tokens lost`` counts tokens that were committed at the kill
  but harvested again by the resume (target 0);
- train: every ``sae_weights.safetensors`` must hold tensors identical to the uninterrupted
  run's, and the checkpoint folder must be gone.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger("fault_inject")

ROOT = Path(__file__).resolve().parents[2]
HARVEST_PHASES = ("allocation", "shard_write:3", "commit:1", "commit:5", "commit_record:3", "finalize")
TRAIN_PHASES = ("checkpoint_write:1", "checkpoint_write:4", "sae_write:1", "sae_write:2")
# 2048 tokens = 8 shards of 256; training 80 steps of 128 tokens with a checkpoint every 10


@dataclass
class Trial:
    """One kill and its resume."""

    stage: str
    how: str
    killed: bool
    identical: bool
    tokens_lost: int = 0
    detail: str = ""


@dataclass
class Figures:
    """What the script reports."""

    trials: list[Trial] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for stage in ("harvest", "train"):
            ts = [t for t in self.trials if t.stage == stage]
            out[stage] = {
                "kills_tried": len(ts),
                "killed": sum(t.killed for t in ts),
                "identical_resumes": sum(t.identical for t in ts),
                "tokens_lost": sum(t.tokens_lost for t in ts),
                "random": sum(t.how.startswith("random") for t in ts),
                "phases": sorted({t.how for t in ts if not t.how.startswith("random")}),
            }
        return out


class Bench:
    """The tiny model, the params file and the uninterrupted references."""

    def __init__(self, work: Path, tokens: int, train_steps: int) -> None:
        from tests.lm_factory import save_tiny_lm

        self.work = work
        self.model = save_tiny_lm(work / "llama", "llama")
        self.tokens, self.train_steps = tokens, train_steps
        self.params = work / "params.yaml"
        self.params.write_text("{}\n")
        self.env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "PYTHONPATH": str(ROOT),
        }
        self.env.pop("GSAE_FAULT", None)

    def harvest_args(self, store: Path) -> list[str]:
        sets = {
            "model.name": self.model,
            "model.device": "cpu",
            "data.context_length": 32,
            "harvest.layers": "[1,3]",
            "harvest.tokens": self.tokens,
            "harvest.store": store,
            "harvest.tokens_per_shard": 256,
            "harvest.chunk_tokens": 128,
            "harvest.batch_size": 4,
            "harvest.cache_root": self.work / "cache_root",
        }
        return ["harvest", "-p", str(self.params), *sum((["-s", f"{k}={v}"] for k, v in sets.items()), [])]

    def train_args(self, store: Path, out: Path) -> list[str]:
        sets = {
            "model.name": self.model,
            "data.context_length": 32,
            "harvest.layers": "[1,3]",
            "harvest.tokens_per_shard": 256,
            "harvest.chunk_tokens": 128,
            "train.store": store,
            "train.out_dir": out / "saes",
            "train.metrics_out": out / "train.json",
            "train.curves_dir": out / "c",
            "train.tokens": 128 * self.train_steps,
            "train.batch_size": 128,
            "train.checkpoint_every": 10,
            "train.device": "cpu",
            "train.init_sample_tokens": 512,
            "train.warmup_steps": 5,
            "train.dead_tokens": 2000,
            "train.grid.architecture": "[topk,gsae]",
            "train.grid.k": "[4]",
            "train.grid.expansion": "[4]",
        }
        return ["train", "-p", str(self.params), *sum((["-s", f"{k}={v}"] for k, v in sets.items()), [])]

    def run(
        self, args: list[str], fault: str | None = None, kill_after: float | None = None
    ) -> tuple[int, str, bool, float]:
        """(exit code, stderr, killed, seconds from the first log line to the exit) of ``gsae ARGS``.

        ``kill_after``: SIGKILL that many seconds after the command's first log line (the end
        of the interpreter start-up, so every random kill lands in real work); ``fault``: the
        process kills itself at that phase (``GSAE_FAULT``).
        """
        env = dict(self.env)
        if fault:
            env["GSAE_FAULT"] = fault
        proc = subprocess.Popen(
            [sys.executable, "-m", "stages.cli", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        lines: list[str] = []
        started = threading.Event()
        t_start = [0.0]

        def pump() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                if not started.is_set() and line.startswith("INFO"):
                    t_start[0] = time.perf_counter()
                    started.set()
                lines.append(line)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        killed = False
        if kill_after is not None and started.wait(timeout=300):
            try:
                proc.wait(timeout=kill_after)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                killed = True
        proc.wait()
        end = time.perf_counter()
        reader.join(timeout=10)
        if proc.stderr is not None:  # the pipe is ours to close (a ResourceWarning otherwise)
            proc.stderr.close()
        work = end - t_start[0] if started.is_set() else 0.0
        return proc.returncode, "".join(lines), killed or proc.returncode == -signal.SIGKILL, work


def store_files(url: Path) -> dict[str, bytes]:
    """Every file under a store (relative path → bytes), plus its lock if one is left."""
    files = {str(p.relative_to(url)): p.read_bytes() for p in sorted(url.rglob("*")) if p.is_file()}
    lock = Path(f"{url}.lock")
    if lock.exists():
        files["<lock>"] = lock.read_bytes()
    return files


def committed_tokens(url: Path) -> int:
    """``n_tokens`` of the store, 0 when it is not readable as a store."""
    try:
        meta = json.loads((url / "zarr.json").read_text())
        return int(meta["attributes"].get("n_tokens", 0))
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def weights(out: Path) -> dict[str, dict[str, Any]]:
    """variant → tensors of its ``sae_weights.safetensors`` (or legacy ``sae.safetensors``)."""
    from safetensors.torch import load_file

    found = {}
    for f in sorted((out / "saes").glob("*/*.safetensors")):
        found[f.parent.name] = load_file(str(f))
    return found


def same_weights(a: dict[str, dict[str, Any]], b: dict[str, dict[str, Any]]) -> bool:
    import torch

    return (
        bool(a)
        and a.keys() == b.keys()
        and all(a[v].keys() == b[v].keys() and all(torch.equal(a[v][k], b[v][k]) for k in a[v]) for v in a)
    )


def harvest_trial(
    bench: Bench, ref: dict[str, bytes], how: str, fault: str | None, delay: float | None
) -> Trial:
    store = bench.work / "trial.zarr"
    shutil.rmtree(store, ignore_errors=True)
    Path(f"{store}.lock").unlink(missing_ok=True)
    _, _, killed, _ = bench.run(bench.harvest_args(store), fault=fault, kill_after=delay)
    at_kill = committed_tokens(store)
    code, err, _, _ = bench.run(bench.harvest_args(store))
    if code != 0:
        return Trial(
            "harvest", how, killed, False, at_kill, f"resume failed: {err.strip().splitlines()[-1:]}"
        )
    m = re.search(r"resuming .* after (\d+) committed shards", err)
    kept = int(m.group(1)) * 256 if m else (at_kill if "nothing to do" in err else 0)
    files = store_files(store)
    identical = files == ref
    detail = "" if identical else f"differs: {sorted(set(files) ^ set(ref))[:3] or 'bytes'}"
    return Trial("harvest", how, killed, identical, max(0, at_kill - kept), detail)


def train_trial(
    bench: Bench,
    store: Path,
    ref: dict[str, dict[str, Any]],
    how: str,
    fault: str | None,
    delay: float | None,
) -> Trial:
    out = bench.work / "trial-train"
    shutil.rmtree(out, ignore_errors=True)
    _, _, killed, _ = bench.run(bench.train_args(store, out), fault=fault, kill_after=delay)
    code, err, _, _ = bench.run(bench.train_args(store, out))
    if code != 0:
        return Trial("train", how, killed, False, 0, f"resume failed: {err.strip().splitlines()[-1:]}")
    m = re.search(r"resumed from .* at step (\d+)", err)
    identical = same_weights(weights(out), ref) and not (out / "saes" / ".checkpoints").exists()
    return Trial(
        "train", how, killed, identical, 0, f"resumed at step {m.group(1)}" if m else "from the start"
    )


def run(
    n_random: int,
    seed: int,
    work: Path,
    tokens: int = 2048,
    train_steps: int = 80,
    harvest_phases: tuple[str, ...] = HARVEST_PHASES,
    train_phases: tuple[str, ...] = TRAIN_PHASES,
    progress: Path | None = None,
) -> Figures:
    """Run the whole experiment in ``work``; returns the figures (each trial also appended to ``progress``)."""
    rng = random.Random(seed)
    bench = Bench(work, tokens, train_steps)
    figures = Figures()
    ref_store = work / "ref.zarr"
    code, err, _, harvest_s = bench.run(bench.harvest_args(ref_store))
    if code != 0:
        raise RuntimeError(f"reference harvest failed: {err[-400:]}")
    ref_files = store_files(ref_store)
    code, err, _, train_s = bench.run(bench.train_args(ref_store, work / "ref-train"))
    if code != 0:
        raise RuntimeError(f"reference train failed: {err[-400:]}")
    ref_weights = weights(work / "ref-train")
    logger.info(
        "uninterrupted, from the first log line to the exit: harvest %.1fs, train %.1fs", harvest_s, train_s
    )

    def record(trial: Trial) -> None:
        figures.trials.append(trial)
        logger.info("%d %s", len(figures.trials), trial)
        if progress is not None:
            with progress.open("a") as f:
                f.write(json.dumps(asdict(trial)) + "\n")

    for phase in harvest_phases:
        record(harvest_trial(bench, ref_files, phase, phase, None))
    for phase in train_phases:
        record(train_trial(bench, ref_store, ref_weights, phase, phase, None))
    for _ in range(n_random):  # alternate, so an interrupted run still has figures for both stages
        delay = rng.uniform(0.0, harvest_s)
        record(harvest_trial(bench, ref_files, f"random {delay:.2f}s", None, delay))
        delay = rng.uniform(0.0, train_s)
        record(train_trial(bench, ref_store, ref_weights, f"random {delay:.2f}s", None, delay))
    return figures


def main(argv: list[str] | None = None) -> int:
    """Command line: run, print the figures, exit 1 unless every resume was identical with 0 tokens lost."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--random", type=int, default=20, help="random kills per stage (default 20)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, help="write the figures and every trial as JSON here")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    work = Path(tempfile.mkdtemp(prefix="gsae-faults-"))
    try:
        progress = args.out.with_suffix(".trials.jsonl") if args.out else None
        if progress is not None:
            progress.unlink(missing_ok=True)
        figures = run(args.random, args.seed, work, progress=progress)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    summary = figures.summary()
    print(json.dumps(summary, indent=2))  # noqa: T201 - the script's output
    if args.out:
        args.out.write_text(
            json.dumps({"summary": summary, "trials": [asdict(t) for t in figures.trials]}, indent=2)
        )
    bad = [t for t in figures.trials if not t.identical or t.tokens_lost]
    for t in bad:
        logger.error("NOT IDENTICAL: %s", t)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
