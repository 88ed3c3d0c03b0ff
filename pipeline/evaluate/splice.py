"""Splicing edits into the LM's residual stream and measuring next-token CE and KL.

An *editor* is a function ``fn(hidden, rows) -> hidden'`` applied to the output hidden
state [B, T, d] of one decoder block, where ``rows`` is the slice of evaluation contexts in
the batch (so an editor can look up per-token data such as stored gradients). Our
convention's editors leave position 0 of each context at its clean value (BOS / attention
sink) and edit positions 1..T−1:

- :func:`sae_editor` replaces the activation by the SAE reconstruction x̂. The SAE encodes
  the model's *live* activation at the hook (the one the clean forward really computes,
  in the model's dtype, cast to float32), not the float16 copy in the store; the g-SAE's
  gradient is the stored clean gradient of the same token (float16 → float32).
- :func:`zero_editor` replaces the activation by 0 (zero ablation).

``sae_editor(..., keep=mask)`` and :func:`zero_all_editor` are the exceptions SAELens's
convention needs (:mod:`pipeline.evaluate.conventions`): the SAE at every position but the
``keep`` ones, and zeros at every position, BOS included.

:func:`splice_losses` runs, for each batch of contexts, one clean forward (capturing the
clean state at every edited block) and then, per editor, only the blocks after the edited
one (:mod:`pipeline.lm.suffix`), several editors stacked along the batch per forward. It
returns per editor the mean next-token CE over all T−1 predictions of every context
(positions 0..T−2, the same set as the clean CE) and the mean per-token KL(p_clean ‖
p_edited) over the same positions (position 0 included: it is unchanged, so its KL is 0 —
the mean is over exactly the predictions CE averages over), both straight from the logits
(:mod:`pipeline.evaluate.nextdist`). ``mode="full"`` reruns the whole model per editor
instead (the reference the suffix path is tested against). With ``count`` (a position mask)
it also returns, per context, the CE and KL summed over the counted positions only
(:class:`CountedSums`; KL there includes the last position, which makes no prediction
with a target but has a next-token distribution).

``autocast="bfloat16"`` runs the forwards after the first edited block (the clean one too)
in bfloat16: ~3× faster on CPUs with bf16 matrix units, but not float rounding: on the
default run it moves loss recovered by up to ~1e-4 and adds ~1.6e-3 nats of KL noise
(docs/benchmarks.md), so it is an opt-in for quick looks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from pipeline.core.devices import autocast as autocast_on
from pipeline.evaluate import nextdist
from pipeline.lm.models import LoadedModel, edit_block_output
from pipeline.lm.suffix import PrefixCapture, prefix_states, suffix_logits

log = logging.getLogger(__name__)

Editor = Callable[[torch.Tensor, slice], torch.Tensor]


@dataclass(frozen=True)
class Edit:
    """An editor applied at the output of decoder block ``block``."""

    block: int
    fn: Editor


@dataclass
class CountedSums:
    """Per-context sums [n] (float64) over the positions a ``count`` mask [n, T] marks."""

    ce_clean: np.ndarray
    """Σ clean CE of the predictions made at counted positions (position t predicts token t+1)."""
    ce: dict[str, np.ndarray]
    """edit → Σ CE of the same predictions."""
    kl: dict[str, np.ndarray]
    """edit → Σ KL(p_clean ‖ p_edit) at counted positions, the last position included."""


@dataclass
class SpliceResult:
    """Mean CE of the clean model and mean CE / KL of every edit."""

    ce_clean: float
    ce: dict[str, float]
    kl: dict[str, float]
    predictions: int
    act_rel_err: dict[int, float] = field(default_factory=dict)
    """block → ‖live − stored‖ / ‖stored‖ of the hook activation (positions ≥ 1)."""
    counted: CountedSums | None = None
    """The sums over the ``count`` mask's positions, when one was given."""


def keep_first(hidden: torch.Tensor, new_tail: torch.Tensor) -> torch.Tensor:
    """hidden [B, T, d] with positions 1.. replaced by ``new_tail`` [B, T−1, d] (cast to its dtype)."""
    return torch.cat([hidden[:, :1], new_tail.to(hidden.dtype)], dim=1)


def sae_editor(sae: torch.nn.Module, grads: torch.Tensor | None, keep: torch.Tensor | None = None) -> Editor:
    """Replace positions 1.. by ``sae(x, g).x_hat``; ``grads`` [n_ctx, T, d] are the stored gradients.

    With ``keep`` (bool [n_ctx, T]) every position is reconstructed except those ``keep``
    marks, which stay clean (SAELens's ``torch.where(mask, x̂, x)``; the SAE acts per token,
    so the other positions' x̂ are the same either way).
    """

    def fn(hidden: torch.Tensor, rows: slice) -> torch.Tensor:
        b, t, d = hidden.shape
        first = 0 if keep is not None else 1
        x = hidden[:, first:].reshape(-1, d).float()
        g = None if grads is None else grads[rows, first:].reshape(-1, d).to(x.device, torch.float32)
        x_hat = (sae(x, g).x_hat if g is not None else sae(x).x_hat).view(b, t - first, d)
        if keep is None:
            return keep_first(hidden, x_hat)
        clean = keep[rows].to(hidden.device).unsqueeze(-1)
        return torch.where(clean, hidden, x_hat.to(hidden.dtype))

    return fn


