"""The trainer's Adam: torch's fused Adam kernel without ``torch.optim``'s first-call cost.

Every public method of ``torch.optim.Optimizer`` is wrapped so that its first call imports
``torch._dynamo`` (to exclude the optimizer from compilation). On 2 CPU cores that import
takes ~2 s, a fixed cost of every ``gsae train`` process (profiled with ``python -m cProfile
$(which gsae) train ...``: 2.07 s of a 29.7 s run of the 8-variant peers sweep). This class
runs the same kernel, ``torch._fused_adam_``, on the same state as
``torch.optim.Adam(params, fused=True)`` — no weight decay, no AMSGrad — so its updates are
bit-identical to it (tests/train/test_adam.py), and its ``state_dict`` has torch's layout, so a
checkpoint written by either loads into the other.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

# what torch.optim.Adam(fused=True) with these settings records in each param group
_TORCH_GROUP_FLAGS: dict[str, Any] = {
    "weight_decay": 0.0,
    "amsgrad": False,
    "maximize": False,
    "foreach": None,
    "capturable": False,
    "differentiable": False,
    "fused": True,
    "decoupled_weight_decay": False,
}


class FusedAdam:
    """Adam over one parameter group with torch's fused kernel (CPU and CUDA).

    ``param_groups[0]["lr"]`` may be changed between steps (the trainer's schedule does).
    """

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.params = list(params)
        if not self.params:
            raise ValueError("FusedAdam got no parameters")
        self.param_groups: list[dict[str, Any]] = [
            {"lr": float(lr), "betas": tuple(betas), "eps": float(eps)}
        ]
        self.state: list[dict[str, torch.Tensor]] = [{} for _ in self.params]

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop (or zero) every parameter's gradient."""
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    def _state_of(self, i: int, p: torch.Tensor) -> dict[str, torch.Tensor]:
        state = self.state[i]
        if not state:  # as torch's fused Adam: a float32 step tensor on the parameter's device
            state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state

    @torch.no_grad()
    def step(self) -> None:
        """One Adam update of every parameter that has a gradient."""
        group = self.param_groups[0]
        live = [(i, p) for i, p in enumerate(self.params) if p.grad is not None]
        if not live:
            return
        grads = [p.grad for _, p in live if p.grad is not None]
        states = [self._state_of(i, p) for i, p in live]
        steps = [s["step"] for s in states]
        torch._foreach_add_(steps, 1)
        beta1, beta2 = group["betas"]
        torch._fused_adam_(
            [p for _, p in live],
            grads,
            [s["exp_avg"] for s in states],
            [s["exp_avg_sq"] for s in states],
            [],
            steps,
            amsgrad=False,
            lr=float(group["lr"]),
            beta1=float(beta1),
            beta2=float(beta2),
            weight_decay=0.0,
            eps=float(group["eps"]),
            maximize=False,
            grad_scale=None,
            found_inf=None,
        )

    def state_dict(self) -> dict[str, Any]:
        """torch.optim's layout: ``state`` by parameter index, one group listing the indices."""
        group = {**self.param_groups[0], **_TORCH_GROUP_FLAGS, "params": list(range(len(self.params)))}
        state = {i: {k: v.clone() for k, v in s.items()} for i, s in enumerate(self.state) if s}
        return {"state": state, "param_groups": [group]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output (or a ``torch.optim.Adam`` one of the same parameters)."""
        groups = state_dict["param_groups"]
        if len(groups) != 1 or list(groups[0]["params"]) != list(range(len(self.params))):
            raise ValueError("optimizer state is for other parameters")
        group = groups[0]
        unlike = [k for k, v in _TORCH_GROUP_FLAGS.items() if k in group and k != "foreach" and group[k] != v]
        if unlike:
            raise ValueError(f"optimizer state has settings this Adam does not run: {', '.join(unlike)}")
        self.param_groups[0].update(
            lr=float(group["lr"]), betas=tuple(group["betas"]), eps=float(group["eps"])
        )
        self.state = [{} for _ in self.params]
        for key, s in state_dict["state"].items():
            p = self.params[int(key)]
            self.state[int(key)] = {
                "step": s["step"].to(device=p.device, dtype=torch.float32),
                "exp_avg": s["exp_avg"].to(p.device, p.dtype),
                "exp_avg_sq": s["exp_avg_sq"].to(p.device, p.dtype),
            }
