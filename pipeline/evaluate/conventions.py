"""SAELens / SAEBench's convention beside ours: ``ce_loss_score`` and ``kl_div_score``.

Our ``loss_recovered`` and ``kl`` (DESIGN §3 Metrics) keep position 0 of every context (BOS)
clean in every edit, the zero ablation included, and average over every prediction.
``sae_lens.evals.run_evals`` with its defaults (sae-lens 6.54.12, ``evals.py``;
``exclude_special_tokens=True``, line 115) measures the same splice otherwise:

1. *Special tokens* — ``sae_lens.util.get_special_token_ids``: the tokenizer's
   ``bos/eos/pad/sep/decoder_start_token_id`` (line 120), here BOS at position 0 and EOS
   between packed documents — are not reconstructed: ``get_recons_loss`` applies
   ``torch.where(mask[..., None], x̂, x)`` (line 715), so they keep their clean activation
   and every other position is replaced by x̂ (position 0 too when its token is not special).
2. The zero ablation zeroes **every** position, BOS included (``standard_zero_ablate_hook``,
   line 734, no mask).
3. The means run over the positions whose *input* token is not special
   (``get_downstream_reconstruction_metrics``, lines 362–381): the per-token CE
   (TransformerLens's ``lm_cross_entropy_loss``, position t predicts token t+1, T−1 values) is
   masked with ``mask[:, :-1]`` (line 374), the per-position KL(p_clean ‖ p_edited) (``_kl``,
   line 787) with ``mask`` over all T positions, the last one included; each mean is over all
   masked values of all contexts (``torch.cat(...).mean()``, line 381).

and then (lines 383–391)

    ce_loss_score = (CE_ablation − CE_sae) / (CE_ablation − CE_clean)
    kl_div_score  = (KL_ablation − KL_sae) / KL_ablation,   KL_ablation = KL(p_clean ‖ p_zero-ablated).

Every entry of ``evaluate.out`` carries both scores and the five means under SAELens's names
(``ce_loss_with_sae``, ``ce_loss_without_sae``, ``ce_loss_with_ablation``,
``kl_div_with_sae``, ``kl_div_with_ablation``), computed on the evaluated contexts.

Cost: on a context whose only special token is BOS at position 0, SAELens's SAE splice *is*
ours, so the one splice over all contexts serves both conventions (:class:`CountedSums` sums
each context over the counted positions). Only the contexts holding a special token after
position 0 (an EOS between documents), or no special token at position 0 (a tokenizer
without BOS), are spliced a second time with the masked editor; the ablation of every
position is one extra edit per hook.

A g-SAE has no SAELens figure to equal: SAELens's replacement hook calls ``sae.encode(x)``
without a gradient, which our plug-in refuses. Its entries are spliced as in our convention
(the stored gradient; none for ``@beta0``), with SAELens's positions, baseline and means.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import torch

from pipeline.evaluate.splice import (
    CountedSums,
    Edit,
    SpliceResult,
    sae_editor,
    splice_losses,
    zero_all_editor,
    zero_editor,
)
from pipeline.lm.models import LoadedModel

log = logging.getLogger(__name__)

SPECIAL_TOKEN_ATTRS = (
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "sep_token_id",
    "decoder_start_token_id",
)
"""The tokenizer attributes ``sae_lens.util.get_special_token_ids`` reads (``_SPECIAL_TOKEN_ATTRS``)."""
SCORE_KEYS = ("ce_loss_score", "kl_div_score")
MEAN_KEYS = (
    "ce_loss_with_sae",
    "ce_loss_without_sae",
    "ce_loss_with_ablation",
    "kl_div_with_sae",
    "kl_div_with_ablation",
)
"""SAELens's names of the means the scores are made of."""


class Spliced(Protocol):
    """What an evaluated entry offers the splice (``pipeline.evaluate.run.Entry``)."""

    @property
    def name(self) -> str: ...
    @property
    def sae(self) -> torch.nn.Module: ...
    @property
    def hook(self) -> str: ...
    @property
    def block(self) -> int: ...


def zero_key(hook: str) -> str:
    """The edit name of our zero ablation of ``hook`` (position 0 clean)."""
    return f"zero:{hook}"


def zero_all_key(hook: str) -> str:
    """The edit name of SAELens's zero ablation of ``hook`` (every position)."""
    return f"zero_all:{hook}"


def special_token_ids(tokenizer: Any) -> list[int]:
    """The special token ids SAELens excludes by default (``get_special_token_ids``), sorted."""
    ids = {getattr(tokenizer, attr, None) for attr in SPECIAL_TOKEN_ATTRS}
    return sorted(int(i) for i in ids if i is not None)


def counted_positions(ids: torch.Tensor, special: Sequence[int]) -> torch.Tensor:
    """bool [n, T]: the positions SAELens reconstructs and averages over (token not special)."""
    return ~torch.isin(ids, torch.tensor(list(special), dtype=ids.dtype))


def needs_masked_splice(counted: torch.Tensor) -> torch.Tensor:
    """bool [n]: contexts where SAELens's reconstructed positions are not ours (1..T−1)."""
    return counted[:, 0] | ~counted[:, 1:].all(dim=1)


