"""The CPU trainer's sparse encoder gradients equal autograd's dense ones, for every architecture.

A trainer with ``sparse_encoder_grad`` (the CPU default) and one with autograd's dense
backward start from the same weights and see the same batches with AuxK active and dead
latents present; after each step their gradients and weights must agree to float rounding.
An architecture whose loss reached z outside the indices it reports would fail here.
"""

from __future__ import annotations

import pytest
import torch

from pipeline.core.config import GridConfig, TrainConfig
from pipeline.saes import REGISTRY
from pipeline.saes.sparse_grad import encoder_backward_
from pipeline.saes.topk import TopKSAE
from pipeline.train.sweep import expand_grid
from pipeline.train.trainer import Trainer


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


def test_entries_in_two_index_sets_add_up() -> None:
    sae = TopKSAE(4, 6, k=2)
    x = torch.randn(3, 4)
    z = sae.encode_pre(x)
    picked, again = torch.tensor([[0, 1], [2, 3], [4, 5]]), torch.tensor([[0], [3], [5]])
    loss = (z.gather(1, picked) ** 2).sum() + 3 * z.gather(1, again).sum()  # the second set repeats entries
    loss.backward()
    want = [p.grad.clone() for p in (sae.W_enc, sae.b_enc, sae.b_dec)]
    sae.zero_grad(set_to_none=True)
    with torch.no_grad():
        parts = [(picked, 2 * z.gather(1, picked)), (again, torch.full((3, 1), 3.0))]
    encoder_backward_(sae, x, parts)
    for p, w in zip((sae.W_enc, sae.b_enc, sae.b_dec), want, strict=True):
        torch.testing.assert_close(p.grad, w)


@pytest.mark.parametrize("arch", sorted(REGISTRY))
def test_value_slope_is_the_derivative_of_the_values(arch: str) -> None:
    """∂values/∂z at the selected entries, from autograd through ``select``, equals ``value_slope``."""
    cls = REGISTRY[arch]
    hp = {"beta": 2.0, "value_mode": "augmented"} if cls.uses_grad else {}
    sae = cls(8, 32, k=4, grad_scale=2.0, **hp).train()
    gen = torch.Generator().manual_seed(3)
    x, g = torch.randn(16, 8, generator=gen), torch.randn(16, 8, generator=gen)
    z = sae.encode_pre(x).detach().requires_grad_(True)
    indices, values = sae.select(z, g if cls.uses_grad else None)
    (dz,) = torch.autograd.grad(values.sum(), z)
    slope = sae.value_slope(z.detach().gather(1, indices), values.detach())
    torch.testing.assert_close(slope, dz.gather(1, indices), rtol=1e-6, atol=0.0)
    assert (values > 0).any() and (slope[values > 0] > 0).all()
