"""The seam between harvest and train/evaluate: the harvest's pointer, and which store a stage reads.

The harvest computes the store's content key (:func:`pipeline.harvest.identity.store_key`: a hash of
everything that determines the contents, local corpora and model folders included) and records
it with the store's URL in ``<harvest.cache_root>/<split>/store.json`` (:func:`record_store`).
That folder is the harvest stage's DVC output: with ``harvest.store: auto`` the store
lives there too; with any other path or URL DVC versions the pointer, which changes
exactly when the store's contents do.

Training and evaluation do not hash the corpus again: :func:`train_store` and
:func:`evaluate_store` read the pointer, expect the key it recorded, and check that the
store was harvested with the settings the params say now (cheap comparisons of the
recorded attributes), so a stale store is refused with one line. The policy:

- ``train.store: auto`` — the store the harvest of these params made; an explicit
  ``train.store`` is any store of this format, checked only for model and layer (unless
  ``allow_other``).
- evaluation reads the held-out harvest (:func:`heldout_params`); an explicit
  ``evaluate.store`` without a pointer (harvested elsewhere) is checked for model and split only.
- ``gsae inspect`` reads the held-out store too, or any store of the model (``inspect.store``).
- no pointer (a store harvested before pointers were written for every store):
  :class:`~pipeline.core.errors.CacheNotFound`; ``gsae harvest`` on a complete store only records
  its pointer.

This module does no key maths, so train and evaluate never import the LM loader or the text
packer (editing those reruns the harvest, not training).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cache.reader import open_store
from cache.schema import CacheInfo
from pipeline.core.config import Params
from pipeline.core.errors import CacheMismatch, CacheNotFound, ConfigError
from pipeline.core.fileio import atomic_write_text
from pipeline.core.loader import params_to_dict

log = logging.getLogger(__name__)

STORE_REF = "store.json"
"""The pointer file inside :func:`stage_dir`."""
_NOT_STORED = ("store", "cache_root", "batch_size", "scheduler")
"""Harvest fields that do not change a store's contents (where it lives, how fast it was made)."""
_DATASET_SETTINGS = (
    "source",
    "split",
    "heldout_fraction",
    "revision",
    "text_column",
    "hf_split",
    "hf_config",
)


def heldout_params(params: Params) -> Params:
    """Params of the held-out harvest that evaluation reads (split, tokens and store swapped).

    The held-out store is always harvested without autocast: evaluation figures must not
    depend on the speed knob of the training harvest.
    """
    ev = params.evaluate
    data = dataclasses.replace(params.data, split="heldout")
    harvest = dataclasses.replace(
        params.harvest,
        tokens=ev.harvest_tokens or ev.first_token + ev.tokens,
        store=ev.store,
        autocast="none",
    )
    return dataclasses.replace(params, data=data, harvest=harvest)


def stage_dir(params: Params) -> Path:
    """The folder dvc.yaml declares as the harvest stage's output for ``params.data.split``."""
    return Path(params.harvest.cache_root) / params.data.split


def record_store(params: Params, url: str, key: str) -> Path:
    """Write the harvest's pointer (URL, content key, split) into :func:`stage_dir`."""
    ref = {"store": url, "key": key, "split": params.data.split}
    return atomic_write_text(stage_dir(params) / STORE_REF, json.dumps(ref, indent=2) + "\n")


