"""Saving and loading trained SAEs in the DESIGN §3 format (SAELens-friendly).

``<dir>/sae.safetensors`` holds ``W_enc`` [d, n], ``b_enc`` [n], ``W_dec`` [n, d],
``b_dec`` [d] (float32) acting on **raw** activations; ``<dir>/cfg.json`` holds the
architecture, sizes, ``k``, ``beta``, ``value_mode`` and ``grad_scale`` (g in the formula =
raw gradient × grad_scale) plus provenance and training figures.

Scale folding. A trainer may fit the SAE on x_s = c·x (``act_scale`` c) with internal
parameters (W_enc, b_enc, W_dec, b_dec) and gradient factor |W_dec (γ·g_raw)| (γ = the
module's ``grad_scale``). Then for raw inputs

    z  = (c x − b_dec) W_enc + b_enc = (x − b_dec/c)(c W_enc) + b_enc
    x̂  = x̂_s / c = a (W_dec / c) + b_dec / c
    W_dec γ g = (W_dec / c)(c γ g)

so the saved file has W_enc' = c W_enc, b_enc' = b_enc, W_dec' = W_dec / c, b_dec' = b_dec / c
and grad_scale' = c γ. The decoder rows then have norm 1/c in raw space. When c is a power
of two (see :mod:`pipeline.scaling`) every one of these rescalings is exact in floating
point, so the saved model reproduces the trained one bit for bit on raw inputs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from pipeline.errors import SAEFormatError
from pipeline.fileio import atomic_write, atomic_write_text
from pipeline.saes import get_sae_class
from pipeline.saes.base import SAE

WEIGHTS = "sae.safetensors"
CONFIG = "cfg.json"


def folded_state(sae: SAE, act_scale: float = 1.0) -> dict[str, torch.Tensor]:
    """Raw-space weights of an SAE trained on activations × ``act_scale`` (float32, CPU)."""
    c = float(act_scale)
    return {
        "W_enc": (sae.W_enc.detach() * c).float().cpu().contiguous(),
        "b_enc": sae.b_enc.detach().float().cpu().contiguous(),
        "W_dec": (sae.W_dec.detach() / c).float().cpu().contiguous(),
        "b_dec": (sae.b_dec.detach() / c).float().cpu().contiguous(),
    }


def save_sae(sae: SAE, out_dir: str | Path, cfg: dict[str, Any], *, act_scale: float = 1.0) -> Path:
    """Write ``sae.safetensors`` + ``cfg.json`` into ``out_dir`` (atomically, weights first).

    ``cfg`` adds provenance (``hook_name``, ``model``, ``cache_key``, training figures...);
    the architecture fields and ``grad_scale`` are always taken from the module and
    ``act_scale`` (they override same-named keys in ``cfg``).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = folded_state(sae, act_scale)
    hp = sae.hparams()
    full: dict[str, Any] = {
        # SAELens-style fields
        "d_in": sae.d_in,
        "d_sae": sae.d_sae,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "finetuning_scaling_factor": False,
        "activation_fn_str": "topk",
        "activation_fn_kwargs": {"k": sae.k},
        "hook_head_index": None,
        **cfg,
        **hp,
        "grad_scale": float(act_scale) * sae.grad_scale,
        "train_act_scale": float(act_scale),
        "train_grad_scale": sae.grad_scale,
    }
    if "model" in full:
        full.setdefault("model_name", full["model"])
    atomic_write(out / WEIGHTS, lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
    atomic_write_text(out / CONFIG, json.dumps(full, indent=2, sort_keys=True, default=str) + "\n")
    return out


def load_sae(sae_dir: str | Path, device: str | torch.device = "cpu") -> tuple[SAE, dict[str, Any]]:
    """Rebuild an SAE acting on raw inputs from ``sae_dir``; ``SAEFormatError`` when unusable."""
    d = Path(sae_dir)
    cfg_path, w_path = d / CONFIG, d / WEIGHTS
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise SAEFormatError(f"{d}: missing {p.name} (not a trained SAE directory)")
    try:
        cfg = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as exc:
        raise SAEFormatError(f"{cfg_path}: not valid JSON ({exc})") from exc
    missing = [k for k in ("architecture", "d_in", "d_sae", "k") if k not in cfg]
    if missing:
        raise SAEFormatError(f"{cfg_path}: missing field(s) {', '.join(missing)}")
    try:
        cls = get_sae_class(str(cfg["architecture"]))
    except Exception as exc:
        raise SAEFormatError(f"{cfg_path}: {exc}") from exc
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
        sae = cls(
            d_in,
            d_sae,
            int(cfg["k"]),
            beta=float(cfg.get("beta", 0.0)),
            value_mode=str(cfg.get("value_mode", "selection")),
            grad_scale=float(cfg.get("grad_scale", 1.0)),
        )
    except ValueError as exc:
        raise SAEFormatError(f"{cfg_path}: {exc}") from exc
    with torch.no_grad():
        for name in expected:
            getattr(sae, name).copy_(state[name].float())
    return sae.to(device).eval(), cfg
