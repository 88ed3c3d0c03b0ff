"""The public SAE entry points (encode, encode_sparse, decode, forward) take any leading shape.

Every registered architecture, in eval mode after one training pass (BatchTopK has a
threshold then) and in training mode (a batch-level selection ranks over every token given):
[d], [B, d] and [B, T, d] inputs give exactly what the flattened [rows, d] call gives.
"""

from __future__ import annotations

import copy

import pytest
import torch

from pipeline.saes import REGISTRY
from pipeline.saes.base import SAE
from tests.saes.test_contract import D, N, make

pytestmark = pytest.mark.usefixtures("one_thread")

ARCHS = sorted(REGISTRY)
SHAPES = [(), (6,), (2, 5), (3, 1, 4)]
"""Leading shapes: one token, a batch, contexts × positions, and a 3-level one."""


def trained(arch: str) -> SAE:
    """``make(arch)`` after one training-mode forward (sets BatchTopK's thresholds), in eval mode."""
    sae = make(arch)
    g = torch.Generator().manual_seed(5)
    sae(torch.randn(64, D, generator=g), 0.05 * torch.randn(64, D, generator=g))
    return sae.eval()


def inputs(lead: tuple[int, ...], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*lead, D, generator=g), 0.05 * torch.randn(*lead, D, generator=g)


def grad_for(sae: SAE, g: torch.Tensor) -> torch.Tensor | None:
    return g if sae.uses_grad else None


@pytest.mark.parametrize("lead", SHAPES, ids=str)
@pytest.mark.parametrize("arch", ARCHS)
def test_every_entry_point_equals_the_flattened_call(arch: str, lead: tuple[int, ...]) -> None:
    sae = trained(arch)
    x, g = inputs(lead)
    g = grad_for(sae, g)
    flat_x, flat_g = x.reshape(-1, D), None if g is None else g.reshape(-1, D)
    ref = sae(flat_x, flat_g)

    out = sae(x, g)
    for name in out._fields:
        got, want = getattr(out, name), getattr(ref, name)
        assert got.shape == (*lead, want.shape[-1]), name
        assert torch.equal(got.reshape(want.shape), want), name
    assert out.x_hat.shape == x.shape and out.acts.shape == (*lead, N)

    codes = sae.encode(x, g)
    assert codes.shape == (*lead, N)
    assert torch.equal(codes.reshape(-1, N), ref.acts)
    indices, values = sae.encode_sparse(x, g)
    assert torch.equal(indices.reshape(ref.indices.shape), ref.indices)
    assert torch.equal(values.reshape(ref.values.shape), ref.values)
    decoded = sae.decode(codes)
    assert decoded.shape == x.shape
    assert torch.allclose(decoded.reshape(-1, D), ref.x_hat, atol=1e-5)
    assert (codes != 0).any()  # the comparison is not between two empty codes


@pytest.mark.parametrize("arch", ARCHS)
def test_training_mode_ranks_over_all_leading_dimensions(arch: str) -> None:
    """[B, T, d] in training mode is the [B·T, d] batch (BatchTopK's k·B·T selection, its θ update)."""
    a, b = make(arch), make(arch)
    x, g = inputs((4, 8), seed=3)
    g = grad_for(a, g)
    out = a(x, g)
    ref = b(x.reshape(-1, D), None if g is None else g.reshape(-1, D))
    assert torch.equal(out.acts.reshape(-1, N), ref.acts)
    for p, q in zip(a.buffers(), b.buffers(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("arch", [a for a in ARCHS if REGISTRY[a].uses_grad])
def test_a_gradient_aware_sae_reads_the_gradient_of_every_token(arch: str) -> None:
    sae = trained(arch)
    x, g = inputs((2, 5, 3))
    with_g = sae.encode(x, g)
    twin = sae.gradient_free_twin()
    assert twin is not None
    without = twin.encode(x)
    assert with_g.shape == without.shape == (2, 5, 3, N)
    assert not torch.equal(with_g, without)  # the gradient changed something (β = 0.7)
    # each token's code depends on its own gradient only
    g2 = g.clone()
    g2[1, 4, 2] *= 50
    changed = sae.encode(x, g2)
    same = torch.ones(2, 5, 3, dtype=torch.bool)
    same[1, 4, 2] = False
    assert torch.equal(changed[same], with_g[same])
    with pytest.raises(ValueError, match="gradient"):
        sae.encode(x)


@pytest.mark.parametrize("arch", ARCHS)
def test_shapes_that_do_not_fit_are_refused(arch: str) -> None:
    sae = trained(arch)
    x, g = inputs((2, 5))
    with pytest.raises(ValueError, match=rf"\[\.\.\., {D}\]"):
        sae.encode(x[..., :-1])
    with pytest.raises(ValueError, match="grad has shape"):
        sae(x, g[:, :4])
    with pytest.raises(ValueError, match="grad has shape"):
        sae.encode(x, g.reshape(10, D))


def test_the_row_path_is_the_one_the_trainer_uses() -> None:
    """A [B, d] forward is encode_pre → select → decode_sparse on the very tensors given (no copy)."""
    sae = trained("topk")
    x, _ = inputs((6,))
    z = sae.encode_pre(x)
    indices, values = sae.select(z, None)
    out = sae(x)
    assert torch.equal(out.pre, z) and torch.equal(out.indices, indices)
    assert torch.equal(out.x_hat, sae.decode_sparse(indices, values))
    twin = copy.deepcopy(sae)
    assert torch.equal(twin(x).x_hat, out.x_hat)
