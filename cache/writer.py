"""Writing a store: allocate the arrays, write shards in order, commit each, finalize.

The protocol that makes a store trustworthy and resumable:

1. ``allocate`` creates the group, its attributes (``complete=false``, ``n_tokens=0``)
   and empty sharded arrays of the final shape.
2. ``ShardWriter.write`` writes one whole shard of every array (each shard file is
   written once), then *commits* it: appends ``{index, rows, sha256}`` to the
   ``committed`` attribute and advances ``n_tokens``. A crash between the two leaves an
   uncommitted shard that a resume simply rewrites.
3. ``ShardWriter.finalize`` sets ``complete=true`` once every shard is committed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec, ZstdCodec

from cache.schema import CACHE_VERSION, CacheInfo, act_path, grad_path
from cache.store import open_group
from pipeline.errors import CacheMismatch, PipelineError


def _compressors(name: str, level: int) -> list[Any] | None:
    if name == "zstd":
        return [ZstdCodec(level=level)]
    if name == "blosc":
        return [BloscCodec(cname="zstd", clevel=level, shuffle="bitshuffle")]
    return None


def shard_digest(arrays: Sequence[np.ndarray]) -> str:
    """SHA-256 over the raw bytes of a shard's arrays, in the store's fixed array order."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def array_order(hooks: Sequence[str], with_loss: bool) -> list[str]:
    """The fixed order of array paths used for checksums."""
    names = ["tokens"]
    for hook in hooks:
        names += [act_path(hook), grad_path(hook)]
    if with_loss:
        names.append("loss")
    return names


def allocate(
    url: str,
    attrs: Mapping[str, Any],
    *,
    hooks: Sequence[str],
    d_model: int,
    total_tokens: int,
    tokens_per_shard: int,
    chunk_tokens: int,
    dtype: str,
    compressor: str = "zstd",
    level: int = 3,
    store_loss: bool = False,
) -> zarr.Group:
    """Create a fresh, empty store (overwriting whatever is at ``url``)."""
    group = open_group(url, "w")
    comp = _compressors(compressor, level)
    chunk = min(chunk_tokens, tokens_per_shard)

    def create(path: str, shape: tuple[int, ...], dt: str) -> None:
        tail = shape[1:]
        group.create_array(
            path,
            shape=shape,
            chunks=(chunk, *tail),
            shards=(tokens_per_shard, *tail),
            dtype=dt,
            compressors=comp,
            fill_value=0,
        )

    create("tokens", (total_tokens,), "int32")
    for hook in hooks:
        create(act_path(hook), (total_tokens, d_model), dtype)
        create(grad_path(hook), (total_tokens, d_model), dtype)
    if store_loss:
        create("loss", (total_tokens,), "float32")
    group.attrs.update(
        {
            **attrs,
            "gsae_cache_version": CACHE_VERSION,
            "hooks": list(hooks),
            "d_model": d_model,
            "dtype": dtype,
            "tokens_per_shard": tokens_per_shard,
            "chunk_tokens": chunk,
            "compressor": compressor,
            "total_tokens": total_tokens,
            "has_loss": store_loss,
            "n_tokens": 0,
            "committed": [],
            "complete": False,
        }
    )
    return group


class ShardWriter:
    """Writes and commits the shards of an allocated store, strictly in order."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.group = open_group(url, "r+")
        self.info = CacheInfo.from_attrs(dict(self.group.attrs))
        self.names = array_order(self.info.hooks, bool(self.info.attrs.get("has_loss")))
        self.arrays = {name: self.group[name] for name in self.names}

    @property
    def next_shard(self) -> int:
        """Index of the first shard not yet committed."""
        return len(self.info.committed)

    def write(
        self,
        index: int,
        tokens: np.ndarray,
        acts: Mapping[str, np.ndarray],
        grads: Mapping[str, np.ndarray],
        loss: np.ndarray | None = None,
    ) -> None:
        """Write every array's rows of shard ``index``, then commit it."""
        if index != self.next_shard:
            raise PipelineError(f"shard {index} written out of order (next is {self.next_shard})")
        start, stop = self.info.shard_rows(index)
        data: dict[str, np.ndarray] = {"tokens": np.asarray(tokens, dtype=np.int32)}
        for hook in self.info.hooks:
            data[act_path(hook)] = np.asarray(acts[hook], dtype=self.info.dtype)
            data[grad_path(hook)] = np.asarray(grads[hook], dtype=self.info.dtype)
        if "loss" in self.arrays:
            if loss is None:
                raise PipelineError("store expects a loss array but none was given")
            data["loss"] = np.asarray(loss, dtype=np.float32)
        for name in self.names:
            if data[name].shape[0] != stop - start:
                raise PipelineError(f"shard {index}: {name} has {data[name].shape[0]} rows, expected {stop - start}")
            self.arrays[name][start:stop] = data[name]
        self._commit(index, start, stop, shard_digest([data[n] for n in self.names]))

    def _commit(self, index: int, start: int, stop: int, digest: str) -> None:
        committed = [*self.info.committed, {"index": index, "rows": [start, stop], "sha256": digest}]
        self.group.attrs.update({"committed": committed, "n_tokens": stop})
        self.info = CacheInfo.from_attrs(dict(self.group.attrs))

    def finalize(self) -> None:
        """Mark the store complete; refuses while shards are missing."""
        if self.next_shard != self.info.n_shards:
            raise PipelineError(f"cannot finalize: {self.next_shard} of {self.info.n_shards} shards committed")
        self.group.attrs.update({"complete": True})
        self.info = CacheInfo.from_attrs(dict(self.group.attrs))


def check_same_key(url: str, key: str) -> CacheInfo:
    """Info of the existing store at ``url``; ``CacheMismatch`` if it was made for another key."""
    group = open_group(url, "r")
    info = CacheInfo.from_attrs(dict(group.attrs))
    if info.key != key:
        raise CacheMismatch(
            f"store {url} holds a different harvest (key {info.key[:12]}…, expected {key[:12]}…); "
            "use --overwrite to replace it or choose another harvest.store"
        )
    return info
