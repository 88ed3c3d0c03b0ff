"""Stage 3: evaluate every trained SAE variant on held-out tokens; write metrics, plots, report.

Inputs are files only: the held-out store (validated: complete, right key/model, hooks
present), each ``<train.out_dir>/<variant>/`` holding ``sae.safetensors`` (loaded with
:func:`pipeline.saes.io.load_sae`, raw-space weights), and the LM (``params.model``).
The ``evaluate.tokens`` tokens (whole contexts) from ``evaluate.first_token`` on are evaluated.

Per variant (and, for a g-SAE with β > 0, the same SAE encoded with β = 0 as
``<variant>@beta0``):

- ``fvu`` (centred), ``mse``, ``l0``, ``dead_frac`` from the *stored* activations and
  gradients, positions ≥ 1 of each context (:mod:`pipeline.evaluate.metrics`), less the
  activation outliers when the SAEs were trained without them (``train.max_norm_multiple``:
  those positions are also kept clean in our splice, :func:`_outliers`);
- ``train_dead_frac`` copied from cfg.json when the trainer recorded it;
- ``ce_clean``, ``ce_spliced``, ``ce_zero_ablation``, ``loss_recovered``, ``kl`` from
  splicing into the *live* model (:mod:`pipeline.evaluate.splice`: the SAE encodes the model's own
  activation; the g-SAE gradient comes from the store);
- ``ce_loss_score``, ``kl_div_score`` and their five means as ``sae_lens.evals.run_evals``
  computes them (BOS zero-ablated too; :mod:`pipeline.evaluate.conventions`), from the same splice;
- ``fo_loss_err`` = mean |g · (x − x̂)| and ``fo_loss_delta`` = mean g · (x̂ − x) (nats per
  prediction, the first-order estimate of ``ce_spliced − ce_clean``) on the same rows as FVU,
  when the store holds gradients (:mod:`pipeline.evaluate.metrics` gives the units);
- ``selection_shift`` for gradient-aware SAEs: the fraction of selections that differ from
  the same SAE's β = 0 selection (0 for the ``@beta0`` twin by definition);
- ``steer_kl_{mean,median,p10,p90,ci_lo,ci_hi}`` and ``steer_logit_{...}``
  (:mod:`pipeline.evaluate.steering`, protocol in docs/steering.md; ``ci_*`` is a 95 % bootstrap CI
  of the mean over latents). Steering depends on the decoder only, so ``@beta0`` twins are
  not steered again.
- ``absorption_rate``, ``absorption_full``, ``absorption_split_latents``,
  ``absorption_letters``, ``absorption_grad``: first-letter feature absorption as SAEBench
  defines it (:mod:`pipeline.evaluate.absorption`; ``evaluate.absorption_words`` = 0 skips it).

Splicing runs only the blocks after the hook per variant (``evaluate.splice``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from cache.reader import open_store
from cache.schema import CacheInfo, block_index, usable_rows
from pipeline.core.config import Params
from pipeline.core.errors import ConfigError, SAEFormatError
from pipeline.evaluate.absorption import absorption_metrics
from pipeline.evaluate.conventions import splice_both, zero_key
from pipeline.evaluate.heldout import HeldOut, eval_window, outlier_positions, read_held_out
from pipeline.evaluate.metrics import ReconStats, distribution, loss_recovered, recon_stats
from pipeline.evaluate.outputs import settings_table, write_outputs
from pipeline.evaluate.splice import SpliceResult
from pipeline.evaluate.steering import SteerResult, bootstrap_ci, clean_reference, pick_contexts, steer_sae
from pipeline.lm.models import LoadedModel, load_model, warn_if_other_weights
from pipeline.report.entries import VariantResult
from pipeline.saes.base import SAE
from pipeline.saes.io import find_variants, load_sae
from pipeline.saes.naming import BETA0_SUFFIX, series_name
from pipeline.stores import require_gradients

log = logging.getLogger(__name__)

TRAIN_DEAD_KEYS = ("train_dead_frac", "dead_frac", "dead_fraction", "final_dead_frac")


@dataclass
class Entry:
    """One SAE to evaluate: a trained variant or its β = 0 twin."""

    name: str
    group: str
    sae: SAE
    cfg: dict[str, Any]
    hook: str
    block: int


def hook_block(lm: LoadedModel, hook: str) -> int:
    """Block index of ``hook`` (``model.layers.15`` → 15), checked against the model's block path."""
    block = block_index(hook)
    if block is None:
        raise SAEFormatError(f"hook_name {hook!r} does not end in a block index")
    if hook.rpartition(".")[0] != lm.block_path:
        raise ConfigError(f"hook {hook!r} is not a block of {lm.name} (its blocks are {lm.block_path}.N)")
    if block >= lm.n_layers:
        raise ConfigError(f"hook {hook!r}: {lm.name} has blocks 0..{lm.n_layers - 1}")
    return block


