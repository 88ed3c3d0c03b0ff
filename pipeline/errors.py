"""Error hierarchy: every failure a user can cause maps to one of these.

Each subclass also inherits the matching builtin so callers can catch either.
The CLI turns any ``PipelineError`` into one line on stderr and a non-zero exit.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base class of all errors the pipeline reports to users."""


class ConfigError(PipelineError, ValueError):
    """Bad params.yaml content or a bad ``-s KEY=VALUE`` override."""


class ModelLoadError(PipelineError, OSError):
    """The language model or its tokenizer could not be loaded or used."""


class DataError(PipelineError, ValueError):
    """The text source is missing, empty, or cannot be tokenized as asked."""


class CacheNotFound(PipelineError, FileNotFoundError):
    """No cache store exists at the given path or URL."""


class CacheWriteError(PipelineError, OSError):
    """A store could not be created or written (permissions, a missing bucket, a full disk); it stays resumable."""


class CacheMismatch(PipelineError, ValueError):
    """A store exists but was written for different settings (another key)."""


class CacheIncomplete(PipelineError, RuntimeError):
    """A store is not finished (``complete`` is false) but was needed whole."""


class CacheCorrupt(PipelineError, OSError):
    """A committed shard does not match its checksum or cannot be read."""


class SAEFormatError(PipelineError, ValueError):
    """A trained SAE directory is missing files or holds inconsistent tensors."""


class NothingToEvaluate(PipelineError, FileNotFoundError):
    """``train.out_dir`` holds no trained SAE variant."""


class ExportError(PipelineError, ValueError):
    """A trained SAE cannot be written in the requested external format."""


class CacheLocked(PipelineError, RuntimeError):
    """Another live process holds the store's write lock."""


class NonFiniteError(PipelineError, FloatingPointError):
    """NaN or inf values where finite numbers are required (harvested data, a training loss)."""


class OutputError(PipelineError, OSError):
    """An output folder or file cannot be written."""


class ShardMissing(CacheCorrupt):
    """A shard's file is absent (zarr reads that as fill values; the commit digest decides)."""


class SchedulerError(PipelineError, ConnectionError):
    """The dask scheduler of ``harvest.scheduler`` cannot be reached, or a shard task failed for good."""
