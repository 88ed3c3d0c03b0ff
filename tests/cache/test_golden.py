"""A frozen store (tests/data/golden.zarr, written once by tests/data/make_golden_store.py) read
by the current code with exact expected values: the cache format is a contract."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cache.reader import BatchReader, open_store, read_rows, resolve_hook
from cache.store import read_attrs
from cache.verify import describe, verify

GOLDEN = str(Path(__file__).parents[1] / "data" / "golden.zarr")
D = 4


def expected(hook_index: int, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """The values make_golden_store.py wrote (restated here so the script cannot drift with the test)."""
    r = np.arange(start, stop, dtype=np.float32)[:, None]
    j = np.arange(D, dtype=np.float32)[None, :]
    return r + j / 4 + 100 * hook_index, (j - r) / 64


def test_attributes_parse_to_the_recorded_values() -> None:
    info = open_store(GOLDEN)
    assert (info.version, info.key, info.model, info.model_revision) == (
        1,
        "golden" + "0" * 58,
        "golden-model",
        "r1",
    )
    assert info.hooks == ("model.layers.0", "model.layers.2") and info.layers == (0, 2)
    assert (info.d_model, info.dtype, info.context_length, info.tokens_per_shard) == (4, "float16", 4, 16)
    assert (info.committed_tokens, info.total_tokens, info.complete, info.has_loss) == (32, 32, True, True)
    assert info.dataset == {"source": "golden", "split": "heldout"}
    assert (
        read_attrs(GOLDEN)["attrs_sha256"]
        == "8e14b10112611369eb45154d70c5dd438ec0bafb7526fce7f9ff661a01cf89c8"
    )


def test_rows_read_exactly() -> None:
    tokens, act, grad = read_rows(GOLDEN, "model.layers.2", 5, 27)
    want_act, want_grad = expected(1, 5, 27)
    assert tokens.tolist() == [3 * r for r in range(5, 27)]
    np.testing.assert_array_equal(act, want_act)
    np.testing.assert_array_equal(grad, want_grad)


@pytest.mark.parametrize("direct_shards", [True, False])
def test_batches_hold_every_usable_row_once(direct_shards: bool) -> None:
    info = open_store(GOLDEN)
    hook = resolve_hook(info, 0)
    r = BatchReader(GOLDEN, hook, batch_size=8, seed=0, shuffle_buffer_shards=1, direct_shards=direct_shards)
    acts, grads = zip(*[(a.numpy(), g.numpy()) for a, g in r.batches(0, 3)], strict=True)
    act, grad = np.concatenate(acts), np.concatenate(grads)
    order = np.argsort(act[:, 0])
    rows = np.array([r for r in range(32) if r % 4])  # first positions excluded
    want_act, want_grad = expected(0, 0, 32)
    np.testing.assert_array_equal(act[order], want_act[rows])
    np.testing.assert_array_equal(grad[order], want_grad[rows])


def test_verify_and_describe() -> None:
    report = verify(GOLDEN)
    assert report.ok and report.checked == 2 and report.complete
    summary = describe(GOLDEN)
    assert summary["n_tokens"] == 32 and summary["shards_committed"] == summary["shards_total"] == 2