def _cfg_number(cfg: dict[str, Any], keys: tuple[str, ...]) -> float | None:
    for key in keys:
        value = cfg.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    for nested in ("training", "train_stats", "stats"):
        sub = cfg.get(nested)
        if isinstance(sub, dict):
            found = _cfg_number(sub, keys)
            if found is not None:
                return found
    return None


def load_entries(params: Params, lm: LoadedModel, info: CacheInfo) -> list[Entry]:
    """Load every variant (+ its β = 0 twin for g-SAEs with β > 0) and check it fits model and store."""
    loaded = []
    for d in find_variants(params.train.out_dir):
        sae, cfg = load_sae(d, device=lm.device)
        hook = cfg.get("hook_name")
        if not isinstance(hook, str):
            raise SAEFormatError(f"{d}/cfg.json has no hook_name")
        model = cfg.get("model")
        if model is not None and str(model) != params.model.name:
            raise ConfigError(
                f"variant {d.name} was trained on model {model!r}, but model.name is {params.model.name!r}"
            )
        if int(cfg["d_in"]) != info.d_model:
            raise SAEFormatError(
                f"variant {d.name} has d_in={cfg['d_in']} but the store has d_model={info.d_model}"
            )
        warn_if_other_weights(lm, cfg, d.name)
        loaded.append((d.name, sae, cfg, hook, hook_block(lm, hook)))
    with_layer = len({x[3] for x in loaded}) > 1
    entries = []
    for name, sae, cfg, hook, block in loaded:
        entries.append(
            Entry(name, series_name(cfg, beta0=False, with_layer=with_layer), sae, cfg, hook, block)
        )
        twin = sae.gradient_free_twin()
        if twin is not None:
            entries.append(
                Entry(
                    name + BETA0_SUFFIX,
                    series_name(cfg, beta0=True, with_layer=with_layer),
                    twin,
                    cfg,
                    hook,
                    block,
                )
            )
    return entries


def _outliers(entries: list[Entry], data: HeldOut) -> dict[str, torch.Tensor | None]:
    """hook → the held-out positions kept clean and out of FVU for every entry on it (or None):
    those above the smallest ``train.max_norm_multiple`` any of its SAEs trained with, so all
    of a hook's entries are scored on the same positions."""
    out: dict[str, torch.Tensor | None] = {}
    for hook in sorted({e.hook for e in entries}):
        multiples = [m for e in entries if e.hook == hook if (m := _max_norm_multiple(e.cfg)) > 0]
        out[hook] = mask = outlier_positions(data.acts[hook], data.ids, min(multiples, default=0.0))
        if mask is not None:
            log.info(
                "%s: %d of %d positions above %g x the median activation norm kept clean and out of FVU",
                hook,
                int(mask.sum()),
                mask.numel(),
                min(multiples),
            )
    return out


def _max_norm_multiple(cfg: dict[str, Any]) -> float:
    training = cfg.get("training")
    value = training.get("max_norm_multiple", 0) if isinstance(training, dict) else 0
    return float(value) if isinstance(value, (int, float)) else 0.0


