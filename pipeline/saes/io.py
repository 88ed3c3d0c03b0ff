"""Saving and loading trained SAEs in the DESIGN §3 format: SAELens 6's layout.

A variant folder holds

- ``sae_weights.safetensors``: ``W_enc`` [d, n], ``b_enc`` [n], ``W_dec`` [n, d], ``b_dec``
  [d] (float32) acting on **raw** activations, decoder rows of unit norm;
- ``cfg.json``: SAELens 6's fields (``sae_lens_version``, ``architecture``, ``d_in``,
  ``d_sae``, ``dtype``, ``device``, ``apply_b_dec_to_input``, ``normalize_activations``,
  ``reshape_activations``, ``k``, ``rescale_acts_by_decoder_norm`` and ``metadata`` with
  ``model_name`` (the hub id when the store knows it: HuggingFaceTB/SmolLM2-135M-Instruct for
  the ``smollm2-135m`` alias), ``hook_name`` in TransformerLens naming, ``hf_hook_name`` = our
  hook, and our ``model_weights`` / ``model_weights_sha256``: the exact weights...)
  plus ours: the architecture's registered hyper-parameters (``k``; ``beta`` and
  ``value_mode`` for the gradient-aware ones; ``threshold_decay`` for BatchTopK...), with
  ``beta`` = 0 and ``value_mode`` = ``selection`` recorded for architectures that have
  none (the DESIGN §3 keys, values under which the §1 formulas reduce to their own),
  statistics learned for inference (BatchTopK's ``threshold``, raw units, see
  :meth:`~pipeline.saes.base.SAE.inference_state`), ``grad_scale`` (g in the formula = raw
  gradient × grad_scale), ``model`` (``model.name`` as given, e.g. the alias), ``model_hub_id``,
  ``model_weights`` (e.g. ``SmolLM2-135M-Instruct GGUF Q4_1 (...), dequantized to float32``),
  ``model_weights_sha256``, ``model_revision``, ``hook_name`` (the block's module path),
  ``cache_key``, provenance and training figures.

``sae_lens.SAE.load_from_disk(folder)`` loads a ``topk`` folder as SAELens's ``TopKSAE``. A
``gsae`` folder loads only after ``import pipeline.saes.saelens_plugin`` (which registers
the architecture); without it SAELens raises ``KeyError: 'gsae'``. ``sae_lens_version`` is
always written, so SAELens never applies its pre-6 migration (which would turn any
architecture into ``topk``), and no ``activation_fn_str: topk`` is written either.
Folders written before this layout (``sae.safetensors``) still load here.

Scale folding (unit-norm decoder rows, exact). The trainer fits the SAE on x_s = c·x
(``act_scale`` c, a power of two, see :mod:`pipeline.train.normalize`) with internal parameters
(W_enc, b_enc, W_dec, b_dec), unit-norm W_dec rows and gradient factor |W_dec (γ g_raw)|
(γ = the module's ``grad_scale``). Dividing every latent by c gives, for raw inputs,

    z / c  = (x − b_dec/c) W_enc + b_enc/c
    x̂_s/c  = (a/c) W_dec + b_dec/c
    s / c  = z/c + β (z/c) ∘ |W_dec (γ g)|

so the files hold W_enc' = W_enc, b_enc' = b_enc / c, W_dec' = W_dec (unit rows, as SAELens
and sparsify users expect), b_dec' = b_dec / c and grad_scale' = γ: latent values are in
raw-activation units (a' = a / c) and x̂ is the trained reconstruction / c. Scaling by a
power of two commutes with every float rounding, so the top-k sets are identical and every
value is exactly the trained one / c: the files reproduce the trained model bit for bit
(tests/saes/test_format.py). Legacy ``sae.safetensors`` folders folded c the other way
(W_enc·c, W_dec/c, grad_scale = c·γ); both are raw-space models and load the same way.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from pipeline.core.errors import NothingToEvaluate, SAEFormatError
from pipeline.core.fileio import atomic_write, atomic_write_text
from pipeline.saes import REGISTRY, get_sae_class
from pipeline.saes.base import SAE, KHParams

logger = logging.getLogger(__name__)

WEIGHTS = "sae_weights.safetensors"
"""SAELens 6's weights file name (what :func:`save_sae` writes)."""
LEGACY_WEIGHTS = "sae.safetensors"
"""The weights file name of folders written before the SAELens layout (still loaded)."""
WEIGHTS_NAMES = (WEIGHTS, LEGACY_WEIGHTS)
CONFIG = "cfg.json"
SAELENS_FORMAT_VERSION = "6.54.12"
"""``sae_lens_version`` written to cfg.json: the SAELens release the layout was tested with."""

