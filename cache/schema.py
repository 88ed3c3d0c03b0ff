"""Names, attributes and the content key of the cache format (DESIGN §3).

A store is a Zarr v3 group. Its attributes describe what was harvested; its arrays are
``tokens`` [N] int32, ``<hook>/act`` and (unless ``has_grad`` is false) ``<hook>/grad``
[N, d] and optionally ``loss`` [N] float32, all sharded along the token axis. Each shard
that was written and checksummed has a commit record (format version 2: one small object
per shard, ``commits/<index>/zarr.json``, see :mod:`cache.commits`; version 1: the
``committed`` attribute listing every record); ``n_tokens`` counts only the committed rows,
and ``complete`` is set last.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

CACHE_VERSION = 2
"""The format this code writes: commit records are objects of their own (:mod:`cache.commits`)."""

READABLE_VERSIONS = (1, 2)
"""Formats this code reads; version 1 keeps every commit record in the ``committed`` attribute."""

LOSS_DEFINITION = (
    "L_seq = sum_{p=0}^{T-2} CE(logits_p, token_{p+1}) over each context of T tokens "
    "(sum, not mean); grad[p] = dL_seq/dx_p at the residual stream after the block, "
    "clean model; grad of the last position is 0"
)


def act_path(hook: str) -> str:
    """Array path of a hook's activations."""
    return f"{hook}/act"


def grad_path(hook: str) -> str:
    """Array path of a hook's loss gradients."""
    return f"{hook}/grad"


ALLOCATING = "gsae_allocating"
"""Attribute present only while a store is being allocated."""

MUTABLE_ATTRS = frozenset({"n_tokens", "committed", "complete", "attrs_sha256"})
"""Attributes changed after allocation (``committed``: version 1); ``attrs_sha256`` covers the others."""


def attrs_digest(attrs: dict[str, Any]) -> str:
    """SHA-256 of the attributes fixed at allocation (all but :data:`MUTABLE_ATTRS`)."""
    return content_key({k: v for k, v in attrs.items() if k not in MUTABLE_ATTRS})


_MISSING = object()


def _get(attrs: Mapping[str, Any], name: str, kind: type, default: Any = _MISSING) -> Any:
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


def block_index(hook: str) -> int | None:
    """The trailing block index of a hook name (``model.layers.15`` → 15), if it has one."""
    tail = hook.rpartition(".")[2]
    return int(tail) if tail.isdigit() else None


def usable_rows(start: int, stop: int, context_length: int, exclude_first: bool = True) -> np.ndarray:
    """Local indices of the rows of global rows [start, stop) that training and metrics use.

    Row r is position r mod T of its context; with ``exclude_first`` the first position
    (BOS / attention sink, a huge norm) is left out.
    """
    rows = np.arange(start, stop)
    if exclude_first:
        return np.nonzero(rows % context_length != 0)[0]
    return np.arange(stop - start)