def _reconstructions(
    entries: list[Entry], data: HeldOut, outliers: dict[str, torch.Tensor | None]
) -> dict[str, ReconStats]:
    """FVU, L0, latent statistics of every entry on the non-first positions (outliers left out)."""
    first = usable_rows(0, data.ids.numel(), data.ids.shape[1])
    recon: dict[str, ReconStats] = {}
    for e in entries:
        grad, mask = data.grads[e.hook], outliers.get(e.hook)
        rows = first if mask is None else np.setdiff1d(first, torch.nonzero(mask.flatten()).flatten().numpy())
        recon[e.name] = r = recon_stats(e.sae, data.acts[e.hook][rows], None if grad is None else grad[rows])
        log.info("%s: fvu %.4f, l0 %.1f, dead %.3f", e.name, r.fvu, r.l0, r.dead_frac)
    return recon


def _splice(
    params: Params,
    lm: LoadedModel,
    entries: list[Entry],
    data: HeldOut,
    outliers: dict[str, torch.Tensor | None],
) -> tuple[SpliceResult, dict[str, dict[str, float]]]:
    """CE and KL with each SAE's reconstruction (and zero ablation of each hook) spliced in, in
    our convention and SAELens's (:mod:`pipeline.evaluate.conventions`)."""
    ev = params.evaluate
    return splice_both(
        lm,
        data.ids,
        entries,
        {h: None if g is None else data.view(g) for h, g in data.grads.items()},
        clean=outliers,
        stored_acts={e.block: data.view(data.acts[e.hook]) for e in entries},
        batch_size=ev.batch_size,
        mode=ev.splice,
        edits_per_forward=ev.edits_per_forward,
        autocast=ev.autocast,
    )


def _steering(
    params: Params, lm: LoadedModel, entries: list[Entry], data: HeldOut, recon: dict[str, ReconStats]
) -> tuple[dict[str, SteerResult], np.ndarray]:
    """Steering figures of every trained entry (not the β = 0 twins), and the contexts used."""
    ev = params.evaluate
    steer: dict[str, SteerResult] = {}
    ctx_idx = pick_contexts(data.n_ctx, ev.steer_contexts, ev.seed)
    if ev.steer_latents == 0 or ctx_idx.size == 0:
        return steer, ctx_idx
    blocks = tuple(sorted({e.block for e in entries}))
    ref = clean_reference(lm, data.ids[torch.from_numpy(ctx_idx)], ev.batch_size, blocks, ev.autocast)
    for e in entries:
        if not e.name.endswith(BETA0_SUFFIX):
            steer[e.name] = steer_sae(
                lm,
                e.block,
                ref,
                e.sae.W_dec,
                recon[e.name].freq,
                recon[e.name].mean_act,
                n_latents=ev.steer_latents,
                scale=ev.steer_scale,
                seed=ev.seed,
                name=e.name,
                batch_size=ev.batch_size,
            )
    return steer, ctx_idx


def _absorption(params: Params, lm: LoadedModel, entries: list[Entry]) -> dict[str, dict[str, float]]:
    """First-letter absorption of every entry (empty when ``evaluate.absorption_words`` is 0).

    Without ``evaluate.absorption_grad`` a gradient-aware SAE is scored as its β = 0 twin,
    so when the twin is an entry too its figures are copied instead of computed twice.
    """
    ev = params.evaluate
    if ev.absorption_words == 0:
        return {}
    names = {e.name for e in entries}
    as_twin = {
        e.name: e.name + BETA0_SUFFIX
        for e in entries
        if not ev.absorption_grad and e.sae.uses_grad and e.name + BETA0_SUFFIX in names
    }
    out = absorption_metrics(
        lm,
        [(e.name, e.sae, e.block) for e in entries if e.name not in as_twin],
        words=ev.absorption_words,
        min_words=ev.absorption_min_words,
        seed=ev.seed,
        grad=ev.absorption_grad,
    )
    return out | {name: dict(out[twin]) for name, twin in as_twin.items()}


