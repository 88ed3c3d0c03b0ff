"""The SAE base class shared by every architecture (DESIGN §1).

Shapes: ``B`` tokens, ``d`` = ``d_in`` (model width), ``n`` = ``d_sae`` latents, ``k`` active.

    z     = (x − b_dec) W_enc + b_enc                 # encode_pre, [B, n]
    S, a  = select(z, g)                              # architecture-specific, [B, k] each
    x̂     = a W_dec + b_dec                           # decode, [B, d]

Parameters: ``W_enc`` [d, n], ``b_enc`` [n], ``W_dec`` [n, d] (rows = dictionary
directions), ``b_dec`` [d]. During training the rows of ``W_dec`` are kept at unit norm
(:meth:`SAE.normalize_decoder_`) and the component of their gradient parallel to each row is
removed before the optimizer step (:meth:`SAE.remove_parallel_grad_`).

``grad_scale`` is a plain float attribute (not a parameter): the gradient the architecture
sees is ``grad × grad_scale``. A trainer passes raw gradients and sets it to its own
normalisation; a loaded SAE carries the value from ``cfg.json``.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


class SAEOutput(NamedTuple):
    """Result of :meth:`SAE.forward`.

    x_hat   [B, d]  reconstruction
    acts    [B, n]  dense code (zeros outside the selected latents)
    indices [B, k]  selected latents
    values  [B, k]  the code at ``indices`` (what the decoder receives)
    pre     [B, n]  pre-activations z
    """

    x_hat: torch.Tensor
    acts: torch.Tensor
    indices: torch.Tensor
    values: torch.Tensor
    pre: torch.Tensor


def changed_selections(pre: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """How many of the selected latents are outside the plain top-k of the pre-activations.

    pre [B, n] (z), indices [B, k] (the architecture's selection) → scalar int64 count.
    Divided by ``indices.numel()`` this is ``selection_shift``: 0 when the gradient changed
    no selection, 1 when it changed all of them.
    """
    k = indices.shape[-1]
    plain = torch.zeros_like(pre, dtype=torch.bool).scatter_(1, torch.topk(pre, k, dim=-1, sorted=False).indices, True)
    return (~plain.gather(1, indices)).sum()


class SAE(nn.Module):
    """Sparse autoencoder with a TopK-style selection supplied by subclasses.

    Subclasses set ``architecture`` (the registry name), ``uses_grad`` (whether ``select``
    needs the loss gradient) and ``grid_hparams`` (which of ``beta`` / ``value_mode`` the
    architecture reads; the sweep fixes the others to their defaults and dedupes).
    """

    architecture: ClassVar[str] = ""
    uses_grad: ClassVar[bool] = False
    grid_hparams: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        k: int,
        *,
        beta: float = 0.0,
        value_mode: str = "selection",
        grad_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if not 0 < k <= d_sae:
            raise ValueError(f"k must be in [1, d_sae={d_sae}], got {k}")
        self.d_in, self.d_sae, self.k = d_in, d_sae, k
        self.beta = float(beta)
        self.value_mode = value_mode
        self.grad_scale = float(grad_scale)
        self.W_enc = nn.Parameter(torch.empty(d_in, d_sae))
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.W_dec = nn.Parameter(torch.empty(d_sae, d_in))
        self.b_dec = nn.Parameter(torch.zeros(d_in))
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Random unit-norm decoder rows, encoder tied to the decoder's transpose, zero biases."""
        with torch.no_grad():
            w = torch.randn(self.d_sae, self.d_in, generator=generator)
            self.W_dec.copy_(w / w.norm(dim=1, keepdim=True))
            self.W_enc.copy_(self.W_dec.T)
            self.b_enc.zero_()
            self.b_dec.zero_()

    # ------------------------------------------------------------------ forward pieces

    def encode_pre(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-activations z = (x − b_dec) W_enc + b_enc: [B, d] → [B, n].

        Computed as x W_enc + (b_enc − b_dec W_enc) (equal up to float rounding): the
        gradient to b_dec is then a vector–matrix product instead of a third
        [B, n] × [n, d] GEMM in the backward pass (~1/3 of the matmul time in training).
        """
        return x @ self.W_enc + (self.b_enc - self.b_dec @ self.W_enc)

    def grad_factor(self, grad: torch.Tensor) -> torch.Tensor:
        """|W_dec g| per latent, detached: g [B, d] (raw; × grad_scale here) → [B, n]."""
        with torch.no_grad():
            return ((grad * self.grad_scale) @ self.W_dec.T).abs()

    @abstractmethod
    def select(self, z: torch.Tensor, grad: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Choose the active latents: z [B, n], grad [B, d] | None → (indices [B, k], values [B, k])."""

    def decode(self, acts: torch.Tensor) -> torch.Tensor:
        """x̂ = a W_dec + b_dec: dense code [B, n] → [B, d]."""
        return acts @ self.W_dec + self.b_dec

    def decode_sparse(self, indices: torch.Tensor, values: torch.Tensor, bias: bool = True) -> torch.Tensor:
        """Σ_j values[:, j] · W_dec[indices[:, j]] (+ b_dec): [B, k], [B, k] → [B, d].

        Same result as :meth:`decode` on the scattered code, at O(B·k·d) instead of
        O(B·n·d) (an ``embedding_bag``; its backward is an index-add into ``W_dec``).
        """
        out = F.embedding_bag(indices, self.W_dec, per_sample_weights=values, mode="sum")
        return out + self.b_dec if bias else out

    def forward(self, x: torch.Tensor, grad: torch.Tensor | None = None) -> SAEOutput:
        """Encode, select, decode: x [B, d], grad [B, d] (raw gradients) → :class:`SAEOutput`."""
        if self.uses_grad and grad is None and self.beta != 0.0:
            raise ValueError(f"{self.architecture} SAE needs the loss gradient (grad=None given)")
        z = self.encode_pre(x)
        indices, values = self.select(z, grad)
        acts = torch.zeros_like(z).scatter(1, indices, values)
        return SAEOutput(self.decode_sparse(indices, values), acts, indices, values, z)

    # ------------------------------------------------------------------ decoder norm

    @torch.no_grad()
    def normalize_decoder_(self) -> None:
        """Rescale every decoder row to unit L2 norm (in place)."""
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12))

    @torch.no_grad()
    def remove_parallel_grad_(self) -> None:
        """Remove from ``W_dec.grad`` the component parallel to each (unit) decoder row."""
        if self.W_dec.grad is None:
            return
        w = self.W_dec / self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)
        parallel = (self.W_dec.grad * w).sum(dim=1, keepdim=True)
        self.W_dec.grad.sub_(parallel * w)

    def hparams(self) -> dict[str, object]:
        """Constructor arguments (what ``cfg.json`` records to rebuild the module)."""
        return {
            "architecture": self.architecture,
            "d_in": self.d_in,
            "d_sae": self.d_sae,
            "k": self.k,
            "beta": self.beta,
            "value_mode": self.value_mode,
            "grad_scale": self.grad_scale,
        }

    def extra_repr(self) -> str:
        return f"d_in={self.d_in}, d_sae={self.d_sae}, k={self.k}, beta={self.beta}, value_mode={self.value_mode}"
