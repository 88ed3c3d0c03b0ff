"""Stage ``gsae inspect``: describe every latent of every trained variant, from the store alone.

Inputs are files: a store (the held-out store by default, ``inspect.store``), every
``<train.out_dir>/<variant>/`` and the LM's tokenizer and unembedding (``params.model``; the
LM never runs). The described rows are the ``inspect.tokens`` tokens (whole contexts) from
``inspect.first_token`` on, without the first position of each context (evaluation never
applies the SAE there).

Entries: every variant, applied as evaluation applies it (a gradient-aware one with the
stored gradient), and for a gradient-aware variant with β > 0 also ``<variant>@beta0`` (the
same weights selecting without the gradient). From a store without gradients there are no
attributions, and a gradient-aware variant is described as its ``@beta0`` twin only (one
warning line says so).

Outputs (DESIGN §3 "Latent descriptions"): ``<inspect.out_dir>/<entry>/latents.json`` and
``index.html`` (the browser), ``<inspect.out_dir>/index.html`` (links to every entry),
``inspect.report`` (markdown: entry summaries, the latent matching) and ``inspect.metrics``.
Everything is written into a staging folder first and moved into place at the end, so a
failed run leaves no half-written description behind.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from cache.reader import open_store, read_rows, require_hook
from cache.schema import CacheInfo, usable_rows
from pipeline.core.config import Params
from pipeline.core.errors import CacheMismatch, SAEFormatError
from pipeline.core.fileio import atomic_write_text
from pipeline.inspect.browser import write_browser, write_start_page
from pipeline.inspect.describe import HIST_BINS, collect_firings, latent_figures
from pipeline.inspect.firings import Firings, TokenTable
from pipeline.inspect.logits import LOGIT_NOTE, Unembedding, logit_effects, unembedding
from pipeline.inspect.matching import LatentStats
from pipeline.inspect.matching_report import matching_markdown, write_matching_plot
from pipeline.inspect.pairing import compare
from pipeline.inspect.report import inspect_markdown
from pipeline.lm.models import LoadedModel, load_model, warn_if_other_weights
from pipeline.saes.base import SAE
from pipeline.saes.io import find_variants, load_sae
from pipeline.saes.naming import BETA0_SUFFIX, series_name
from pipeline.stores import whole_contexts

log = logging.getLogger(__name__)

LATENTS_JSON = "latents.json"
BROWSER_HTML = "index.html"
MATCHING_PNG = "matching.png"


@dataclass(frozen=True)
class Variant:
    """A trained SAE folder, loaded and checked against the store."""

    name: str
    sae: SAE
    cfg: dict[str, Any]
    hook: str


@dataclass(frozen=True)
class Window:
    """The described rows of the store."""

    tokens: TokenTable
    rows: np.ndarray
    """int64 [N] store rows described (positions ≥ 1)."""
    acts: dict[str, np.ndarray]
    """hook → [N, d] float32."""
    grads: dict[str, np.ndarray | None]
    """hook → [N, d] float32 raw gradients (None from an activation-only store)."""


@dataclass(frozen=True)
class Described:
    """One described entry: its ``latents.json`` document and its firings."""

    entry: str
    variant: Variant
    doc: dict[str, Any]
    firings: Firings


def load_variants(params: Params, info: CacheInfo, url: str) -> list[Variant]:
    """Every trained variant, refused in one line when it does not fit the store."""
    out = []
    for folder in find_variants(params.train.out_dir):
        sae, cfg = load_sae(folder)
        hook = cfg.get("hook_name")
        if not isinstance(hook, str):
            raise SAEFormatError(f"{folder}/cfg.json has no hook_name")
        model = cfg.get("model")
        if model is not None and str(model) != info.model:
            raise CacheMismatch(
                f"variant {folder.name} was trained on model {model!r}, but store {url} holds {info.model!r}"
            )
        try:
            require_hook(info, url, hook)
        except CacheMismatch as exc:
            raise CacheMismatch(f"variant {folder.name} was trained on hook {hook!r}: {exc}") from None
        if sae.d_in != info.d_model:
            raise SAEFormatError(
                f"variant {folder.name} has d_in={sae.d_in}, the store has d_model={info.d_model}"
            )
        out.append(Variant(folder.name, sae, cfg, hook))
    return out


def plan_entries(variants: list[Variant], has_grad: bool) -> list[tuple[str, Variant, SAE, bool]]:
    """(entry name, variant, SAE to apply, with the gradient) for every entry to describe."""
    plan = []
    skipped = []
    for v in variants:
        twin = v.sae.gradient_free_twin()
        if v.sae.uses_grad and twin is not None and not has_grad:
            skipped.append(v.name)
        else:
            plan.append((v.name, v, v.sae, v.sae.uses_grad))
        if twin is not None:
            plan.append((v.name + BETA0_SUFFIX, v, twin, False))
    if skipped:
        log.warning(
            "the store holds no gradients: %s described without the gradient (as @beta0) only; "
            "attribution is unavailable",
            ", ".join(skipped),
        )
    return plan


def read_window(params: Params, info: CacheInfo, url: str, hooks: list[str]) -> Window:
    """The described rows, and the token ids of their whole contexts."""
    ins, T = params.inspect, info.context_length
    n_ctx = whole_contexts(info, url, ins.first_token, ins.tokens, "inspect.tokens")
    first, stop = ins.first_token, ins.first_token + n_ctx * T
    keep = usable_rows(first, stop, T)
    acts: dict[str, np.ndarray] = {}
    grads: dict[str, np.ndarray | None] = {}
    ids = np.zeros(0, np.int32)
    for hook in hooks:
        ids, act, grad = read_rows(url, hook, first, stop, info)
        acts[hook], grads[hook] = act[keep], None if grad is None else grad[keep]
    return Window(TokenTable(first, T, ids, {}), first + keep.astype(np.int64), acts, grads)


def token_strings(lm: LoadedModel, ids: np.ndarray) -> dict[int, str]:
    """Decoded text of each distinct id (one id at a time, as a token is shown)."""
    unique = np.unique(ids).tolist()
    return dict(zip(unique, lm.tokenizer.batch_decode([[i] for i in unique]), strict=True))


def describe(
    params: Params,
    entry: str,
    variant: Variant,
    sae: SAE,
    with_gradient: bool,
    window: Window,
    url: str,
    logits: tuple[np.ndarray, ...],
) -> Described:
    """Firings and the ``latents.json`` document of one entry."""
    ins = params.inspect
    grads = window.grads[variant.hook]
    firings, removed = collect_firings(
        sae,
        window.acts[variant.hook],
        grads,
        window.rows,
        with_gradient=with_gradient,
        batch_size=ins.batch_size,
    )
    n = int(window.rows.shape[0])
    latents = latent_figures(
        firings,
        n,
        window.tokens,
        top_n=ins.top_n,
        quantile_bins=ins.quantile_bins,
        quantile_samples=ins.quantile_samples,
        seed=ins.seed,
        removed=removed,
    )
    strings = window.tokens.strings
    up_ids, up_val, down_ids, down_val = logits
    for i, lat in enumerate(latents):
        lat["logits_up"] = [
            [strings[int(t)], float(f"{v:.5g}")] for t, v in zip(up_ids[i], up_val[i], strict=True)
        ]
        lat["logits_down"] = [
            [strings[int(t)], float(f"{v:.5g}")] for t, v in zip(down_ids[i], down_val[i], strict=True)
        ]
    doc = {
        "sae": variant.name,
        "store": url,
        "rows": [window.tokens.first_row, int(window.tokens.ids.shape[0])],
        "with_gradient": with_gradient,
        "entry": entry,
        "architecture": str(variant.cfg.get("architecture")),
        "k": sae.k,
        "beta": float(getattr(sae.hp, "beta", 0.0)),
        "hook": variant.hook,
        "model": str(variant.cfg.get("model", "")),
        "n_latents": sae.d_sae,
        "n_rows_described": n,
        "alive": int(np.count_nonzero(np.diff(firings.offsets))),
        "gradient_available": grads is not None,
        "window": ins.window,
        "logit_note": LOGIT_NOTE,
        "hist_bins": HIST_BINS,
        "latents": latents,
    }
    return Described(entry, variant, doc, firings)


def _logits_per_variant(
    variants: list[Variant], unembed: Unembedding, n_tokens: int
) -> dict[str, tuple[np.ndarray, ...]]:
    """Logit effects of every variant's decoder (a ``@beta0`` twin shares its variant's)."""
    return {v.name: logit_effects(v.sae.W_dec, unembed, n_tokens) for v in variants}


def summary(d: Described) -> dict[str, Any]:
    """The figures of one entry the start page, the report and ``inspect.metrics`` show."""
    lat = d.doc["latents"]
    alive = [x for x in lat if x["density"] > 0]
    attr = [x["mean_abs_attr"] for x in alive if x["mean_abs_attr"] is not None]
    per_act = [x["attr_per_act"] for x in alive if x["attr_per_act"] is not None]
    added = d.firings.added
    return {
        "name": d.entry,
        "group": series_name(d.variant.cfg, beta0=d.entry.endswith(BETA0_SUFFIX), with_layer=False),
        "href": f"{d.entry}/{BROWSER_HTML}",
        "architecture": d.doc["architecture"],
        "k": d.doc["k"],
        "with_gradient": d.doc["with_gradient"],
        "n_latents": d.doc["n_latents"],
        "alive": d.doc["alive"],
        "l0": float(d.firings.rows.shape[0] / d.doc["n_rows_described"]),
        "density_mean": float(np.mean([x["density"] for x in alive])) if alive else 0.0,
        "mean_act_mean": float(np.mean([x["mean_act"] for x in alive])) if alive else 0.0,
        "mean_abs_attr_mean": float(np.mean(attr)) if attr else None,
        "attr_per_act_mean": float(np.mean(per_act)) if per_act else None,
        "grad_added_share": None if added is None or not added.size else float(added.mean()),
    }


def stats_of(d: Described) -> LatentStats:
    """The decoder and per-latent figures of one entry, for the latent matching."""
    lat = d.doc["latents"]
    attr = None if not d.doc["gradient_available"] else np.array([x["mean_abs_attr"] for x in lat])
    return LatentStats(
        d.entry,
        d.variant.cfg,
        d.variant.sae.W_dec.detach().float().numpy(),
        np.array([x["density"] for x in lat]),
        np.array([x["mean_act"] for x in lat]),
        attr,
    )


def write_entry(folder: Path, d: Described, tokens: TokenTable) -> None:
    """``latents.json`` and the browser page of one entry."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / LATENTS_JSON).write_text(json.dumps(d.doc, ensure_ascii=False, allow_nan=False))
    write_browser(folder, d.doc, d.firings, tokens)


