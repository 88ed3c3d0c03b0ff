"""``harvest.scheduler``: harvest whole shards as dask.distributed tasks.

Who writes what: the driver (the ``gsae harvest`` process) holds the store's lock,
allocates the store, packs each shard's contexts from the text (lazily, in order) and
submits one task per shard, at most a window of ``2 × worker threads`` at a time so its
memory stays flat. A task loads the LM once per worker process (:func:`worker_model`),
computes the shard exactly as the in-process harvest does, writes the shard's files
(:meth:`cache.writer.ShardWriter.write_uncommitted`, one file per array, any order) and
returns the commit record (row range and digests). Only the driver commits, strictly in
shard order, so the group metadata has one writer and the finished store is byte for byte
the in-process one. A worker killed mid-task loses only uncommitted files: dask reruns
the task elsewhere (the rewrite is identical) and the driver removes the ``*.partial``
temp file the kill may have left before finalizing. If the driver itself stops, the store
is an ordinary interrupted store: any scheduler, or none, resumes it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from cache.lock import StoreLock
from cache.writer import ShardWriter
from pipeline.core.config import ModelConfig, Params
from pipeline.core.errors import PipelineError, SchedulerError
from pipeline.harvest.forward import compute_shard
from pipeline.harvest.writers import clean_debris
from pipeline.lm.models import LoadedModel, load_model
from pipeline.text.packing import ShardContexts

log = logging.getLogger(__name__)

_MODELS: dict[ModelConfig, LoadedModel] = {}
_MODELS_LOCK = threading.Lock()


def worker_model(cfg: ModelConfig) -> LoadedModel:
    """The LM of ``cfg``, loaded once per worker process (the last one asked stays cached)."""
    with _MODELS_LOCK:
        if cfg not in _MODELS:
            _MODELS.clear()  # one model per worker: a new harvest's model replaces the old one
            _MODELS[cfg] = load_model(cfg)
        return _MODELS[cfg]


def harvest_shard(
    params: Params, url: str, hooks: list[str], index: int, contexts: np.ndarray
) -> dict[str, Any]:
    """Task: compute and write shard ``index`` of the store at ``url``; returns its commit record."""
    lm = worker_model(params.model)
    writer = ShardWriter(url)
    shard = compute_shard(params, lm, hooks, contexts, writer, index, None)
    return writer.write_uncommitted(index, shard.tokens, shard.acts, shard.grads, shard.loss)


@contextmanager
def scheduler_client(scheduler: str) -> Iterator[Any]:
    """A ``dask.distributed.Client`` for ``local:N`` (a LocalCluster started here) or ``tcp://…``."""
    from dask.distributed import Client, LocalCluster

    if scheduler.startswith("local:"):
        n = int(scheduler.split(":", 1)[1])
        log.info("starting a dask LocalCluster of %d worker process(es)", n)
        # one thread per worker: each process runs its own LM; no dashboard (no port to take)
        with (
            LocalCluster(
                n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None
            ) as cluster,
            Client(cluster) as client,
        ):
            yield client
        return
    import dask

    try:  # the connect timeout is dask's own setting (distributed.comm.timeouts.connect, 30 s by default)
        client = Client(scheduler, timeout=dask.config.get("distributed.comm.timeouts.connect"))
    except (OSError, TimeoutError) as exc:
        raise SchedulerError(f"cannot reach the dask scheduler harvest.scheduler={scheduler}: {exc}") from exc
    with client:
        yield client


def harvest_distributed(
    params: Params,
    hooks: list[str],
    contexts: ShardContexts,
    writer: ShardWriter,
    on_commit: Callable[[int], None],
    lock: StoreLock | None = None,
) -> None:
    """Harvest the uncommitted shards of ``writer``'s store on ``params.harvest.scheduler``; commit in order."""
    from dask.distributed import as_completed

    info = writer.info
    todo = iter(range(writer.next_shard, info.n_shards))
    bar = tqdm(
        total=info.total_tokens, initial=info.committed_tokens, unit="tok", unit_scale=True, desc="harvest"
    )
    with scheduler_client(params.harvest.scheduler) as client:
        threads = sum(client.nthreads().values())
        if threads == 0:
            raise SchedulerError(f"the dask scheduler {params.harvest.scheduler} has no workers")
        window = max(2, 2 * threads)
        log.info(
            "harvesting shards %d..%d on %d worker thread(s)", writer.next_shard, info.n_shards - 1, threads
        )
        running = as_completed()

        def submit_next() -> None:
            index = next(todo, None)
            if index is not None:
                running.add(
                    client.submit(
                        harvest_shard,
                        params,
                        writer.url,
                        hooks,
                        index,
                        contexts.shard(index),
                        pure=False,
                        key=f"gsae-shard-{index}-{info.key[:12]}-{id(running):x}",
                    )
                )

        for _ in range(window):
            submit_next()
        done: dict[int, dict[str, Any]] = {}
        try:
            for future in running:
                try:
                    record = future.result()
                except PipelineError:
                    raise
                except Exception as exc:  # KilledWorker after repeated worker deaths, lost scheduler, ...
                    raise SchedulerError(
                        f"shard task failed on {params.harvest.scheduler}: {type(exc).__name__}: {exc}"
                    ) from exc
                done[int(record["index"])] = record
                bar.update(record["rows"][1] - record["rows"][0])
                while writer.next_shard in done:
                    if lock is not None:
                        lock.check()
                    index = writer.next_shard
                    writer.commit(done.pop(index))
                    on_commit(index)
                submit_next()
        except BaseException:
            for future in list(running.futures):
                future.cancel()
            raise
        finally:
            bar.close()
    clean_debris(writer.url)  # temp files of a worker killed mid-write
