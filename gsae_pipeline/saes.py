"""Loading a trained SAE: a folder written by ``gsae train`` or a SAELens 6 folder of an
architecture this project implements.

The returned module is the project's own :class:`~pipeline.saes.base.SAE` (``topk``, ``gsae``,
``batchtopk``, ``gbatchtopk``, ...), acting on raw activations and raw loss gradients:

- ``sae.encode(x, grad=None)`` → dense code [..., n] (SAELens's ``encode``),
- ``sae.encode_sparse(x, grad=None)`` → (indices, values) [..., m],
- ``sae.decode(acts)`` → reconstruction [..., d],
- ``sae(x, grad=None)`` → :class:`~pipeline.saes.base.SAEOutput` (``x_hat``, ``acts``,
  ``indices``, ``values``, ``pre``),

for any leading shape ``[..., d]``. A gradient-aware SAE (``sae.uses_grad``) needs ``grad``
of the activations' shape (``ValueError`` without it, unless β = 0);
``sae.gradient_free_twin()`` is the same weights selecting without it (``@beta0``).
"""

from __future__ import annotations

from pathlib import Path

import torch

from pipeline.saes.base import SAE
from pipeline.saes.io import load_sae as _load_sae


def load_sae(path: str | Path, device: str | torch.device = "cpu") -> SAE:
    """The SAE in folder ``path`` (``sae_weights.safetensors`` + ``cfg.json``), in eval mode on ``device``.

    Reads our folders (any registered architecture, also the older ``sae.safetensors``
    layout) and SAELens 6 folders whose ``architecture`` is one of ours (SAELens's ``topk``);
    other SAELens architectures (``standard``, ``jumprelu``, ...) are refused with
    ``SAEFormatError`` (load those with ``sae_lens.SAE.load_from_disk``). The folder's
    ``cfg.json`` is kept as ``sae.cfg`` (a dict: ``hook_name``, ``model``, ``k``...).
    """
    sae, cfg = _load_sae(path, device=device)
    sae.cfg = cfg
    return sae
