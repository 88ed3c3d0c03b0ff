"""Export a trained variant folder to other SAE libraries' layouts (``gsae export``).

``saelens`` (SAELens 6, ``sae_lens.SAE.load_from_disk(dest)``), for ``batchtopk`` and
``matryoshka`` variants: SAELens runs a BatchTopK SAE at inference as a JumpReLU SAE whose
every threshold is θ, and saves its Matryoshka BatchTopK SAEs the same way (their nested
groups only shape the training loss), and so does this export: ``dest`` receives ``sae_weights.safetensors`` (the variant's
four tensors + ``threshold`` [n] filled with θ, raw units) and a ``cfg.json`` with
``architecture: jumprelu`` (a_i = ReLU(z_i) · [z_i > θ] is exactly our threshold
inference). ``topk`` folders need no export (they load in SAELens as they are), ``gsae``
ones load through :mod:`pipeline.saes.saelens_plugin`, and ``gbatchtopk`` and
``gmatryoshka`` are refused: their threshold is on the gradient-aware score, which no
SAELens architecture computes.

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
so it is refused (:class:`~pipeline.core.errors.ExportError`) rather than written as a TopK
model. sparsify names its weights ``sae.safetensors`` (our legacy name), so the export
goes to its own folder, never into a variant folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from pipeline.core.errors import ExportError
from pipeline.core.fileio import atomic_write, atomic_write_text
from pipeline.saes.io import CONFIG, WEIGHTS, load_sae, read_cfg, weights_file

SPARSIFY_WEIGHTS = "sae.safetensors"
SOURCE = "gsae_source.json"


def export_sparsify(src: str | Path, dest: str | Path) -> Path:
    """Write the TopK variant in ``src`` to ``dest`` in sparsify's layout; returns ``dest``."""
    src_dir, out = Path(src), Path(dest)
    sae, cfg = load_sae(src_dir)
    arch = str(cfg["architecture"])
    if arch != "topk":
        raise ExportError(
            f"{src_dir}: architecture {arch!r} cannot be exported to sparsify (only topk: sparsify's "
            "activation is a per-token top-k, it would run this SAE as a plain TopK SAE)"
        )
    _check_dest(src_dir, out)
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
        **{
            key: cfg[key]
            for key in ("variant", "hook_name", "model", "model_name", "model_weights", "cache_key")
            if key in cfg
        },
    }
    atomic_write(out / SPARSIFY_WEIGHTS, lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
    atomic_write_text(out / CONFIG, json.dumps(sparsify_cfg, indent=2, sort_keys=True, default=str) + "\n")
    atomic_write_text(out / SOURCE, json.dumps(source, indent=2, sort_keys=True, default=str) + "\n")
    return out


def _check_dest(src_dir: Path, out: Path) -> None:
    if out.exists() and out.resolve() == src_dir.resolve():
        raise ExportError(f"{out}: export into the variant folder itself would overwrite its {CONFIG}")
    if out.is_dir() and (out / WEIGHTS).is_file():
        raise ExportError(f"{out}: holds a trained variant ({WEIGHTS}); export to another folder")


SAELENS_JUMPRELU = ("batchtopk", "matryoshka")
"""Architectures whose inference is a threshold on z: exported as SAELens's JumpReLU SAE."""
SAELENS_ADVICE = {
    "topk": "it loads in SAELens as it is: sae_lens.SAE.load_from_disk(folder)",
    "gsae": "it loads in SAELens as it is after `import pipeline.saes.saelens_plugin`",
    "gbatchtopk": "its threshold is on the gradient-aware score, which no SAELens architecture computes",
    "gmatryoshka": "its threshold is on the gradient-aware score, which no SAELens architecture computes",
}


def export_saelens(src: str | Path, dest: str | Path) -> Path:
    """Write the BatchTopK or Matryoshka BatchTopK variant in ``src`` to ``dest`` as a SAELens
    JumpReLU SAE; returns ``dest``."""
    src_dir, out = Path(src), Path(dest)
    arch = str(read_cfg(src_dir)["architecture"])
    if arch not in SAELENS_JUMPRELU:
        why = SAELENS_ADVICE.get(arch, "no SAELens architecture selects latents as it does")
        raise ExportError(
            f"{src_dir}: architecture {arch!r} is not exported to saelens "
            f"(only {', '.join(SAELENS_JUMPRELU)}): {why}"
        )
    sae, cfg = load_sae(src_dir)
    if cfg.get("threshold") is None:
        raise ExportError(f"{src_dir}: no inference threshold in {CONFIG} (the SAE was never trained)")
    _check_dest(src_dir, out)
    state = {
        name: getattr(sae, name).detach().float().contiguous()
        for name in ("W_enc", "b_enc", "W_dec", "b_dec")
    }
    state["threshold"] = torch.full((sae.d_sae,), float(cfg["threshold"]), dtype=torch.float32)
    keep = (
        "sae_lens_version",
        "d_in",
        "d_sae",
        "dtype",
        "device",
        "apply_b_dec_to_input",
        "normalize_activations",
        "reshape_activations",
        "metadata",
        "model_name",
        "hook_name",
        "cache_key",
        "threshold",
    )
    saelens_cfg = {key: cfg[key] for key in keep if key in cfg} | {
        "architecture": "jumprelu",
        "source_variant": src_dir.name,
    }
    atomic_write(out / WEIGHTS, lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
    atomic_write_text(out / CONFIG, json.dumps(saelens_cfg, indent=2, sort_keys=True, default=str) + "\n")
    return out


FORMATS = {"saelens": export_saelens, "sparsify": export_sparsify}


def export_sae(src: str | Path, dest: str | Path, fmt: str) -> Path:
    """Export the variant folder ``src`` to ``dest`` in format ``fmt`` (one of :data:`FORMATS`)."""
    try:
        writer = FORMATS[fmt]
    except KeyError:
        raise ExportError(f"unknown export format {fmt!r} (known: {', '.join(sorted(FORMATS))})") from None
    return writer(src, dest)
