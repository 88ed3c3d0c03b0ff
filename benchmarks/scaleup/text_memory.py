"""Peak RSS of the harvest's text path (tokenize + pack every shard) for a corpus and one 10× larger.

Each measurement runs in its own subprocess (``ru_maxrss`` is per process):
:func:`pipeline.text.footprint.packing_footprint`. ``lazy`` is what the harvest runs
(:class:`pipeline.text.packing.ShardContexts`, one shard's contexts at a time); ``eager``
packs every context at once, as the harvest did before, for comparison. The corpus is
:func:`pipeline.text.footprint.generated_corpus`, the tokenizer tests/lm_factory.py's.

    .venv/bin/python -m benchmarks.scaleup.text_memory --docs 2000 --mode lazy eager
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from pipeline.text.footprint import generated_corpus, packing_footprint


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--docs", type=int, default=2000, help="documents of the small corpus (the large has 10×)"
    )
    ap.add_argument("--mode", nargs="+", default=["lazy", "eager"], choices=["lazy", "eager"])
    args = ap.parse_args()
    from tests.lm_factory import build_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        build_tokenizer().save_pretrained(tmp_path / "tok")
        small = generated_corpus(tmp_path / "small", args.docs)
        large = generated_corpus(tmp_path / "large", 10 * args.docs)
        print(f"{'mode':6} {'corpus':6} {'tokens':>10} {'peak RSS MiB':>13} {'seconds':>8}")
        for mode in args.mode:
            peaks = []
            for name, corpus in (("1x", small), ("10x", large)):
                r = packing_footprint(corpus, tmp_path / "tok", mode)
                peaks.append(r["peak_rss_mib"])
                print(f"{mode:6} {name:6} {r['tokens']:>10} {r['peak_rss_mib']:>13.1f} {r['seconds']:>8.1f}")
            print(f"{mode:6} peak ratio 10x/1x = {peaks[1] / peaks[0]:.3f}")


if __name__ == "__main__":
    main()
