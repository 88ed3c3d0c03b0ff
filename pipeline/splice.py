"""Splicing edits into the LM's residual stream and measuring next-token CE and KL.

An *editor* is a function ``fn(hidden, rows) -> hidden'`` applied to the output hidden
state [B, T, d] of one decoder block, where ``rows`` is the slice of evaluation contexts in
the batch (so an editor can look up per-token data such as stored gradients). Every editor
here leaves position 0 of each context at its clean value (BOS / attention sink) and edits
positions 1..T−1:

- :func:`sae_editor` replaces the activation by the SAE reconstruction x̂. The SAE encodes
  the model's *live* activation at the hook (the one the clean forward really computes,
  in the model's dtype, cast to float32), not the float16 copy in the store; the g-SAE's
  gradient is the stored clean gradient of the same token (float16 → float32).
- :func:`zero_editor` replaces the activation by 0 (zero ablation).

:func:`splice_losses` runs, for each batch of contexts, one clean forward and one forward
per editor, and returns per editor the mean next-token CE over all T−1 predictions of
every context (positions 0..T−2, the same set as the clean CE) and the mean per-token
KL(p_clean ‖ p_edited) over the same positions (position 0 included: it is unchanged, so
its KL is 0 — the mean is over exactly the predictions CE averages over).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from pipeline.models import LoadedModel, edit_block_output

log = logging.getLogger(__name__)

Editor = Callable[[torch.Tensor, slice], torch.Tensor]


@dataclass(frozen=True)
class Edit:
    """An editor applied at the output of decoder block ``block``."""

    block: int
    fn: Editor


@dataclass
class SpliceResult:
    """Mean CE of the clean model and mean CE / KL of every edit."""

    ce_clean: float
    ce: dict[str, float]
    kl: dict[str, float]
    predictions: int
    act_rel_err: dict[int, float] = field(default_factory=dict)
    """block → ‖live − stored‖ / ‖stored‖ of the hook activation (positions ≥ 1)."""


def keep_first(hidden: torch.Tensor, new_tail: torch.Tensor) -> torch.Tensor:
    """hidden [B, T, d] with positions 1.. replaced by ``new_tail`` [B, T−1, d] (cast to its dtype)."""
    return torch.cat([hidden[:, :1], new_tail.to(hidden.dtype)], dim=1)


def sae_editor(sae: torch.nn.Module, grads: torch.Tensor | None) -> Editor:
    """Replace positions 1.. by ``sae(x, g).x_hat``; ``grads`` [n_ctx, T, d] are the stored gradients."""

    def fn(hidden: torch.Tensor, rows: slice) -> torch.Tensor:
        b, t, d = hidden.shape
        x = hidden[:, 1:].reshape(-1, d).float()
        g = None if grads is None else grads[rows, 1:].reshape(-1, d).to(x.device, torch.float32)
        x_hat = sae(x, g).x_hat if g is not None else sae(x).x_hat
        return keep_first(hidden, x_hat.view(b, t - 1, d))

    return fn


def zero_editor() -> Editor:
    """Replace positions 1.. by zeros."""

    def fn(hidden: torch.Tensor, rows: slice) -> torch.Tensor:
        return keep_first(hidden, torch.zeros_like(hidden[:, 1:]))

    return fn


HookFn = Callable[[torch.Tensor], "torch.Tensor | None"]


def logits(lm: LoadedModel, ids: torch.Tensor, edits: Sequence[tuple[int, HookFn]] = ()) -> torch.Tensor:
    """float32 logits [B, T, V] of ``ids`` with the given (block, fn) output edits active."""
    with ExitStack() as stack:
        for block, fn in edits:
            stack.enter_context(edit_block_output(lm.blocks[block], fn))
        return lm.model(input_ids=ids.to(lm.device), use_cache=False).logits.float()


def next_token_ce(logp: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Summed CE of predictions 0..T−2: logp [B, T, V] log-probabilities, ids [B, T] → scalar."""
    target = ids[:, 1:].to(logp.device).long()
    return -logp[:, :-1].gather(2, target.unsqueeze(-1)).sum()


def kl_sum(p: torch.Tensor, logp_p: torch.Tensor, logp_q: torch.Tensor) -> float:
    """Σ over positions of KL(p ‖ q) = Σ_v p_v (log p_v − log q_v).

    p, logp_p, logp_q: [..., V] (``p`` = ``logp_p.exp()``, passed in so it can be reused).
    One temporary of the input's size; the sum is accumulated per position.
    """
    diff = logp_p - logp_q
    return float(torch.einsum("...v,...v->...", p, diff).double().sum())


@torch.no_grad()
def splice_losses(
    lm: LoadedModel,
    ids: np.ndarray | torch.Tensor,
    edits: Mapping[str, Edit],
    *,
    batch_size: int = 8,
    stored_acts: Mapping[int, torch.Tensor] | None = None,
) -> SpliceResult:
    """Clean CE and, per edit, spliced CE and KL(p_clean ‖ p_edit) over contexts ``ids`` [n, T].

    ``stored_acts`` (block → [n, T, d]) optionally compares the live hook activations of
    the clean forward with the store's copy (reported as ``act_rel_err``).
    """
    ids = torch.as_tensor(np.asarray(ids), dtype=torch.long)
    n, t = ids.shape
    if t < 2:
        raise ValueError("contexts need at least 2 tokens")
    ce_clean = 0.0
    ce = dict.fromkeys(edits, 0.0)
    kl = dict.fromkeys(edits, 0.0)
    err_num: dict[int, float] = {}
    err_den: dict[int, float] = {}
    bar = tqdm(total=n, unit="ctx", desc="splice", leave=False)
    for start in range(0, n, batch_size):
        rows = slice(start, min(start + batch_size, n))
        batch = ids[rows]
        captures: list[tuple[int, HookFn]] = []
        for block, stored in (stored_acts or {}).items():
            captures.append((block, _comparer(block, stored[rows], err_num, err_den)))
        logp_clean = F.log_softmax(logits(lm, batch, captures), dim=-1)
        ce_clean += float(next_token_ce(logp_clean, batch))
        p_clean = logp_clean[:, :-1].exp()
        for name, edit in edits.items():
            fn = edit.fn
            logp = F.log_softmax(logits(lm, batch, [(edit.block, lambda h, fn=fn, rows=rows: fn(h, rows))]), dim=-1)
            ce[name] += float(next_token_ce(logp, batch))
            kl[name] += kl_sum(p_clean, logp_clean[:, :-1], logp[:, :-1])
            del logp
        del logp_clean, p_clean
        bar.update(len(batch))
    bar.close()
    preds = n * (t - 1)
    rel = {b: (err_num[b] / err_den[b]) ** 0.5 if err_den[b] > 0 else 0.0 for b in err_num}
    return SpliceResult(
        ce_clean / preds,
        {k: v / preds for k, v in ce.items()},
        {k: v / preds for k, v in kl.items()},
        preds,
        rel,
    )


def _comparer(
    block: int, stored: torch.Tensor, num: dict[int, float], den: dict[int, float]
) -> Callable[[torch.Tensor], None]:
    """A read-only hook that accumulates ‖live − stored‖² and ‖stored‖² at positions 1..."""

    def fn(hidden: torch.Tensor) -> None:
        live = hidden[:, 1:].float()
        ref = stored[:, 1:].to(live.device, torch.float32)
        num[block] = num.get(block, 0.0) + float(((live - ref) ** 2).sum())
        den[block] = den.get(block, 0.0) + float((ref**2).sum())

    return fn
