"""Side-by-side benchmark of this pipeline against its peers, SAELens 6 and sparsify (issue 13).

    .venv/bin/python benchmarks/peers.py [--quick] [--only 1,2,3] [--tokens N] [--repeat R] [--json PATH]
    make bench-peers

Creates one virtual environment per peer (``.bench/venvs/<peer>/``: CPU torch 2.13.0, then
``sae-lens==6.54.12`` / ``eai-sparsify==1.3.3``; reused while their stamp file says so),
converts the embedded SmolLM2-135M GGUF once into an HF folder (``.bench/smollm2/``: neither
peer loads GGUF) and exports our packed ``python-docs`` contexts (``.bench/contexts.npy``), so
both sides see the same model, block 15 (``model.layers.15``), tokens, k, width 4,608 (d = 576
x 8) and batch 4,096 tokens. None of that preparation is timed. Our side loads the same
converted folder (``model.name=.bench/smollm2``; ``--our-model alias`` uses ``smollm2-135m``,
whose GGUF parsing adds ~35 s to every process that loads the model). Each measurement then runs
our side and the peer back to back, each as a subprocess in its own venv (child scripts
``peers_ours.py``, ``peers_saelens.py``, ``peers_sparsify.py`` print one JSON line), and the
ratios ours / peer are printed in a table:

1. SAE training throughput from a cache (TopK k=32): our trainer reading our activation-only
   store vs SAELens's trainer reading its own ``CacheActivationsRunner`` cache (both the
   caches of measurement 3). Steady tok/s between step timestamps after a warm-up.
   Target: ours >= 2x SAELens.
2. An 8-variant TopK sweep end to end (k in {16, 32, 64, 128} x seeds {0, 1}, one pass over
   the same tokens): ours = ``gsae harvest`` (activation-only) + one ``gsae train`` with the
   grid; SAELens = one activation cache + 8 trainings in one process (model loaded once);
   sparsify = on-the-fly training, one ``sparsify.Trainer`` run per k (both seeds in each run
   via ``init_seeds``) in one process. Wall time of each side's process(es), from launch to
   exit (process start and model load included on every side). Target: ours / faster peer <= 0.5.
3. Activation-only harvest, float16 on both sides: our ``run_harvest`` (what ``gsae harvest -s
   harvest.gradients=false -s harvest.dtype=float16`` runs) vs SAELens's
   ``CacheActivationsRunner.run()`` (dtype float16), both timed after model load and a warm-up
   forward. Targets: tok/s ours / SAELens >= 1.0, bytes per token on disk ours / SAELens <= 1.0.

``--repeat R`` runs measurements 2 and 3 R times each, alternating which side goes first, and
reports the median of the per-round ratios with their range (machine noise moves one round by
several percent; measurement 1 trains on the last round's caches).

Every "nearest honest equivalent" is printed under the table (and documented in the child
scripts' docstrings); neither peer trains a g-SAE, so only TopK is compared.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import peers_setup as setup  # noqa: E402
from peers_child import versions  # noqa: E402
from peers_ours import harvest_overrides, train_overrides  # noqa: E402
from peers_proc import fresh, run_process  # noqa: E402
from peers_report import Report, median_row, print_table, row  # noqa: E402

ROOT = setup.ROOT
HERE = ROOT / "benchmarks"
WORK = setup.BENCH / "work"
OURS_PY = Path(sys.executable)
KS, SEEDS = [16, 32, 64, 128], [0, 1]
log = logging.getLogger("peers")


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
    ours_cmd = [str(OURS_PY), str(HERE / "peers_ours.py"), "harvest", "--tokens", str(sz.tokens)]
    ours_cmd += [
        "--store",
        str(fresh(WORK / "ours-act.zarr")),
        "--cache-root",
        str(fresh(WORK / "ours-root")),
    ]
    ours_cmd += ["--contexts", str(contexts), "--model", sz.our_model, "--autocast", sz.lm_autocast]
    sl_cmd = [str(setup.venv_python("saelens")), str(HERE / "peers_saelens.py"), "cache"]
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
    ours_cmd = [str(OURS_PY), str(HERE / "peers_ours.py"), "train", "--tokens", str(sz.tokens)]
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
    sl_cmd = [str(setup.venv_python("saelens")), str(HERE / "peers_saelens.py"), "train"]
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
    sl_cmd = [str(setup.venv_python("saelens")), str(HERE / "peers_saelens.py"), "sweep"]
    sl_cmd += peer_args(model, contexts, sz.sweep_tokens, sz.lm_autocast) + [
        "--cache",
        str(fresh(WORK / "saelens-sweep-cache")),
    ]
    found = [("saelens", [*sl_cmd, "--work", str(fresh(WORK / "saelens-sweep")), *grid])]
    if sz.sweep_sparsify:
        sp_cmd = [str(setup.venv_python("sparsify")), str(HERE / "peers_sparsify.py"), "sweep"]
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


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny token counts: a smoke run of a few minutes")
    ap.add_argument("--only", default="1,2,3", help="comma-separated measurements to run (1, 2, 3)")
    ap.add_argument(
        "--tokens", type=int, help="tokens of the harvests / caches (3 and 1); default 32768, quick 4096"
    )
    ap.add_argument("--sweep-tokens", type=int, help="tokens of the sweep (2); default 32768, quick 4096")
    ap.add_argument("--steps", type=int, help="training steps timed in 1; default 48, quick 10")
    ap.add_argument("--warmup", type=int, help="of which warm-up steps; default 8, quick 3")
    ap.add_argument(
        "--our-model",
        choices=["folder", "alias"],
        default="folder",
        help="our model.name: the same converted HF folder the peers load (default) or the GGUF alias",
    )
    ap.add_argument(
        "--sweep-peers",
        choices=["all", "saelens"],
        default="all",
        help="peers of the sweep (2): all, or SAELens only (sparsify's on-the-fly runs take longest)",
    )
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rounds of the sweep (2) and of the harvest (3), alternating which side runs first; median ratio and range",
    )
    ap.add_argument(
        "--lm-autocast",
        choices=["none", "bfloat16"],
        default="none",
        help="every harvest's LM forward (ours: harvest.autocast; SAELens: autocast_lm); SAELens peer only",
    )
    ap.add_argument("--json", type=Path, help="write all results, versions and the command here")
    return ap.parse_args()


def sizes_of(args: argparse.Namespace) -> Sizes:
    if args.repeat < 1:
        raise SystemExit(f"--repeat must be at least 1, got {args.repeat}")
    if args.lm_autocast != "none" and args.sweep_peers == "all" and "2" in args.only:
        raise SystemExit("--lm-autocast needs --sweep-peers saelens: sparsify's trainer has no LM autocast")
    q = args.quick
    return Sizes(
        tokens=whole(args.tokens or (4096 if q else 32768)),
        sweep_tokens=whole(args.sweep_tokens or (4096 if q else 32768)),
        steps=args.steps or (10 if q else 48),
        warmup=args.warmup or (3 if q else 8),
        our_model=args.our_model,
        sweep_sparsify=args.sweep_peers == "all",
        repeat=args.repeat,
        lm_autocast=args.lm_autocast,
    )


def prepare(rep: Report, sz: Sizes) -> tuple[Path, Path]:
    """Venvs, converted model, exported contexts (untimed)."""
    for peer in setup.PEER_PINS:
        setup.ensure_venv(peer)
    model = setup.converted_model()
    contexts = setup.exported_contexts(max(sz.tokens, sz.sweep_tokens))
    if sz.our_model == "folder":
        sz.our_model = str(model)
        rep.note(
            "ours loads the same converted HF folder as the peers (model.name=.bench/smollm2), so every side "
            "loads the same files; --our-model alias uses smollm2-135m, whose GGUF load costs ~35 s more per "
            "process on this machine"
        )
    else:
        sz.our_model = "smollm2-135m"
        rep.note("ours loads the GGUF alias smollm2-135m (peers: the converted HF folder of the same GGUF)")
    if sz.repeat > 1:
        rep.note(
            f"sweep and harvest: {sz.repeat} rounds each, alternating which side runs first; each ratio is the "
            "median of the per-round ratios (range printed under it), ours and peer the median figures"
        )
    if sz.lm_autocast != "none":
        rep.note(
            "every harvest's LM forward runs under bf16 autocast: ours harvest.autocast=bfloat16, SAELens "
            "autocast_lm=True (both torch.autocast on the CPU); the SAEs still train in float32"
        )
    return model, contexts


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    only = {int(x) for x in args.only.split(",") if x.strip()}
    sz = sizes_of(args)
    rep = Report(command=shlex.join([sys.executable, *sys.argv]), sizes={})
    model, contexts = prepare(rep, sz)
    rep.sizes = vars(sz)
    log.info("sizes: %s; measurements %s; %d CPU cores", vars(sz), sorted(only), os.cpu_count())
    start = time.perf_counter()
    if only & {1, 3}:
        n = sz.repeat if 3 in only else 1
        rounds = [harvest_round(rep, sz, model, contexts, peer_first=i % 2 == 1) for i in range(n)]
        if 3 in only:
            measure_harvest(rep, rounds)
    if 1 in only:
        measure_training(rep, sz, model, contexts)
    if 2 in only:
        measure_sweep(rep, sz, model, contexts)
    rep.versions["orchestrator"] = {"python": platform.python_version(), **versions("gsae-pipeline")}
    rep.results["benchmark_wall_s"] = time.perf_counter() - start
    rep.rows.sort(key=lambda r: r["measurement"][0])  # by measurement number, stable within one
    print_table(rep)
    print(f"Benchmark wall time (preparation excluded): {rep.results['benchmark_wall_s']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(vars(rep), indent=2, default=str) + "\n")
        print(f"JSON: {args.json}")


if __name__ == "__main__":
    main()
