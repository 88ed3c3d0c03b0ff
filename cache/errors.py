"""The cache format's errors, and the root of every error the project reports to users.

:class:`PipelineError` is defined here, at the bottom of the import graph, so the cache
(which imports nothing from the library) and the library share one root: the library's
:mod:`pipeline.core.errors` re-exports it and these classes, so ``except PipelineError`` and
``except pipeline.core.errors.CacheCorrupt`` cover what ``cache/`` raises. Each class also
inherits the matching builtin so callers can catch either.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base class of all errors the pipeline reports to users."""


class CacheError(PipelineError):
    """Base class of the errors of the cache format (a store, its shards, its lock)."""


class CacheNotFound(CacheError, FileNotFoundError):
    """No cache store exists at the given path or URL."""


class CacheWriteError(CacheError, OSError):
    """A store could not be created or written (permissions, a missing bucket, a full disk); it stays resumable."""


class CacheMismatch(CacheError, ValueError):
    """A store exists but was written for different settings (another key)."""


class CacheIncomplete(CacheError, RuntimeError):
    """A store is not finished (``complete`` is false) but was needed whole."""


class CacheCorrupt(CacheError, OSError):
    """A committed shard does not match its checksum or cannot be read."""


class ShardMissing(CacheCorrupt):
    """A shard's file is absent (zarr reads that as fill values; the commit digest decides)."""


class CacheLocked(CacheError, RuntimeError):
    """Another live process holds the store's write lock."""


class CacheLockUnsupported(CacheError, NotImplementedError):
    """The store's filesystem cannot create the write lock atomically and no best-effort lock was asked for."""


class CacheUsageError(CacheError, ValueError):
    """The writer was called against its protocol (a shard out of order, rows of the wrong length)."""


class NonFiniteError(PipelineError, FloatingPointError):
    """NaN or inf values where finite numbers are required (harvested data, a training loss)."""
