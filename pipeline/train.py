"""The train stage as a library call: cache → every variant of the grid → SAE files + curves.

``run_train`` validates the store, picks the hook (the one for ``train.layer``, else the
store's first), expands the grid, sets the input scales and b_dec from a sample
(:mod:`pipeline.scaling`), trains all variants on one shuffled stream
(:mod:`cache.reader`, :mod:`pipeline.trainer`) and writes, atomically:

- ``<out_dir>/<variant>/sae_weights.safetensors`` + ``cfg.json``   (DESIGN §3, SAELens 6 layout)
- ``<curves_dir>/curves.csv``     long format: variant, step, tokens, loss, fvu, aux, l0, dead_frac, lr, selection_shift
- ``<metrics_out>``               JSON variant → final figures
- ``<metrics_out stem>.run.json`` wall time and device (run information, not a metric)

Checkpoints (``checkpoint_every`` > 0) go to ``<out_dir>/.checkpoints/`` (pickle-free,
fingerprint checked first: :mod:`pipeline.checkpoint`) and hold the trainer state plus
the reader position; a rerun with the same settings resumes from it, regenerating the
deterministic batch stream from that batch, and ends with the same weights as an
uninterrupted run. The folder is removed after a successful run.

Before the first step the output folders are checked for writability; a non-finite
training loss stops the run with one line; the variants are written all or none.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cache.reader import BatchReader, open_store, read_rows, resolve_hook
from cache.schema import CacheInfo, usable_rows
from pipeline.checkpoint import load_checkpoint, save_checkpoint, write_all_or_none
from pipeline.config import Params, TrainConfig, params_to_dict
from pipeline.devices import resolve_device
from pipeline.errors import ConfigError, NonFiniteError
from pipeline.fileio import atomic_write_text, check_writable, dumps_json
from pipeline.plotdata import run_info_path, write_curves
from pipeline.saes.io import save_sae
from pipeline.scaling import activation_scale, gradient_scale, init_b_dec
from pipeline.sweep import VariantSpec, expand_grid
from pipeline.trainer import Trainer

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = ".checkpoints"
# TrainConfig fields that do not change the trained weights (ignored when matching a checkpoint).
_NO_EFFECT = {"out_dir", "store", "prefetch", "checkpoint_every", "device", "metrics_out", "curves_dir", "log_every"}



def sample_tokens(
    url: str, hook: str, info: CacheInfo, n: int, seed: int, exclude_first: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``n`` usable rows (act, grad) float32 [n, d] from shards in a seeded random order."""
    rng = np.random.default_rng([seed, 0xC0FFEE])
    acts, grads, have = [], [], 0
    for shard in rng.permutation(info.committed_shards):
        start, stop = info.committed_rows(int(shard))
        _, a, g = read_rows(url, hook, start, stop, info=info)
        keep = usable_rows(start, stop, info.context_length, exclude_first)
        acts.append(a[keep])
        grads.append(g[keep])
        have += len(keep)
        if have >= n:
            break
    act, grad = np.concatenate(acts), np.concatenate(grads)
    if len(act) > n:
        pick = np.sort(rng.choice(len(act), n, replace=False))
        act, grad = act[pick], grad[pick]
    return act, grad


def _fingerprint(cfg: TrainConfig, info: CacheInfo, hook: str, specs: list[VariantSpec]) -> dict[str, Any]:
    train = {k: v for k, v in params_to_dict(cfg).items() if k not in _NO_EFFECT}
    return {"train": train, "key": info.key, "hook": hook, "variants": [s.name for s in specs]}


def _check_finite_loss(step: int, stats: dict[str, dict[str, float]]) -> None:
    """``NonFiniteError`` when a variant's logged loss is NaN or inf."""
    for name, s in stats.items():
        loss = s.get("loss")
        if loss is not None and not math.isfinite(loss):
            raise NonFiniteError(f"variant {name}: training loss is {loss} at step {step} (diverged or non-finite "
                                 "inputs); stopping, nothing written")


def _final_figures(curve: list[dict[str, Any]], tail: int = 10) -> dict[str, dict[str, float]]:
    """Per variant, the mean of each logged figure over its last ``tail`` log rows.

    One batch's FVU is noisy (its variance is that batch's): averaging the tail of the
    curve gives a steadier end-of-training figure.
    """
    rows: dict[str, list[dict[str, Any]]] = {}
    for row in curve:
        rows.setdefault(row["variant"], []).append(row)
    return {
        name: {
            key: sum(r[key] for r in rs[-tail:]) / len(rs[-tail:])
            for key in ("fvu", "loss", "l0", "selection_shift")
            if key in rs[-1]
        }
        for name, rs in rows.items()
    }


