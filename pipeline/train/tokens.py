"""Which cached tokens training uses: the seeded initialisation sample, and the activation
outliers (``train.max_norm_multiple``) left out of both it and every batch.

Some LMs write a few activations whose norm is orders of magnitude above the rest: attention
sinks after the first position. In SmolLM2-135M's block 15 on ``python-docstrings``, 36 of
131,072 cached tokens (3.5 % of contexts, all at position 1) have norms of 600 to 18,000
against a median of 170. Squared, one such token outweighs the rest of a 2,048-token batch,
so the batch's MSE and FVU are about it alone, and a batch-level top-k gives it up to 2,219 of
the batch's 65,536 latents. dictionary_learning's activation buffer drops every activation
above ``max_activation_norm_multiple`` times the median norm (10 its suggested value, for
Qwen's sinks); ``train.max_norm_multiple`` does the same here, with the median taken over the
initialisation sample once (seeded: a resumed run finds the same limit). 0 keeps every token.
Evaluation is not filtered: the splice replaces these tokens like any other.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import torch

from cache.reader import read_rows
from cache.schema import CacheInfo, usable_rows

logger = logging.getLogger(__name__)

Batch = tuple[torch.Tensor, torch.Tensor | None]


def sample_tokens(
    url: str, hook: str, info: CacheInfo, n: int, seed: int, exclude_first: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """Up to ``n`` usable rows (act, grad) float32 [n, d] from shards in a seeded random order
    (grad ``None`` from an activation-only store)."""
    rng = np.random.default_rng([seed, 0xC0FFEE])
    acts, grads, have = [], [], 0
    for shard in rng.permutation(info.committed_shards):
        start, stop = info.committed_rows(int(shard))
        _, a, g = read_rows(url, hook, start, stop, info=info)
        keep = usable_rows(start, stop, info.context_length, exclude_first)
        acts.append(a[keep])
        if g is not None:
            grads.append(g[keep])
        have += len(keep)
        if have >= n:
            break
    act, grad = np.concatenate(acts), np.concatenate(grads) if grads else None
    if len(act) > n:
        pick = np.sort(rng.choice(len(act), n, replace=False))
        act, grad = act[pick], None if grad is None else grad[pick]
    return act, grad


def norm_limit(act: np.ndarray, multiple: float) -> float | None:
    """The largest activation norm training keeps: ``multiple`` × the median row norm of
    ``act`` [n, d] (raw units); None when ``multiple`` is 0 (no filter)."""
    if multiple <= 0:
        return None
    return float(multiple * np.median(np.linalg.norm(act.astype(np.float32), axis=1)))


def drop_outliers(
    act: np.ndarray, grad: np.ndarray | None, limit: float | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """The rows of a sample whose activation norm is at most ``limit`` (all when None)."""
    if limit is None:
        return act, grad
    keep = np.linalg.norm(act.astype(np.float32), axis=1) <= limit
    return act[keep], None if grad is None else grad[keep]


class OutlierFilter:
    """Wraps a stream of batches (act [B, d], grad [B, d] | None), dropping the rows whose
    activation norm exceeds ``limit``; counts what it dropped."""

    def __init__(self, batches: Iterator[Batch], limit: float) -> None:
        self.batches, self.limit = batches, limit
        self.seen = self.dropped = 0

    def __iter__(self) -> Iterator[Batch]:
        for act, grad in self.batches:
            keep = torch.linalg.vector_norm(act.float(), dim=1) <= self.limit
            n_keep = int(keep.sum())
            self.seen += act.shape[0]
            self.dropped += act.shape[0] - n_keep
            if n_keep < act.shape[0]:
                act, grad = act[keep], None if grad is None else grad[keep]
            yield act, grad

    def report(self) -> None:
        """Log how many tokens this run left out."""
        logger.info(
            "left out %d of %d tokens (activation norm > %.1f, train.max_norm_multiple)",
            self.dropped,
            self.seen,
            self.limit,
        )