def _results(
    entries: list[Entry],
    recon: dict[str, ReconStats],
    spliced: SpliceResult,
    steer: dict[str, SteerResult],
    absorption: dict[str, dict[str, float]] | None = None,
    field: dict[str, dict[str, float]] | None = None,
) -> tuple[dict[str, dict[str, float]], list[VariantResult]]:
    """The metrics (variant → figures) and the per-variant results the report and plots read."""
    metrics: dict[str, dict[str, float]] = {}
    results: list[VariantResult] = []
    for e in entries:
        m = _entry_metrics(
            e,
            recon[e.name],
            spliced.ce_clean,
            spliced.ce[e.name],
            spliced.ce[zero_key(e.hook)],
            spliced.kl[e.name],
            steer.get(e.name),
        )
        m |= (field or {}).get(e.name, {}) | (absorption or {}).get(e.name, {})
        metrics[e.name] = m
        seed = _cfg_number(e.cfg, ("init_seed", "seed"))
        results.append(
            VariantResult(
                e.name,
                e.group,
                str(e.cfg["architecture"]),
                int(e.cfg["k"]),
                None if seed is None else int(seed),
                m,
                steer.get(e.name),
                hook=e.hook,
            )
        )
    return metrics, results


def run_evaluate(
    params: Params,
    *,
    store_url: str,
    expected_key: str | None = None,
    lm: LoadedModel | None = None,
    info: CacheInfo | None = None,
) -> dict[str, dict[str, float]]:
    """Evaluate every variant in ``train.out_dir`` on the held-out store; returns the metrics.

    ``info``: the store's info when the caller validated it already (:func:`pipeline.stores.evaluate_store`
    checks key, model and split); otherwise the store is opened and checked here.
    """
    t0 = time.perf_counter()
    find_variants(params.train.out_dir)  # fail fast, before loading the LM
    if info is None:
        info = open_store(store_url, expected_key=expected_key, expected_model=params.model.name)
    n_ctx = eval_window(params, info, store_url)
    lm = lm or load_model(params.model)
    entries = load_entries(params, lm, info)
    require_gradients(
        info, store_url, [e.name for e in entries if e.sae.uses_grad and not e.name.endswith(BETA0_SUFFIX)]
    )
    data = read_held_out(
        store_url, info, sorted({e.hook for e in entries}), params.evaluate.first_token, n_ctx
    )
    outliers = _outliers(entries, data)
    recon = _reconstructions(entries, data, outliers)
    spliced, field = _splice(params, lm, entries, data, outliers)
    steer, ctx_idx = _steering(params, lm, entries, data, recon)
    absorption = _absorption(params, lm, entries)
    metrics, results = _results(entries, recon, spliced, steer, absorption, field)
    elapsed = time.perf_counter() - t0
    settings = settings_table(
        params,
        lm,
        info,
        store_url,
        [(e.hook, e.cfg) for e in entries],
        n_ctx,
        ctx_idx,
        spliced.act_rel_err,
        elapsed,
        {hook: int(mask.sum()) for hook, mask in outliers.items() if mask is not None},
    )
    write_outputs(params, metrics, results, settings)
    log.info("evaluated %d entries in %.1f s → %s", len(entries), elapsed, params.evaluate.out)
    return metrics


def _entry_metrics(
    e: Entry,
    rs: ReconStats,
    ce_clean: float,
    ce_spliced: float,
    ce_zero: float,
    kl: float,
    st: SteerResult | None,
) -> dict[str, float]:
    m: dict[str, float] = {
        "fvu": rs.fvu,
        "mse": rs.mse,
        "l0": rs.l0,
        "dead_frac": rs.dead_frac,
    }
    train_dead = _cfg_number(e.cfg, TRAIN_DEAD_KEYS)
    if train_dead is not None:
        m["train_dead_frac"] = train_dead
    m |= {
        "ce_clean": ce_clean,
        "ce_spliced": ce_spliced,
        "ce_zero_ablation": ce_zero,
        "loss_recovered": loss_recovered(ce_clean, ce_spliced, ce_zero),
        "kl": kl,
    }
    if rs.selection_shift is not None:
        m["selection_shift"] = rs.selection_shift
    if rs.fo_loss_err is not None and rs.fo_loss_delta is not None:
        m["fo_loss_err"], m["fo_loss_delta"] = rs.fo_loss_err, rs.fo_loss_delta
    if st is not None:
        for key, values in (("steer_kl", st.kl), ("steer_logit", st.logit)):
            m |= {f"{key}_{k}": v for k, v in distribution(values).items()}
            if len(values) >= 2:
                m[f"{key}_ci_lo"], m[f"{key}_ci_hi"] = bootstrap_ci(values)
        m["steer_latents"] = float(len(st.latents))
    return {k: float(v) for k, v in m.items()}
