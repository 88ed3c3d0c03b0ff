"""Peak memory of the text path: tokenize and pack every complete shard of a corpus, measured in
a fresh interpreter (``ru_maxrss`` belongs to a process, so each measurement is its own process).

``lazy`` is what a harvest runs (:class:`~pipeline.text.packing.ShardContexts`, one shard's
contexts at a time); ``eager`` packs every context at once, as the harvest did before, for
comparison. Lazy packing keeps its peak flat as the corpus grows (tests/text/test_packing.py
checks it; benchmarks/scaleup/text_memory.py prints both modes). :func:`generated_corpus`
writes the deterministic corpus both measure.

    python -m pipeline.text.footprint CORPUS TOKENIZER_DIR [--mode lazy|eager] [--context-length 128] [--per-shard 128]

prints one JSON line: tokens packed, peak RSS and the RSS before packing (MiB), seconds, and
a checksum of the contexts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

WORDS = [f"w{chr(97 + i % 26)}{chr(97 + (i * 7) % 26)}{i % 10}" for i in range(400)]
PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the folder holding the ``pipeline`` package


def generated_corpus(folder: Path, n_docs: int, words_per_doc: int = 200) -> Path:
    """A folder of ``n_docs`` generated ``.txt`` documents (deterministic).

    One file per document: ``datasets`` reads a text file whole, so the reader's own buffer
    is one document (its JSON reader buffers 10 MB blocks, which would blur the figure).
    """
    import numpy as np

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n_docs):
        words = rng.choice(len(WORDS), size=words_per_doc)
        (folder / f"{i:07d}.txt").write_text(f"Doc {i}. " + " ".join(WORDS[w] for w in words))
    return folder


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def pack_every_shard(
    corpus: str, tokenizer_dir: str, mode: str, context_length: int, per_shard: int
) -> dict[str, Any]:
    """Pack every complete shard of the corpus in this process; tokens packed and peak RSS (MiB)."""
    from transformers import AutoTokenizer

    from pipeline.core.config import DataConfig
    from pipeline.core.errors import DataError
    from pipeline.text.packing import ContextPacker, ShardContexts, pack_contexts
    from pipeline.text.sources import iter_documents

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    data = DataConfig(source=corpus, heldout_fraction=0.01)
    base = _peak_mib()
    t0 = time.perf_counter()
    n_ctx, checksum = 0, 0
    if mode == "lazy":  # every complete shard, until the text runs out
        shards = ShardContexts(data, tok, context_length, 10**12, per_shard)
        try:
            for i in range(shards.n_shards):
                checksum += int(shards.shard(i).sum())
                n_ctx += per_shard
                shards.forget(i + 1)
        except DataError:
            pass
    else:  # count the contexts first (lazily), then pack them all at once as the old harvest did
        packer = ContextPacker(iter_documents(data), tok, context_length)
        with contextlib.suppress(DataError):
            while True:
                packer.take(per_shard)
                n_ctx += per_shard
        del packer
        base = _peak_mib()
        t0 = time.perf_counter()
        checksum = int(pack_contexts(iter_documents(data), tok, context_length, n_ctx).sum())
    return {
        "tokens": n_ctx * context_length,
        "peak_rss_mib": _peak_mib(),
        "rss_before_mib": base,
        "seconds": time.perf_counter() - t0,
        "checksum": checksum,
    }


def packing_footprint(
    corpus: Path, tokenizer_dir: Path, mode: str, context_length: int = 128, per_shard: int = 128
) -> dict[str, Any]:
    """:func:`pack_every_shard` in a fresh interpreter (this package first on its path); its figures."""
    argv = [str(corpus), str(tokenizer_dir), "--mode", mode]
    argv += ["--context-length", str(context_length), "--per-shard", str(per_shard)]
    paths = [str(PACKAGE_ROOT), *(p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p)]
    out = subprocess.run(
        [sys.executable, "-m", "pipeline.text.footprint", *argv],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))},
    )
    found: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", help="data.source: a folder of .txt files, a .jsonl file, ...")
    ap.add_argument("tokenizer_dir", help="a saved Hugging Face tokenizer")
    ap.add_argument("--mode", choices=["lazy", "eager"], default="lazy")
    ap.add_argument("--context-length", type=int, default=128)
    ap.add_argument("--per-shard", type=int, default=128, help="contexts per shard")
    a = ap.parse_args()
    print(json.dumps(pack_every_shard(a.corpus, a.tokenizer_dir, a.mode, a.context_length, a.per_shard)))


if __name__ == "__main__":
    main()