def zero_editor(keep: torch.Tensor | None = None) -> Editor:
    """Replace positions 1.. by zeros; with ``keep`` (bool [n_ctx, T]), every position but those
    ``keep`` marks."""

    def fn(hidden: torch.Tensor, rows: slice) -> torch.Tensor:
        if keep is None:
            return keep_first(hidden, torch.zeros_like(hidden[:, 1:]))
        return torch.where(keep[rows].to(hidden.device).unsqueeze(-1), hidden, torch.zeros_like(hidden))

    return fn


def zero_all_editor() -> Editor:
    """Replace every position, the first included, by zeros (SAELens's zero ablation)."""

    def fn(hidden: torch.Tensor, rows: slice) -> torch.Tensor:
        return torch.zeros_like(hidden)

    return fn


HookFn = Callable[[torch.Tensor], "torch.Tensor | None"]


def logits(lm: LoadedModel, ids: torch.Tensor, edits: Sequence[tuple[int, HookFn]] = ()) -> torch.Tensor:
    """float32 logits [B, T, V] of ``ids`` with the given (block, fn) output edits active."""
    with ExitStack() as stack:
        for block, fn in edits:
            stack.enter_context(edit_block_output(lm.blocks[block], fn))
        return lm.model(input_ids=ids.to(lm.device), use_cache=False).logits.float()


