"""What a training run records per variant: end-of-training figures, ``cfg.json`` provenance and
the hyper-parameters of its live (DVCLive) folder.

The metrics entry (``train.metrics_out``) and the provenance written beside each SAE's own
settings are built here from the trainer's curve and state, so the training loop in
:mod:`pipeline.train.run` only decides when to write them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from cache.schema import CacheInfo
from pipeline.core.config import TrainConfig
from pipeline.core.loader import params_to_dict
from pipeline.train.sweep import VariantSpec
from pipeline.train.trainer import Trainer


def final_figures(curve: list[dict[str, Any]], tail: int = 10) -> dict[str, dict[str, float]]:
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
            for key in ("fvu", "loss", "l0", "selection_shift", "fo_loss_err", "grad_loss")
            if all(key in r for r in rs[-tail:])
        }
        for name, rs in rows.items()
    }


def variant_figures(trainer: Trainer, name: str, final: dict[str, float], epochs: float) -> dict[str, Any]:
    """The metrics entry of one variant."""
    figures = {
        "fvu": final.get("fvu"),
        "l0": final.get("l0"),
        "loss": final.get("loss"),
        "dead_frac": trainer.dead_fraction(name),
        "tokens": trainer.tokens,
        "steps": trainer.step,
        "epochs": epochs,
    }
    for key in ("selection_shift", "fo_loss_err", "grad_loss"):
        if key in final:
            figures[key] = final[key]
    return figures


def weights_identity(info: CacheInfo) -> dict[str, str]:
    """The store's hub id and exact weights (``model_hub_id``, ``model_weights``,
    ``model_weights_sha256``), those it records (older stores record none)."""
    p = info.provenance
    fields = {
        "model_hub_id": p.model_hub_id,
        "model_weights": p.model_weights,
        "model_weights_sha256": p.model_weights_sha256,
    }
    return {k: v for k, v in fields.items() if v is not None}


def sae_provenance(
    cfg: TrainConfig,
    info: CacheInfo,
    store_url: str,
    hook: str,
    trainer: Trainer,
    name: str,
    final: dict[str, float],
) -> dict[str, Any]:
    """What ``cfg.json`` records beside the SAE's own settings: store, hook, training run."""
    spec = trainer.variants[name].spec
    # train.parallel is left out: the files do not depend on the process layout.
    training = {k: val for k, val in params_to_dict(cfg).items() if k != "parallel"}
    return {
        "variant": name,
        "hook_name": hook,
        "hook_layer": info.layer_of(hook),
        "model": info.model,
        # SAELens's field, paired with from_pretrained / HookedTransformer names: the hub id when known
        "model_name": info.provenance.model_hub_id or info.model,
        "model_revision": info.model_revision,
        **weights_identity(info),
        "cache_key": info.key,
        "cache_store": store_url,
        "context_size": info.context_length,
        "dataset_path": info.dataset.get("source"),
        "prepend_bos": True,
        "expansion": spec.expansion,
        # λ of the gradient loss term; absent = 0 (as in folders written before it existed)
        **({"grad_loss": spec.grad_loss} if spec.grad_loss else {}),
        "training": {**training, "grid": None, "lr": spec.lr, "init_seed": spec.seed},
        "tokens_seen": trainer.tokens,
        "dead_frac": trainer.dead_fraction(name),
        "final_fvu": final.get("fvu"),
        "exclude_first": cfg.exclude_first,
    }


def live_params(spec: VariantSpec) -> dict[str, Any]:
    """A variant's hyper-parameters for its DVCLive ``params.yaml``."""
    hp = {f.name: getattr(spec.hparams, f.name) for f in dataclasses.fields(spec.hparams)}
    return {
        "architecture": spec.architecture,
        **hp,
        "expansion": spec.expansion,
        "lr": spec.lr,
        "seed": spec.seed,
    }
