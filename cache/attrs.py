"""The store attributes fixed at allocation, parsed strictly: what was harvested and how it is laid out.

:class:`Provenance` (model, data, loss: what the content key covers) and :class:`Layout`
(hooks, width, dtype, shards) are the two halves of a store's allocation attributes;
:class:`cache.schema.CacheInfo` joins them with the commit progress.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


def act_path(hook: str) -> str:
    """Array path of a hook's activations."""
    return f"{hook}/act"


def grad_path(hook: str) -> str:
    """Array path of a hook's loss gradients."""
    return f"{hook}/grad"


_MISSING = object()


def get_attr(attrs: Mapping[str, Any], name: str, kind: type, default: Any = _MISSING) -> Any:
    """``attrs[name]`` checked to be a JSON value of Python type ``kind`` (bool is not an int)."""
    if name not in attrs:
        if default is _MISSING:
            raise KeyError(name)
        return default
    value = attrs[name]
    if default is not _MISSING and value is None:
        return default
    ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
    if not ok:
        raise TypeError(f"attribute {name!r} must be {kind.__name__}, got {type(value).__name__} {value!r}")
    return value


@dataclass(frozen=True)
class Provenance:
    """Where a store's rows come from: what the harvest records at allocation."""

    key: str
    """Content key (SHA-256 of everything that determines the contents)."""
    model: str
    """``model.name`` as given (alias, hub id or local folder)."""
    model_revision: str
    """Commit, GGUF file or content hash of the model's files."""
    tokenizer: str
    """The tokenizer's name: one ``AutoTokenizer.from_pretrained`` loads (a hub id, or the folder), except
    in stores harvested before that rule (``smollm2-135m``)."""
    dataset: dict[str, Any]
    """Source, split, revision and fingerprint of the text."""
    context_length: int
    """Tokens per context (T)."""
    model_dtype: str | None = None
    """The dtype the model ran in (absent in the oldest stores)."""
    layers: tuple[int, ...] | None = None
    """Block index of each hook, parallel to ``hooks`` (absent in the oldest stores)."""
    loss: str | None = None
    """The loss definition the gradients are of (DESIGN §1)."""
    harvest: dict[str, Any] | None = None
    """The harvest settings, bar where the store lives."""
    model_hub_id: str | None = None
    """Hub id of the model (for an alias, the model it was converted from); absent for a local
    folder and in older stores. Not part of the content key."""
    model_weights: str | None = None
    """The exact weights, in words (``SmolLM2-135M-Instruct GGUF Q4_1 (...), dequantized to float32``)."""
    model_weights_sha256: str | None = None
    """SHA-256 of the weights file, when one file holds them (the alias's GGUF file)."""

    def to_attrs(self) -> dict[str, Any]:
        """The attributes, omitting the optional ones that are unset."""
        attrs = {
            "key": self.key,
            "model": self.model,
            "model_revision": self.model_revision,
            "tokenizer": self.tokenizer,
            "dataset": self.dataset,
            "context_length": self.context_length,
            "model_dtype": self.model_dtype,
            "layers": None if self.layers is None else list(self.layers),
            "loss": self.loss,
            "harvest": self.harvest,
            "model_hub_id": self.model_hub_id,
            "model_weights": self.model_weights,
            "model_weights_sha256": self.model_weights_sha256,
        }
        return {k: v for k, v in attrs.items() if v is not None}

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> Provenance:
        """Parse strictly (``KeyError`` missing, ``TypeError`` wrong JSON type)."""
        layers = get_attr(attrs, "layers", list, None)
        return cls(
            key=get_attr(attrs, "key", str),
            model=get_attr(attrs, "model", str),
            model_revision=str(attrs["model_revision"]),
            tokenizer=str(attrs["tokenizer"]),
            dataset=get_attr(attrs, "dataset", dict),
            context_length=get_attr(attrs, "context_length", int),
            model_dtype=get_attr(attrs, "model_dtype", str, None),
            layers=None if layers is None else tuple(int(x) for x in layers),
            loss=get_attr(attrs, "loss", str, None),
            harvest=get_attr(attrs, "harvest", dict, None),
            model_hub_id=get_attr(attrs, "model_hub_id", str, None),
            model_weights=get_attr(attrs, "model_weights", str, None),
            model_weights_sha256=get_attr(attrs, "model_weights_sha256", str, None),
        )


@dataclass(frozen=True)
class Layout:
    """How the rows are stored: arrays, dtype and sharding, fixed at allocation."""

    hooks: tuple[str, ...]
    """Hook names (the block's module path, e.g. ``model.layers.15``)."""
    d_model: int
    """Width of the residual stream."""
    dtype: str
    """Storage dtype of ``act`` and ``grad``."""
    tokens_per_shard: int
    """Rows per shard (a multiple of the context length)."""
    total_tokens: int
    """Rows of the finished store (whole contexts)."""
    chunk_tokens: int | None = None
    """Rows per chunk inside a shard."""
    compressor: str | None = None
    """Codec name (``zstd`` | ``blosc`` | ``none``)."""
    has_loss: bool = False
    """Whether the ``loss`` array is stored."""
    has_grad: bool = True
    """Whether ``<hook>/grad`` arrays are stored (``false``: an activation-only store; absent
    in stores from before the option, which all hold gradients)."""

    def to_attrs(self) -> dict[str, Any]:
        attrs = {
            "hooks": list(self.hooks),
            "d_model": self.d_model,
            "dtype": self.dtype,
            "tokens_per_shard": self.tokens_per_shard,
            "total_tokens": self.total_tokens,
            "chunk_tokens": self.chunk_tokens,
            "compressor": self.compressor,
            "has_loss": self.has_loss,
            "has_grad": self.has_grad,
        }
        return {k: v for k, v in attrs.items() if v is not None}

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> Layout:
        return cls(
            hooks=tuple(get_attr(attrs, "hooks", list)),
            d_model=get_attr(attrs, "d_model", int),
            dtype=get_attr(attrs, "dtype", str),
            tokens_per_shard=get_attr(attrs, "tokens_per_shard", int),
            total_tokens=get_attr(attrs, "total_tokens", int),
            chunk_tokens=get_attr(attrs, "chunk_tokens", int, None),
            compressor=get_attr(attrs, "compressor", str, None),
            has_loss=get_attr(attrs, "has_loss", bool, False),
            has_grad=get_attr(attrs, "has_grad", bool, True),
        )

    @property
    def n_shards(self) -> int:
        """Shards the finished store will have."""
        return -(-self.total_tokens // self.tokens_per_shard)

    def shard_rows(self, index: int) -> tuple[int, int]:
        """[start, stop) token rows of shard ``index``."""
        start = index * self.tokens_per_shard
        return start, min(start + self.tokens_per_shard, self.total_tokens)

    @property
    def array_names(self) -> list[str]:
        """Array paths in the fixed checksum order: tokens, act and grad (when stored) per hook, loss."""
        names = ["tokens"]
        for hook in self.hooks:
            names += [act_path(hook), grad_path(hook)] if self.has_grad else [act_path(hook)]
        if self.has_loss:
            names.append("loss")
        return names
