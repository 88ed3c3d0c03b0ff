"""SAELens 6 plug-in: the ``gsae`` architecture, so g-SAE folders load as g-SAEs.

    import pipeline.saes.saelens_plugin          # registers "gsae" in sae_lens.registry
    from sae_lens import SAE
    sae = SAE.load_from_disk("data/saes/gsae-k32-b1-x8-aug-s0")   # a GSAELensSAE
    acts = sae.encode(x, grad)                   # x, grad: raw activations / loss gradients

Without the import SAELens refuses the folder (``KeyError: 'gsae'``): cfg.json carries
``sae_lens_version``, so SAELens never rewrites the architecture to ``topk``.

The encode is DESIGN §1 with the folder's ``beta``, ``value_mode`` and ``grad_scale``
(g = raw gradient × grad_scale):

    z = (x − b_dec) W_enc + b_enc;  s = z + β z ∘ |W_dec g|;  S = top-k of s
    a_i = ReLU(s_i) (augmented) or ReLU(z_i) (selection) on S, 0 elsewhere

computed with the same float operations as :mod:`pipeline.saes.gsae`, so the selected
latents equal the project's bit for bit. It needs the gradient: ``encode(x)`` or
``forward(x)`` without one raises (a g-SAE never silently runs as TopK), except at β = 0.
Decoding is SAELens's usual a W_dec + b_dec. Importing this module imports ``sae_lens``
(not a runtime dependency of the pipeline: ``pip install sae-lens``).

Which model the SAE belongs to: ``sae.cfg.metadata.model_name`` is the hub id to load next to
it (``HuggingFaceTB/SmolLM2-135M-Instruct`` for the default run's alias ``smollm2-135m``), and
``sae.cfg.metadata.model_weights`` / ``model_weights_sha256`` name the exact weights it was fit
on (the default run: ``SmolLM2-135M-Instruct GGUF Q4_1 (...), dequantized to float32``, not the
hub's float weights). SAELens keeps those metadata keys but checks nothing: a SAELens user who
pairs the SAE with ``HookedTransformer.from_pretrained(model_name)`` gets the hub's weights and
no warning, so compare ``model_weights`` yourself. Inside this project ``gsae evaluate`` and
``gsae inspect`` warn when the loaded model's revision or weights digest differs from the
recorded one (:func:`pipeline.lm.models.warn_if_other_weights`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from sae_lens.registry import SAE_CLASS_REGISTRY, register_sae_class
from sae_lens.saes.sae import SAE, SAEConfig
from torch import nn

from pipeline.saes.gsae import VALUE_MODES

ARCHITECTURE = "gsae"


@dataclass
class GSAELensConfig(SAEConfig):
    """SAELens config of a g-SAE: SAEConfig's fields plus k, β, value_mode and grad_scale."""

    k: int = 32
    beta: float = 0.0
    value_mode: str = "augmented"
    grad_scale: float = 1.0

    @classmethod
    def architecture(cls) -> str:
        return ARCHITECTURE

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.value_mode not in VALUE_MODES:
            raise ValueError(f"value_mode must be one of {VALUE_MODES}, got {self.value_mode!r}")
        if self.beta < 0:
            raise ValueError(f"beta must be >= 0, got {self.beta}")


class GSAELensSAE(SAE[GSAELensConfig]):
    """Inference-only g-SAE for SAELens: ``encode(x, grad)``, ``decode(acts)``, ``forward(x, grad)``."""

    b_enc: nn.Parameter

    def initialize_weights(self) -> None:
        super().initialize_weights()
        self.b_enc = nn.Parameter(torch.zeros(self.cfg.d_sae, dtype=self.dtype, device=self.device))

    def encode_pre(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-activations z [..., n] of raw activations x [..., d] (as pipeline.saes.base computes them)."""
        sae_in = self.hook_sae_input(self.reshape_fn_in(x.to(self.dtype)))
        sae_in = self.run_time_activation_norm_fn_in(sae_in)
        bias = self.b_enc - self.b_dec @ self.W_enc if self.cfg.apply_b_dec_to_input else self.b_enc
        return self.hook_sae_acts_pre(sae_in @ self.W_enc + bias)

    def scores(self, z: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor:
        """Selection scores s = z + β z ∘ |W_dec (grad × grad_scale)|; z itself at β = 0."""
        if self.cfg.beta == 0.0:
            return z
        if grad is None:
            raise ValueError(
                "this g-SAE selects latents with the loss gradient: call encode(x, grad) / forward(x, grad)"
            )
        g = grad.to(self.dtype).reshape(*z.shape[:-1], -1)
        with torch.no_grad():
            factor = ((g * self.cfg.grad_scale) @ self.W_dec.T).abs()
        return z + self.cfg.beta * z * factor

    def select(self, x: torch.Tensor, grad: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Selected latents of raw x, grad [..., d] → (indices [..., k], values [..., k])."""
        z = self.encode_pre(x)
        top = torch.topk(self.scores(z, grad), self.cfg.k, dim=-1, sorted=False)
        if self.cfg.value_mode == "augmented":
            return top.indices, torch.relu(top.values)
        return top.indices, torch.relu(z.gather(-1, top.indices))

    def encode(self, x: torch.Tensor, grad: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        """Dense code [..., n] of raw activations x and raw loss gradients grad [..., d]."""
        indices, values = self.select(x, grad)
        acts = torch.zeros(*indices.shape[:-1], self.cfg.d_sae, dtype=values.dtype, device=values.device)
        return self.hook_sae_acts_post(acts.scatter(-1, indices, values))

    def decode(self, feature_acts: torch.Tensor) -> torch.Tensor:
        """x̂ = a W_dec + b_dec [..., d]."""
        out = self.hook_sae_recons(feature_acts @ self.W_dec + self.b_dec)
        out = self.run_time_activation_norm_fn_out(out)
        return self.reshape_fn_out(out, self.d_head)

    def forward(self, x: torch.Tensor, grad: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        """Reconstruction of x (needs ``grad`` unless β = 0)."""
        return self.hook_sae_output(self.decode(self.encode(x, grad)))


def register() -> None:
    """Register ``gsae`` in SAELens's registry (idempotent; refuses a foreign class under that name)."""
    current: Any = SAE_CLASS_REGISTRY.get(ARCHITECTURE)
    if current is None:
        register_sae_class(ARCHITECTURE, GSAELensSAE, GSAELensConfig)
    elif (current[0].__module__, current[0].__qualname__) != (__name__, GSAELensSAE.__qualname__):
        raise ValueError(f"SAELens already has another class registered as {ARCHITECTURE!r}: {current[0]!r}")


register()

__all__ = ["ARCHITECTURE", "GSAELensConfig", "GSAELensSAE", "register"]
