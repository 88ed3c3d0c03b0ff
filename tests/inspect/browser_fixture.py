"""A synthetic described entry (document, firings, tokens) in the shape ``describe`` writes.

Used by the browser tests; ``python -m tests.inspect.browser_fixture OUT`` writes the page of
it (and of a large entry of the real run's size with ``--large``) to look at by hand.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.inspect.firings import Firings, TokenTable

EVIL = '</script><script>document.title="pwned"</script><b>x</b>'
"""A token string that must render as text."""
EVIL_LATENT = 5
"""The latent whose top firing sits on the EVIL token."""
FIRST_ROW, CONTEXT, WINDOW = 64, 32, 8
WORDS = [" the", " cat", " sat", " on", " mat", "\n", "  two", "\t", ".", " FILTERME", " dog", "é", "🙂"]


def make_entry(
    n_latents: int = 30,
    n_contexts: int = 12,
    gradient: bool = True,
    seed: int = 0,
    top_n: int = 6,
    max_firings: int = 64,
) -> tuple[dict[str, Any], Firings, TokenTable]:
    """A document, its firings and token table: latent 0 dead, latent EVIL_LATENT on EVIL."""
    rng = np.random.default_rng(seed)
    strings = {i: w for i, w in enumerate([*WORDS, EVIL])}
    n_rows = n_contexts * CONTEXT
    ids = rng.integers(0, len(WORDS), n_rows).astype(np.int32)
    offsets, rows, acts = [0], [], []
    for i in range(n_latents):
        n = 0 if i == 0 else int(rng.integers(3, max_firings))
        r = np.sort(rng.choice(n_rows, n, replace=False)) + FIRST_ROW
        a = (rng.gamma(2.0, 1.0, n) * (1 + i / 7)).astype(np.float32)
        order = np.lexsort((r, -a))
        rows.append(r[order])
        acts.append(a[order])
        offsets.append(offsets[-1] + n)
    rows_a, acts_a = np.concatenate(rows), np.concatenate(acts)
    firings = Firings(
        offsets=np.asarray(offsets, np.int64),
        rows=rows_a.astype(np.int64),
        acts=acts_a,
        attrs=(rng.normal(0, 0.05, acts_a.shape) * acts_a).astype(np.float32) if gradient else None,
        added=(rng.random(acts_a.shape) < 0.2) if gradient else None,
    )
    evil_row = int(firings.rows[firings.of(EVIL_LATENT)][0])
    ids[evil_row - FIRST_ROW] = len(WORDS)
    tokens = TokenTable(first_row=FIRST_ROW, context_length=CONTEXT, ids=ids, strings=strings)
    latents = [_latent(i, firings, tokens, rng, top_n) for i in range(n_latents)]
    doc = {
        "sae": "topk_k32" if not gradient else "gsae_k32_b1",
        "store": "data/cache/heldout/store.zarr",
        "rows": [FIRST_ROW, n_rows],
        "with_gradient": gradient,
        "entry": "gsae_k32_b1" if gradient else "gsae_k32_b1@beta0",
        "architecture": "gsae",
        "k": 32,
        "beta": 1.0,
        "hook": "model.layers.15",
        "model": "smollm2-135m",
        "n_latents": n_latents,
        "alive": sum(1 for lat in latents if lat["density"] > 0),
        "gradient_available": gradient,
        "window": WINDOW,
        "logit_note": "W_dec[i] · W_U, final norm skipped",
        "hist_bins": 12,
        "latents": latents,
    }
    return doc, firings, tokens


def _sample(firings: Firings, j: int) -> list[Any]:
    attr = None if firings.attrs is None else float(firings.attrs[j])
    return [int(firings.rows[j]), float(firings.acts[j]), attr]


def _latent(
    i: int, firings: Firings, tokens: TokenTable, rng: np.random.Generator, top_n: int
) -> dict[str, Any]:
    sl = firings.of(i)
    idx = np.arange(sl.start, sl.stop)
    acts = firings.acts[sl]
    n_rows = tokens.ids.shape[0]
    strings = list(tokens.strings.values())
    lat: dict[str, Any] = {
        "id": i,
        "density": len(idx) / n_rows,
        "mean_act": float(acts.mean()) if len(idx) else 0.0,
        "max_act": float(acts.max()) if len(idx) else 0.0,
        "mean_abs_attr": None,
        "attr_per_act": None,
        "top_act": [_sample(firings, j) for j in idx[:top_n]],
        "top_attr": [],
        "quantiles": [],
        "hist": np.histogram(acts, bins=12, range=(0, float(acts.max()) if len(idx) else 1.0))[0].tolist(),
        "top_tokens": [],
        "logits_up": [[strings[int(t)], 3.0 - v / 2] for v, t in enumerate(rng.integers(0, len(strings), 5))],
        "logits_down": [
            [strings[int(t)], v / 2 - 3.0] for v, t in enumerate(rng.integers(0, len(strings), 5))
        ],
    }
    if firings.attrs is not None:
        attrs = firings.attrs[sl]
        lat["mean_abs_attr"] = float(np.abs(attrs).mean()) if len(idx) else 0.0
        lat["attr_per_act"] = float(attrs.sum() / acts.sum()) if len(idx) else 0.0
        lat["top_attr"] = [
            _sample(firings, j) for j in idx[np.argsort(-np.abs(attrs), kind="stable")][:top_n]
        ]
        lat["grad_added"] = int(firings.added[sl].sum()) if firings.added is not None else 0
        lat["grad_removed"] = int(rng.integers(0, 5))
    if len(idx):
        edges = np.quantile(acts, [0, 0.5, 1.0])
        lat["quantiles"] = [
            [float(lo), float(hi), [_sample(firings, j) for j in idx[(acts >= lo) & (acts <= hi)][:2]]]
            for lo, hi in zip(edges[:-1], edges[1:], strict=True)
        ]
        ids, counts = np.unique(tokens.ids[firings.rows[sl] - tokens.first_row], return_counts=True)
        best = np.argsort(-counts, kind="stable")[:6]
        lat["top_tokens"] = [[tokens.strings[int(ids[b])], int(counts[b])] for b in best]
    return lat


def main(argv: list[str]) -> None:
    from pipeline.inspect.browser import write_browser, write_start_page

    out = Path(argv[0])
    if "--large" in argv:
        doc, firings, tokens = make_entry(n_latents=4608, n_contexts=256, top_n=24, seed=1, max_firings=110)
    else:
        doc, firings, tokens = make_entry()
    write_browser(out / "entry", doc, firings, tokens)
    write_start_page(
        out,
        [
            {
                "name": doc["entry"],
                "href": "entry/index.html",
                "architecture": "gsae",
                "k": 32,
                "alive": doc["alive"],
                "n_latents": doc["n_latents"],
                "density_mean": 0.01,
                "mean_abs_attr_mean": 0.002,
                "with_gradient": True,
            }
        ],
    )


if __name__ == "__main__":
    main(sys.argv[1:])
