"""``gsae finetune``: fine-tune trained SAEs with KL + MSE through the LM's suffix (a baseline).

Reads the variants of ``train.out_dir`` (all, or ``finetune.variants``), the last
``finetune.tokens`` tokens of the training store (whole contexts: the training split, so
disjoint from the held-out tokens; the stored gradients feed a g-SAE's selection) and the LM.
Per step, one batch of contexts runs the LM's prefix once (the clean state at the hook and the
clean logits, no gradient), then, per SAE, the suffix with the reconstruction spliced in,
forward and backward (:mod:`pipeline.finetune.objective`), and one Adam step. The decoder rows
stay at unit norm as in training (parallel gradient removed, rows renormalised).

Checkpoints (``finetune.checkpoint_every`` steps; :mod:`pipeline.core.checkpoint`) hold every
SAE, its Adam state and the curves, under ``<out_dir>/.checkpoints`` with a fingerprint of the
settings, the store and the source weights: a rerun with the same settings resumes and ends
bit-identical to an uninterrupted run. The fine-tuned variants are written together, each
under its own name in ``finetune.out_dir`` (cfg.json gains a ``finetune`` block), with the
per-step curves in ``<out_dir>/finetune_curves.csv``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import math
import shutil
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from cache.reader import read_rows
from cache.schema import CacheInfo, block_index
from pipeline.core.checkpoint import load_checkpoint, save_checkpoint, write_all_or_none
from pipeline.core.config import Params
from pipeline.core.errors import ConfigError, SAEFormatError
from pipeline.core.fileio import atomic_write_text
from pipeline.finetune.objective import clean_log_probs, finetune_loss
from pipeline.lm.models import LoadedModel, load_model
from pipeline.lm.suffix import PrefixCapture
from pipeline.saes.base import SAE
from pipeline.saes.io import find_variants, load_sae, save_sae, weights_file
from pipeline.stores import require_gradients

log = logging.getLogger(__name__)

CHECKPOINTS = ".checkpoints"
CURVES = "finetune_curves.csv"


def select_variants(params: Params) -> list[Path]:
    """The variant folders to fine-tune (``ConfigError`` naming an unknown one)."""
    found = {p.name: p for p in find_variants(params.train.out_dir)}
    wanted = params.finetune.variants or tuple(found)
    unknown = [v for v in wanted if v not in found]
    if unknown:
        raise ConfigError(
            f"finetune.variants: {', '.join(unknown)} not in {params.train.out_dir} (has {', '.join(sorted(found))})"
        )
    return [found[v] for v in wanted]


def context_window(params: Params, info: CacheInfo) -> tuple[int, int]:
    """[start, stop) rows of the fine-tuning contexts: the store's last ``finetune.tokens`` (whole contexts)."""
    T = info.context_length
    n_ctx = params.finetune.tokens // T
    available = info.committed_tokens // T
    if n_ctx < 1:
        raise ConfigError(f"finetune.tokens={params.finetune.tokens} is less than one context ({T} tokens)")
    if n_ctx > available:
        raise ConfigError(
            f"finetune.tokens={params.finetune.tokens} needs {n_ctx} contexts, the store holds {available}"
        )
    stop = available * T
    return stop - n_ctx * T, stop


