"""The three measurements of ``benchmarks/peers/run.py`` and how each timed side runs: one child
process per measurement and side (``python -m benchmarks.peers.child_<side>``, ours in this
interpreter's venv, each peer in its own), offline, from the repository root with the root
first on ``PYTHONPATH`` (the peers' venvs do not install this project), its stderr kept in
``.bench/logs/<label>.log`` and its result read from the ``RESULT {json}`` line it prints
(benchmarks/peers/child_common.py).

Measurement 1, training throughput from a cache: ``measure_training``; 2, the 8-variant
sweep end to end: ``sweep_round`` (one round) and ``measure_sweep``; 3, the activation-only
harvest: ``harvest_round`` and ``measure_harvest``. Each appends its rows to the ``Report``.
"""

from __future__ import annotations

import json
import logging
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any

from benchmarks.common.child import child_env, module_argv
from benchmarks.peers import prepare as setup
from benchmarks.peers.child_common import RESULT_PREFIX
from benchmarks.peers.child_ours import harvest_overrides, train_overrides
from benchmarks.peers.report import Report, median_row, row

ROOT, BENCH = setup.ROOT, setup.BENCH
WORK, LOGS = BENCH / "work", BENCH / "logs"
OURS_PY = Path(sys.executable)
KS, SEEDS = [16, 32, 64, 128], [0, 1]
CHILD = "benchmarks.peers.child_{}"  # the child module of each side
log = logging.getLogger("peers")
OFFLINE = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "WANDB_MODE": "disabled",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONWARNINGS": "ignore",
}


def side_argv(side: str, python: Path, *args: str) -> list[str]:
    """The command line of ``side``'s child module (``ours``, ``saelens``, ``sparsify``) run by ``python``."""
    return module_argv(CHILD.format(side), *args, python=python)


def run_process(label: str, argv: list[str]) -> tuple[dict[str, Any] | None, float]:
    """Run one process (stderr to ``.bench/logs/<label>.log``); returns its RESULT dict and wall seconds."""
    LOGS.mkdir(parents=True, exist_ok=True)
    log.info("[%s] %s", label, shlex.join(argv))
    start = time.perf_counter()
    with open(LOGS / f"{label}.log", "w") as err:
        proc = subprocess.run(
            argv, cwd=ROOT, env=child_env(OFFLINE), stdout=subprocess.PIPE, stderr=err, text=True
        )
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


@dataclass
class Sizes:
    """Token counts of one run (multiples of 128; of 16,384 above 16,384)."""

    tokens: int  # measurement 3 and the caches of measurement 1
    sweep_tokens: int  # measurement 2
    steps: int  # training steps timed in measurement 1
    warmup: int  # of which the first ones are warm-up
    our_model: str = "smollm2-135m"  # our model.name: the converted folder (default) or the GGUF alias
    sweep_sparsify: bool = True  # run sparsify's side of the sweep (its slowest part)
    repeat: int = 1  # rounds of the sweep (2) and of the harvest (3)
    lm_autocast: str = "none"  # the LM forward of every harvest / cache: none (float32) or bfloat16