def kl_sum(p: torch.Tensor, logp_p: torch.Tensor, logp_q: torch.Tensor) -> float:
    """Σ over positions of KL(p ‖ q) = Σ_v p_v (log p_v − log q_v), from log-probabilities.

    p, logp_p, logp_q: [..., V] (``p`` = ``logp_p.exp()``). The reference form that
    :mod:`pipeline.evaluate.nextdist` computes from logits in fewer passes.
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
    mode: Literal["suffix", "full"] = "suffix",
    edits_per_forward: int = 4,
    autocast: str = "none",
    count: torch.Tensor | None = None,
) -> SpliceResult:
    """Clean CE and, per edit, spliced CE and KL(p_clean ‖ p_edit) over contexts ``ids`` [n, T].

    ``count`` (bool [n, T]) adds :class:`CountedSums` over the positions it marks.
    ``stored_acts`` (block → [n, T, d]) optionally compares the live hook activations of
    the clean forward with the store's copy (reported as ``act_rel_err``). ``autocast``
    (``none`` | ``bfloat16``) runs the clean and edited forwards after the first edited
    block in that precision; the blocks up to it, whose output the SAEs encode, stay in
    the model's dtype.
    """
    ids = torch.as_tensor(np.asarray(ids), dtype=torch.long)
    n, t = ids.shape
    if t < 2:
        raise ValueError("contexts need at least 2 tokens")
    acc = _Accumulator(edits, None if count is None else torch.as_tensor(count, dtype=torch.bool))
    blocks = sorted({e.block for e in edits.values()} | set(stored_acts or {}))
    bar = tqdm(total=n, unit="ctx", desc="splice", leave=False)
    for start in range(0, n, batch_size):
        rows = slice(start, min(start + batch_size, n))
        batch = ids[rows]
        target = batch[:, 1:]
        capture, z_clean = clean_pass(lm, batch, blocks, mode, autocast)
        for block, stored in (stored_acts or {}).items():
            acc.compare(block, capture.states[block], stored[rows])
        # every position's distribution (the last one too: counted KL includes it)
        ref = nextdist.reference(z_clean)
        acc.add_clean(nextdist.target_ce(z_clean[:, :-1], ref.lse[:, :-1], target), rows)
        del z_clean
        with autocast_on(lm.device, autocast):
            for names, z in _edited_logits(lm, batch, rows, edits, capture, mode, edits_per_forward):
                lse, kl = nextdist.edited(z, ref)
                ce = nextdist.target_ce(z[:, :-1], lse[:, :-1], target.repeat(len(names), 1))
                for j, name in enumerate(names):
                    part = slice(j * len(batch), (j + 1) * len(batch))
                    acc.add(name, ce[part], kl[part], rows)
                del z
        del ref
        bar.update(len(batch))
    bar.close()
    result = acc.result(n * (t - 1))
    for block, err in result.act_rel_err.items():
        level = logging.WARNING if err > 0.02 else logging.INFO
        log.log(level, "block %d: live vs stored activation relative error %.2e", block, err)
    return result


def clean_pass(
    lm: LoadedModel, batch: torch.Tensor, blocks: list[int], mode: str, autocast: str
) -> tuple[PrefixCapture, torch.Tensor]:
    """The clean states at ``blocks`` and the clean logits [B, T, V] of ``batch``.

    In the model's dtype one forward gives both. Under autocast the forward stops after the
    deepest block and the clean logits come from the suffix of the first, in the precision
    of the edited forwards, so that rounding is shared and cancels in the KL.
    """
    if autocast == "none" or mode == "full" or not blocks:
        capture = PrefixCapture(lm, blocks)
        with capture.active(), autocast_on(lm.device, autocast):
            z = logits(lm, batch)
        return capture, z
    capture = prefix_states(lm, batch, blocks)
    first = blocks[0]
    with autocast_on(lm.device, autocast):
        z = suffix_logits(lm, first, capture.states[first], batch, capture.tails[first])
    return capture, z


def _edited_logits(
    lm: LoadedModel,
    batch: torch.Tensor,
    rows: slice,
    edits: Mapping[str, Edit],
    capture: PrefixCapture,
    mode: str,
    per_forward: int,
) -> Iterator[tuple[list[str], torch.Tensor]]:
    """(names, float32 logits [len(names)·B, T, V]) of the edits, a few per forward."""
    if mode == "full":
        for name, edit in edits.items():
            fn = edit.fn
            hook = (edit.block, lambda h, fn=fn: fn(h, rows))
            yield [name], logits(lm, batch, [hook])
        return
    by_block: dict[int, list[str]] = {}
    for name, edit in edits.items():
        by_block.setdefault(edit.block, []).append(name)
    for block, names in by_block.items():
        clean = capture.states[block]
        for i in range(0, len(names), max(1, per_forward)):
            chunk = names[i : i + max(1, per_forward)]
            states = torch.cat([edits[name].fn(clean, rows) for name in chunk])
            yield chunk, suffix_logits(lm, block, states, batch.repeat(len(chunk), 1), capture.tails[block])


class _Accumulator:
    """Running sums of clean CE, per-edit CE and KL, and the live-vs-stored activation error."""

    def __init__(self, edits: Mapping[str, Edit], count: torch.Tensor | None) -> None:
        self.ce_clean = 0.0
        self.ce = dict.fromkeys(edits, 0.0)
        self.kl = dict.fromkeys(edits, 0.0)
        self.err_num: dict[int, float] = {}
        self.err_den: dict[int, float] = {}
        self.count = count
        if count is not None:
            n = count.shape[0]
            self.counted = CountedSums(
                np.zeros(n), {k: np.zeros(n) for k in edits}, {k: np.zeros(n) for k in edits}
            )

    def _counted(self, per_pos: torch.Tensor, rows: slice) -> np.ndarray:
        """Per-context sums of ``per_pos`` [B, P] over the counted positions 0..P−1 of ``rows``."""
        assert self.count is not None
        mask = self.count[rows, : per_pos.shape[1]].to(per_pos.device)
        return torch.where(mask, per_pos, 0.0).double().sum(1).cpu().numpy()

    def add_clean(self, ce: torch.Tensor, rows: slice) -> None:
        """Clean CE [B, T−1] of the contexts ``rows``."""
        self.ce_clean += float(ce.double().sum())
        if self.count is not None:
            self.counted.ce_clean[rows] = self._counted(ce, rows)

    def add(self, name: str, ce: torch.Tensor, kl: torch.Tensor, rows: slice) -> None:
        """CE [B, T−1] and KL [B, T] of edit ``name`` on the contexts ``rows`` (ours: KL at 0..T−2)."""
        self.ce[name] += float(ce.double().sum())
        self.kl[name] += float(kl[:, :-1].double().sum())
        if self.count is not None:
            self.counted.ce[name][rows] = self._counted(ce, rows)
            self.counted.kl[name][rows] = self._counted(kl, rows)

    def compare(self, block: int, live: torch.Tensor, stored: torch.Tensor) -> None:
        """Accumulate ‖live − stored‖² and ‖stored‖² at positions 1.."""
        lv = live[:, 1:].float()
        ref = stored[:, 1:].to(lv.device, torch.float32)
        self.err_num[block] = self.err_num.get(block, 0.0) + float(((lv - ref) ** 2).sum())
        self.err_den[block] = self.err_den.get(block, 0.0) + float((ref**2).sum())

    def result(self, preds: int) -> SpliceResult:
        rel = {b: (self.err_num[b] / d) ** 0.5 if (d := self.err_den[b]) > 0 else 0.0 for b in self.err_num}
        return SpliceResult(
            self.ce_clean / preds,
            {k: v / preds for k, v in self.ce.items()},
            {k: v / preds for k, v in self.kl.items()},
            preds,
            rel,
            self.counted if self.count is not None else None,
        )
