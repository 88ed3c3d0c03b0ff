"""The training reader: validation errors, exactly-once epochs, seeded order, resume."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from cache.reader import BatchReader, open_store, read_rows, resolve_hook
from cache.store import open_group
from pipeline.core.errors import CacheCorrupt, CacheIncomplete, CacheMismatch, CacheNotFound
from tests._stores import build_store

HOOK = "model.layers.1"
T = 16


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    # 1000 tokens: 7 full shards of 128 + a partial one; T=16 does not divide 1000 either
    return build_store(str(tmp_path_factory.mktemp("r") / "s.zarr"), n_tokens=1000, context_length=T)


def ids(reader: BatchReader, start: int, n: int) -> np.ndarray:
    return np.concatenate([a[:, 0].numpy() for a, _ in reader.batches(start, n)]).astype(np.int64)


@pytest.mark.parametrize("exclude_first", [True, False])
def test_every_token_exactly_once_per_epoch(store: str, exclude_first: bool) -> None:
    r = BatchReader(store, HOOK, batch_size=96, seed=1, shuffle_buffer_shards=3, exclude_first=exclude_first)
    rows = np.arange(1000)
    usable = rows[rows % T != 0] if exclude_first else rows
    assert r.tokens_per_epoch == len(usable)
    E = r.tokens_per_epoch
    stream = ids(r, 0, (3 * E) // 96 + 1)
    for e in range(3):
        epoch = stream[e * E : (e + 1) * E]
        assert np.array_equal(np.sort(epoch), usable)
    a, g = next(iter(r.batches(0, 1)))
    assert a.dtype == g.dtype and str(a.dtype) == "torch.float32" and a.shape == (96, 16)


def test_order_differs_between_seeds_and_epochs(store: str) -> None:
    r0 = BatchReader(store, HOOK, batch_size=100, seed=0)
    r1 = BatchReader(store, HOOK, batch_size=100, seed=1)
    E = r0.tokens_per_epoch
    s0, s1 = ids(r0, 0, 2 * E // 100), ids(r1, 0, 2 * E // 100)
    assert not np.array_equal(s0[:E], s1[:E])
    assert not np.array_equal(s0[:500], s0[E : E + 500])
    assert np.array_equal(s0, ids(BatchReader(store, HOOK, batch_size=100, seed=0), 0, 2 * E // 100))


def test_start_batch_resumes_the_same_stream(store: str) -> None:
    r = BatchReader(store, HOOK, batch_size=70, seed=2, shuffle_buffer_shards=2)
    full = ids(r, 0, 30)
    assert np.array_equal(ids(r, 17, 13), full[17 * 70 :])
    assert r.position(17) == divmod(17 * 70, r.tokens_per_epoch)


def test_buffer_bounded_shuffle_is_token_level(store: str) -> None:
    r = BatchReader(store, HOOK, batch_size=64, seed=0, shuffle_buffer_shards=2)
    first = ids(r, 0, 1)
    shards = {int(i) // 128 for i in first}
    assert 1 < len(shards) <= 2  # tokens mixed across the buffer's shards, never beyond
    assert not np.all(np.diff(first) > 0)


def _reader_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith(("gsae-reader", "gsae-load", "gsae-read"))}


def test_early_close_stops_the_thread(store: str) -> None:
    before = _reader_threads()
    r = BatchReader(store, HOOK, batch_size=10, seed=0, prefetch=1)
    it = r.batches()  # endless: only closing it stops the background thread
    next(it)
    assert _reader_threads() - before, "the batches come from a background thread"
    it.close()
    assert {t for t in _reader_threads() - before if t.is_alive()} == set()


def test_error_in_the_background_thread_reaches_batches(tmp_path) -> None:
    """A shard damaged after the reader opened the store: its CacheCorrupt, raised on the loader
    thread, comes out of ``batches()`` on the consumer's side."""
    url = build_store(str(tmp_path / "d.zarr"), n_tokens=512, tokens_per_shard=128)
    r = BatchReader(url, HOOK, batch_size=64, seed=0, shuffle_buffer_shards=1)
    for shard in (tmp_path / "d.zarr" / HOOK / "act" / "c").iterdir():
        path = shard / "0"
        path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(CacheCorrupt, match=f"{HOOK}/act"):
        list(r.batches(0, 8))


def test_refuses_incomplete_store(tmp_path) -> None:
    url = build_store(str(tmp_path / "i.zarr"), n_tokens=512, shards=2)
    with pytest.raises(CacheIncomplete, match="incomplete .*256 of 512"):
        open_store(url)
    with pytest.raises(CacheIncomplete):
        BatchReader(url, HOOK, batch_size=8)
    assert open_store(url, require_complete=False).committed_tokens == 256


def test_refuses_missing_hook_other_key_model_version(store: str, tmp_path) -> None:
    with pytest.raises(CacheMismatch, match="no hook 'model.layers.7'"):
        open_store(store, hook="model.layers.7")
    with pytest.raises(CacheMismatch, match="different harvest"):
        open_store(store, expected_key="0" * 64)
    with pytest.raises(CacheMismatch, match="model 'tiny-test-model', expected 'other'"):
        open_store(store, expected_model="other")
    assert open_store(store, hook=HOOK, expected_key="k" * 64, expected_model="tiny-test-model").complete
    url = build_store(str(tmp_path / "v.zarr"), n_tokens=256)
    open_group(url, "r+").attrs.update({"gsae_cache_version": 99})
    with pytest.raises(CacheMismatch, match="version 99"):
        open_store(url)


def test_not_found_and_not_a_cache(tmp_path) -> None:
    with pytest.raises(CacheNotFound):
        open_store(str(tmp_path / "nothing.zarr"))
    open_group(str(tmp_path / "empty.zarr"), "w")
    with pytest.raises(CacheCorrupt):
        open_store(str(tmp_path / "empty.zarr"))


def test_resolve_hook(tmp_path) -> None:
    url = build_store(str(tmp_path / "h.zarr"), n_tokens=128, hooks=("model.layers.3", "model.layers.15"))
    info = open_store(url)
    assert resolve_hook(info, None) == "model.layers.3"
    assert resolve_hook(info, 15) == "model.layers.15"
    with pytest.raises(CacheMismatch, match="no hook for layer 4"):
        resolve_hook(info, 4)


def test_resolve_hook_through_the_layers_attribute(tmp_path) -> None:
    """Hook names without a trailing index: the ``layers`` attribute (parallel to ``hooks``) decides."""
    url = build_store(
        str(tmp_path / "l.zarr"), n_tokens=128, hooks=("enc.first", "enc.second"), layers=(7, 9)
    )
    info = open_store(url)
    assert resolve_hook(info, 9) == "enc.second" and resolve_hook(info, 7) == "enc.first"
    with pytest.raises(CacheMismatch, match="no hook for layer 8"):
        resolve_hook(info, 8)


def test_read_rows(store: str) -> None:
    tokens, act, grad = read_rows(store, HOOK, 10, 50)
    assert tokens.tolist() == list(range(10, 50))
    assert act.dtype == np.float32 and act.shape == (40, 16) and grad.shape == (40, 16)
    assert act[:, 0].tolist() == list(range(10, 50))
    with pytest.raises(CacheIncomplete):
        read_rows(store, HOOK, 0, 2000)


def test_memory_store() -> None:
    url = build_store("memory://reader-test.zarr", n_tokens=256, tokens_per_shard=64, chunk_tokens=32)
    r = BatchReader(url, HOOK, batch_size=32, seed=0)
    got = ids(r, 0, r.tokens_per_epoch // 32)
    assert len(set(got.tolist())) == len(got)
