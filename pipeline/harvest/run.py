"""Stage 1: stream packed contexts through the LM and cache activations and gradients.

Each batch runs :func:`pipeline.harvest.forward.forward_backward` (activations and ∂L_seq/∂x at every
hooked layer), or with ``harvest.gradients: false`` :func:`pipeline.harvest.forward.forward_activations`
(the forward stopped after the deepest hooked block: activations only). Batches never
straddle a shard, so a resumed harvest computes exactly the same batches as an uninterrupted one.
Finished shards are compressed and written on a thread while the next is computed
(:mod:`pipeline.harvest.writers`), and the next shard's text is packed on another. With a
``harvest.scheduler`` the shards are computed by dask workers (:mod:`pipeline.harvest.distributed`)
and this process, the driver, reads only the LM's tokenizer and config
(:func:`pipeline.lm.models.load_model_spec`), never its weights.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tqdm.auto import tqdm

from cache import store as cache_store
from cache.attrs import Provenance
from cache.lock import StoreLock
from cache.schema import LOSS_DEFINITION, content_key
from cache.verify import verify
from cache.writer import ShardWriter, allocate, check_same_key, interrupted_allocation
from pipeline.core.config import Params
from pipeline.core.errors import CacheCorrupt, ConfigError
from pipeline.core.loader import params_to_dict
from pipeline.harvest.distributed import harvest_distributed
from pipeline.harvest.forward import compute_shard
from pipeline.harvest.identity import harvest_rows, key_fields, store_url
from pipeline.harvest.writers import ThreadWriter, clean_debris
from pipeline.lm.models import LoadedModel, ModelSpec, load_model, load_model_spec
from pipeline.stores import record_store
from pipeline.text.packing import ShardContexts, read_start, remove_start, write_start
from pipeline.text.sources import check_source

log = logging.getLogger(__name__)


def _validate(params: Params, lm: LoadedModel | ModelSpec) -> list[str]:
    hooks = [lm.hook_name(layer) for layer in params.harvest.layers]
    limit = lm.max_length
    if limit is not None and params.data.context_length > limit:
        raise ConfigError(
            f"data.context_length {params.data.context_length} exceeds the model's maximum {limit}"
        )
    return hooks


def _provenance(params: Params, lm: LoadedModel | ModelSpec, key: str, fields: dict[str, Any]) -> Provenance:
    """What the store records about its rows' origin (DESIGN §3); ``model_hub_id`` and the weights
    identity are not part of the content key (stores keep their keys)."""
    ident = lm.identity
    return Provenance(
        key=key,
        model=lm.name,
        model_revision=lm.revision,
        model_dtype=params.model.dtype,
        tokenizer=lm.tokenizer_name,
        dataset=fields["dataset"],
        context_length=params.data.context_length,
        layers=tuple(params.harvest.layers),
        loss=LOSS_DEFINITION,
        # Where the store lives is not part of what it holds: keep attrs path-independent.
        harvest={
            k: v
            for k, v in params_to_dict(params.harvest).items()
            if k not in ("store", "cache_root", "scheduler")
        },
        model_hub_id=None if ident is None else ident.hub_id,
        model_weights=None if ident is None else ident.weights,
        model_weights_sha256=None if ident is None else ident.sha256,
    )


def run_harvest(
    params: Params,
    *,
    overwrite: bool = False,
    lm: LoadedModel | None = None,
    on_commit: Callable[[int], None] | None = None,
    repair: bool = False,
    break_lock: bool = False,
    unsafe_lock: bool = False,
) -> str:
    """Harvest (or resume, or skip, or with ``repair`` re-harvest damaged shards of) the store; returns its URL.

    The store's write lock (:mod:`cache.lock`) is held throughout; ``unsafe_lock`` accepts a
    best-effort lock on a filesystem that cannot create it atomically.
    """
    fields = key_fields(params)
    key = content_key(fields)
    url = store_url(params, key)
    T, rows = params.data.context_length, harvest_rows(params)
    if params.harvest.tokens % T:
        log.warning(
            "harvest.tokens %d is not a multiple of data.context_length %d: harvesting %d tokens (%d contexts)",
            params.harvest.tokens,
            T,
            rows,
            rows // T,
        )
    with StoreLock(url, break_lock=break_lock, unsafe=unsafe_lock) as lock:
        fresh = overwrite or not cache_store.exists(url)
        if not fresh and interrupted_allocation(url):
            log.warning("%s: its allocation was interrupted; allocating it again", url)
            fresh = True
        existing = None if fresh else check_same_key(url, key)
        if existing is not None and not repair and existing.complete:
            log.info("%s is complete for these params: nothing to do", url)
            record_store(params, url, key)
            return url
        if existing is not None:
            clean_debris(url)
        elif repair:
            raise CacheCorrupt(f"store {url} cannot be repaired (nothing usable there); harvest it again")
        check_source(params.data)  # a source that cannot be read fails before the model loads
        in_process = params.harvest.scheduler == "none" or repair  # a repair computes here
        model = lm or (load_model(params.model) if in_process else load_model_spec(params.model))
        hooks = _validate(params, model)
        n_ctx = rows // T
        # packed lazily, shard by shard; a resume seeks to its first shard's recorded start
        contexts = ShardContexts(
            params.data,
            model.tokenizer,
            T,
            n_ctx,
            params.harvest.tokens_per_shard // T,
            starts=None if existing is None else read_start(url, key),
        )
        first = 0 if existing is None else existing.committed_shards
        if first < contexts.n_shards:
            contexts.shard(
                first
            )  # a source without text for the first shard fails before anything is written
        if existing is None:
            h = params.harvest
            allocate(
                url,
                _provenance(params, model, key, fields),
                hooks=hooks,
                d_model=model.d_model,
                total_tokens=n_ctx * T,
                tokens_per_shard=h.tokens_per_shard,
                chunk_tokens=h.chunk_tokens,
                dtype=h.dtype,
                compressor=h.compressor,
                level=h.compression_level,
                store_loss=h.store_loss and h.gradients,
                store_grad=h.gradients,
            )
        else:
            log.info("resuming %s after %d committed shards", url, existing.committed_shards)
        writer = ShardWriter(url)
        if repair:
            assert isinstance(model, LoadedModel)
            _repair_shards(params, model, hooks, contexts, writer)
        committed = _recording_starts(url, key, contexts, on_commit)
        if params.harvest.scheduler == "none":
            assert isinstance(model, LoadedModel)
            _harvest_shards(params, model, hooks, contexts, writer, committed, lock)
        else:
            harvest_distributed(params, hooks, contexts, writer, committed, lock)
        if not writer.info.complete:
            remove_start(url)
            writer.finalize()
    record_store(params, url, key)
    log.info("harvest complete: %s (%d tokens)", url, writer.info.committed_tokens)
    return url


def _recording_starts(
    url: str, key: str, contexts: ShardContexts, on_commit: Callable[[int], None] | None
) -> Callable[[int], None]:
    """A commit callback that records where the next shard starts in the text, then calls ``on_commit``."""

    def committed(index: int) -> None:
        start = contexts.starts.get(index + 1)
        if start is not None and index + 1 < contexts.n_shards:
            write_start(url, key, index + 1, start)
        contexts.forget(index + 1)
        if on_commit is not None:
            on_commit(index)

    return committed


def _repair_shards(
    params: Params, lm: LoadedModel, hooks: list[str], contexts: ShardContexts, writer: ShardWriter
) -> None:
    """Re-harvest the committed shards that fail verification, in place."""
    report = verify(writer.url)
    if report.bad and not report.bad_shards:
        raise CacheCorrupt(
            f"store {writer.url} cannot be repaired shard by shard ({report.bad[0]}); rerun with --overwrite"
        )
    if not report.bad_shards:
        log.info("%s: every committed shard checks out; nothing to repair", writer.url)
    for index in report.bad_shards:
        shard = compute_shard(params, lm, hooks, contexts.shard(index), writer, index, None)
        same = writer.rewrite(index, shard.tokens, shard.acts, shard.grads, shard.loss)
        log.info(
            "repaired shard %d of %s%s",
            index,
            writer.url,
            ""
            if same
            else " (new data differs from the original checksum: harvest not bit-reproducible here)",
        )


def _harvest_shards(
    params: Params,
    lm: LoadedModel,
    hooks: list[str],
    contexts: ShardContexts,
    writer: ShardWriter,
    on_commit: Callable[[int], None] | None,
    lock: StoreLock | None = None,
) -> None:
    info = writer.info
    bg = ThreadWriter(writer, on_commit)
    bar = tqdm(
        total=info.total_tokens, initial=info.committed_tokens, unit="tok", unit_scale=True, desc="harvest"
    )
    # The next shard's text is packed on a thread while this one is computed (tokenizing
    # releases the GIL); only that thread touches the packer until the loop ends.
    text = ThreadPoolExecutor(1, thread_name_prefix="gsae-text")
    try:
        todo = range(writer.next_shard, info.n_shards)
        ahead = text.submit(contexts.shard, todo[0]) if todo else None
        for index in todo:
            assert ahead is not None
            t0 = time.perf_counter()
            shard_ctx = ahead.result()
            if index + 1 < info.n_shards:
                ahead = text.submit(contexts.shard, index + 1)
            t1 = time.perf_counter()
            shard = compute_shard(params, lm, hooks, shard_ctx, writer, index, bar)
            if lock is not None:
                lock.check()
            t2 = time.perf_counter()
            bg.put(shard)
            # where a shard's time goes (gsae -v): the slowest of text, model and writer sets the pace
            log.debug(
                "shard %d: waited %.3f s for its text, computed in %.3f s, waited %.3f s for the writer",
                index,
                t1 - t0,
                t2 - t1,
                time.perf_counter() - t2,
            )
    except BaseException:
        bg.abort()
        raise
    finally:
        text.shutdown(wait=True, cancel_futures=True)
        bar.close()
    bg.close()
