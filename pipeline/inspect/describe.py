"""Every firing of every latent of one SAE on the described rows, and the figures built from them.

:func:`collect_firings` applies the SAE exactly as evaluation does (DESIGN §3: the stored
gradient for a gradient-aware SAE, none for a ``@beta0`` twin) to the described rows and
keeps every (latent, row, act) with act > 0, plus its attribution

    attr = −act · (W_dec[i] · g_row)

with the raw stored gradient g and the saved (unit-row) ``W_dec``: the first-order change of
the context's summed loss if the latent's contribution were removed (positive = the latent
lowers the loss). Cost: one encode (rows × latents × d multiply-adds; a g-SAE adds its score
|W_dec g| and its β = 0 twin's selection, two more of the same size) and rows × k × d for the
attributions.

:func:`latent_figures` turns the firings into the per-latent entries of ``latents.json``:
density (firings / described rows), mean and max activation (over firings), mean |attr|,
attribution per unit activation (Σ|attr| / Σact), the top firings by act and by |attr|,
firings sampled across activation quantiles, an activation histogram and, for a g-SAE read
with the gradient, how many firings the gradient added and removed (against the same SAE's
β = 0 selection on the same rows).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import torch

from pipeline.inspect.firings import Firings, TokenTable
from pipeline.saes.base import SAE

HIST_BINS = 20
"""Equal bins of a latent's activation histogram on [0, max_act]."""
TOP_TOKENS = 5
"""Most frequent tokens at a latent's top-activation firings listed in the index table."""


def _selected(indices: torch.Tensor, values: torch.Tensor, n: int) -> torch.Tensor:
    """[B, n] bool: the latents that receive a positive value."""
    return torch.zeros(indices.shape[0], n, dtype=torch.bool).scatter_(1, indices, values > 0)


@torch.no_grad()
def collect_firings(
    sae: SAE,
    acts: np.ndarray,
    grads: np.ndarray | None,
    rows: np.ndarray,
    *,
    with_gradient: bool,
    batch_size: int = 2048,
) -> tuple[Firings, np.ndarray | None]:
    """Every firing of ``sae`` on ``acts`` [N, d] (store rows ``rows`` [N]), grouped by latent.

    ``grads`` [N, d] (raw) gives the attributions (None: no attributions); ``with_gradient``
    hands it to the SAE's selection too. For a gradient-aware SAE read with the gradient,
    also returns per latent the number of β = 0 firings its gradient removed ([n] int64);
    otherwise None.
    """
    n = sae.d_sae
    twin = sae.gradient_free_twin() if with_gradient else None
    parts: dict[str, list[np.ndarray]] = {"latent": [], "row": [], "act": [], "attr": [], "added": []}
    removed = np.zeros(n, np.int64)
    W_dec = sae.W_dec.detach().float()
    for lo in range(0, acts.shape[0], batch_size):
        x = torch.from_numpy(acts[lo : lo + batch_size])
        g = None if grads is None else torch.from_numpy(grads[lo : lo + batch_size])
        out = sae(x, g if with_gradient else None)
        fired = out.values > 0
        b, j = torch.nonzero(fired, as_tuple=True)
        latent = out.indices[b, j]
        parts["latent"].append(latent.numpy())
        parts["row"].append(rows[lo : lo + batch_size][b.numpy()])
        value = out.values[b, j]
        parts["act"].append(value.numpy())
        if g is not None:
            # W_dec[i] · g_row for the k selected latents only: B·k·d, not the B·n·d of g W_decᵀ
            along = torch.bmm(W_dec[out.indices], g.unsqueeze(2)).squeeze(2)[b, j]
            parts["attr"].append((-value * along).numpy())
        if twin is not None:
            plain = twin(x, None)
            base = _selected(plain.indices, plain.values, n)
            ours = _selected(out.indices, out.values, n)
            parts["added"].append((~base[b, latent]).numpy())
            removed += (base & ~ours).sum(dim=0).numpy()
    return _group(parts, n, grads is not None, twin is not None), (removed if twin is not None else None)


def _group(parts: dict[str, list[np.ndarray]], n: int, has_attr: bool, has_added: bool) -> Firings:
    """CSR by latent; within a latent by act descending, then row ascending."""
    cat = {k: np.concatenate(v) if v else np.zeros(0) for k, v in parts.items()}
    latent = cat["latent"].astype(np.int64)
    row = cat["row"].astype(np.int64)
    act = cat["act"].astype(np.float32)
    order = np.lexsort((row, -act, latent))
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(latent, minlength=n), out=offsets[1:])
    return Firings(
        offsets=offsets,
        rows=row[order],
        acts=act[order],
        attrs=cat["attr"].astype(np.float32)[order] if has_attr else None,
        added=cat["added"].astype(bool)[order] if has_added else None,
    )


