"""Logits from a residual-stream state at a block's output: run only the blocks after it.

Splicing an SAE at block L only changes what blocks L+1.. see, so the evaluation needs
the clean prefix (blocks 0..L) once per batch and then, per variant, only the suffix. The
suffix is run through the model's own forward, generically for every Hugging Face family:
for that one call, blocks 0..L−1 are swapped for pass-throughs and block L for a stand-in
that returns the given state, in the output format the real block returns (a tensor, or a
tuple whose tail the clean pass recorded). The model then computes its masks, positions,
per-layer attention types, final norm and head exactly as usual, and the embedding lookup
it also does is discarded by the stand-ins (cheap next to the blocks).

Equal to full recomputation up to float rounding (tests/lm/test_suffix.py compares them on
tiny Llama and GPT-2 models).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from pipeline.lm.models import LoadedModel


class _StandIn(nn.Module):
    """Returns ``state`` (or its input, for a pass-through) as the real block would."""

    def __init__(self, tail: tuple[Any, ...] | None, state: torch.Tensor | None) -> None:
        super().__init__()
        self.tail, self.state = tail, state

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        hidden = self.state if self.state is not None else (args[0] if args else kwargs["hidden_states"])
        return hidden if self.tail is None else (hidden, *self.tail)


@contextmanager
def _blocks_replaced(
    lm: LoadedModel, block: int, tail: tuple[Any, ...] | None, state: torch.Tensor
) -> Iterator[None]:
    """Blocks 0..block−1 pass through, block ``block`` returns ``state``; restored on exit."""
    originals = [lm.blocks[i] for i in range(block + 1)]
    try:
        for i in range(block):
            lm.blocks[i] = _StandIn(tail, None)
        lm.blocks[block] = _StandIn(tail, state)
        yield
    finally:
        for i, module in enumerate(originals):
            lm.blocks[i] = module


@torch.no_grad()
def suffix_logits(
    lm: LoadedModel, block: int, state: torch.Tensor, ids: torch.Tensor, tail: tuple[Any, ...] | None = None
) -> torch.Tensor:
    """float32 logits [B, T, V] of the model continued from ``state`` [B, T, d] at block ``block``'s output.

    ``ids`` [B, T] are the contexts' tokens (the model's forward wants them for shapes and
    positions; their embeddings are discarded). ``tail`` is the non-hidden part of the real
    block's tuple output (:class:`PrefixCapture` records it), ``None`` for tensor outputs.
    """
    return differentiable_suffix_logits(lm, block, state, ids, tail)


def differentiable_suffix_logits(
    lm: LoadedModel, block: int, state: torch.Tensor, ids: torch.Tensor, tail: tuple[Any, ...] | None = None
) -> torch.Tensor:
    """:func:`suffix_logits` with autograd on: the logits' gradient reaches ``state`` (the KL fine-tune)."""
    with _blocks_replaced(lm, block, tail, state.to(lm.device)):
        return lm.model(input_ids=ids.to(lm.device), use_cache=False).logits.float()


class _PrefixDone(Exception):
    """Raised after the deepest captured block when nothing after it is wanted."""


class PrefixCapture:
    """Records the clean output state (and output format) of some blocks during one forward.

    With ``stop=True`` the forward ends after the deepest captured block (the ``with``
    block of :meth:`active` absorbs the stop): the suffix then runs from the captured state.
    """

    def __init__(self, lm: LoadedModel, blocks: Sequence[int], *, stop: bool = False) -> None:
        self.lm, self.blocks, self.stop = lm, sorted(set(blocks)), stop
        self.states: dict[int, torch.Tensor] = {}
        self.tails: dict[int, tuple[Any, ...] | None] = {}

    @contextmanager
    def active(self) -> Iterator[PrefixCapture]:
        """Install the capture hooks for the duration of the ``with`` block."""
        handles = []
        try:
            for b in self.blocks:
                handles.append(self.lm.blocks[b].register_forward_hook(self._hook(b)))
            yield self
        except _PrefixDone:
            pass
        finally:
            for h in handles:
                h.remove()

    def _hook(self, block: int) -> Any:
        def hook(_mod: nn.Module, _inp: Any, output: Any) -> None:
            if isinstance(output, tuple):
                self.states[block] = output[0].detach()
                self.tails[block] = tuple(output[1:])
            else:
                self.states[block] = output.detach()
                self.tails[block] = None
            if self.stop and block == self.blocks[-1]:
                raise _PrefixDone

        return hook


@torch.no_grad()
def prefix_states(lm: LoadedModel, ids: torch.Tensor, blocks: Sequence[int]) -> PrefixCapture:
    """The clean states of ``blocks`` for ``ids`` [B, T], from a forward that stops after the deepest."""
    capture = PrefixCapture(lm, blocks, stop=True)
    with capture.active():
        lm.model(input_ids=ids.to(lm.device), use_cache=False)
    return capture