def content_key(fields: dict[str, Any]) -> str:
    """Hex SHA-256 of everything that determines a store's contents (canonical JSON)."""
    blob = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


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
        layers = _get(attrs, "layers", list, None)
        return cls(
            key=_get(attrs, "key", str),
            model=_get(attrs, "model", str),
            model_revision=str(attrs["model_revision"]),
            tokenizer=str(attrs["tokenizer"]),
            dataset=_get(attrs, "dataset", dict),
            context_length=_get(attrs, "context_length", int),
            model_dtype=_get(attrs, "model_dtype", str, None),
            layers=None if layers is None else tuple(int(x) for x in layers),
            loss=_get(attrs, "loss", str, None),
            harvest=_get(attrs, "harvest", dict, None),
            model_hub_id=_get(attrs, "model_hub_id", str, None),
            model_weights=_get(attrs, "model_weights", str, None),
            model_weights_sha256=_get(attrs, "model_weights_sha256", str, None),
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
            hooks=tuple(_get(attrs, "hooks", list)),
            d_model=_get(attrs, "d_model", int),
            dtype=_get(attrs, "dtype", str),
            tokens_per_shard=_get(attrs, "tokens_per_shard", int),
            total_tokens=_get(attrs, "total_tokens", int),
            chunk_tokens=_get(attrs, "chunk_tokens", int, None),
            compressor=_get(attrs, "compressor", str, None),
            has_loss=_get(attrs, "has_loss", bool, False),
            has_grad=_get(attrs, "has_grad", bool, True),
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


@dataclass(frozen=True)
class CacheInfo:
    """A parsed view of a store's group attributes: provenance, layout and commit progress.

    The only code that knows the attribute names is here (:meth:`from_attrs`,
    :meth:`to_attrs`, :meth:`progress_attrs`). ``committed_tokens`` is the ``n_tokens``
    attribute (rows of the committed shards); ``total_tokens`` the finished store's rows.
    ``committed`` holds the commit records of shards ``0 .. committed_shards - 1`` once
    loaded: a version 1 store's come with its attributes, a version 2 store's are objects
    of their own that :func:`cache.integrity.load_commits` reads (``None`` until then).
    """

    provenance: Provenance
    layout: Layout
    committed_tokens: int
    complete: bool
    committed: tuple[dict[str, Any], ...] | None = None
    version: int = CACHE_VERSION
    attrs_sha256: str | None = None
    """Digest of the attributes fixed at allocation (absent in stores from before it)."""
    attrs: dict[str, Any] = field(default_factory=dict)
    """The raw attributes as read (what :func:`attrs_digest` is checked on)."""

    @classmethod
    def allocated(cls, provenance: Provenance, layout: Layout) -> CacheInfo:
        """A freshly allocated store: nothing committed."""
        return cls(provenance, layout, committed_tokens=0, complete=False, committed=())

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> CacheInfo:
        """Parse attributes strictly.

        Raises ``KeyError`` when a required attribute is missing and ``TypeError`` when one
        has the wrong JSON type (``complete: "false"`` is a string, not a boolean).
        """
        version = _get(attrs, "gsae_cache_version", int)
        return cls(
            provenance=Provenance.from_attrs(attrs),
            layout=Layout.from_attrs(attrs),
            committed_tokens=_get(attrs, "n_tokens", int),
            complete=_get(attrs, "complete", bool),
            committed=tuple(_get(attrs, "committed", list, ())) if version == 1 else None,
            version=version,
            attrs_sha256=_get(attrs, "attrs_sha256", str, None),
            attrs=dict(attrs),
        )

    def to_attrs(self) -> dict[str, Any]:
        """All attributes (of the format this code writes), sealed with ``attrs_sha256`` over the ones
        fixed at allocation."""
        attrs = {
            **self.provenance.to_attrs(),
            **self.layout.to_attrs(),
            "gsae_cache_version": self.version,
            **self.progress_attrs(),
        }
        return {**attrs, "attrs_sha256": attrs_digest(attrs)}

    def progress_attrs(self) -> dict[str, Any]:
        """The attributes a commit or finalize changes (two scalars: the records are objects of their own)."""
        return {"n_tokens": self.committed_tokens, "complete": self.complete}

    @property
    def records(self) -> tuple[dict[str, Any], ...]:
        """The loaded commit records (``ValueError`` when they were not loaded)."""
        if self.committed is None:
            raise ValueError("the store's commit records were not loaded (cache.integrity.load_commits)")
        return self.committed

    def with_commit(self, record: dict[str, Any]) -> CacheInfo:
        """This info after committing ``record`` (the next shard); loaded records are kept loaded."""
        committed = None if self.committed is None else (*self.committed, record)
        return replace(self, committed=committed, committed_tokens=int(record["rows"][1]))

    # flat read access (info.hooks, info.model, ...): the parts above own the values
    @property
    def key(self) -> str:
        return self.provenance.key

    @property
    def model(self) -> str:
        return self.provenance.model

    @property
    def model_revision(self) -> str:
        return self.provenance.model_revision

    @property
    def model_dtype(self) -> str | None:
        return self.provenance.model_dtype

    @property
    def tokenizer(self) -> str:
        return self.provenance.tokenizer

    @property
    def dataset(self) -> dict[str, Any]:
        return self.provenance.dataset

    @property
    def context_length(self) -> int:
        return self.provenance.context_length

    @property
    def layers(self) -> tuple[int, ...] | None:
        return self.provenance.layers

    @property
    def loss(self) -> str | None:
        return self.provenance.loss

    @property
    def harvest(self) -> dict[str, Any] | None:
        return self.provenance.harvest

    @property
    def hooks(self) -> tuple[str, ...]:
        return self.layout.hooks

    @property
    def d_model(self) -> int:
        return self.layout.d_model

    @property
    def dtype(self) -> str:
        return self.layout.dtype

    @property
    def tokens_per_shard(self) -> int:
        return self.layout.tokens_per_shard

    @property
    def total_tokens(self) -> int:
        return self.layout.total_tokens

    @property
    def has_loss(self) -> bool:
        return self.layout.has_loss

    @property
    def has_grad(self) -> bool:
        return self.layout.has_grad

    @property
    def n_shards(self) -> int:
        return self.layout.n_shards

    @property
    def array_names(self) -> list[str]:
        return self.layout.array_names

    def shard_rows(self, index: int) -> tuple[int, int]:
        """[start, stop) token rows of shard ``index`` in the finished store."""
        return self.layout.shard_rows(index)

    @property
    def committed_shards(self) -> int:
        """Shards holding committed rows."""
        return -(-self.committed_tokens // self.tokens_per_shard)

    def committed_rows(self, index: int) -> tuple[int, int]:
        """[start, stop) of shard ``index``, clipped to the committed rows."""
        start, stop = self.shard_rows(index)
        return start, min(stop, self.committed_tokens)

    def layer_of(self, hook: str) -> int | None:
        """Block index of stored ``hook``: from the ``layers`` attribute, else the hook name."""
        if self.layers is not None and len(self.layers) == len(self.hooks) and hook in self.hooks:
            return self.layers[self.hooks.index(hook)]
        return block_index(hook)
