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

from cache.attrs import Layout, Provenance, get_attr

CACHE_VERSION = 2
"""The format this code writes: commit records are objects of their own (:mod:`cache.commits`)."""

READABLE_VERSIONS = (1, 2)
"""Formats this code reads; version 1 keeps every commit record in the ``committed`` attribute."""

LOSS_DEFINITION = (
    "L_seq = sum_{p=0}^{T-2} CE(logits_p, token_{p+1}) over each context of T tokens "
    "(sum, not mean); grad[p] = dL_seq/dx_p at the residual stream after the block, "
    "clean model; grad of the last position is 0"
)


ALLOCATING = "gsae_allocating"
"""Attribute present only while a store is being allocated."""

MUTABLE_ATTRS = frozenset({"n_tokens", "committed", "complete", "attrs_sha256"})
"""Attributes changed after allocation (``committed``: version 1); ``attrs_sha256`` covers the others."""


def attrs_digest(attrs: dict[str, Any]) -> str:
    """SHA-256 of the attributes fixed at allocation (all but :data:`MUTABLE_ATTRS`)."""
    return content_key({k: v for k, v in attrs.items() if k not in MUTABLE_ATTRS})


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
        version = get_attr(attrs, "gsae_cache_version", int)
        return cls(
            provenance=Provenance.from_attrs(attrs),
            layout=Layout.from_attrs(attrs),
            committed_tokens=get_attr(attrs, "n_tokens", int),
            complete=get_attr(attrs, "complete", bool),
            committed=tuple(get_attr(attrs, "committed", list, ())) if version == 1 else None,
            version=version,
            attrs_sha256=get_attr(attrs, "attrs_sha256", str, None),
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