def _fingerprint(
    params: Params, info: CacheInfo, dirs: list[Path], window: tuple[int, int]
) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: settings, store, window and the source weights."""
    sources = {}
    for d in dirs:
        w = weights_file(d)
        sources[d.name] = hashlib.sha256(w.read_bytes()).hexdigest() if w else None
    ft = asdict(params.finetune)
    ft.pop("checkpoint_every")
    return {"finetune": ft, "store": info.key, "window": list(window), "sources": sources}


def _hook_and_block(lm: LoadedModel, cfgs: dict[str, dict[str, Any]]) -> tuple[str, int]:
    hooks = {str(cfg.get("hook_name")) for cfg in cfgs.values()}
    if len(hooks) != 1:
        raise ConfigError(
            f"finetune: the variants read different hooks ({', '.join(sorted(hooks))}); fine-tune one hook at a time"
        )
    hook = hooks.pop()
    block = block_index(hook)
    if block is None or hook.rpartition(".")[0] != lm.block_path or block >= lm.n_layers:
        raise SAEFormatError(f"hook_name {hook!r} is not a block of {lm.name}")
    return hook, block


def _clean(lm: LoadedModel, ids: torch.Tensor, block: int) -> tuple[torch.Tensor, Any, torch.Tensor]:
    """Clean state at ``block``, its output tail, and the clean log-probabilities, in one forward."""
    capture = PrefixCapture(lm, [block])
    with torch.no_grad(), capture.active():
        z = lm.model(input_ids=ids.to(lm.device), use_cache=False).logits
    return capture.states[block], capture.tails[block], clean_log_probs(z)


def run_finetune(params: Params, *, store_url: str, info: CacheInfo) -> list[Path]:
    """Fine-tune the selected variants on the store at ``store_url``; returns the written folders."""
    ft = params.finetune
    dirs = select_variants(params)
    loaded = {d.name: load_sae(d) for d in dirs}
    saes: dict[str, SAE] = {name: sae for name, (sae, _) in loaded.items()}
    cfgs = {name: cfg for name, (_, cfg) in loaded.items()}
    require_gradients(info, store_url, [n for n, s in saes.items() if s.uses_grad])
    window = context_window(params, info)
    lm = load_model(params.model)
    hook, block = _hook_and_block(lm, cfgs)
    if hook not in info.hooks:
        raise ConfigError(f"store {store_url} has no hook {hook!r} (it holds {', '.join(info.hooks)})")
    tokens, _, grads = read_rows(store_url, hook, *window, info=info)
    T = info.context_length
    ids = torch.from_numpy(tokens.astype(np.int64)).view(-1, T)
    g = None if grads is None else torch.from_numpy(grads).view(ids.shape[0], T, -1)
    order = np.random.default_rng([ft.seed, 0xF17E]).permutation(ids.shape[0])
    steps = math.ceil(len(order) / ft.batch_contexts)

    for sae in saes.values():
        sae.to(lm.device).eval()
        sae.requires_grad_(True)
    opts = {n: torch.optim.Adam(s.parameters(), lr=ft.lr) for n, s in saes.items()}
    out = Path(ft.out_dir)
    fingerprint = _fingerprint(params, info, dirs, window)
    curves: list[dict[str, Any]] = []
    start = _resume(out / CHECKPOINTS, fingerprint, saes, opts, curves)

    bar = tqdm(total=steps, initial=start, unit="step", desc="finetune")
    for step in range(start, steps):
        rows = torch.from_numpy(order[step * ft.batch_contexts : (step + 1) * ft.batch_contexts])
        batch = ids[rows]
        clean, tail, logp_clean = _clean(lm, batch, block)
        for name, sae in saes.items():
            use_g = g[rows].to(lm.device) if (g is not None and sae.uses_grad) else None
            loss = finetune_loss(
                lm, block, sae, clean, batch, logp_clean, grads=use_g, tail=tail,
                kl_coef=ft.kl_coef, mse_coef=ft.mse_coef,
            )  # fmt: skip
            opts[name].zero_grad(set_to_none=True)
            loss.loss.backward()
            sae.remove_parallel_grad_()
            opts[name].step()
            with torch.no_grad():
                sae.normalize_decoder_()
            curves.append({"variant": name, "step": step + 1, "kl": float(loss.kl), "nmse": float(loss.nmse)})
        bar.update(1)
        if ft.checkpoint_every and (step + 1) % ft.checkpoint_every == 0 and step + 1 < steps:
            _save(out / CHECKPOINTS, fingerprint, step + 1, saes, opts, curves)
    bar.close()
    return _write(params, out, saes, cfgs, curves, steps, window)


def _resume(
    folder: Path,
    fingerprint: dict[str, Any],
    saes: dict[str, SAE],
    opts: Mapping[str, torch.optim.Optimizer],
    curves: list[dict[str, Any]],
) -> int:
    """Load a matching checkpoint into ``saes``/``opts``/``curves``; the step to continue from (0 if none)."""
    state = load_checkpoint(folder, fingerprint)
    if state is None:
        return 0
    for name, sae in saes.items():
        sae.load_state_dict(state["saes"][name])
        opts[name].load_state_dict(state["opts"][name])
    curves.extend(state["curves"])
    log.info("finetune: resumed at step %d from %s", state["step"], folder)
    return int(state["step"])


def _save(
    folder: Path,
    fingerprint: dict[str, Any],
    step: int,
    saes: dict[str, SAE],
    opts: Mapping[str, torch.optim.Optimizer],
    curves: list[dict[str, Any]],
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    state = {
        "step": step,
        "saes": {n: s.state_dict() for n, s in saes.items()},
        "opts": {n: o.state_dict() for n, o in opts.items()},
        "curves": list(curves),
    }
    save_checkpoint(folder, fingerprint, step, state)


def _write(
    params: Params,
    out: Path,
    saes: dict[str, SAE],
    cfgs: dict[str, dict[str, Any]],
    curves: list[dict[str, Any]],
    steps: int,
    window: tuple[int, int],
) -> list[Path]:
    """Every fine-tuned variant (all or none), the curves CSV; then the checkpoints are dropped."""
    ft = params.finetune
    settings = {**asdict(ft), "variants": list(saes), "steps": steps, "rows": list(window)}

    def writer(name: str) -> Any:
        last = [c for c in curves if c["variant"] == name][-max(1, steps // 10) :]
        info = {
            **settings,
            "source": str(Path(params.train.out_dir) / name),
            "final_kl": float(np.mean([c["kl"] for c in last])) if last and ft.kl_coef else None,
            "final_nmse": float(np.mean([c["nmse"] for c in last])) if last else None,
        }
        cfg = {**cfgs[name], "finetune": info}
        return lambda folder: save_sae(saes[name].cpu(), folder, cfg)

    out.mkdir(parents=True, exist_ok=True)
    write_all_or_none(out, [(name, writer(name)) for name in saes])
    text = io.StringIO()
    w = csv.DictWriter(text, fieldnames=["variant", "step", "kl", "nmse"], lineterminator="\n")
    w.writeheader()
    w.writerows(curves)
    atomic_write_text(out / CURVES, text.getvalue())
    shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
    log.info("finetune: %d variants, %d steps each → %s", len(saes), steps, out)
    return [out / name for name in saes]
