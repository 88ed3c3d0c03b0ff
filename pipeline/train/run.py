"""The train stage as a library call: cache → every variant of the grid → SAE files + curves.

``run_train`` validates the store, picks the hook (the one for ``train.layer``, else the
store's first; with ``train.grid.layer`` one hook per listed block, trained one after the
other, each with its own scales, stream and checkpoint folder ``L<layer>``), expands the grid, sets the input scales and b_dec from a sample
(:mod:`pipeline.train.normalize`), trains all variants on one shuffled stream
(:mod:`cache.reader`, :mod:`pipeline.train.trainer`) and writes, atomically:

- ``<out_dir>/<variant>/sae_weights.safetensors`` + ``cfg.json``   (DESIGN §3, SAELens 6 layout)
- ``<curves_dir>/curves.csv``     long format: variant, step, tokens, loss, fvu, aux, l0, dead_frac, lr, selection_shift
  (+ fo_loss_err, the first-order loss error, when the store holds gradients: the reader
  yields them for every run on such a store, so measuring it reads nothing more)
- ``<curves_dir>/live/<variant>/`` DVCLive folders (:mod:`pipeline.core.live`), rewritten at every logged step
- ``<metrics_out>``               JSON variant → final figures
- ``<metrics_out stem>.run.json`` wall time and device (run information, not a metric)

Checkpoints (``checkpoint_every`` > 0) go to ``<out_dir>/.checkpoints/`` (pickle-free,
fingerprint checked first: :mod:`pipeline.core.checkpoint`) and hold the trainer state plus
the reader position; a rerun with the same settings resumes from it, regenerating the
deterministic batch stream from that batch, and ends with the same weights as an
uninterrupted run. The folder is removed after a successful run.

Under torchrun the processes split the variants or the rows of each batch
(``train.parallel``, :mod:`pipeline.train.distributed`); the files are those of one process.

Before the first step the output folders are checked for writability; a non-finite
training loss stops the run with one line; the variants are written all or none.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from cache.reader import BatchReader, open_store, resolve_hook
from cache.schema import CacheInfo
from pipeline.core.checkpoint import load_checkpoint, save_checkpoint
from pipeline.core.config import Params, TrainConfig
from pipeline.core.devices import resolve_device
from pipeline.core.errors import ConfigError, NonFiniteError
from pipeline.core.fileio import atomic_write_text, check_writable, dumps_json
from pipeline.core.live import LiveRun, prune
from pipeline.core.loader import params_to_dict
from pipeline.curves import live_dir, write_curves
from pipeline.saes.io import save_sae
from pipeline.stores import require_gradients
from pipeline.train import distributed
from pipeline.train.normalize import activation_scale, gradient_scale, init_b_dec
from pipeline.train.precision import warn_if_emulated
from pipeline.train.record import final_figures, live_params, sae_provenance, variant_figures
from pipeline.train.sweep import VariantSpec, expand_grid
from pipeline.train.tokens import OutlierFilter, drop_outliers, norm_limit, sample_tokens
from pipeline.train.trainer import Trainer

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = ".checkpoints"
SNAPSHOT_DIR = ".snapshots"
# TrainConfig fields that do not change the trained weights (ignored when matching a checkpoint).
_NO_EFFECT = {
    "out_dir",
    "store",
    "prefetch",
    "checkpoint_every",
    "device",
    "metrics_out",
    "curves_dir",
    "log_every",
    "parallel",
}


def _fingerprint(cfg: TrainConfig, info: CacheInfo, hook: str, specs: list[VariantSpec]) -> dict[str, Any]:
    train = {k: v for k, v in params_to_dict(cfg).items() if k not in _NO_EFFECT}
    return {"train": train, "key": info.key, "hook": hook, "variants": [s.name for s in specs]}


def _check_finite_loss(step: int, stats: dict[str, dict[str, float]]) -> None:
    """``NonFiniteError`` when a variant's logged loss is NaN or inf."""
    for name, s in stats.items():
        loss = s.get("loss")
        if loss is not None and not math.isfinite(loss):
            raise NonFiniteError(
                f"variant {name}: training loss is {loss} at step {step} (diverged or non-finite "
                "inputs); stopping, nothing written"
            )