def saelens_figures(
    ce_clean: float, ce_sae: float, ce_zero: float, kl_sae: float, kl_zero: float
) -> dict[str, float]:
    """The two scores from the five means (``nan`` where a denominator is 0), SAELens's keys."""

    def ratio(num: float, den: float) -> float:
        return num / den if den != 0 and math.isfinite(den) else math.nan

    return {
        "ce_loss_score": ratio(ce_zero - ce_sae, ce_zero - ce_clean),
        "kl_div_score": ratio(kl_zero - kl_sae, kl_zero),
        "ce_loss_with_sae": ce_sae,
        "ce_loss_without_sae": ce_clean,
        "ce_loss_with_ablation": ce_zero,
        "kl_div_with_sae": kl_sae,
        "kl_div_with_ablation": kl_zero,
    }


def splice_both(
    lm: LoadedModel,
    ids: torch.Tensor,
    entries: Sequence[Spliced],
    grads: Mapping[str, torch.Tensor | None],
    clean: Mapping[str, torch.Tensor | None] | None = None,
    **splice_kw: Any,
) -> tuple[SpliceResult, dict[str, dict[str, float]]]:
    """Our splice of every entry (+ both zero ablations per hook) and SAELens's figures per entry.

    ``grads``: hook → stored gradients [n, T, d] (or ``None``); ``clean``: hook → bool [n, T]
    positions after the first that our convention also keeps clean, in the SAE splice and the
    zero ablation alike (activation outliers left out of training,
    :func:`pipeline.evaluate.heldout.outlier_positions`), or ``None``. SAELens's convention
    reconstructs them as it reconstructs every non-special token: the contexts holding one are
    spliced again its way. ``splice_kw`` go to :func:`pipeline.evaluate.splice.splice_losses`
    (``stored_acts``, ``batch_size``, ``mode``, ``edits_per_forward``, ``autocast``).
    """
    ids = torch.as_tensor(ids, dtype=torch.long)
    counted = counted_positions(ids, special_token_ids(lm.tokenizer))
    blocks = {e.hook: e.block for e in entries}
    keep = {h: _with_first(m) for h, m in (clean or {}).items() if m is not None and bool(m.any())}
    edits = {e.name: Edit(e.block, sae_editor(e.sae, grads[e.hook], keep=keep.get(e.hook))) for e in entries}
    edits |= {zero_key(h): Edit(b, zero_editor(keep.get(h))) for h, b in blocks.items()}
    edits |= {zero_all_key(h): Edit(b, zero_all_editor()) for h, b in blocks.items()}
    ours = splice_losses(lm, ids, edits, count=counted, **splice_kw)
    assert ours.counted is not None
    sums = CountedSums(
        ours.counted.ce_clean,
        {e.name: ours.counted.ce[e.name].copy() for e in entries},
        {e.name: ours.counted.kl[e.name].copy() for e in entries},
    )
    resplice = needs_masked_splice(counted)
    for m in keep.values():  # our splice kept outliers clean there: SAELens's does not
        resplice |= m[:, 1:].any(dim=1)
    odd = torch.nonzero(resplice).flatten()
    log.info(
        "SAELens convention: %d of %d contexts hold a special token after position 0 (or none at 0)"
        " or an activation outlier kept clean in ours",
        len(odd),
        len(ids),
    )
    if len(odd) and entries:
        _masked_splice(lm, ids, counted, odd, entries, grads, sums, splice_kw)
    n_ce, n_kl = int(counted[:, :-1].sum()), int(counted.sum())

    def mean(values: np.ndarray, n: int) -> float:
        return float(values.sum()) / n if n else math.nan

    figures = {
        e.name: saelens_figures(
            mean(sums.ce_clean, n_ce),
            mean(sums.ce[e.name], n_ce),
            mean(ours.counted.ce[zero_all_key(e.hook)], n_ce),
            mean(sums.kl[e.name], n_kl),
            mean(ours.counted.kl[zero_all_key(e.hook)], n_kl),
        )
        for e in entries
    }
    return ours, figures


def _with_first(outliers: torch.Tensor) -> torch.Tensor:
    """Our convention's clean positions: position 0 and the ``outliers`` [n, T]."""
    keep = outliers.clone()
    keep[:, 0] = True
    return keep


def _masked_splice(
    lm: LoadedModel,
    ids: torch.Tensor,
    counted: torch.Tensor,
    odd: torch.Tensor,
    entries: Sequence[Spliced],
    grads: Mapping[str, torch.Tensor | None],
    sums: CountedSums,
    splice_kw: Mapping[str, Any],
) -> None:
    """Splice the contexts ``odd`` again with the special positions clean; overwrite their sums."""
    keep = ~counted[odd]
    sub_grads = {h: None if g is None else g[odd] for h, g in grads.items()}
    edits = {e.name: Edit(e.block, sae_editor(e.sae, sub_grads[e.hook], keep=keep)) for e in entries}
    kw = {k: v for k, v in splice_kw.items() if k != "stored_acts"}
    sub = splice_losses(lm, ids[odd], edits, count=counted[odd], **kw)
    assert sub.counted is not None
    rows = odd.numpy()
    for e in entries:
        sums.ce[e.name][rows] = sub.counted.ce[e.name]
        sums.kl[e.name][rows] = sub.counted.kl[e.name]
