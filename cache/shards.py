"""Whole-shard reads of the store's arrays, decoded straight into a caller's buffer.

The reader only ever needs whole shards, and zarr's general sharding pipeline (async
byte-range requests, one codec pipeline call per inner chunk, fresh output arrays) costs
about as much again as the decompression itself. For the layout :func:`cache.writer.allocate`
writes, a shard is one object holding ``n_inner`` compressed row blocks followed by an index
of ``(offset, nbytes)`` little-endian uint64 pairs and a CRC32C of that index (the zarr v3
``sharding_indexed`` codec, index at the end). :class:`ShardFile` reads that object with one
fsspec request, checks the index CRC and decompresses each inner chunk into the rows of
``out`` it covers, releasing the GIL in the codec, so several shards decode in parallel.

:func:`shard_codec` recognises the layout from the array metadata and returns ``None`` for
anything else (other codecs, index at the start, inner chunks that split the feature axis);
callers then fall back to zarr's own reads, which give identical values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import fsspec
import google_crc32c
import numcodecs
import numpy as np
import zarr

from cache.errors import CacheCorrupt, ShardMissing

_EMPTY = np.uint64(2**64 - 1)  # offset and nbytes of an inner chunk that was never written
_COMPRESSORS = {"zstd": numcodecs.Zstd, "blosc": numcodecs.Blosc, "gzip": numcodecs.GZip}


@dataclass(frozen=True)
class ShardCodec:
    """What decoding one shard of an array needs."""

    shard_rows: int
    """Rows (tokens) per shard."""
    chunk_rows: int
    """Rows per inner chunk; an inner chunk spans every other axis."""
    row_shape: tuple[int, ...]
    """Shape of one row (``(d,)`` for act/grad, ``()`` for tokens)."""
    dtype: np.dtype
    """Stored dtype (little-endian)."""
    fill_value: Any
    """Value of rows whose inner chunk was never written."""
    compressor: str | None
    """Name of the inner compressor (a key of the numcodecs table), ``None`` = raw bytes."""

    @property
    def n_inner(self) -> int:
        """Inner chunks per shard."""
        return -(-self.shard_rows // self.chunk_rows)

    @property
    def index_nbytes(self) -> int:
        """Bytes of the shard index, CRC32C included."""
        return 16 * self.n_inner + 4


def shard_codec(array: zarr.Array) -> ShardCodec | None:
    """The :class:`ShardCodec` of ``array``, or ``None`` when its layout is not the one handled here."""
    meta: dict[str, Any] = dict(array.metadata.to_dict())
    codecs = meta.get("codecs") or []
    if len(codecs) != 1 or codecs[0].get("name") != "sharding_indexed":
        return None
    cfg = codecs[0]["configuration"]
    shard_shape = tuple(meta["chunk_grid"]["configuration"]["chunk_shape"])
    chunk_shape = tuple(cfg["chunk_shape"])
    index_names = [c.get("name") for c in cfg.get("index_codecs", [])]
    if cfg.get("index_location", "end") != "end" or index_names != ["bytes", "crc32c"]:
        return None
    if chunk_shape[1:] != shard_shape[1:] or tuple(array.shape[1:]) != shard_shape[1:]:
        return None
    dtype = np.dtype(array.dtype)
    inner = list(cfg["codecs"])
    if not inner or inner[0].get("name") != "bytes":
        return None
    endian = (inner[0].get("configuration") or {}).get("endian", "little")
    if dtype.itemsize > 1 and endian != "little":
        return None
    rest = [c.get("name") for c in inner[1:]]
    if len(rest) > 1 or (rest and rest[0] not in _COMPRESSORS):
        return None
    return ShardCodec(
        shard_rows=shard_shape[0],
        chunk_rows=chunk_shape[0],
        row_shape=tuple(shard_shape[1:]),
        dtype=dtype.newbyteorder("<"),
        fill_value=array.fill_value,
        compressor=rest[0] if rest else None,
    )


class ShardFile:
    """Reads shards of one array of a store given by local path or fsspec URL."""

    def __init__(self, url: str, array: zarr.Array, codec: ShardCodec) -> None:
        self.fs, root = fsspec.core.url_to_fs(url)
        self.url, self.path = url, array.path
        self.prefix = f"{root.rstrip('/')}/{array.path}"
        self.encode_key = array.metadata.encode_chunk_key
        self.codec = codec
        self.n_rows = array.shape[0]
        self._decompressor = _COMPRESSORS[codec.compressor]() if codec.compressor else None

    def key(self, shard: int) -> str:
        """Path of shard ``shard``'s object within the filesystem."""
        return f"{self.prefix}/{self.encode_key((shard,) + (0,) * len(self.codec.row_shape))}"

    def index(self, blob: bytes, shard: int) -> np.ndarray:
        """The shard's ``[n_inner, 2]`` (offset, nbytes) table, CRC checked."""
        n = self.codec.index_nbytes
        if len(blob) < n:
            raise CacheCorrupt(
                f"store {self.url}, array {self.path}, shard {shard}: shard file truncated ({len(blob)} bytes)"
            )
        table, crc = blob[-n:-4], blob[-4:]
        if google_crc32c.value(table).to_bytes(4, "little") != crc:
            raise CacheCorrupt(f"store {self.url}, array {self.path}, shard {shard}: bad index checksum")
        return np.frombuffer(table, dtype="<u8").reshape(self.codec.n_inner, 2)

    def read_into(self, shard: int, out: np.ndarray) -> None:
        """Decode the rows of shard ``shard`` that lie inside the array into ``out`` [rows, *row_shape].

        ``out`` must be C-contiguous with the stored dtype and exactly as many rows as the
        shard has inside the array (fewer than ``shard_rows`` only for the last shard).
        """
        c = self.codec
        start = shard * c.shard_rows
        rows = min(c.shard_rows, self.n_rows - start)
        if out.shape != (rows, *c.row_shape) or out.dtype != c.dtype or not out.flags.c_contiguous:
            raise ValueError(f"out must be a C-contiguous {c.dtype} array of shape {(rows, *c.row_shape)}")
        try:
            blob = self.fs.cat_file(self.key(shard))
        except FileNotFoundError as exc:
            raise ShardMissing(
                f"store {self.url}, array {self.path}, shard {shard}: shard file is missing"
            ) from exc
        table = self.index(blob, shard)
        view = memoryview(blob)
        for j, (offset, nbytes) in enumerate(table):
            lo = j * c.chunk_rows
            hi = min(lo + c.chunk_rows, rows)
            if lo >= rows:
                break
            if offset == _EMPTY and nbytes == _EMPTY:
                out[lo:hi] = c.fill_value
                continue
            self._decode(view[int(offset) : int(offset) + int(nbytes)], out[lo:hi], hi - lo, shard)

    def _decode(self, data: memoryview, dest: np.ndarray, rows: int, shard: int) -> None:
        """One inner chunk into ``dest``; an edge chunk is stored at full size, so it goes via a scratch array."""
        c = self.codec
        full = rows == c.chunk_rows
        target = dest if full else np.empty((c.chunk_rows, *c.row_shape), c.dtype)
        try:
            if self._decompressor is None:
                flat = np.frombuffer(data, dtype=c.dtype)
                target.reshape(-1)[:] = flat
            else:
                self._decompressor.decode(data, out=target)
        except (RuntimeError, ValueError) as exc:
            raise CacheCorrupt(
                f"store {self.url}, array {self.path}, shard {shard}: does not decode ({exc})"
            ) from exc
        if not full:
            dest[:] = target[:rows]
