"""Packing documents into contexts, lazily: one shard at a time, and where each shard starts.

Packing: documents (in source order) are tokenized without special tokens and joined
into one stream with EOS between documents (when the tokenizer has one). Each context
is BOS (when the tokenizer has one) followed by the next ``T − 1`` stream tokens, so
contexts run across document boundaries and no token is padded or dropped but the
stream's incomplete tail. :func:`pack_contexts` returns the first contexts at once;
a harvest never holds the stream: :class:`ContextPacker`
tokenizes documents only as contexts are taken and keeps at most one shard's tokens plus
one document. A position in the stream is a :class:`StreamPos` (index of the document
among the split's documents, tokens of it already consumed), so a resumed harvest seeks
to its next shard by skipping documents unread by the tokenizer instead of tokenizing the
corpus again.

While a store is incomplete the start of its first uncommitted shard is kept beside it in
``<store>.stream.json`` (outside the Zarr tree, like the lock, and removed before the store
is finalized, so a finished store holds exactly the same files as before this existed).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
from collections.abc import Iterator
from typing import Any, NamedTuple

import fsspec
import numpy as np

from pipeline.core.config import DataConfig
from pipeline.core.errors import DataError
from pipeline.core.fileio import atomic_write_text
from pipeline.text.sources import iter_documents

log = logging.getLogger(__name__)

SIDECAR_SUFFIX = ".stream.json"


class StreamPos(NamedTuple):
    """A point of the packed token stream."""

    doc: int
    """Index of the document (among the split's non-empty documents, in source order)."""
    offset: int
    """Tokens of that document (its EOS included) that come before the point."""


START = StreamPos(0, 0)


class ContextPacker:
    """Packs ``docs`` into contexts of ``context_length`` lazily, starting at ``start``.

    ``docs`` must be the split's documents from the first one: the packer skips
    ``start.doc`` of them without tokenizing. ``first`` (contexts before ``start``) and
    ``total`` (contexts asked in all) only word the error when the text runs out.
    """

    def __init__(
        self,
        docs: Iterator[str],
        tokenizer: Any,
        context_length: int,
        *,
        start: StreamPos = START,
        first: int = 0,
        total: int | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.bos, self.eos = tokenizer.bos_token_id, tokenizer.eos_token_id
        self.T = context_length
        self.body = context_length - (1 if self.bos is not None else 0)
        self.docs = itertools.islice(docs, start.doc, None)  # skipped documents are read, never tokenized
        self.next_doc = start.doc
        # tokens not yet packed, oldest first, each with the stream position of its first token
        self.pending: list[tuple[StreamPos, np.ndarray]] = []
        self.taken, self.total = first, total
        self._skip = start.offset

    @property
    def position(self) -> StreamPos:
        """Where the next context's body starts."""
        return self.pending[0][0] if self.pending else StreamPos(self.next_doc, 0)

    def _load_one(self) -> int:
        """Tokenize the next document into ``pending``; returns its token count (-1: no more text)."""
        text = next(self.docs, None)
        if text is None:
            return -1
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if self.eos is not None:
            ids = [*ids, self.eos]
        arr = np.asarray(ids, dtype=np.int32)
        doc, self.next_doc = self.next_doc, self.next_doc + 1
        offset, self._skip = min(self._skip, len(arr)), max(0, self._skip - len(arr))
        if offset < len(arr):
            self.pending.append((StreamPos(doc, offset), arr[offset:]))
        return len(arr) - offset

    def take(self, n: int) -> np.ndarray:
        """The next ``n`` contexts [n, T] int32; ``DataError`` when the text runs out first."""
        if n <= 0:
            return np.empty((0, self.T), np.int32)
        need = n * self.body
        have = sum(len(a) for _, a in self.pending)
        while have < need:
            got = self._load_one()
            if got < 0:
                self._ran_out(have // self.body)
            have += got
        parts, used = [], 0
        while used < need:
            pos, arr = self.pending[0]
            k = min(len(arr), need - used)
            parts.append(arr[:k])
            used += k
            if k == len(arr):
                self.pending.pop(0)
            else:  # copy: the leftover must not pin the whole document's array
                self.pending[0] = (StreamPos(pos.doc, pos.offset + k), arr[k:].copy())
        self.taken += n
        ctx = np.concatenate(parts).reshape(n, self.body)
        if self.bos is None:
            return ctx
        return np.concatenate([np.full((n, 1), self.bos, dtype=np.int32), ctx], axis=1)

    def _ran_out(self, more: int) -> None:
        have = self.taken + more
        if have == 0:
            raise DataError("the text source yields no complete context (empty source or split?)")
        asked = self.total if self.total is not None else self.taken + more + 1
        raise DataError(
            f"the source holds only {have} contexts ({have * self.T} tokens) of this split, "
            f"fewer than the {asked} asked; lower the token count or add text"
        )


class ShardContexts:
    """The contexts of each shard of a harvest, produced lazily from the text source.

    ``shard(i)`` is cheapest in increasing order (one packer runs along the stream);
    asking for an earlier shard, or one far ahead with a recorded start, restarts the
    packer there. ``starts`` maps shard index → known :class:`StreamPos` of its first
    context (from the sidecar of an interrupted harvest); ends of produced shards are
    added as they are produced, and :meth:`forget` drops those no longer needed.
    """

    def __init__(
        self,
        data: DataConfig,
        tokenizer: Any,
        context_length: int,
        n_contexts: int,
        ctx_per_shard: int,
        starts: dict[int, StreamPos] | None = None,
    ) -> None:
        self.data, self.tokenizer, self.T = data, tokenizer, context_length
        self.n_contexts, self.per_shard = n_contexts, ctx_per_shard
        self.starts: dict[int, StreamPos] = {0: START, **(starts or {})}
        self.packer: ContextPacker | None = None
        self.next_index = -1  # the shard the packer would produce next
        # the shard produced last: the harvest's pre-check asks for it once more
        self._last: tuple[int, np.ndarray] | None = None

    @property
    def n_shards(self) -> int:
        """Shards of the harvest."""
        return -(-self.n_contexts // self.per_shard)

    def _packer_at(self, index: int) -> None:
        known = max(i for i in self.starts if i <= index)
        if known:
            log.info("text stream: seeking to shard %d at document %d, token %d", known, *self.starts[known])
        self.packer = ContextPacker(
            iter_documents(self.data),
            self.tokenizer,
            self.T,
            start=self.starts[known],
            first=known * self.per_shard,
            total=self.n_contexts,
        )
        self.next_index = known

    def _count(self, index: int) -> int:
        return min(self.per_shard, self.n_contexts - index * self.per_shard)

    def shard(self, index: int) -> np.ndarray:
        """The contexts [n, T] of shard ``index``."""
        if self._last is not None and self._last[0] == index:
            return self._last[1]
        if (
            self.packer is None
            or index < self.next_index
            or (index > self.next_index and index in self.starts)
        ):
            self._packer_at(index)
        assert self.packer is not None
        while self.next_index < index:  # skipping forward: pack and drop
            self.packer.take(self._count(self.next_index))
            self.next_index += 1
        ctx = self.packer.take(self._count(index))
        self.next_index = index + 1
        self.starts[index + 1] = self.packer.position
        self._last = (index, ctx)
        return ctx

    def forget(self, below: int) -> None:
        """Drop recorded starts of shards before ``below`` (keeps memory flat over a long harvest)."""
        for i in list(self.starts):  # list(): the writer thread calls this while shards are produced
            if 0 < i < below:
                self.starts.pop(i, None)


def pack_contexts(docs: Iterator[str], tokenizer: Any, context_length: int, n_contexts: int) -> np.ndarray:
    """The first ``n_contexts`` packed contexts [n, T] int32 (see the module docstring).

    Tokenizes only as far as needed; a harvest packs shard by shard instead
    (:class:`ShardContexts`, the same contexts).
    """
    return ContextPacker(docs, tokenizer, context_length, total=n_contexts).take(n_contexts)


def _sidecar(url: str) -> tuple[Any, str]:
    fs, root = fsspec.core.url_to_fs(url)
    return fs, root.rstrip("/") + SIDECAR_SUFFIX


def read_start(url: str, key: str) -> dict[int, StreamPos]:
    """The recorded start of the first uncommitted shard of the store at ``url`` (``{}`` if none)."""
    fs, path = _sidecar(url)
    try:
        rec = json.loads(fs.cat_file(path))
        if rec.get("key") != key:
            return {}
        return {int(rec["shard"]): StreamPos(int(rec["doc"]), int(rec["offset"]))}
    except FileNotFoundError:
        return {}
    except (ValueError, KeyError, TypeError, OSError) as exc:  # unreadable: the packer walks from the start
        log.warning("ignoring unreadable %s (%s)", path, exc)
        return {}


def write_start(url: str, key: str, shard: int, pos: StreamPos) -> None:
    """Record that shard ``shard`` of the store starts at ``pos`` (one small write)."""
    fs, path = _sidecar(url)
    blob = json.dumps({"key": key, "shard": shard, "doc": pos.doc, "offset": pos.offset}).encode()
    local = "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))
    if local:
        atomic_write_text(path, blob.decode())
    else:
        fs.pipe_file(path, blob)


def remove_start(url: str) -> None:
    """Remove the sidecar (before finalizing: a complete store needs none)."""
    fs, path = _sidecar(url)
    with contextlib.suppress(FileNotFoundError):
        fs.rm_file(path)
