"""The evaluated window of the held-out store: which whole contexts, and their stored rows."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from cache.reader import read_rows, require_hook
from cache.schema import CacheInfo
from pipeline.core.config import Params
from pipeline.stores import whole_contexts

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeldOut:
    """The evaluated window of the held-out store: contexts, and rows per hook."""

    ids: torch.Tensor
    """[n_ctx, T] token ids."""
    acts: dict[str, np.ndarray]
    """hook → [n_ctx·T, d] stored activations."""
    grads: dict[str, np.ndarray | None]
    """hook → [n_ctx·T, d] stored gradients (``None`` from an activation-only store)."""

    @property
    def n_ctx(self) -> int:
        return int(self.ids.shape[0])

    def view(self, rows: np.ndarray) -> torch.Tensor:
        """[n_ctx, T, d] of ``rows``."""
        return torch.from_numpy(rows).view(*self.ids.shape, -1)


def eval_window(params: Params, info: CacheInfo, store_url: str) -> int:
    """Whole contexts evaluated from ``evaluate.first_token`` on; ``ConfigError`` when there are none."""
    ev, T = params.evaluate, info.context_length
    n_ctx = whole_contexts(info, store_url, ev.first_token, ev.tokens, "evaluate.tokens")
    if n_ctx * T < ev.tokens:
        log.warning(
            "evaluating %d tokens (%d whole contexts), evaluate.tokens asks %d", n_ctx * T, n_ctx, ev.tokens
        )
    return n_ctx


def read_held_out(store_url: str, info: CacheInfo, hooks: list[str], first: int, n_ctx: int) -> HeldOut:
    """Tokens, activations and (when stored) gradients of ``n_ctx`` contexts from row ``first`` on."""
    T = info.context_length
    acts: dict[str, np.ndarray] = {}
    grads: dict[str, np.ndarray | None] = {}
    tokens = np.zeros(0, np.int32)
    for hook in hooks:
        require_hook(info, store_url, hook)  # info is validated already: no second open per hook
        tokens, acts[hook], grads[hook] = read_rows(store_url, hook, first, first + n_ctx * T, info)
    return HeldOut(torch.from_numpy(tokens.astype(np.int64)).view(n_ctx, T), acts, grads)


def outlier_positions(acts: np.ndarray, ids: torch.Tensor, multiple: float) -> torch.Tensor | None:
    """bool [n_ctx, T]: the positions ≥ 1 whose activation norm exceeds ``multiple`` × the median
    norm of positions ≥ 1 (``acts`` [n_ctx·T, d] of one hook), or None when ``multiple`` is 0.

    The evaluation's side of ``train.max_norm_multiple`` (pipeline/train/tokens.py): tokens
    training left out (attention sinks after position 0) are kept clean in our splice and left
    out of FVU, as position 0 is. The median is the held-out one: the outliers sit 10–100×
    above it, so its small difference from the training sample's does not move them."""
    if multiple <= 0:
        return None
    norms = torch.from_numpy(np.linalg.norm(acts.astype(np.float32), axis=1)).view(ids.shape)
    later = norms[:, 1:]
    mask = torch.zeros(ids.shape, dtype=torch.bool)
    mask[:, 1:] = later > multiple * float(later.median())
    return mask
