"""The model passes a harvest runs: one batch of contexts, and a whole shard's rows.

:func:`forward_backward`: one forward and one backward serve every hooked layer. The output
of the shallowest hooked block is detached and made a leaf (nothing before it needs a graph),
deeper hooked outputs stay in the graph, and ``torch.autograd.grad`` of the summed next-token
CE (DESIGN §1) returns ∂L_seq/∂x at each of them.

:func:`forward_activations` (``harvest.gradients: false``): the forward stops after the
deepest hooked block — its hook raises once it has the output — with no graph, no later
blocks, no logits and no backward.

:func:`compute_shard` runs one of them over every batch of a shard and collects the rows
in the storage dtype (the in-process and the distributed harvest share it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from cache.writer import ShardWriter
from pipeline.core.config import Params
from pipeline.core.devices import autocast as autocast_on
from pipeline.harvest.writers import Shard
from pipeline.lm.models import LoadedModel, edit_block_output


class BatchGrads(NamedTuple):
    """Activations and loss gradients of one batch of contexts."""

    acts: dict[int, torch.Tensor]
    """layer → [B, T, d] residual stream after the block."""
    grads: dict[int, torch.Tensor]
    """layer → [B, T, d] ∂L_seq/∂x (last position 0)."""
    loss: torch.Tensor
    """[B, T] next-token CE at each position (last position 0)."""


Capture = Callable[[int], Callable[[torch.Tensor], torch.Tensor | None]]
"""layer → the function run on that block's output (a returned tensor replaces it)."""


@contextmanager
def _hooked_run(lm: LoadedModel, layers: Sequence[int], capture: Capture, autocast: str) -> Iterator[None]:
    """Every hooked block's output goes through ``capture(layer)``; the model runs under
    ``torch.autocast`` in ``autocast`` (``none`` | ``bfloat16`` | ``float16``)."""
    with ExitStack() as stack:
        for layer in layers:
            stack.enter_context(edit_block_output(lm.blocks[layer], capture(layer)))
        with autocast_on(lm.device, autocast):
            yield


def forward_backward(
    lm: LoadedModel, layers: Sequence[int], ids: torch.Tensor, autocast: str = "none"
) -> BatchGrads:
    """Activations and ∂(sum of next-token CE)/∂activation at ``layers`` for ``ids`` [B, T]
    (the CE always in float32)."""
    captured: dict[int, torch.Tensor] = {}
    first = min(layers)

    def capture(layer: int) -> Callable[[torch.Tensor], torch.Tensor | None]:
        def fn(hidden: torch.Tensor) -> torch.Tensor | None:
            if layer == first:  # start the graph here: nothing upstream needs gradients
                hidden = hidden.detach().requires_grad_(True)
                captured[layer] = hidden
                return hidden
            captured[layer] = hidden
            return None

        return fn

    with torch.enable_grad():
        with _hooked_run(lm, layers, capture, autocast):
            logits = lm.model(input_ids=ids, use_cache=False).logits
        ce = F.cross_entropy(
            logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten().long(), reduction="none"
        ).view(ids.shape[0], -1)
        grads = torch.autograd.grad(ce.sum(), [captured[layer] for layer in layers])
    loss = F.pad(ce.detach(), (0, 1))
    return BatchGrads(
        {layer: captured[layer].detach() for layer in layers},
        dict(zip(layers, (g.detach() for g in grads), strict=True)),
        loss,
    )


class _StopForward(Exception):
    """Raised by the hook of the deepest hooked block: nothing after it is needed."""


def forward_activations(
    lm: LoadedModel, layers: Sequence[int], ids: torch.Tensor, autocast: str = "none"
) -> dict[int, torch.Tensor]:
    """layer → activations [B, T, d] at ``layers`` for ``ids`` [B, T], from a forward that stops
    after the deepest hooked block (no later blocks, no logits, no graph)."""
    captured: dict[int, torch.Tensor] = {}
    last = max(layers)

    def capture(layer: int) -> Callable[[torch.Tensor], torch.Tensor | None]:
        def fn(hidden: torch.Tensor) -> torch.Tensor | None:
            captured[layer] = hidden
            if layer == last:
                raise _StopForward
            return None

        return fn

    with torch.inference_mode(), suppress(_StopForward), _hooked_run(lm, layers, capture, autocast):
        lm.model(input_ids=ids, use_cache=False)
    return captured


def compute_shard(
    params: Params,
    lm: LoadedModel,
    hooks: list[str],
    shard_ctx: np.ndarray,
    writer: ShardWriter,
    index: int,
    bar: Any,
) -> Shard:
    """Run the LM over ``shard_ctx`` [contexts, T], the contexts of shard ``index``, and collect its rows."""
    info, layers = writer.info, list(params.harvest.layers)
    T, dtype = params.data.context_length, np.dtype(params.harvest.dtype)
    n = shard_ctx.size
    # Rows are converted to the storage dtype on the device and copied into pinned host
    # buffers without waiting (CUDA): the device never idles on the host within a shard.
    # Torch's float32 → float16 rounding equals numpy's bit for bit (round to nearest even).
    pinned, store_dtype = lm.device.type == "cuda", getattr(torch, dtype.name)

    def host(rows: int, *shape: int, dt: torch.dtype = store_dtype) -> torch.Tensor:
        return torch.empty((rows, *shape), dtype=dt, pin_memory=pinned)

    acts = {hk: host(n, info.d_model) for hk in hooks}
    grads = {hk: host(n, info.d_model) for hk in hooks} if info.has_grad else {}
    loss = host(n, dt=torch.float32) if info.has_loss else None
    for b in range(0, len(shard_ctx), params.harvest.batch_size):
        ids = torch.from_numpy(shard_ctx[b : b + params.harvest.batch_size]).to(lm.device)
        rows = slice(b * T, b * T + ids.numel())
        if info.has_grad:
            out = forward_backward(lm, layers, ids, params.harvest.autocast)
            batch_acts, batch_grads = out.acts, out.grads
            if loss is not None:
                loss[rows].copy_(out.loss.flatten(), non_blocking=pinned)
        else:
            batch_acts, batch_grads = forward_activations(lm, layers, ids, params.harvest.autocast), {}
        for layer, hk in zip(layers, hooks, strict=True):
            acts[hk][rows].copy_(batch_acts[layer].flatten(0, 1).float().to(store_dtype), non_blocking=pinned)
            if hk in grads:
                grads[hk][rows].copy_(
                    batch_grads[layer].flatten(0, 1).float().to(store_dtype), non_blocking=pinned
                )
        if bar is not None:
            bar.update(ids.numel())
    if pinned:
        torch.cuda.current_stream(lm.device).synchronize()
    return Shard(
        index,
        shard_ctx.reshape(-1).copy(),
        {hk: t.numpy() for hk, t in acts.items()},
        {hk: t.numpy() for hk, t in grads.items()},
        None if loss is None else loss.numpy(),
    )