def recorded_store(params: Params) -> tuple[str, str] | None:
    """(URL, key) the last harvest of ``params``' split recorded, when its pointer is there and fits."""
    path = stage_dir(params) / STORE_REF
    try:
        ref = json.loads(path.read_text())
        url, key = str(ref["store"]), str(ref["key"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if params.harvest.store != "auto" and url != params.harvest.store:
        return None  # a pointer to another store than the params name
    return url, key


def harvest_command(params: Params) -> str:
    """What makes the store of ``params``' split: ``gsae harvest`` (``--heldout``) or ``dvc repro``."""
    flag = " --heldout" if params.data.split == "heldout" else ""
    return f"run gsae harvest{flag} (or dvc repro)"


def _open(params: Params, url: str, *, setting: str | None = None, **checks: Any) -> CacheInfo:
    """:func:`cache.reader.open_store`, saying what to run when nothing is there yet (``setting``:
    the params key that names a store given explicitly, which the harvest must be told)."""
    try:
        return open_store(url, **checks)
    except CacheNotFound as exc:
        if not str(exc).startswith("no cache store"):
            raise  # unreachable or unknown protocol: harvesting would not help
        extra = f" -s {setting}={url}" if setting else ""
        how = harvest_command(params).replace(" (", f"{extra} (", 1)
        raise CacheNotFound(f"{exc}: {how}") from exc


@dataclass(frozen=True)
class StoreRef:
    """A stage's store, resolved and checked."""

    url: str
    key: str | None
    """The content key the store must have (``None``: a store given explicitly, any key)."""
    info: CacheInfo


def harvested_store(params: Params) -> StoreRef:
    """The store the harvest of ``params`` made, refused when it was harvested with other settings."""
    recorded = recorded_store(params)
    if recorded is None:
        raise CacheNotFound(
            f"no harvest of the {params.data.split} split recorded in {stage_dir(params) / STORE_REF}: "
            f"{harvest_command(params)}; on a complete store it only records the pointer"
        )
    url, key = recorded
    info = _open(params, url, expected_key=key)
    check_settings(params, info, url)
    return StoreRef(url, key, info)


def train_store(params: Params, *, allow_other: bool = False) -> StoreRef:
    """The store ``gsae train`` reads (module docstring for the policy)."""
    if params.train.store == "auto":
        return harvested_store(params)
    url = params.train.store
    info = _open(params, url, setting="harvest.store")
    if not allow_other:
        check_store_matches(params, info, url)
    return StoreRef(url, None, info)


def finetune_store(params: Params) -> StoreRef:
    """The store ``gsae finetune`` reads: ``finetune.store``, or the training store when ``auto``."""
    if params.finetune.store == "auto":
        return train_store(params)
    url = params.finetune.store
    return StoreRef(url, None, _open(params, url, expected_model=params.model.name))


def evaluate_store(params: Params, *, allow_train_split: bool = False) -> StoreRef:
    """The held-out store ``gsae evaluate`` reads; ``CacheMismatch`` when it holds train-split text."""
    held = heldout_params(params)
    if params.evaluate.store == "auto" or recorded_store(held) is not None:
        ref = harvested_store(held)
    else:
        ref = StoreRef(held.harvest.store, None, _open(held, held.harvest.store, setting="evaluate.store"))
    split = ref.info.dataset.get("split")
    if not allow_train_split and split != "heldout":
        raise CacheMismatch(
            f"store {ref.url} holds {split!r}-split text, not held-out text; "
            "evaluate on a --heldout harvest (or pass --allow-train-split)"
        )
    if ref.info.model != params.model.name:  # a pointer's store passed check_settings already
        raise CacheMismatch(
            f"store {ref.url} was harvested from model {ref.info.model!r}, expected {params.model.name!r}"
        )
    return ref


def inspect_store(params: Params) -> StoreRef:
    """The store ``gsae inspect`` describes latents on: the held-out store evaluation reads
    (``inspect.store: auto``), or any store of the model at ``inspect.store``."""
    if params.inspect.store == "auto":
        return evaluate_store(params)
    url = params.inspect.store
    return StoreRef(url, None, _open(params, url, setting="harvest.store", expected_model=params.model.name))


def _settings_of_params(params: Params) -> dict[str, Any]:
    harvest = {
        f.name: params_to_dict(getattr(params.harvest, f.name))
        for f in dataclasses.fields(params.harvest)
        if f.name not in _NOT_STORED
    }
    dataset = {name: getattr(params.data, name) for name in _DATASET_SETTINGS}
    return {
        "model": params.model.name,
        "model_dtype": params.model.dtype,
        "context_length": params.data.context_length,
        "dataset": dataset,
        "harvest": harvest,
    }


def _settings_of_store(info: CacheInfo) -> dict[str, Any]:
    return {
        "model": info.model,
        "model_dtype": info.model_dtype,
        "context_length": info.context_length,
        "dataset": info.dataset,
        "harvest": info.harvest or {},
    }


def _differences(want: dict[str, Any], have: dict[str, Any], prefix: str = "") -> list[str]:
    """``name: stored → params`` for each setting both sides record and that differs."""
    out = []
    for name, value in want.items():
        if name not in have or have[name] is None:  # older stores record fewer settings
            continue
        if isinstance(value, dict) and isinstance(have[name], dict):
            out += _differences(value, have[name], f"{prefix}{name}.")
        elif have[name] != value and not (isinstance(value, tuple) and list(value) == have[name]):
            out.append(f"{prefix}{name}: {have[name]!r} stored, {value!r} in the params")
    return out


def whole_contexts(info: CacheInfo, url: str, first_token: int, tokens: int, asked: str) -> int:
    """How many whole contexts of the store lie in ``tokens`` tokens from ``first_token`` on
    (evaluation and inspection read whole contexts); ``ConfigError`` when none does. ``asked``
    names the setting in the message (``evaluate.tokens``)."""
    n_ctx = min(tokens, max(0, info.committed_tokens - first_token)) // info.context_length
    if n_ctx == 0:
        raise ConfigError(
            f"{url} holds no whole context from token {first_token} on "
            f"({info.committed_tokens} tokens, {asked}={tokens})"
        )
    return n_ctx


def require_gradients(info: CacheInfo, url: str, needing: list[str]) -> None:
    """``CacheMismatch`` when ``needing`` (variants that select with the loss gradient or weigh
    it in their loss) is not empty and the store holds activations only."""
    if needing and not info.has_grad:
        more = f" and {len(needing) - 1} more" if len(needing) > 1 else ""
        raise CacheMismatch(
            f"store {url} holds activations only (harvest.gradients: false), but {needing[0]}{more} "
            "needs the loss gradient (to select latents, or for train.grid.grad_loss > 0): harvest "
            "with harvest.gradients: true, or train and evaluate gradient-free architectures only "
            "(topk, batchtopk, matryoshka) with grad_loss 0"
        )


def check_settings(params: Params, info: CacheInfo, url: str) -> None:
    """``CacheMismatch`` when the store was harvested with other settings than ``params`` say."""
    diff = _differences(_settings_of_params(params), _settings_of_store(info))
    if diff:
        raise CacheMismatch(
            f"store {url} was harvested with other settings ({'; '.join(diff[:3])}); "
            f"re{harvest_command(params)}"
        )


def check_store_matches(params: Params, info: CacheInfo, url: str) -> None:
    """``CacheMismatch`` when an explicitly given store holds another model or not the layer the params say."""
    layer = params.train.layer if params.train.layer is not None else params.harvest.layers[0]
    if info.model != params.model.name:
        raise CacheMismatch(
            f"store {url} holds model {info.model!r}, params say {params.model.name!r}; "
            "fix model.name or pass --allow-other-store"
        )
    missing = [
        lay
        for lay in params.train.grid.layer or (layer,)
        if info.layers is not None and lay not in info.layers
    ]
    if missing:
        raise CacheMismatch(
            f"store {url} holds layers {list(info.layers or ())}, params train layer {missing[0]}; "
            "fix train.layer / harvest.layers or pass --allow-other-store"
        )
