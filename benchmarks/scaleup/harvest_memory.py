"""Peak RSS of a whole harvest's driver and of each dask worker, for a corpus and one 10× larger.

    .venv/bin/python -m benchmarks.scaleup.harvest_memory [--docs 40] [--scheduler local]

A tiny random Llama (tests/lm_factory.py) harvests every complete shard of a generated
corpus (``pipeline.text.footprint.generated_corpus``: a folder of ``.txt`` documents), in a fresh process per
corpus. With ``--scheduler local`` the child starts a 2-worker LocalCluster, harvests
through its ``tcp://`` address and reads each worker's ``ru_maxrss`` at the end; with
``none`` it harvests in process.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
from pathlib import Path

from benchmarks.common.child import run_module

T, PER_SHARD = 128, 4096


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(corpus: str, model: str, tokens: int, scheduler: str, store: str) -> dict:
    from pipeline.core.loader import params_from_dict
    from pipeline.harvest.run import run_harvest

    over = [
        f"model.name={model}",
        "model.device=cpu",
        f"data.source={corpus}",
        "data.heldout_fraction=0.01",
        f"data.context_length={T}",
        "harvest.layers=[1]",
        f"harvest.tokens={tokens}",
        f"harvest.tokens_per_shard={PER_SHARD}",
        "harvest.chunk_tokens=2048",
        "harvest.batch_size=32",
        f"harvest.store={store}",
        f"harvest.cache_root={Path(store).parent / 'root'}",
    ]
    if scheduler == "none":
        run_harvest(params_from_dict({}, over))
        return {"driver_mib": _peak_mib(), "workers_mib": []}
    from pipeline.harvest.distributed import scheduler_client

    with scheduler_client("local:2") as client:
        run_harvest(params_from_dict({}, [*over, f"harvest.scheduler={client.scheduler.address}"]))
        workers = sorted(client.run(_peak_mib).values())
    return {"driver_mib": _peak_mib(), "workers_mib": workers}


def count_tokens(corpus: Path, model: Path) -> int:
    """Tokens of every complete shard of the corpus (counted lazily in this process)."""
    from transformers import AutoTokenizer

    from pipeline.core.config import DataConfig
    from pipeline.core.errors import DataError
    from pipeline.text.packing import ShardContexts

    shards = ShardContexts(
        DataConfig(source=str(corpus), heldout_fraction=0.01),
        AutoTokenizer.from_pretrained(model),
        T,
        10**12,
        PER_SHARD // T,
    )
    n = 0
    try:
        while True:
            shards.shard(n)
            shards.forget(n + 1)
            n += 1
    except DataError:
        return n * PER_SHARD


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        corpus, model, tokens, scheduler, store = sys.argv[2:7]
        print(json.dumps(child(corpus, model, int(tokens), scheduler, store)))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=40, help="documents of the small corpus (the large has 10×)")
    ap.add_argument("--scheduler", default="local", choices=["local", "none"])
    args = ap.parse_args()
    from pipeline.text.footprint import generated_corpus
    from tests.lm_factory import save_tiny_lm

    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        model = save_tiny_lm(t / "model", "llama")
        rows = []
        for name, n in (("1x", args.docs), ("10x", 10 * args.docs)):
            corpus = generated_corpus(t / name, n)
            tokens = count_tokens(corpus, model)
            argv = [str(corpus), str(model), str(tokens), args.scheduler, str(t / f"{name}.zarr")]
            out = run_module(__spec__.name, "--child", *argv)
            rows.append((name, tokens, json.loads(out.strip().splitlines()[-1])))
        print(f"scheduler={args.scheduler}")
        print(f"{'corpus':6} {'tokens':>8} {'driver MiB':>10} {'workers MiB':>18}")
        for name, tokens, r in rows:
            workers = ", ".join(f"{w:.0f}" for w in r["workers_mib"]) or "-"
            print(f"{name:6} {tokens:>8} {r['driver_mib']:>10.1f} {workers:>18}")
        (_, _, a), (_, _, b) = rows
        print(f"driver peak 10x/1x = {b['driver_mib'] / a['driver_mib']:.3f}")
        if a["workers_mib"]:
            print(
                f"worker peak 10x/1x = {max(b['workers_mib']) / max(a['workers_mib']):.3f} (largest worker)"
            )


if __name__ == "__main__":
    main()
