"""Mixed precision of the SAE trainer: ``train.autocast`` (``none`` | ``bfloat16``).

``bfloat16`` runs the encoder's dense products under ``torch.autocast`` on the training
device: (x − b_dec) W_enc (:meth:`~pipeline.saes.base.SAE.encode_pre`, which centres x in
float32 first) and the g-SAE's |W_dec g| (:meth:`~pipeline.saes.base.SAE.grad_factor`), the
two [B, d] × [d, n] GEMMs of a step (on the dense autograd path their backward too). Both
return float32 at once, and the rest of the step stays float32 on purpose:

- the top-k choice (and AuxK's) ranks float32 z. A bf16 z has 256 steps per octave, so near
  the k-th value ties would be common and broken by position; as it is, only z's rounding
  moves the choice (on the default run's data and a trained SAE, 0.6 % of the selections
  differ from float32's: swaps between near-equal latents);
- the values the decoder receives keep z's bf16 rounding (median relative error 1.5e-3 at
  the selected latents): noise of order (1.5e-3)² in FVU, so they are not recomputed in
  float32 (that would gather [B, k, d] encoder columns per step, 75 MB at the default shape);
- the decoder (an embedding bag of k rows: 1/144 of the encoder's multiply-adds at x8, k32),
  the FVU loss and its sums over B·d terms (bf16 keeps ~3 significant digits of a sum), the
  sparse encoder gradient, the master weights, Adam's moments and the decoder
  renormalisation. They cost little and they accumulate over every step.

The autocast region is deterministic on the CPU, so a resumed run still ends bit-identical
(tests/train/test_trainer.py). Speed and effect on the default run: docs/benchmarks.md.
"""

from __future__ import annotations

import logging

import torch

from pipeline.core.devices import native_bf16

logger = logging.getLogger(__name__)


def warn_if_emulated(device: torch.device, setting: str) -> None:
    """One warning when bf16 is asked for on a CPU that only emulates bf16 products (slower
    than float32 there)."""
    if setting == "bfloat16" and device.type == "cpu" and not native_bf16():
        logger.warning(
            "train.autocast=bfloat16 on a CPU without AVX512-BF16 or AMX: its bf16 matrix "
            "products are emulated and slower than float32; set train.autocast=none"
        )
