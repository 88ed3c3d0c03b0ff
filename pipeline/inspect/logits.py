"""The tokens a decoder direction promotes and suppresses through the LM's unembedding.

For decoder row d_i the direct logit effect is

    effect_i = W_U (γ ∘ C d_i)          # [vocab]

with W_U the output embedding, γ the final norm's scale and C the norm's centring (the
identity for RMSNorm, "subtract the mean" for LayerNorm). The norm's division by the
token's RMS is left out: it is one positive number per token, the same for every vocabulary
entry, so it rescales the effects but never reorders them; its bias (LayerNorm) is the same
for every latent and left out too. This is the *direct* path only: a direction written at
block ℓ also passes through the blocks after ℓ, which this view ignores (as the field's
dashboards do).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.core.errors import ConfigError
from pipeline.lm.models import LoadedModel

FINAL_NORM_NAMES = ("norm", "ln_f", "final_layer_norm", "final_norm", "norm_f")
"""Attribute names of the final norm on the common Hugging Face base models."""

LOGIT_NOTE = (
    "direct logit effect W_U (γ ∘ C d_i): the final norm's scale γ folded in (C centres for a "
    "LayerNorm, identity for RMSNorm); its per-token 1/RMS factor is left out (same for every "
    "vocabulary entry: rescales, never reorders); blocks after the hook are ignored"
)


@dataclass(frozen=True)
class Unembedding:
    """What the direct logit effect of a residual direction needs."""

    W_U: torch.Tensor
    """[vocab, d] output embedding."""
    scale: torch.Tensor
    """[d] the final norm's effective scale γ (ones when the model has no norm found)."""
    center: bool
    """Whether the final norm subtracts the mean (LayerNorm)."""


def final_norm(model: nn.Module) -> nn.Module | None:
    """The norm applied to the residual stream before the unembedding, when found by name."""
    base = getattr(model, "base_model", model)
    for name in FINAL_NORM_NAMES:
        module = getattr(base, name, None)
        if isinstance(module, nn.Module):
            return module
    return None


def unembedding(lm: LoadedModel) -> Unembedding:
    """The LM's output embedding and final norm, as float32 tensors on the CPU."""
    get_out: Any = lm.model.get_output_embeddings  # a PreTrainedModel method (nn.Module's typing hides it)
    out = get_out()
    weight = getattr(out, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.shape[-1] != lm.d_model:
        raise ConfigError(f"{lm.name}: no output embedding of width {lm.d_model} found")
    norm = final_norm(lm.model)
    gamma = getattr(norm, "weight", None)
    if isinstance(gamma, torch.Tensor) and gamma.shape == (lm.d_model,):
        scale = gamma.detach().float().cpu()
        if "gemma" in type(norm).__name__.lower():  # Gemma's RMSNorm multiplies by (1 + weight)
            scale = scale + 1.0
    else:
        scale = torch.ones(lm.d_model)
    center = norm is not None and "layernorm" in type(norm).__name__.lower().replace("_", "")
    center = center and "rms" not in type(norm).__name__.lower()
    return Unembedding(weight.detach().float().cpu(), scale, center)


@torch.no_grad()
def logit_effects(
    W_dec: torch.Tensor, unembed: Unembedding, n_tokens: int, chunk: int = 256
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Top promoted and suppressed tokens per latent: W_dec [n, d] →
    (up_ids [n, m], up_values [n, m], down_ids [n, m], down_values [n, m]), m = ``n_tokens``;
    ``down_values`` are the most negative effects, most negative first."""
    m = min(n_tokens, unembed.W_U.shape[0])
    parts: list[tuple[torch.Tensor, ...]] = []
    for lo in range(0, W_dec.shape[0], chunk):
        d = W_dec[lo : lo + chunk].detach().float().cpu()
        if unembed.center:
            d = d - d.mean(dim=1, keepdim=True)
        effect = (d * unembed.scale) @ unembed.W_U.T  # [chunk, vocab]
        up = torch.topk(effect, m, dim=1)
        down = torch.topk(effect, m, dim=1, largest=False)
        parts.append((up.indices, up.values, down.indices, down.values))
    return tuple(torch.cat([p[j] for p in parts]).numpy() for j in range(4))  # type: ignore[return-value]
