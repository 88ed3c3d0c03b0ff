"""Logging of the ``gsae`` commands: the project's loggers at INFO (DEBUG with ``-v``), the
noisy third-party ones at WARNING, every line written around the progress bars.

A record is written with ``tqdm.write`` (:class:`TqdmHandler`): it clears the bars on the
stream, prints the line and draws the bars again below it, so a log line never lands on
the end of a half-drawn bar (``harvest: 40%|████ | 2.05k/5.12k [..]INFO ...``).
"""

from __future__ import annotations

import logging
import sys

from tqdm import tqdm

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
FORMAT = "%(levelname)s %(name)s: %(message)s"


class TqdmHandler(logging.StreamHandler):  # type: ignore[type-arg]  # typeshed: StreamHandler[TextIO]
    """A stream handler (stderr by default) that writes each record with ``tqdm.write``, on its own
    line above any active progress bar of that stream."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=self.stream or sys.stderr)
            self.flush()
        except RecursionError:  # as logging.StreamHandler does
            raise
        except Exception:
            self.handleError(record)


def setup_logging(verbose: bool) -> None:
    """INFO for everyone; DEBUG for the project's own loggers with ``-v``; noisy libraries at WARNING."""
    logging.basicConfig(level=logging.INFO, format=FORMAT, handlers=[TqdmHandler(sys.stderr)])
    logging.getLogger().setLevel(logging.INFO)
    for name in PROJECT_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.INFO)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
