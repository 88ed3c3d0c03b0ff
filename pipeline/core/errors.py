"""Error hierarchy: every failure a user can cause maps to one of these.

Each subclass also inherits the matching builtin so callers can catch either.
The CLI turns any ``PipelineError`` into one line on stderr and a non-zero exit.
"""

from __future__ import annotations

# The root and the cache format's errors live with the format (cache/ imports nothing from here).
from cache.errors import (  # noqa: F401  (re-exported)
    CacheCorrupt,
    CacheError,
    CacheIncomplete,
    CacheLocked,
    CacheLockUnsupported,
    CacheMismatch,
    CacheNotFound,
    CacheUsageError,
    CacheWriteError,
    NonFiniteError,
    PipelineError,
    ShardMissing,
)


class ConfigError(PipelineError, ValueError):
    """Bad params.yaml content or a bad ``-s KEY=VALUE`` override."""


class ModelLoadError(PipelineError, OSError):
    """The language model or its tokenizer could not be loaded or used."""


class DataError(PipelineError, ValueError):
    """The text source is missing, empty, or cannot be tokenized as asked."""


class SAEFormatError(PipelineError, ValueError):
    """A trained SAE directory is missing files or holds inconsistent tensors."""


class NothingToEvaluate(PipelineError, FileNotFoundError):
    """``train.out_dir`` holds no trained SAE variant."""


class ExportError(PipelineError, ValueError):
    """A trained SAE cannot be written in the requested external format."""


class OutputError(PipelineError, OSError):
    """An output folder or file cannot be written."""


class PublishError(PipelineError, OSError):
    """SAE folders cannot be pushed to the Hugging Face Hub: nothing (or an unknown variant) to
    push, no token, or the Hub refused the upload or could not be reached."""


class SchedulerError(PipelineError, ConnectionError):
    """The dask scheduler of ``harvest.scheduler`` cannot be reached, or a shard task failed for good."""


def config_check(cond: bool, msg: str) -> None:
    """``ConfigError(msg)`` unless ``cond`` (the config dataclasses' cross-field checks)."""
    if not cond:
        raise ConfigError(msg)