@dataclass(frozen=True)
class _Plan:
    """What a training run reads and where it writes, checked before the first step."""

    store_url: str
    info: CacheInfo
    hook: str
    specs: list[VariantSpec]
    device: torch.device
    total_steps: int
    out_dir: Path
    fingerprint: dict[str, Any]


def _plan(params: Params, store_url: str, expected_key: str | None) -> _Plan:
    """Open the store, pick the hook, expand the grid, check the outputs can be written."""
    cfg = params.train
    info = open_store(store_url, expected_key=expected_key)
    hook = resolve_hook(info, cfg.layer)
    specs = expand_grid(cfg.grid)
    for spec in specs:
        if spec.k > spec.d_sae(info.d_model):
            raise ConfigError(f"variant {spec.name}: k={spec.k} exceeds d_sae={spec.d_sae(info.d_model)}")
    device = resolve_device(cfg.device, "train.device")
    out_dir = Path(cfg.out_dir)
    check_writable(out_dir, "train.out_dir")
    check_writable(cfg.curves_dir, "train.curves_dir")
    check_writable(Path(cfg.metrics_out).parent, "the folder of train.metrics_out")
    total_steps = max(1, math.ceil(cfg.tokens / cfg.batch_size))
    return _Plan(store_url, info, hook, specs, device, total_steps, out_dir, _fingerprint(cfg, info, hook, specs))


def _make_trainer(cfg: TrainConfig, plan: _Plan) -> Trainer:
    """A trainer resumed from the checkpoint, or fresh with scales and b_dec set from a sample."""
    state = load_checkpoint(plan.out_dir / CHECKPOINT_DIR, plan.fingerprint)
    if state is None:
        act, grad = sample_tokens(plan.store_url, plan.hook, plan.info, cfg.init_sample_tokens, cfg.seed,
                                  cfg.exclude_first)
        c, gamma = activation_scale(act), gradient_scale(grad)
        b_dec = init_b_dec(act * c, cfg.b_dec_init)
    else:
        c, gamma, b_dec = state["trainer"]["act_scale"], state["trainer"]["grad_scale"], None
    trainer = Trainer(plan.specs, plan.info.d_model, cfg, total_steps=plan.total_steps, act_scale=c,
                      grad_scale=gamma, b_dec=b_dec, device=plan.device)
    if state is not None:
        trainer.load_state_dict(state["trainer"])
        logger.info("resumed from %s at step %d", plan.out_dir / CHECKPOINT_DIR, trainer.step)
    logger.info("act_scale=%g grad_scale=%g (per raw gradient, before act-scale folding)", c, gamma)
    return trainer


def _log_stats(step: int, tokens: int, stats: dict[str, dict[str, float]]) -> None:
    _check_finite_loss(step, stats)
    for name, s in stats.items():
        shift = f" shift {s['selection_shift']:.3f}" if "selection_shift" in s else ""
        logger.info("step %d tokens %d %s: fvu %.4f l0 %.1f dead %.3f%s", step, tokens, name, s["fvu"], s["l0"],
                    s["dead_frac"], shift)


def _fit(cfg: TrainConfig, plan: _Plan, trainer: Trainer) -> BatchReader:
    """Train to ``plan.total_steps`` on the shuffled stream, checkpointing as asked; returns the reader."""
    reader = BatchReader(
        plan.store_url, plan.hook, batch_size=cfg.batch_size, seed=cfg.seed,
        shuffle_buffer_shards=cfg.shuffle_buffer_shards, exclude_first=cfg.exclude_first, prefetch=cfg.prefetch,
        info=plan.info,
    )
    ckpt_path = plan.out_dir / CHECKPOINT_DIR

    def on_checkpoint(step: int, tr: Trainer) -> None:
        epoch, offset = reader.position(step)
        save_checkpoint(ckpt_path, plan.fingerprint, step, {"trainer": tr.state_dict(),
                        "reader": {"batch_index": step, "epoch": epoch, "offset": offset}})
        logger.info("checkpoint at step %d (epoch %d, token offset %d)", step, epoch, offset)

    trainer.fit(
        reader.batches(start_batch=trainer.step, n_batches=plan.total_steps - trainer.step),
        log_every=cfg.log_every, checkpoint_every=cfg.checkpoint_every, on_log=_log_stats,
        on_checkpoint=on_checkpoint,
    )
    if trainer.step < plan.total_steps:
        raise RuntimeError(f"training stopped at step {trainer.step} of {plan.total_steps}")
    return reader