def _group_by_layer(specs: list[VariantSpec]) -> dict[int | None, list[VariantSpec]]:
    """Specs per ``spec.layer`` in grid order (``None``: the run's one layer)."""
    groups: dict[int | None, list[VariantSpec]] = {}
    for spec in specs:
        groups.setdefault(spec.layer, []).append(spec)
    return groups


def _curve_order(specs: list[VariantSpec]) -> Callable[[dict[str, Any]], tuple[int, int, int]]:
    """Sort key giving one process's curve order: layer, then step, then grid order."""
    layers = list(_group_by_layer(specs))
    pos = {s.name: (layers.index(s.layer), i) for i, s in enumerate(specs)}
    return lambda row: (pos[row["variant"]][0], int(row["step"]), pos[row["variant"]][1])


def run_info_path(metrics_out: str | Path) -> Path:
    """``metrics/train_metrics.json`` → ``metrics/train_metrics.run.json`` (wall time, device)."""
    p = Path(metrics_out)
    return p.with_name(p.stem + ".run.json")


def run_train(
    params: Params, *, store_url: str, expected_key: str | None, info: CacheInfo | None = None
) -> dict[str, Any]:
    """Train every variant of ``params.train.grid`` on the store at ``store_url``.

    Returns the metrics dict written to ``train.metrics_out`` (variant → final figures).
    Raises the cache errors of :func:`cache.reader.open_store` and ``ConfigError``.
    Which store to train on is :mod:`pipeline.stores`' decision; its ``info``, when given, is
    used as validated (the store is not opened a second time).
    Under torchrun (``WORLD_SIZE`` > 1) the processes share the work per ``train.parallel``
    (:mod:`pipeline.train.distributed`); rank 0 writes the curves and metrics.
    """
    cfg = params.train
    if info is None:
        info = open_store(store_url, expected_key=expected_key)
    d = info.d_model
    specs = expand_grid(cfg.grid)
    for spec in specs:  # k ≤ d_sae, and the architecture's other width-dependent settings
        try:
            spec.sae_class.check_width(spec.hparams, spec.d_sae(d))
        except ValueError as exc:
            raise ConfigError(f"variant {spec.name}: {exc}") from None
    require_gradients(info, store_url, [s.name for s in specs if s.sae_class.uses_grad or s.grad_loss > 0])
    for layer in {s.layer for s in specs}:  # every hook exists before any layer trains
        resolve_hook(info, cfg.layer if layer is None else layer)
    device = resolve_device(cfg.device, "train.device")
    warn_if_emulated(device, cfg.autocast)
    out_dir = Path(cfg.out_dir)
    check_writable(out_dir, "train.out_dir")
    check_writable(cfg.curves_dir, "train.curves_dir")
    check_writable(Path(cfg.metrics_out).parent, "the folder of train.metrics_out")
    ctx, device = distributed.setup(cfg.parallel, device)
    try:
        distributed.check_row_split(ctx, [(s.name, s.sae_class) for s in specs])
        return _run(cfg, info, store_url, specs, device, ctx)
    finally:
        distributed.teardown(ctx)