NEUTRAL_HPARAMS: dict[str, Any] = {"beta": 0.0, "value_mode": "selection"}
"""DESIGN §3 cfg.json keys written for every architecture; these values where it has no such field."""

_SAELENS_META = ("model_name", "context_size", "prepend_bos", "dataset_path")
_WEIGHTS_META = ("model_weights", "model_weights_sha256")
"""Ours, copied into ``metadata`` too: SAELens keeps any metadata key (``sae.cfg.metadata.model_weights``)."""


def weights_file(sae_dir: str | Path) -> Path | None:
    """The weights file of a variant folder (SAELens name first, then the legacy one); None if absent."""
    d = Path(sae_dir)
    for name in WEIGHTS_NAMES:
        if (d / name).is_file():
            return d / name
    return None


def folded_state(sae: SAE, act_scale: float = 1.0) -> dict[str, torch.Tensor]:
    """Raw-space weights (unit decoder rows) of an SAE trained on activations × ``act_scale``.

    float32 on CPU; exact when ``act_scale`` is a power of two (see the module docstring).
    """
    c = float(act_scale)
    return {
        "W_enc": sae.W_enc.detach().float().cpu().contiguous(),
        "b_enc": (sae.b_enc.detach() / c).float().cpu().contiguous(),
        "W_dec": sae.W_dec.detach().float().cpu().contiguous(),
        "b_dec": (sae.b_dec.detach() / c).float().cpu().contiguous(),
    }


def transformer_lens_hook(hook: str) -> str:
    """TransformerLens name of the residual stream after block ``hook`` (``model.layers.15`` →
    ``blocks.15.hook_resid_post``); ``hook`` itself when it does not end in a block index."""
    tail = hook.rpartition(".")[2]
    return f"blocks.{tail}.hook_resid_post" if tail.isdigit() else hook


def saelens_metadata(cfg: dict[str, Any]) -> dict[str, Any]:
    """SAELens 6's ``metadata`` block from our provenance fields (``hook_name``, ``model``...)."""
    meta: dict[str, Any] = {
        "sae_lens_version": SAELENS_FORMAT_VERSION,
        "sae_lens_training_version": None,  # trained by this project, not by SAELens
        "hook_head_index": None,
    }
    hook = cfg.get("hook_name")
    if isinstance(hook, str):
        meta["hook_name"] = transformer_lens_hook(hook)
        meta["hf_hook_name"] = hook
    if "model" in cfg:
        meta["model_name"] = cfg["model"]
    meta.update({k: cfg[k] for k in (*_SAELENS_META, *_WEIGHTS_META) if cfg.get(k) is not None})
    return meta