def _variant_figures(trainer: Trainer, name: str, final: dict[str, float], epochs: float) -> dict[str, Any]:
    """The metrics entry of one variant."""
    figures = {"fvu": final.get("fvu"), "l0": final.get("l0"), "loss": final.get("loss"),
               "dead_frac": trainer.dead_fraction(name), "tokens": trainer.tokens, "steps": trainer.step,
               "epochs": epochs}
    if "selection_shift" in final:
        figures["selection_shift"] = final["selection_shift"]
    return figures


def _sae_provenance(cfg: TrainConfig, plan: _Plan, trainer: Trainer, name: str, final: dict[str, float]) -> dict[str, Any]:
    """What ``cfg.json`` records beside the SAE's own settings: store, hook, training run."""
    info, spec = plan.info, trainer.variants[name].spec
    layer = cfg.layer if cfg.layer is not None else info.layer_of(plan.hook)
    return {
        "variant": name, "hook_name": plan.hook, "hook_layer": layer, "model": info.model, "model_name": info.model,
        "model_revision": info.model_revision, "cache_key": info.key, "cache_store": plan.store_url,
        "context_size": info.context_length, "dataset_path": info.dataset.get("source"),
        "prepend_bos": True, "expansion": spec.expansion,
        "training": {**params_to_dict(cfg), "grid": None, "lr": spec.lr, "init_seed": spec.seed},
        "tokens_seen": trainer.tokens, "dead_frac": trainer.dead_fraction(name), "final_fvu": final.get("fvu"),
        "exclude_first": cfg.exclude_first,
    }


def _write_outputs(cfg: TrainConfig, plan: _Plan, trainer: Trainer, epochs: float, seconds: float) -> dict[str, Any]:
    """Every SAE (all or none), the curves, the metrics and the run information; returns the metrics."""
    last = _final_figures(trainer.curve)
    metrics: dict[str, Any] = {}
    writes = []
    for name, v in trainer.variants.items():
        if not all(torch.isfinite(p).all() for p in v.sae.parameters()):
            raise NonFiniteError(f"variant {name}: weights are NaN/inf after {trainer.step} steps (training diverged); "
                                 "nothing written")
        final = last.get(name, {})
        metrics[name] = _variant_figures(trainer, name, final, epochs)
        sae_cfg = _sae_provenance(cfg, plan, trainer, name, final)
        writes.append((name, lambda folder, sae=v.sae, c=sae_cfg: save_sae(sae, folder, c, act_scale=trainer.act_scale)))
    write_all_or_none(plan.out_dir, writes)
    curves = write_curves(cfg.curves_dir, trainer.curve)
    atomic_write_text(cfg.metrics_out, dumps_json(metrics, indent=2, sort_keys=True) + "\n")
    # Wall time is run information, not a result: outside the metrics so reruns diff clean.
    run_info = {"seconds": round(seconds, 1), "device": str(plan.device), "variants": len(plan.specs)}
    atomic_write_text(run_info_path(cfg.metrics_out), json.dumps(run_info, indent=2) + "\n")
    logger.debug("curve files: %s", curves)
    return metrics


def run_train(params: Params, *, store_url: str, expected_key: str | None) -> dict[str, Any]:
    """Train every variant of ``params.train.grid`` on the store at ``store_url``.

    Returns the metrics dict written to ``train.metrics_out`` (variant → final figures).
    Raises the cache errors of :func:`cache.reader.open_store` and ``ConfigError``.
    Which store to train on is :mod:`pipeline.stores`' decision.
    """
    cfg = params.train
    plan = _plan(params, store_url, expected_key)
    logger.info("training %d variant(s) on %s [%s], %d steps of %d tokens", len(plan.specs), store_url, plan.hook,
                plan.total_steps, cfg.batch_size)
    trainer = _make_trainer(cfg, plan)
    t0 = time.perf_counter()
    reader = _fit(cfg, plan, trainer)
    seconds = time.perf_counter() - t0
    metrics = _write_outputs(cfg, plan, trainer, trainer.tokens / reader.tokens_per_epoch, seconds)
    shutil.rmtree(plan.out_dir / CHECKPOINT_DIR, ignore_errors=True)
    logger.info("wrote %d SAE(s) to %s, curves %s, metrics %s", len(plan.specs), plan.out_dir, cfg.curves_dir,
                cfg.metrics_out)
    return metrics
