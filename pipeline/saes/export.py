"""Export a trained variant folder to other SAE libraries' layouts (``gsae export``).

``sparsify`` (EleutherAI sparsify 1.3, ``SparseCoder.load_from_disk(dest)``): ``dest``
receives

- ``sae.safetensors``: ``encoder.weight`` [n, d] = W_encᵀ, ``encoder.bias`` [n] = b_enc,
  ``W_dec`` [n, d], ``b_dec`` [d] (float32, raw-activation space, unit decoder rows);
- ``cfg.json``: ``SparseCoderConfig``'s fields (``activation: topk``, ``k``,
  ``num_latents``, ``expansion_factor``, ``normalize_decoder``, ``multi_topk``,
  ``skip_connection``, ``transcode``) + ``d_in``;
- ``gsae_source.json``: provenance (source folder, variant, hook, model, cache key), kept
  out of ``cfg.json`` because sparsify prints every field it does not know.

sparsify encodes TopK(ReLU(z)) where we take ReLU(TopK(z)): the dense codes are equal (they
differ only in which zero-valued latents are listed when fewer than k are positive). Only
``topk`` variants export: a g-SAE selects with the loss gradient, which sparsify cannot,
so it is refused (:class:`~pipeline.errors.ExportError`) rather than written as a TopK
model. sparsify names its weights ``sae.safetensors`` (our legacy name), so the export
goes to its own folder, never into a variant folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from pipeline.errors import ExportError
from pipeline.fileio import atomic_write, atomic_write_text
from pipeline.saes.io import CONFIG, WEIGHTS, load_sae, weights_file

SPARSIFY_WEIGHTS = "sae.safetensors"
SOURCE = "gsae_source.json"


def export_sparsify(src: str | Path, dest: str | Path) -> Path:
    """Write the TopK variant in ``src`` to ``dest`` in sparsify's layout; returns ``dest``."""
    src_dir, out = Path(src), Path(dest)
    sae, cfg = load_sae(src_dir)
    arch = str(cfg["architecture"])
    if arch != "topk":
        raise ExportError(
            f"{src_dir}: architecture {arch!r} cannot be exported to sparsify (only topk: sparsify has no "
            "gradient-aware selection and would run it as a plain TopK SAE)"
        )
    if out.exists() and out.resolve() == src_dir.resolve():
        raise ExportError(f"{out}: export into the variant folder itself would overwrite its {CONFIG}")
    if out.is_dir() and (out / WEIGHTS).is_file():
        raise ExportError(f"{out}: holds a trained variant ({WEIGHTS}); export to another folder")
    d_in, d_sae = sae.d_in, sae.d_sae
    state = {
        "encoder.weight": sae.W_enc.detach().T.float().contiguous(),
        "encoder.bias": sae.b_enc.detach().float().contiguous(),
        "W_dec": sae.W_dec.detach().float().contiguous(),
        "b_dec": sae.b_dec.detach().float().contiguous(),
    }
    sparsify_cfg: dict[str, Any] = {
        "activation": "topk",
        "expansion_factor": max(1, d_sae // d_in),
        "normalize_decoder": True,
        "num_latents": d_sae,
        "k": sae.k,
        "multi_topk": False,
        "skip_connection": False,
        "transcode": False,
        "d_in": d_in,
    }
    source: dict[str, Any] = {
        "variant_dir": str(src_dir),
        "weights": str(weights_file(src_dir)),
        **{key: cfg[key] for key in ("variant", "hook_name", "model", "cache_key") if key in cfg},
    }
    atomic_write(out / SPARSIFY_WEIGHTS, lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
    atomic_write_text(out / CONFIG, json.dumps(sparsify_cfg, indent=2, sort_keys=True, default=str) + "\n")
    atomic_write_text(out / SOURCE, json.dumps(source, indent=2, sort_keys=True, default=str) + "\n")
    return out


FORMATS = {"sparsify": export_sparsify}


def export_sae(src: str | Path, dest: str | Path, fmt: str) -> Path:
    """Export the variant folder ``src`` to ``dest`` in format ``fmt`` (one of :data:`FORMATS`)."""
    try:
        writer = FORMATS[fmt]
    except KeyError:
        raise ExportError(f"unknown export format {fmt!r} (known: {', '.join(sorted(FORMATS))})") from None
    return writer(src, dest)