def whole(tokens: int) -> int:
    """``tokens`` rounded down to whole contexts, and to whole 16,384-token shards above one shard."""
    unit = 16384 if tokens > 16384 else 128
    return max(128, tokens // unit * unit)


def peer_args(model: Path, contexts: Path, tokens: int, autocast: str = "none") -> list[str]:
    return (["--autocast-lm"] if autocast == "bfloat16" else []) + [
        "--model",
        str(model),
        "--contexts",
        str(contexts),
        "--tokens",
        str(tokens),
        "--bos",
        str(setup.bos_id()),
    ]


def harvest_round(rep: Report, sz: Sizes, model: Path, contexts: Path, peer_first: bool) -> dict[str, Any]:
    """Measurement 3's two harvests (also the caches of measurement 1), SAELens first when ``peer_first``."""
    ours_cmd = side_argv("ours", OURS_PY, "harvest", "--tokens", str(sz.tokens))
    ours_cmd += [
        "--store",
        str(fresh(WORK / "ours-act.zarr")),
        "--cache-root",
        str(fresh(WORK / "ours-root")),
    ]
    ours_cmd += ["--contexts", str(contexts), "--model", sz.our_model, "--autocast", sz.lm_autocast]
    sl_cmd = side_argv("saelens", setup.venv_python("saelens"), "cache")
    sl_cmd += peer_args(model, contexts, sz.tokens, sz.lm_autocast)
    sl_cmd += ["--cache", str(fresh(WORK / "saelens-cache")), "--work", str(WORK / "saelens")]
    runs = [("3-ours-harvest", ours_cmd), ("3-saelens-cache", sl_cmd)]
    done = {label: run_process(label, cmd) for label, cmd in (runs[::-1] if peer_first else runs)}
    (ours, ours_wall), (peer, peer_wall) = done["3-ours-harvest"], done["3-saelens-cache"]
    assert ours is not None and peer is not None
    ours["process_wall_s"], peer["process_wall_s"] = ours_wall, peer_wall
    if not ours.get("same_tokens_as_peers"):
        rep.note("WARNING: our store's tokens differ from the contexts given to the peers")
    rep.versions["ours"] = ours.pop("versions")
    rep.versions["saelens"] = peer.pop("versions")
    return {"order": "saelens, ours" if peer_first else "ours, saelens", "ours": ours, "saelens": peer}


def measure_harvest(rep: Report, rounds: list[dict[str, Any]]) -> None:
    rep.results["3_harvest"] = {"rounds": rounds}

    def add(what: str, key: str, target: str, unit: str) -> None:
        ours, peer = [r["ours"][key] for r in rounds], [r["saelens"][key] for r in rounds]
        rep.rows.append(median_row(what, ours, peer, target, unit))

    add("3 harvest tok/s (act-only, float16)", "tok_s", ">= 1.0", "tok/s")
    add("3 cache bytes per token on disk", "bytes_per_token", "<= 1.0", "B")
    rep.note(
        "harvest: our harvest tokenizes the text itself (timed); SAELens gets the pre-tokenized contexts; "
        "ours writes zstd-compressed Zarr shards with checksums, SAELens an uncompressed Arrow dataset "
        "(activations + token ids) that its run() also consolidates and shuffles (timed)"
    )


def measure_training(rep: Report, sz: Sizes, model: Path, contexts: Path) -> None:
    common = ["--steps", str(sz.steps), "--warmup", str(sz.warmup)]
    ours_cmd = side_argv("ours", OURS_PY, "train", "--tokens", str(sz.tokens))
    ours_cmd += ["--store", str(WORK / "ours-act.zarr"), "--cache-root", str(WORK / "ours-root")]
    ours_cmd += [
        "--work",
        str(fresh(WORK / "ours-train")),
        "--model",
        sz.our_model,
        "--autocast",
        sz.lm_autocast,
    ]
    ours_cmd += common
    ours, _ = run_process("1-ours-train", ours_cmd)
    sl_cmd = side_argv("saelens", setup.venv_python("saelens"), "train")
    sl_cmd += peer_args(model, contexts, sz.tokens) + ["--cache", str(WORK / "saelens-cache")]
    sl_cmd += ["--work", str(fresh(WORK / "saelens-train"))] + common
    peer, _ = run_process("1-saelens-train", sl_cmd)
    assert ours is not None and peer is not None
    ours.pop("versions", None), peer.pop("versions", None)
    rep.results["1_training"] = {"ours": ours, "saelens": peer}
    rep.rows.append(
        row(
            "1 TopK training tok/s from a cache",
            ours["steady_tok_s"],
            peer["steady_tok_s"],
            ">= 2.0",
            "tok/s",
        )
    )


def our_sweep(sz: Sizes) -> dict[str, Any]:
    """``gsae harvest`` + one ``gsae train`` of the 8 variants; wall time of both processes."""
    gsae = str(OURS_PY.parent / "gsae")
    work = fresh(WORK / "ours-sweep")
    sets = harvest_overrides(
        sz.sweep_tokens, work / "store.zarr", work / "root", sz.our_model, sz.lm_autocast
    )
    sets += train_overrides(sz.sweep_tokens, work, KS, SEEDS, min(16384, sz.sweep_tokens))
    argv = [a for s in sets for a in ("-s", s)]
    _, harvest_wall = run_process("2-ours-harvest", [gsae, "harvest", *argv])
    _, train_wall = run_process("2-ours-train", [gsae, "train", *argv])
    return {"harvest_wall_s": harvest_wall, "train_wall_s": train_wall, "wall_s": harvest_wall + train_wall}


def peer_sweep_commands(sz: Sizes, model: Path, contexts: Path) -> list[tuple[str, list[str]]]:
    """The peers' sweep processes: SAELens (cache + 8 trainings), then sparsify (one run per k)."""
    grid = ["--ks", ",".join(map(str, KS)), "--seeds", ",".join(map(str, SEEDS))]
    sl_cmd = side_argv("saelens", setup.venv_python("saelens"), "sweep")
    sl_cmd += peer_args(model, contexts, sz.sweep_tokens, sz.lm_autocast) + [
        "--cache",
        str(fresh(WORK / "saelens-sweep-cache")),
    ]
    found = [("saelens", [*sl_cmd, "--work", str(fresh(WORK / "saelens-sweep")), *grid])]
    if sz.sweep_sparsify:
        sp_cmd = side_argv("sparsify", setup.venv_python("sparsify"), "sweep")
        sp_cmd += peer_args(model, contexts, sz.sweep_tokens)
        found.append(("sparsify", [*sp_cmd, "--work", str(fresh(WORK / "sparsify-sweep")), *grid]))
    return found


def sweep_round(rep: Report, sz: Sizes, model: Path, contexts: Path, peers_first: bool) -> dict[str, Any]:
    """One round: our two processes and each peer's process, the peers first when ``peers_first``."""
    found: dict[str, Any] = {"order": "peers, ours" if peers_first else "ours, peers"}
    if not peers_first:
        found["ours"] = our_sweep(sz)
    for name, cmd in peer_sweep_commands(sz, model, contexts):
        result, wall = run_process(f"2-{name}-sweep", cmd)
        assert result is not None
        rep.versions[name] = result.pop("versions", rep.versions.get(name, {}))
        found[name] = {**result, "wall_s": wall}
    if peers_first:
        found["ours"] = our_sweep(sz)
    return found


def measure_sweep(rep: Report, sz: Sizes, model: Path, contexts: Path) -> None:
    """``sz.repeat`` rounds of the sweep, alternating which side runs first; ratios per round and their median."""
    peers = ["saelens", "sparsify"] if sz.sweep_sparsify else ["saelens"]
    rounds = [sweep_round(rep, sz, model, contexts, peers_first=i % 2 == 1) for i in range(sz.repeat)]
    faster = min(peers, key=lambda p: median([r[p]["wall_s"] for r in rounds]))
    ours = [r["ours"]["wall_s"] for r in rounds]
    rep.results["2_sweep"] = {"rounds": rounds, "faster_peer": faster}
    label = {"saelens": "SAELens", "sparsify": "sparsify"}

    def add(what: str, peer: str, target: str) -> None:
        rep.rows.append(median_row(what, ours, [r[peer]["wall_s"] for r in rounds], target, "s"))

    add(f"2 sweep wall s, vs faster peer ({label[faster]})", faster, "<= 0.5")
    add("2 sweep wall s, vs SAELens (cache + 8 trainings)", "saelens", "")
    if sz.sweep_sparsify:
        add("2 sweep wall s, vs sparsify (on the fly)", "sparsify", "")
    else:
        rep.note("sweep: sparsify skipped (--sweep-peers saelens); 'faster peer' is SAELens only")
    rep.note(
        "sweep: sparsify runs one Trainer per k (4 runs; it cannot sweep k in one run), both seeds in each "
        "run (init_seeds=[0,1]), all in one process with the model loaded once; it computes activations "
        "with a full model forward per batch (no cache, no early exit)"
    )
    rep.note(
        "sweep: SAELens runs its CacheActivationsRunner, then 8 LanguageModelSAETrainingRunner trainings "
        "in one process, the model loaded once and handed to each training (override_model)"
    )
    rep.note(
        "sweep: ours is two processes (gsae harvest, gsae train); every side's wall time includes process "
        "start and model load; SAE files are written on every side"
    )