def _num(v: float) -> float:
    """A float written with 7 significant digits (float32 precision; keeps the JSON small)."""
    return float(f"{float(v):.7g}")


def _triples(rows: np.ndarray, acts: np.ndarray, attrs: np.ndarray | None) -> list[list[Any]]:
    """[[row, act, attr | None], ...] for ``latents.json``."""
    if attrs is None:
        return [[int(r), _num(a), None] for r, a in zip(rows, acts, strict=True)]
    return [[int(r), _num(a), _num(t)] for r, a, t in zip(rows, acts, attrs, strict=True)]


def _quantile_samples(
    acts: np.ndarray, bins: int, per_bin: int, rng: np.random.Generator
) -> list[tuple[float, float, np.ndarray]]:
    """(lo, hi, positions) per activation-quantile bin of one latent's firings (``acts``
    descending): equal-count bins from the top down, ``per_bin`` positions sampled in each."""
    out = []
    for chunk in np.array_split(np.arange(acts.shape[0]), min(bins, acts.shape[0])):
        pick = np.sort(rng.choice(chunk, size=min(per_bin, chunk.size), replace=False))
        out.append((float(acts[chunk[-1]]), float(acts[chunk[0]]), pick))
    return out


def latent_figures(
    firings: Firings,
    n_described: int,
    tokens: TokenTable,
    *,
    top_n: int,
    quantile_bins: int,
    quantile_samples: int,
    seed: int,
    removed: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """The ``latents`` list of ``latents.json`` (without the logit effects), one dict per latent."""
    out = []
    for i in range(firings.n_latents):
        sl = firings.of(i)
        rows, acts = firings.rows[sl], firings.acts[sl]
        attrs = None if firings.attrs is None else firings.attrs[sl]
        out.append(
            _one_latent(
                i, rows, acts, attrs, n_described, tokens, top_n, quantile_bins, quantile_samples, seed
            )
        )
        if firings.added is not None and removed is not None:
            out[-1]["grad_added"] = int(firings.added[sl].sum())
            out[-1]["grad_removed"] = int(removed[i])
    return out


def _one_latent(
    i: int,
    rows: np.ndarray,
    acts: np.ndarray,
    attrs: np.ndarray | None,
    n_described: int,
    tokens: TokenTable,
    top_n: int,
    quantile_bins: int,
    quantile_samples: int,
    seed: int,
) -> dict[str, Any]:
    count = int(acts.shape[0])
    has_attr = attrs is not None
    if count == 0:
        return {
            "id": i,
            "density": 0.0,
            "mean_act": 0.0,
            "max_act": 0.0,
            "mean_abs_attr": 0.0 if has_attr else None,
            "mean_attr": 0.0 if has_attr else None,
            "attr_per_act": 0.0 if has_attr else None,
            "top_act": [],
            "top_attr": [],
            "quantiles": [],
            "hist": [0] * HIST_BINS,
            "top_tokens": [],
        }
    abs_attr = None if attrs is None else np.abs(attrs)
    by_attr = np.arange(0) if abs_attr is None else np.lexsort((rows, -abs_attr))[:top_n]
    rng = np.random.default_rng([seed, i])
    quantiles = [
        [_num(lo), _num(hi), _triples(rows[p], acts[p], None if attrs is None else attrs[p])]
        for lo, hi, p in _quantile_samples(acts, quantile_bins, quantile_samples, rng)
    ]
    max_act = float(acts[0])
    hist = np.histogram(acts, bins=HIST_BINS, range=(0.0, max_act))[0] if max_act > 0 else np.zeros(HIST_BINS)
    top_ids = tokens.ids[rows[:top_n] - tokens.first_row]
    return {
        "id": i,
        "density": _num(count / n_described),
        "mean_act": _num(acts.mean(dtype=np.float64)),
        "max_act": _num(max_act),
        "mean_abs_attr": None if abs_attr is None else _num(abs_attr.mean(dtype=np.float64)),
        "mean_attr": None if attrs is None else _num(attrs.mean(dtype=np.float64)),
        "attr_per_act": None
        if abs_attr is None
        else _num(abs_attr.sum(dtype=np.float64) / acts.sum(dtype=np.float64)),
        "top_act": _triples(rows[:top_n], acts[:top_n], None if attrs is None else attrs[:top_n]),
        "top_attr": [] if attrs is None else _triples(rows[by_attr], acts[by_attr], attrs[by_attr]),
        "quantiles": quantiles,
        "hist": [int(c) for c in hist],
        "top_tokens": [
            [tokens.strings[int(t)], c] for t, c in Counter(top_ids.tolist()).most_common(TOP_TOKENS)
        ],
    }
