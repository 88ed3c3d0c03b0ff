"""The first-order loss error of already evaluated SAEs, recomputed from files (no LM).

For a metrics JSON written by ``gsae evaluate`` (variant → figures) and the folder of its
SAEs, :func:`first_order_figures` re-encodes the held-out rows of the store (the window the
evaluation used: whole contexts from ``first_token`` on, ``tokens`` of them, positions ≥ 1)
with every entry — a ``<variant>@beta0`` entry with the variant's β = 0 twin — and returns
``fo_loss_err``, ``fo_loss_delta`` and ``fvu`` per entry (:func:`pipeline.evaluate.metrics.recon_stats`,
units there). The recomputed ``fvu`` checks the window: it must equal the recorded one.
``gsae first-order`` adds these figures to runs evaluated before ``fo_loss_err`` existed.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from cache.reader import open_store, read_rows
from cache.schema import usable_rows
from pipeline.core.errors import ConfigError, NothingToEvaluate, SAEFormatError
from pipeline.evaluate.metrics import recon_stats
from pipeline.saes.io import load_sae
from pipeline.saes.naming import base_variant
from pipeline.stores import whole_contexts

log = logging.getLogger(__name__)


def first_order_figures(
    eval_json: str | Path, saes_dir: str | Path, store_url: str, *, first_token: int = 0, tokens: int
) -> dict[str, dict[str, float]]:
    """entry → {fo_loss_err, fo_loss_delta, fvu} on the store's evaluated window (see module doc)."""
    path = Path(eval_json)
    if not path.is_file():
        raise NothingToEvaluate(f"{path} not found: evaluate the run first")
    names = list(json.loads(path.read_text()))
    info = open_store(store_url)
    if not info.has_grad:
        raise ConfigError(f"{store_url} holds no gradients: the first-order loss error needs them")
    T = info.context_length
    n_ctx = whole_contexts(info, store_url, first_token, tokens, "--tokens")
    rows = usable_rows(0, n_ctx * T, T)
    cached: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
    out: dict[str, dict[str, float]] = {}
    for name in names:
        base, with_grad = base_variant(name)
        sae, cfg = load_sae(Path(saes_dir) / base)
        hook = cfg.get("hook_name")
        if not isinstance(hook, str):
            raise SAEFormatError(f"{saes_dir}/{base}/cfg.json has no hook_name")
        if hook not in cached:
            _, act, grad = read_rows(store_url, hook, first_token, first_token + n_ctx * T, info)
            cached[hook] = (act[rows], None if grad is None else grad[rows])
        act, grad = cached[hook]
        if not with_grad:
            twin = sae.gradient_free_twin()
            sae = twin if twin is not None else sae
        st = recon_stats(sae, act, grad)
        assert st.fo_loss_err is not None and st.fo_loss_delta is not None
        out[name] = {"fo_loss_err": st.fo_loss_err, "fo_loss_delta": st.fo_loss_delta, "fvu": st.fvu}
        log.info("%s: fo_loss_err %.5f, fo_loss_delta %+.5f, fvu %.4f", name, *out[name].values())
    return out


def checked_first_order(
    eval_json: str | Path, saes_dir: str | Path, store_url: str, *, first_token: int = 0, tokens: int
) -> dict[str, dict[str, float]]:
    """:func:`first_order_figures`, refused (``ConfigError``) when an entry's recomputed FVU
    differs from the recorded one: then the window is not the one the run was evaluated on."""
    figures = first_order_figures(eval_json, saes_dir, store_url, first_token=first_token, tokens=tokens)
    recorded = json.loads(Path(eval_json).read_text())
    for name, f in figures.items():
        fvu = recorded[name].get("fvu")
        if fvu is not None and abs(f["fvu"] - fvu) > 1e-3 * abs(fvu):
            raise ConfigError(
                f"{eval_json}: {name} has FVU {f['fvu']:.5f} on these tokens but {fvu:.5f} recorded: "
                "--store/--first-token/--tokens are not the window the run was evaluated on"
            )
    return figures
