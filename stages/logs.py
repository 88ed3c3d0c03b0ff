"""Logging of the ``gsae`` commands: the project's loggers at INFO (DEBUG with ``-v``), the
noisy third-party ones at WARNING."""

from __future__ import annotations

import logging

NOISY_LOGGERS = (
    "matplotlib",
    "PIL",
    "fsspec",
    "urllib3",
    "filelock",
    "httpx",
    "httpcore",
    "huggingface_hub",
    "datasets",
    "asyncio",
    "numcodecs",
    "zarr",
    "dask",
    "distributed",
    "torch",
    "git",
    "h5py",
)
"""Third-party loggers kept at WARNING under ``-v`` (matplotlib alone logs thousands of font lines)."""


PROJECT_LOGGERS = ("pipeline", "cache", "stages", "gsae")


def setup_logging(verbose: bool) -> None:
    """INFO for everyone; DEBUG for the project's own loggers with ``-v``; noisy libraries at WARNING."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(logging.INFO)
    for name in PROJECT_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.INFO)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
