"""The SAE base class shared by every architecture (DESIGN §1).

Shapes: ``B`` tokens, ``d`` = ``d_in`` (model width), ``n`` = ``d_sae`` latents, ``k`` active
(per token, or on average for batch-level selections: then ``m`` ≥ every token's count).

    z     = (x − b_dec) W_enc + b_enc                 # encode_pre, [B, n]
    S, a  = select(z, g)                              # architecture-specific, [B, m] each
    x̂     = a W_dec + b_dec                           # decode, [B, d]

The public entry points :meth:`SAE.encode`, :meth:`SAE.encode_sparse`, :meth:`SAE.decode` and
:meth:`SAE.forward` (``sae(x, grad)``) take any leading shape ``[..., d]`` (one token ``[d]``,
a batch ``[B, d]``, contexts ``[B, T, d]``...): the tokens are flattened into rows, encoded,
and the results given back in the input's leading shape (a batch-level selection in training
mode ranks over all of them). The pieces (``encode_pre``, ``select``, ``decode_sparse``) stay
``[B, d]`` row operations: the trainer calls them directly.

Parameters: ``W_enc`` [d, n], ``b_enc`` [n], ``W_dec`` [n, d] (rows = dictionary
directions), ``b_dec`` [d]. During training the rows of ``W_dec`` are kept at unit norm
(:meth:`SAE.normalize_decoder_`) and the component of their gradient parallel to each row is
removed before the optimizer step (:meth:`SAE.remove_parallel_grad_`).

``grad_scale`` is a plain float attribute (not a parameter): the gradient the architecture
sees is ``grad × grad_scale``. A trainer passes raw gradients and sets it to its own
normalisation; a loaded SAE carries the value from ``cfg.json``.
"""

from __future__ import annotations

import copy
from abc import abstractmethod
from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