def _run(
    cfg: TrainConfig,
    info: CacheInfo,
    store_url: str,
    specs: list[VariantSpec],
    device: torch.device,
    ctx: distributed.Dist,
) -> dict[str, Any]:
    """Train this process's share of ``specs``, layer by layer; write the outputs."""
    total_steps = max(1, math.ceil(cfg.tokens / cfg.batch_size))
    out_dir = Path(cfg.out_dir)
    mine = distributed.my_share(ctx, specs)
    trained: list[tuple[Trainer, str]] = []
    epoch_tokens, seconds = 1, 0.0
    for layer, group in _group_by_layer(mine).items():
        trainer, hook, epoch_tokens, fit_seconds = _train_layer(
            cfg, info, store_url, layer, group, total_steps, device, ctx
        )
        trained.append((trainer, hook))
        seconds += fit_seconds

    metrics: dict[str, Any] = {}
    writes = []
    curve: list[dict[str, Any]] = []
    for trainer, hook in trained:
        epochs = trainer.tokens / epoch_tokens
        last = final_figures(trainer.curve)
        curve += trainer.curve
        for name, v in trainer.variants.items():
            if not all(torch.isfinite(p).all() for p in v.sae.parameters()):
                raise NonFiniteError(
                    f"variant {name}: weights are NaN/inf after {trainer.step} steps (training "
                    "diverged); nothing written"
                )
            final = last.get(name, {})
            metrics[name] = variant_figures(trainer, name, final, epochs)
            sae_cfg = sae_provenance(cfg, info, store_url, hook, trainer, name, final)
            writes.append(
                (
                    name,
                    lambda folder, sae=v.sae, c=sae_cfg, s=trainer.act_scale: save_sae(
                        sae, folder, c, act_scale=s
                    ),
                )
            )
    if ctx.split_variants:  # rank 0 merges every rank's rows and figures
        metrics = {k: val for part in distributed.gather(ctx, metrics) for k, val in part.items()}
        curve = [row for part in distributed.gather(ctx, curve) for row in part]
    curve.sort(key=_curve_order(specs))
    distributed.write_variants(ctx, out_dir, writes)
    if ctx.main:
        curves = write_curves(cfg.curves_dir, curve)
        atomic_write_text(cfg.metrics_out, dumps_json(metrics, indent=2, sort_keys=True) + "\n")
        prune(live_dir(cfg.curves_dir), [s.name for s in specs])  # variants of an earlier grid
        # Wall time is run information, not a result: outside the metrics so reruns diff clean.
        run_info: dict[str, Any] = {
            "seconds": round(seconds, 1),
            "device": str(device),
            "variants": len(specs),
        }
        if ctx.active:
            run_info.update(processes=ctx.world, parallel=ctx.mode)
        atomic_write_text(run_info_path(cfg.metrics_out), json.dumps(run_info, indent=2) + "\n")
        shutil.rmtree(out_dir / CHECKPOINT_DIR, ignore_errors=True)
        logger.info(
            "wrote %d SAE(s) to %s, curves %s, metrics %s",
            len(specs),
            out_dir,
            cfg.curves_dir,
            cfg.metrics_out,
        )
        logger.debug("curve files: %s", curves)
    distributed.barrier(ctx)
    return metrics


def _snapshot(
    cfg: TrainConfig, info: CacheInfo, store_url: str, hook: str, trainer: Trainer, tokens: int
) -> None:
    """Save every variant of ``trainer`` as it is now to ``<out_dir>/.snapshots/<tokens>/``."""
    folder = Path(cfg.out_dir) / SNAPSHOT_DIR / str(tokens)
    last = final_figures(trainer.curve)
    for name, v in trainer.variants.items():
        sae_cfg = sae_provenance(cfg, info, store_url, hook, trainer, name, last.get(name, {}))
        save_sae(v.sae, folder / name, sae_cfg, act_scale=trainer.act_scale)
    logger.info("snapshot of %d variant(s) at %d tokens in %s", len(trainer.variants), tokens, folder)