def run_inspect(
    params: Params, *, store_url: str, expected_key: str | None = None, info: CacheInfo | None = None
) -> dict[str, Any]:
    """Describe every latent of every variant in ``train.out_dir``; returns ``inspect.metrics``."""
    t0 = time.perf_counter()
    ins = params.inspect
    if info is None:
        info = open_store(store_url, expected_key=expected_key, expected_model=params.model.name)
    variants = load_variants(params, info, store_url)
    plan = plan_entries(variants, info.has_grad)
    window = read_window(params, info, store_url, sorted({v.hook for v in variants}))
    lm = load_model(params.model)
    for v in variants:  # the logit effects read this model's unembedding
        warn_if_other_weights(lm, v.cfg, v.name)
    logits = _logits_per_variant(variants, unembedding(lm), ins.logit_tokens)
    listed = np.concatenate(
        [window.tokens.ids, *(np.concatenate([x[0].ravel(), x[2].ravel()]) for x in logits.values())]
    )
    window.tokens.strings.update(token_strings(lm, listed))
    del lm
    out_dir = Path(ins.out_dir)
    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    summaries = []
    described: list[LatentStats] = []
    for entry, variant, sae, with_gradient in tqdm(plan, desc="inspect", unit="entry"):
        t = time.perf_counter()
        d = describe(params, entry, variant, sae, with_gradient, window, store_url, logits[variant.name])
        write_entry(staging / entry, d, window.tokens)
        summaries.append(summary(d))
        if not entry.endswith(BETA0_SUFFIX):
            described.append(stats_of(d))
        log.info(
            "%s: %d alive of %d latents, %.1f s",
            entry,
            d.doc["alive"],
            d.doc["n_latents"],
            time.perf_counter() - t,
        )
    write_start_page(staging, summaries)
    matching = compare(described, ins.match_threshold)
    plot = write_matching_plot(staging / MATCHING_PNG, matching) if matching["directions"] else None
    if out_dir.exists():
        shutil.rmtree(out_dir)
    staging.rename(out_dir)
    elapsed = time.perf_counter() - t0
    # wall times go to the report's Settings only: a rerun must give the same file
    timing = {k: v for k, v in matching["one_to_one"].items() if not k.startswith("seconds")}
    metrics = {"entries": {s["name"]: s for s in summaries}, "matching": {**matching, "one_to_one": timing}}
    settings = _settings(params, store_url, info, window, elapsed)
    plot_link = None if plot is None else os.path.relpath(out_dir / MATCHING_PNG, Path(ins.report).parent)
    section = matching_markdown(matching, plot_link) if matching["directions"] else None
    atomic_write_text(ins.report, inspect_markdown(summaries, section, settings))
    atomic_write_text(ins.metrics, json.dumps(_finite(metrics), indent=2, allow_nan=False) + "\n")
    log.info("described %d entries in %.1f s → %s", len(summaries), elapsed, out_dir)
    return metrics


def _finite(obj: Any) -> Any:
    """``obj`` with every non-finite float as None (JSON null: a one-pair sd, no gradients)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _settings(params: Params, url: str, info: CacheInfo, window: Window, elapsed: float) -> dict[str, Any]:
    ins = params.inspect
    return {
        "store": f"{url} (key {info.key[:16]}, split {info.dataset.get('split')})",
        "rows described": f"{window.rows.size} (positions ≥ 1 of {window.tokens.ids.size} tokens from row {window.tokens.first_row})",
        "lists per latent": f"top {ins.top_n} by act and by |attr|; {ins.quantile_bins} quantile bins × {ins.quantile_samples} samples (seed {ins.seed})",
        "logit effects": LOGIT_NOTE,
        "wall time (s)": round(elapsed, 1),
    }