class SAEOutput(NamedTuple):
    """Result of :meth:`SAE.forward`, in the input's leading shape (``[B]`` below, or any ``[...]``).

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
    plain = torch.zeros_like(pre, dtype=torch.bool).scatter_(
        1, torch.topk(pre, k, dim=-1, sorted=False).indices, True
    )
    return (~plain.gather(1, indices)).sum()


@dataclass(frozen=True)
class KHParams:
    """Hyper-parameters of a TopK-style architecture (every architecture registers its own
    frozen dataclass; field names double as ``train.grid`` keys, see :mod:`pipeline.train.sweep`)."""

    k: int
    """Active latents per token (for batch-level selection: on average)."""

    def __post_init__(self) -> None:
        if not isinstance(self.k, int) or isinstance(self.k, bool) or self.k < 1:
            raise ValueError(f"k must be a positive integer, got {self.k!r}")


class SAE(nn.Module):
    """Sparse autoencoder whose selection of active latents is supplied by subclasses.

    Subclasses are registered with :func:`pipeline.saes.register`, which sets
    ``architecture`` (the registry name), ``hparams_class`` (the architecture's frozen
    hyper-parameter dataclass, a :class:`KHParams`) and ``grid_hparams`` (its fields that
    ``train.grid`` varies besides ``k``). ``uses_grad`` says whether ``select`` reads the
    loss gradient. Hyper-parameters are read as attributes (``sae.k``, ``sae.hp.<field>``) and
    live, frozen, in ``sae.hp``; ``grad_scale`` is a plain attribute the trainer sets.
    """

    architecture: ClassVar[str] = ""
    hparams_class: ClassVar[type[KHParams]] = KHParams
    uses_grad: ClassVar[bool] = False
    ragged_rows: ClassVar[bool] = False
    """Whether :meth:`select` pads rows to the batch's largest count (batch-level selections):
    the CPU trainer then sums only the nonzero slots (:meth:`decode_sparse`, the sparse encoder gradient)."""
    grid_hparams: ClassVar[tuple[str, ...]] = ()

    def __init__(self, d_in: int, d_sae: int, *args: Any, grad_scale: float = 1.0, **hparams: Any) -> None:
        super().__init__()
        hp = self.hparams_class(*args, **hparams)
        self.check_width(hp, d_sae)
        self.hp = hp
        self.d_in, self.d_sae = d_in, d_sae
        self.grad_scale = float(grad_scale)
        self.W_enc = nn.Parameter(torch.empty(d_in, d_sae))
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.W_dec = nn.Parameter(torch.empty(d_sae, d_in))
        self.b_dec = nn.Parameter(torch.zeros(d_in))
        self.reset_parameters()

    @classmethod
    def from_hparams(cls, d_in: int, d_sae: int, hp: KHParams, *, grad_scale: float = 1.0) -> SAE:
        """Build from an instance of ``hparams_class``."""
        if not isinstance(hp, cls.hparams_class):
            raise TypeError(
                f"{cls.architecture} expects {cls.hparams_class.__name__}, got {type(hp).__name__}"
            )
        return cls(d_in, d_sae, grad_scale=grad_scale, **{f.name: getattr(hp, f.name) for f in fields(hp)})

    @classmethod
    def check_width(cls, hp: KHParams, d_sae: int) -> None:
        """``ValueError`` when hyper-parameters ``hp`` cannot be used at width ``d_sae`` (k > d_sae;
        architectures with more width-dependent settings extend this)."""
        if hp.k > d_sae:
            raise ValueError(f"k must be in [1, d_sae={d_sae}], got {hp.k}")

    def __getattr__(self, name: str) -> Any:
        # hyper-parameters read as attributes (sae.k); nn.Module's lookup first
        try:
            return super().__getattr__(name)
        except AttributeError:
            hp = self.__dict__.get("hp")
            if hp is not None and name in {f.name for f in fields(hp)}:
                return getattr(hp, name)
            raise

    def __setattr__(self, name: str, value: Any) -> None:
        hp = self.__dict__.get("hp")
        if hp is not None and name in {f.name for f in fields(hp)}:
            raise AttributeError(
                f"{name} is a frozen hyper-parameter of {self.architecture}: use with_hparams({name}=...)"
            )
        super().__setattr__(name, value)

    def with_hparams(self, **changes: Any) -> SAE:
        """A copy (same weights, buffers and ``grad_scale``) with some hyper-parameters replaced."""
        twin = copy.deepcopy(self)
        twin.hp = replace(self.hp, **changes)
        return twin

    def gradient_free_twin(self) -> SAE | None:
        """The same SAE selecting without the gradient (evaluated as ``<variant>@beta0``), or None
        when that is itself. A gradient-free architecture is its own twin; gradient-aware ones
        override this with their own hyper-parameters (:class:`pipeline.saes.gsae.GradientScoring`)."""
        return None

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

        Under ``torch.autocast`` (``train.autocast``) the product's inputs are rounded to 16
        bits, so x is centred first, in float32: the rounding is then relative to x − b_dec,
        not to the raw residual and its large mean (b_dec W_enc rounded apart from x W_enc),
        and z comes back in float32 with b_enc added there. On the default run's activations
        and a trained SAE this cuts z's bf16 error by ~30 % (rms 2.8e-3 vs 3.9e-3 of z's rms
        0.96; top-k selection 99.4 % vs 99.1 % the float32 one). Autograd (the dense path)
        then spends the third GEMM, in 16 bits; the CPU trainer's sparse gradient does not.
        """
        if torch.is_autocast_enabled(x.device.type):
            return (x - self.b_dec) @ self.W_enc + self.b_enc  # 16-bit product + float32 = float32
        return x @ self.W_enc + (self.b_enc - self.b_dec @ self.W_enc)

    def grad_factor(self, grad: torch.Tensor) -> torch.Tensor:
        """|W_dec g| per latent, detached: g [B, d] (raw; × grad_scale here) → [B, n] (bfloat16
        under ``torch.autocast``: the score s = z + β z f is float32 by type promotion)."""
        with torch.no_grad():
            return ((grad * self.grad_scale) @ self.W_dec.T).abs()

    @abstractmethod
    def select(self, z: torch.Tensor, grad: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Choose the active latents: z [B, n], grad [B, d] | None → (indices [B, m], values [B, m]).

        m = k for per-token selections; batch-level ones pad rows to the batch's largest
        count with distinct unselected latents of value 0.
        """

    def value_slope(self, z_sel: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """∂values/∂z at the selected entries (the CPU trainer's sparse gradient, see
        :mod:`pipeline.saes.sparse_grad`): z_sel [B, m] (z at ``select``'s indices), values [B, m]
        → [B, m].

        Every registered architecture's value is c · ReLU(z_i) with c > 0 a detached factor
        (1, or 1 + β|W_dec g|_i for augmented g-SAE values) or a constant 0 (padding), so the
        slope is values / z_i where the value is positive and 0 elsewhere. An architecture whose
        values take another form overrides this (tests/saes/test_sparse_grad.py checks each one
        against autograd).
        """
        positive = values > 0
        return torch.where(positive, values / torch.where(positive, z_sel, 1.0), 0.0)

    def selection_changes(
        self, z: torch.Tensor, indices: torch.Tensor, values: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(changed, selected) counts: selections outside what the same SAE selects at β = 0.

        ``changed / selected`` is ``selection_shift``. Per-token top-k: the plain top-k of z
        is the reference and every one of the k slots counts as selected.
        """
        return changed_selections(z, indices), torch.tensor(indices.numel(), device=indices.device)

    def selection_shift(self, z: torch.Tensor, indices: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """``selection_shift`` of one batch as a float64 scalar tensor (changed / selected)."""
        changed, selected = self.selection_changes(z, indices, values)
        return changed.double() / selected

    def inference_state(self, act_scale: float = 1.0) -> dict[str, Any]:
        """Statistics learned for inference (beyond the weights), in raw-activation units,
        written to cfg.json; the inverse is :meth:`load_inference_state`. None here."""
        return {}

    def load_inference_state(self, cfg: dict[str, Any]) -> None:
        """Restore :meth:`inference_state` from a cfg.json mapping (ValueError when unusable)."""

    def decode(self, acts: torch.Tensor) -> torch.Tensor:
        """x̂ = a W_dec + b_dec: dense code [..., n] (any leading shape, as :meth:`encode` gives it) → [..., d]."""
        return acts @ self.W_dec + self.b_dec

    def decode_sparse(self, indices: torch.Tensor, values: torch.Tensor, bias: bool = True) -> torch.Tensor:
        """Σ_j values[:, j] · W_dec[indices[:, j]] (+ b_dec): [B, k], [B, k] → [B, d].

        Same result as :meth:`decode` on the scattered code, at O(B·k·d) instead of
        O(B·n·d) (an ``embedding_bag``; its backward is an index-add into ``W_dec``).

        Batch-level selections (:attr:`ragged_rows`) on the CPU sum only the nonzero slots, as
        ragged bags, when at least a quarter of the slots hold 0 (padding, a Matryoshka prefix's
        masked groups): a BatchTopK batch can pad every row to one outlier token's count (2,219
        slots where the mean is 32, at SmolLM2's position-1 activation sinks), and its decode and
        backward then cost B·max_count·d. A zero slot adds an exact 0 to its row, so the output is
        the same bit for bit; ``W_dec``'s gradient is summed in another order (float rounding),
        and the gradient of a zero slot's value is 0 rather than g·W_dec[i] (unused: a zero
        value has a zero slope, :meth:`value_slope`). On CUDA the padded form stays
        (compacting needs a host sync).
        """
        if self.ragged_rows and values.device.type == "cpu" and values.numel() > 0:
            live = values != 0
            n_live = int(live.sum())
            if 4 * n_live <= 3 * values.numel():
                counts = live.sum(dim=1)
                offsets = torch.cumsum(counts, 0) - counts
                out = F.embedding_bag(
                    indices[live], self.W_dec, offsets, per_sample_weights=values[live], mode="sum"
                )
                return out + self.b_dec if bias else out
        out = F.embedding_bag(indices, self.W_dec, per_sample_weights=values, mode="sum")
        return out + self.b_dec if bias else out

    def nested_decodes(self, indices: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The reconstructions whose losses training sums: indices, values [B, m] → a tuple of
        [B, d], the last one x̂ itself (:meth:`decode_sparse`). A flat dictionary gives ``(x̂,)``;
        a nested one (:mod:`pipeline.saes.matryoshka`) gives every prefix's reconstruction first."""
        return (self.decode_sparse(indices, values),)

    def _rows(
        self, x: torch.Tensor, grad: torch.Tensor | None
    ) -> tuple[torch.Size, torch.Tensor, torch.Tensor | None]:
        """(leading shape, x as rows [B, d], grad as rows or None) of public inputs [..., d]."""
        if x.dim() == 0 or x.shape[-1] != self.d_in:
            raise ValueError(f"expected activations of shape [..., {self.d_in}], got {list(x.shape)}")
        if grad is not None and grad.shape != x.shape:
            raise ValueError(f"grad has shape {list(grad.shape)}, expected the activations' {list(x.shape)}")
        if x.dim() == 2:
            return x.shape[:1], x, grad
        lead = x.shape[:-1]
        return lead, x.reshape(-1, self.d_in), None if grad is None else grad.reshape(-1, self.d_in)

    def encode_sparse(
        self, x: torch.Tensor, grad: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The selected latents of raw activations x [..., d] (raw gradients ``grad`` of the same
        shape for a gradient-aware SAE) → (indices [..., m], values [..., m]).

        m = k for per-token selections; a batch-level one pads every token to the largest count
        with unselected latents of value 0. ``ValueError`` when the SAE needs ``grad`` and has none.
        """
        lead, xr, gr = self._rows(x, grad)
        indices, values = self.select(self.encode_pre(xr), gr)
        m = indices.shape[-1]
        return indices.reshape(*lead, m), values.reshape(*lead, m)

    def encode(self, x: torch.Tensor, grad: torch.Tensor | None = None) -> torch.Tensor:
        """Dense code a [..., n] (zeros outside the selected latents) of raw activations x [..., d],
        as SAELens's ``SAE.encode`` gives it; a gradient-aware SAE selects with the raw loss
        gradients ``grad`` [..., d] (``ValueError`` without them, unless β = 0)."""
        lead, xr, gr = self._rows(x, grad)
        z = self.encode_pre(xr)
        indices, values = self.select(z, gr)
        return torch.zeros_like(z).scatter(1, indices, values).reshape(*lead, self.d_sae)

    def forward(self, x: torch.Tensor, grad: torch.Tensor | None = None) -> SAEOutput:
        """Encode, select, decode: x [..., d], grad [..., d] (raw gradients) → :class:`SAEOutput`
        with every field in x's leading shape.

        A ``select`` that needs the gradient raises ``ValueError`` when ``grad`` is None.
        """
        lead, x, grad = self._rows(x, grad)
        z = self.encode_pre(x)
        indices, values = self.select(z, grad)
        acts = torch.zeros_like(z).scatter(1, indices, values)
        out = SAEOutput(self.decode_sparse(indices, values), acts, indices, values, z)
        if len(lead) == 1:
            return out
        return SAEOutput(*(t.reshape(*lead, t.shape[-1]) for t in out))

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
        """What ``cfg.json`` records to rebuild the module: architecture, shapes, the
        architecture's hyper-parameters and ``grad_scale``."""
        return {
            "architecture": self.architecture,
            "d_in": self.d_in,
            "d_sae": self.d_sae,
            **{f.name: getattr(self.hp, f.name) for f in fields(self.hp)},
            "grad_scale": self.grad_scale,
        }

    def extra_repr(self) -> str:
        hp = ", ".join(f"{f.name}={getattr(self.hp, f.name)}" for f in fields(self.hp))
        return f"d_in={self.d_in}, d_sae={self.d_sae}, {hp}"