def _train_layer(
    cfg: TrainConfig,
    info: CacheInfo,
    store_url: str,
    layer: int | None,
    specs: list[VariantSpec],
    total_steps: int,
    device: torch.device,
    ctx: distributed.Dist,
) -> tuple[Trainer, str, int, float]:
    """Train ``specs`` (all on one layer; ``None`` = train.layer) → (trainer, hook, tokens per epoch, fit seconds)."""
    hook = resolve_hook(info, cfg.layer if layer is None else layer)
    base = Path(cfg.out_dir) / CHECKPOINT_DIR
    ckpt_write = distributed.checkpoint_folder(ctx, base)
    ckpt_read = distributed.read_folder(ctx, base)
    if layer is not None:  # several layers in one run: one checkpoint per layer
        ckpt_read = ckpt_read / f"L{layer}"
        ckpt_write = None if ckpt_write is None else ckpt_write / f"L{layer}"
    fingerprint = _fingerprint(cfg, info, hook, specs)
    if ctx.main or ctx.split_variants:
        logger.info(
            "training %d variant(s) on %s [%s], %d steps of %d tokens",
            len(specs),
            store_url,
            hook,
            total_steps,
            cfg.batch_size,
        )

    state = load_checkpoint(ckpt_read, fingerprint)
    if ctx.split_rows:
        state = distributed.agree_on_resume(ctx, state)
    limit = None
    if (state is None and (ctx.main or not ctx.split_rows)) or cfg.max_norm_multiple > 0:
        # a resumed run samples again for the limit (seeded: the same one)
        act, grad = sample_tokens(store_url, hook, info, cfg.init_sample_tokens, cfg.seed, cfg.exclude_first)
        limit = norm_limit(act, cfg.max_norm_multiple)
        act, grad = drop_outliers(act, grad, limit)
    if state is None:
        c, gamma, b_dec = 1.0, 1.0, None
        if ctx.main or not ctx.split_rows:
            c, gamma = activation_scale(act), 1.0 if grad is None else gradient_scale(grad)
            b_dec = init_b_dec(act * c, cfg.b_dec_init)
        if ctx.split_rows:  # every rank starts from rank 0's numbers
            c, gamma, b_dec = distributed.from_main(ctx, (c, gamma, b_dec))
    else:
        c, gamma, b_dec = state["trainer"]["act_scale"], state["trainer"]["grad_scale"], None
    parallel = distributed.DataParallel(ctx) if ctx.split_rows else None
    trainer = Trainer(
        specs,
        info.d_model,
        cfg,
        total_steps=total_steps,
        act_scale=c,
        grad_scale=gamma,
        b_dec=b_dec,
        device=device,
        parallel=parallel,
    )
    if state is not None:
        trainer.load_state_dict(state["trainer"])
        logger.info("resumed from %s at step %d", ckpt_read, trainer.step)
    logger.info("act_scale=%g grad_scale=%g (per raw gradient, before act-scale folding)", c, gamma)
    # Live curves (DVCLive folders, pipeline.core.live): by the processes that log, as they log.
    live = (
        LiveRun(live_dir(cfg.curves_dir), resume_from=None if state is None else trainer.step)
        if ctx.main or ctx.split_variants
        else None
    )
    if live is not None:
        for spec in specs:
            live.log_params(spec.name, live_params(spec))

    reader = BatchReader(
        store_url,
        hook,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        shuffle_buffer_shards=cfg.shuffle_buffer_shards,
        exclude_first=cfg.exclude_first,
        prefetch=cfg.prefetch,
        info=info,
    )

    def on_checkpoint(step: int, tr: Trainer) -> None:
        if ckpt_write is not None:
            epoch, offset = reader.position(step)
            save_checkpoint(
                ckpt_write,
                fingerprint,
                step,
                {
                    "trainer": tr.state_dict(),
                    "reader": {"batch_index": step, "epoch": epoch, "offset": offset},
                },
            )
            logger.info("checkpoint at step %d (epoch %d, token offset %d)", step, epoch, offset)
        if step * cfg.batch_size in cfg.snapshot_tokens and (ctx.main or ctx.split_variants):
            _snapshot(cfg, info, store_url, hook, tr, step * cfg.batch_size)

    def on_log(step: int, tokens: int, stats: dict[str, dict[str, float]]) -> None:
        _check_finite_loss(step, stats)
        if live is None:
            return
        live.log(step, {name: {"tokens": tokens, **s} for name, s in stats.items()})
        for name, s in stats.items():
            shift = f" shift {s['selection_shift']:.3f}" if "selection_shift" in s else ""
            shift += f" fo_err {s['fo_loss_err']:.4g}" if "fo_loss_err" in s else ""
            logger.info(
                "step %d tokens %d %s: fvu %.4f l0 %.1f dead %.3f%s",
                step,
                tokens,
                name,
                s["fvu"],
                s["l0"],
                s["dead_frac"],
                shift,
            )

    t0 = time.perf_counter()
    batches = reader.batches(start_batch=trainer.step, n_batches=total_steps - trainer.step)
    kept = None if limit is None else OutlierFilter(batches, limit)
    try:
        trainer.fit(
            iter(kept or batches) if parallel is None else parallel.split(batches),
            log_every=cfg.log_every,
            checkpoint_every=cfg.checkpoint_every,
            on_log=on_log,
            on_checkpoint=on_checkpoint,
            progress=ctx.main,
        )
    finally:
        if live is not None:
            live.close()
    seconds = time.perf_counter() - t0
    if kept is not None:
        kept.report()
    if trainer.step < total_steps:
        raise RuntimeError(f"training stopped at step {trainer.step} of {total_steps}")
    if parallel is not None:
        parallel.check_same_weights({n: v.sae for n, v in trainer.variants.items()})
    if layer is not None and cfg.checkpoint_every > 0:
        on_checkpoint(trainer.step, trainer)  # a finished layer is not retrained after a crash in a later one
    return trainer, hook, reader.tokens_per_epoch, seconds
