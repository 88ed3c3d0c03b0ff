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
        """Parse attributes; raises KeyError when a required one is missing."""
        return cls(
            version=int(attrs["gsae_cache_version"]),
            key=str(attrs["key"]),
            model=str(attrs["model"]),
            model_revision=str(attrs["model_revision"]),
            tokenizer=str(attrs["tokenizer"]),
            dataset=dict(attrs["dataset"]),
            context_length=int(attrs["context_length"]),
            hooks=tuple(attrs["hooks"]),
            d_model=int(attrs["d_model"]),
            dtype=str(attrs["dtype"]),
            tokens_per_shard=int(attrs["tokens_per_shard"]),
            n_tokens=int(attrs["n_tokens"]),
            total_tokens=int(attrs["total_tokens"]),
            complete=bool(attrs["complete"]),
            committed=tuple(attrs.get("committed", ())),
            attrs=dict(attrs),
        )

    def shard_rows(self, index: int) -> tuple[int, int]:
        """[start, stop) token rows of shard ``index``."""
        start = index * self.tokens_per_shard
        return start, min(start + self.tokens_per_shard, self.total_tokens)
