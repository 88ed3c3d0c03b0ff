"""Names, attributes and the content key of the cache format (DESIGN §3).

A store is a Zarr v3 group. Its attributes describe what was harvested; its arrays are
``tokens`` [N] int32, ``<hook>/act`` and ``<hook>/grad`` [N, d] and optionally ``loss``
[N] float32, all sharded along the token axis. ``committed`` lists one record per shard
that was written and checksummed, in order; ``n_tokens`` counts only those rows, and
``complete`` is set last.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

CACHE_VERSION = 1

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


MUTABLE_ATTRS = frozenset({"n_tokens", "committed", "complete", "attrs_sha256"})
"""Attributes the writer changes after allocation; every other one is covered by ``attrs_sha256``."""


def attrs_digest(attrs: dict[str, Any]) -> str:
    """SHA-256 of the attributes fixed at allocation (all but :data:`MUTABLE_ATTRS`)."""
    return content_key({k: v for k, v in attrs.items() if k not in MUTABLE_ATTRS})


_MISSING = object()


def _get(attrs: dict[str, Any], name: str, kind: type, default: Any = _MISSING) -> Any:
    """``attrs[name]`` checked to be a JSON value of Python type ``kind`` (bool is not an int)."""
    if name not in attrs:
        if default is _MISSING:
            raise KeyError(name)
        return default
    value = attrs[name]
    ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
    if not ok:
        raise TypeError(f"attribute {name!r} must be {kind.__name__}, got {type(value).__name__} {value!r}")
    return value


def content_key(fields: dict[str, Any]) -> str:
    """Hex SHA-256 of everything that determines a store's contents (canonical JSON)."""
    blob = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass(frozen=True)
class CacheInfo:
    """A parsed view of a store's group attributes."""

    version: int
    key: str
    model: str
    model_revision: str
    tokenizer: str
    dataset: dict[str, Any]
    context_length: int
    hooks: tuple[str, ...]
    d_model: int
    dtype: str
    tokens_per_shard: int
    n_tokens: int
    total_tokens: int
    complete: bool
    committed: tuple[dict[str, Any], ...]
    attrs: dict[str, Any]

    @property
    def n_shards(self) -> int:
        """Shards the finished store will have."""
        return -(-self.total_tokens // self.tokens_per_shard)

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> CacheInfo:
        """Parse attributes strictly.

        Raises ``KeyError`` when a required attribute is missing and ``TypeError`` when one
        has the wrong JSON type (``complete: "false"`` is a string, not a boolean).
        """
        return cls(
            version=_get(attrs, "gsae_cache_version", int),
            key=_get(attrs, "key", str),
            model=_get(attrs, "model", str),
            model_revision=str(attrs["model_revision"]),
            tokenizer=str(attrs["tokenizer"]),
            dataset=_get(attrs, "dataset", dict),
            context_length=_get(attrs, "context_length", int),
            hooks=tuple(_get(attrs, "hooks", list)),
            d_model=_get(attrs, "d_model", int),
            dtype=_get(attrs, "dtype", str),
            tokens_per_shard=_get(attrs, "tokens_per_shard", int),
            n_tokens=_get(attrs, "n_tokens", int),
            total_tokens=_get(attrs, "total_tokens", int),
            complete=_get(attrs, "complete", bool),
            committed=tuple(_get(attrs, "committed", list, ())),
            attrs=dict(attrs),
        )

    def shard_rows(self, index: int) -> tuple[int, int]:
        """[start, stop) token rows of shard ``index``."""
        start = index * self.tokens_per_shard
        return start, min(start + self.tokens_per_shard, self.total_tokens)
