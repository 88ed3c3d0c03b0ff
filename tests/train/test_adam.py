"""pipeline.train.adam.FusedAdam: bit-identical to torch.optim.Adam(fused=True), state dicts interchangeable."""

from __future__ import annotations

import pytest
import torch

from pipeline.train.adam import FusedAdam


def _params(seed: int) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(shape, generator=gen)) for shape in ((5, 3), (3,), (7,))]


def _grads(step: int, params: list[torch.nn.Parameter]) -> None:
    gen = torch.Generator().manual_seed(100 + step)
    for i, p in enumerate(params):
        p.grad = (
            None if (i == 2 and step == 1) else torch.randn(p.shape, generator=gen)
        )  # a step without one grad


def _run(opt_params: list[torch.nn.Parameter], opt: object, steps: range) -> None:
    for step in steps:
        _grads(step, opt_params)
        opt.param_groups[0]["lr"] = 1e-2 * (step + 1)  # type: ignore[attr-defined]
        opt.step()  # type: ignore[attr-defined]
        opt.zero_grad(set_to_none=True)  # type: ignore[attr-defined]


def test_updates_equal_torch_fused_adam_bit_for_bit() -> None:
    ours_p, torch_p = _params(0), _params(0)
    ours = FusedAdam(ours_p, lr=1e-2, betas=(0.9, 0.999), eps=6.25e-10)
    ref = torch.optim.Adam(torch_p, lr=1e-2, betas=(0.9, 0.999), eps=6.25e-10, fused=True)
    _run(ours_p, ours, range(6))
    _run(torch_p, ref, range(6))
    for a, b in zip(ours_p, torch_p, strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(ours_p[0], _params(0)[0])  # it did move


@pytest.mark.parametrize("direction", ["ours->torch", "torch->ours"])
def test_state_dicts_load_into_each_other(direction: str) -> None:
    first_p, second_p, ref_p = _params(1), _params(1), _params(1)
    make_ours = lambda ps: FusedAdam(ps, lr=1e-2, eps=1e-8)  # noqa: E731
    make_torch = lambda ps: torch.optim.Adam(ps, lr=1e-2, eps=1e-8, fused=True)  # noqa: E731
    first_cls, second_cls = (make_ours, make_torch) if direction == "ours->torch" else (make_torch, make_ours)
    first, ref = first_cls(first_p), make_torch(ref_p)
    _run(first_p, first, range(3))
    _run(ref_p, ref, range(3))
    with torch.no_grad():
        for a, b in zip(second_p, first_p, strict=True):
            a.copy_(b)
    second = second_cls(second_p)
    second.load_state_dict(first.state_dict())
    _run(second_p, second, range(3, 6))
    _run(ref_p, ref, range(3, 6))
    for a, b in zip(second_p, ref_p, strict=True):
        assert torch.equal(a, b)


def test_state_of_other_parameters_is_refused() -> None:
    opt = FusedAdam(_params(0), lr=1e-3)
    other = torch.optim.Adam(_params(0)[:2], lr=1e-3, fused=True).state_dict()
    with pytest.raises(ValueError, match="other parameters"):
        opt.load_state_dict(other)
    with pytest.raises(ValueError, match="no parameters"):
        FusedAdam([], lr=1e-3)
