"""The host rows of a finished shard, and the thread that writes and commits them while the
next shard is computed.

Writer *processes* were tried on an H200 host (benchmarks/gpu/run.py ``hpipe``,
benchmarks/gpu/results/h200-5-pipeline.json): four spawned writers gave 0.95-0.99x the harvest
rate of this one thread, so they were not kept (docs/gpu.md).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import fsspec
import numpy as np

from cache.writer import ShardWriter

log = logging.getLogger(__name__)


@dataclass
class Shard:
    """Host rows of one finished shard."""

    index: int
    tokens: np.ndarray
    acts: dict[str, np.ndarray]
    grads: dict[str, np.ndarray]
    """Empty for an activation-only store."""
    loss: np.ndarray | None


Committed = Callable[[int], None]
"""Called with a shard's index once it is committed."""


class ThreadWriter:
    """Writes and commits shards on a thread so compression overlaps compute."""

    def __init__(self, writer: ShardWriter, on_commit: Committed | None) -> None:
        self.writer, self.on_commit = writer, on_commit
        self.queue: queue.Queue[Shard | None] = queue.Queue(maxsize=1)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="gsae-shard-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (shard := self.queue.get()) is not None:
            if self.error is not None:
                continue
            try:
                start = time.perf_counter()
                self.writer.write(shard.index, shard.tokens, shard.acts, shard.grads, shard.loss)
                log.debug(
                    "shard %d written and committed in %.3f s", shard.index, time.perf_counter() - start
                )
                if self.on_commit is not None:
                    self.on_commit(shard.index)
            except BaseException as exc:  # reported on the main thread
                self.error = exc

    def put(self, shard: Shard) -> None:
        self._raise()
        self.queue.put(shard)

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()
        self._raise()

    def abort(self) -> None:
        """Finish what was handed over and stop, without raising its error (another is on its way)."""
        self.queue.put(None)
        self.thread.join()

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error


def clean_debris(url: str) -> int:
    """Remove ``*.partial`` temp files a killed writer left inside a local store; returns how many."""
    fs, root = fsspec.core.url_to_fs(url)
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    if "file" not in protocols:
        return 0
    debris = [p for p in fs.glob(f"{root.rstrip('/')}/**/*.partial") if fs.isfile(p)]
    for path in debris:
        fs.rm_file(path)
    if debris:
        log.info("removed %d partial file(s) left by an interrupted write in %s", len(debris), url)
    return len(debris)
