"""The CPU trainer's sparse encoder gradients equal autograd's dense ones, for every architecture.

A trainer with ``sparse_encoder_grad`` (the CPU default) and one with autograd's dense
backward start from the same weights and see the same batches with AuxK active and dead
latents present; after each step their gradients and weights must agree to float rounding.
An architecture whose loss reached z outside the indices it reports would fail here.
"""

from __future__ import annotations

import pytest
import torch

from pipeline.config import GridConfig, TrainConfig
from pipeline.saes import REGISTRY
from pipeline.saes.sparse_grad import encoder_backward_
from pipeline.saes.topk import TopKSAE
from pipeline.sweep import expand_grid
from pipeline.trainer import Trainer


def _pair(arch: str) -> tuple[Trainer, Trainer]:
    cfg = TrainConfig(
        warmup_steps=1,
        decay_fraction=0.0,
        dead_tokens=64,
        k_aux=6,
        grid=GridConfig(
            architecture=(arch,), k=(3,), expansion=(8,), beta=(2.0,), value_mode=("augmented",), lr=(1e-2,)
        ),
    )
    sparse, dense = (Trainer(expand_grid(cfg.grid), 8, cfg, total_steps=20, grad_scale=2.0) for _ in range(2))
    assert sparse.sparse_encoder_grad  # the CPU default
    dense.sparse_encoder_grad = False
    return sparse, dense


@pytest.mark.parametrize("arch", sorted(REGISTRY))
def test_sparse_encoder_gradients_equal_dense_ones(arch: str) -> None:
    sparse, dense = _pair(arch)
    gen = torch.Generator().manual_seed(1)
    saw_aux = False
    for _ in range(12):
        x, g = torch.randn(48, 8, generator=gen) * 2 + 0.5, torch.randn(48, 8, generator=gen)
        a, b = sparse.train_step(x, g), dense.train_step(x, g)
        for name in a:
            torch.testing.assert_close(a[name]["loss"], b[name]["loss"], rtol=1e-5, atol=1e-7)
            saw_aux |= float(a[name]["aux"]) > 0
        for va, vb in zip(sparse.variants.values(), dense.variants.values(), strict=True):
            for pa, pb in zip(va.sae.parameters(), vb.sae.parameters(), strict=True):
                assert pa.grad is not None and pb.grad is not None
                torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-4, atol=1e-6)
                torch.testing.assert_close(pa, pb, rtol=1e-4, atol=1e-5)
    assert saw_aux, "AuxK never ran: the test would not cover its indices"


def test_entries_in_two_index_sets_count_once() -> None:
    sae = TopKSAE(4, 6, k=2)
    x = torch.randn(3, 4)
    z = sae.encode_pre(x)
    picked = torch.tensor([[0, 1], [2, 3], [4, 5]])
    loss = (z.gather(1, picked) ** 2).sum()
    loss.backward()
    want = [p.grad.clone() for p in (sae.W_enc, sae.b_enc, sae.b_dec)]
    sae.zero_grad(set_to_none=True)
    with torch.no_grad():
        dz = torch.zeros(3, 6).scatter_(1, picked, 2 * z.gather(1, picked))
    encoder_backward_(sae, x, dz, [picked, picked[:, :1]])  # the second set repeats entries
    for p, w in zip((sae.W_enc, sae.b_enc, sae.b_dec), want, strict=True):
        torch.testing.assert_close(p.grad, w)
    assert not dz.any()  # consumed