def save_sae(sae: SAE, out_dir: str | Path, cfg: dict[str, Any], *, act_scale: float = 1.0) -> Path:
    """Write ``sae_weights.safetensors`` + ``cfg.json`` into ``out_dir`` (atomically, weights first).

    ``cfg`` adds provenance (``hook_name``, ``model``, ``cache_key``, training figures...);
    the SAELens fields, the architecture fields and ``grad_scale`` are always taken from the
    module and ``act_scale`` (they override same-named keys in ``cfg``). A legacy
    ``sae.safetensors`` in ``out_dir`` is removed so the folder holds one model.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = folded_state(sae, act_scale)
    full: dict[str, Any] = {
        **cfg,
        **NEUTRAL_HPARAMS,
        **sae.hparams(),
        **sae.inference_state(act_scale),
        # SAELens 6 (SAEConfig / TopKSAEConfig fields; `metadata` holds the LLM-side ones)
        "sae_lens_version": SAELENS_FORMAT_VERSION,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "rescale_acts_by_decoder_norm": False,
        "metadata": saelens_metadata(cfg),
        # ours: g in the formulas = raw gradient × grad_scale (see the scale folding above)
        "grad_scale": sae.grad_scale,
        "train_act_scale": float(act_scale),
        "train_grad_scale": sae.grad_scale,
        "decoder_rows": "unit",
    }
    if "model" in full:
        full.setdefault("model_name", full["model"])
    atomic_write(out / WEIGHTS, lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
    atomic_write_text(out / CONFIG, json.dumps(full, indent=2, sort_keys=True, default=str) + "\n")
    (out / LEGACY_WEIGHTS).unlink(missing_ok=True)
    return out


def read_cfg(sae_dir: str | Path) -> dict[str, Any]:
    """The ``cfg.json`` of a variant folder, checked for the fields every loader needs."""
    cfg_path = Path(sae_dir) / CONFIG
    if not cfg_path.is_file():
        raise SAEFormatError(f"{sae_dir}: missing {CONFIG} (not a trained SAE directory)")
    try:
        cfg = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as exc:
        raise SAEFormatError(f"{cfg_path}: not valid JSON ({exc})") from exc
    if not isinstance(cfg, dict):
        raise SAEFormatError(f"{cfg_path}: not a JSON object")
    arch = cfg.get("architecture")
    if isinstance(arch, str) and arch not in REGISTRY:
        raise SAEFormatError(_unknown_architecture(cfg_path, arch))
    missing = [k for k in ("architecture", "d_in", "d_sae", "k") if k not in cfg]
    if missing:
        raise SAEFormatError(f"{cfg_path}: missing field(s) {', '.join(missing)}")
    if (
        cfg.get("apply_b_dec_to_input", True) is not True
        or cfg.get("normalize_activations", "none") not in (None, "none", False)
        or cfg.get("rescale_acts_by_decoder_norm", False) not in (None, False)
        or cfg.get("reshape_activations", "none") not in (None, "none")
    ):
        raise SAEFormatError(
            f"{cfg_path}: only apply_b_dec_to_input=true, normalize_activations=none, "
            "rescale_acts_by_decoder_norm=false and reshape_activations=none are supported"
        )
    return cfg


def _unknown_architecture(cfg_path: Path, arch: str) -> str:
    return (
        f"{cfg_path}: architecture {arch!r} is not one this project implements "
        f"(known: {', '.join(sorted(REGISTRY))}); a SAELens folder of it loads with "
        "sae_lens.SAE.load_from_disk"
    )


def hparams_from_cfg(cls: type[SAE], cfg: dict[str, Any]) -> KHParams:
    """The architecture's hparams from cfg.json: its fields present there (numbers as the field
    types), the dataclass defaults for the others (older folders lack newer fields)."""
    kw: dict[str, Any] = {}
    for f in dataclasses.fields(cls.hparams_class):
        if f.name in cfg:
            value = cfg[f.name]
            kw[f.name] = (
                int(value) if f.name == "k" else float(value) if isinstance(value, (int, float)) else value
            )
    return cls.hparams_class(**kw)


def load_sae(sae_dir: str | Path, device: str | torch.device = "cpu") -> tuple[SAE, dict[str, Any]]:
    """Rebuild an SAE acting on raw inputs from ``sae_dir``; ``SAEFormatError`` when unusable."""
    d = Path(sae_dir)
    cfg = read_cfg(d)
    w_path = weights_file(d)
    if w_path is None:
        raise SAEFormatError(f"{d}: missing {WEIGHTS} (not a trained SAE directory)")
    try:
        cls = get_sae_class(str(cfg["architecture"]))
    except Exception as exc:
        raise SAEFormatError(f"{d / CONFIG}: {exc}") from exc
    d_in, d_sae = int(cfg["d_in"]), int(cfg["d_sae"])
    try:
        state = load_file(str(w_path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise SAEFormatError(f"{w_path}: unreadable safetensors file ({exc})") from exc
    expected = {"W_enc": (d_in, d_sae), "b_enc": (d_sae,), "W_dec": (d_sae, d_in), "b_dec": (d_in,)}
    for name, shape in expected.items():
        if name not in state:
            raise SAEFormatError(f"{w_path}: tensor {name} missing")
        if tuple(state[name].shape) != shape:
            raise SAEFormatError(
                f"{w_path}: {name} has shape {tuple(state[name].shape)}, expected {shape} "
                f"(d_in={d_in}, d_sae={d_sae} in cfg.json)"
            )
    try:
        sae = cls.from_hparams(
            d_in, d_sae, hparams_from_cfg(cls, cfg), grad_scale=float(cfg.get("grad_scale", 1.0))
        )
        sae.load_inference_state(cfg)
    except (TypeError, ValueError) as exc:
        raise SAEFormatError(f"{d / CONFIG}: {exc}") from exc
    with torch.no_grad():
        for name in expected:
            getattr(sae, name).copy_(state[name].float())
    if w_path.name == LEGACY_WEIGHTS:
        logger.debug("%s: legacy weights file %s", d, LEGACY_WEIGHTS)
    return sae.to(device).eval(), cfg


def find_variants(out_dir: str | Path) -> list[Path]:
    """Sub-directories of ``out_dir`` that hold SAE weights (``sae_weights.safetensors`` or the
    legacy ``sae.safetensors``), sorted by name."""
    root = Path(out_dir)
    found = sorted(p for p in root.glob("*") if weights_file(p) is not None) if root.is_dir() else []
    if not found:
        raise NothingToEvaluate(
            f"no trained SAE variants in {root} (no <variant>/{WEIGHTS}); run `gsae train` first"
        )
    return found
