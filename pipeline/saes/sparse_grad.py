"""The encoder's parameter gradients from a sparse ∂L/∂z, without the dense backward GEMM.

In training, the loss reaches the pre-activations z = x W_enc + (b_enc − b_dec W_enc) only
through the latents a step gathers: the selected ones (``select``'s indices) and, once
latents die, the AuxK ones. ∂L/∂z [B, n] is therefore zero outside at most B·(k + k_aux)
entries, and autograd's dense ∂L/∂W_enc = xᵀ ∂L/∂z spends a [d, B] × [B, n] GEMM (as much
as the forward) on zeros. The CPU trainer therefore never builds ∂L/∂z: the gathered values
are autograd leaves, their gradients times ∂values/∂z (:meth:`~pipeline.saes.base.SAE.value_slope`)
are ∂L/∂z at those entries, and the gradients are

    ∂L/∂W_enc = xᵀ G − b_dec ⊗ Σ_b G_b      (G: ∂L/∂z as a sparse [B, n] matrix)
    ∂L/∂b_enc = Σ_b G_b                    ∂L/∂b_dec += −W_enc Σ_b G_b

with one sparse × dense product, O(B·m·d) instead of O(B·n·d). They equal the dense
gradients up to float summation order (tests/saes/test_sparse_grad.py checks every
registered architecture, AuxK included). On 2 CPU cores (d = 576, n = 4,608, k = 32,
B = 4,096) a training step is 1.49x faster this way (benchmarks/components/train_stage.py, figure f).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from pipeline.saes.base import SAE


@torch.no_grad()
def encoder_backward_(
    sae: SAE, x: torch.Tensor, entries: Sequence[tuple[torch.Tensor, torch.Tensor]]
) -> None:
    """Accumulate into ``sae``'s W_enc, b_enc, b_dec ``.grad`` the gradients of a loss that reaches
    z only at ``entries``: x [B, d] (the encoder's input), each entry a pair (indices [B, m],
    ∂L/∂z at them [B, m]); an entry in two pairs adds both parts (each pair carries its own)."""
    B, n = x.shape[0], sae.d_sae
    latent = torch.cat([idx.reshape(-1) for idx, _ in entries])
    token = torch.cat(
        [torch.arange(B, device=x.device).repeat_interleave(idx.shape[1]) for idx, _ in entries]
    )
    value = torch.cat([g.reshape(-1) for _, g in entries]).to(x.dtype)
    if sae.ragged_rows and x.device.type == "cpu":
        # padding slots (batch-level selections) carry an exact 0: dropping them spares the
        # sparse product B·max_count rows (the sums change only in float rounding)
        live = value != 0
        if 4 * int(live.sum()) <= 3 * value.numel():
            latent, token, value = latent[live], token[live], value[live]
    g_b_enc = torch.zeros(n, dtype=x.dtype, device=x.device).index_add_(0, latent, value)
    G_t = torch.sparse_coo_tensor(
        torch.stack([latent, token]), value, (n, B), check_invariants=False
    )  # [n, B]; duplicates are summed
    g_W = (torch.sparse.mm(G_t, x).t() - torch.outer(sae.b_dec, g_b_enc)).contiguous()  # [d, n]
    _accumulate(sae.W_enc, g_W)
    _accumulate(sae.b_enc, g_b_enc)
    _accumulate(sae.b_dec, -(sae.W_enc @ g_b_enc))


def _accumulate(param: torch.Tensor, grad: torch.Tensor) -> None:
    if param.grad is None:
        param.grad = grad
    else:
        param.grad.add_(grad)
