"""Peak RSS of the harvest's text path (tokenize + pack every shard) for a corpus and one 10× larger.

Each measurement runs in its own subprocess (``ru_maxrss`` is per process). ``lazy`` is what
the harvest runs (:class:`pipeline.text.packing.ShardContexts`, one shard's contexts at a
time); ``eager`` packs every context at once, as the harvest did before, for comparison.

    .venv/bin/python benchmarks/text_memory.py --docs 2000 --mode lazy eager
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORDS = [f"w{chr(97 + i % 26)}{chr(97 + (i * 7) % 26)}{i % 10}" for i in range(400)]


def write_corpus(folder: Path, n_docs: int, words_per_doc: int = 200) -> Path:
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


def child(corpus: str, tokenizer_dir: str, mode: str, context_length: int, per_shard: int) -> dict:
    """Pack every complete shard of the corpus; returns tokens packed and peak RSS (MiB)."""
    from transformers import AutoTokenizer

    from pipeline.core.config import DataConfig
    from pipeline.core.errors import DataError
    from pipeline.text.packing import ContextPacker, ShardContexts, pack_contexts
    from pipeline.text.sources import iter_documents

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    data = DataConfig(source=corpus, heldout_fraction=0.01)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
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
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        t0 = time.perf_counter()
        checksum = int(pack_contexts(iter_documents(data), tok, context_length, n_ctx).sum())
    return {
        "tokens": n_ctx * context_length,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_mib": base,
        "seconds": time.perf_counter() - t0,
        "checksum": checksum,
    }


def measure(
    corpus: Path, tokenizer_dir: Path, mode: str, context_length: int = 128, per_shard: int = 128
) -> dict:
    """Run :func:`child` in a fresh interpreter and return its figures."""
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            str(corpus),
            str(tokenizer_dir),
            mode,
            str(context_length),
            str(per_shard),
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        corpus, tok_dir, mode, T, per = sys.argv[2:7]
        print(json.dumps(child(corpus, tok_dir, mode, int(T), int(per))))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--docs", type=int, default=2000, help="documents of the small corpus (the large has 10×)"
    )
    ap.add_argument("--mode", nargs="+", default=["lazy", "eager"], choices=["lazy", "eager"])
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from tests.lm_factory import build_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        build_tokenizer().save_pretrained(tmp_path / "tok")
        small = write_corpus(tmp_path / "small", args.docs)
        large = write_corpus(tmp_path / "large", 10 * args.docs)
        print(f"{'mode':6} {'corpus':6} {'tokens':>10} {'peak RSS MiB':>13} {'seconds':>8}")
        for mode in args.mode:
            peaks = []
            for name, corpus in (("1x", small), ("10x", large)):
                r = measure(corpus, tmp_path / "tok", mode)
                peaks.append(r["peak_rss_mib"])
                print(f"{mode:6} {name:6} {r['tokens']:>10} {r['peak_rss_mib']:>13.1f} {r['seconds']:>8.1f}")
            print(f"{mode:6} peak ratio 10x/1x = {peaks[1] / peaks[0]:.3f}")


if __name__ == "__main__":
    main()
