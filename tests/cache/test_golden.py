"""Frozen stores (tests/data/golden.zarr: format version 1, golden-v2.zarr: version 2, each written
once by tests/data/make_golden_store.py) read by the current code with exact expected values:
the cache format is a contract, and every version stays readable."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cache.reader import BatchReader, open_store, read_rows, resolve_hook
from cache.schema import attrs_digest
from cache.store import read_attrs
from cache.verify import describe, verify
from tests._stores import downgrade_to_v1
from tests.data import make_golden_store

DATA = Path(__file__).parents[1] / "data"
GOLDEN_V1, GOLDEN_V2 = str(DATA / "golden.zarr"), str(DATA / "golden-v2.zarr")
SEALS = {
    GOLDEN_V1: "8e14b10112611369eb45154d70c5dd438ec0bafb7526fce7f9ff661a01cf89c8",
    GOLDEN_V2: "010186f0266a32875ad6e467e1ecbea19c2afd1f0b99c72e309a75d24c04aa0c",
}
D = 4
both = pytest.mark.parametrize("GOLDEN", [GOLDEN_V1, GOLDEN_V2], ids=["v1", "v2"])


def expected(hook_index: int, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """The values make_golden_store.py wrote (restated here so the script cannot drift with the test)."""
    r = np.arange(start, stop, dtype=np.float32)[:, None]
    j = np.arange(D, dtype=np.float32)[None, :]
    return r + j / 4 + 100 * hook_index, (j - r) / 64


@both
def test_attributes_parse_to_the_recorded_values(GOLDEN: str) -> None:
    info = open_store(GOLDEN)
    assert (info.version, info.key, info.model, info.model_revision) == (
        1 if GOLDEN == GOLDEN_V1 else 2,
        "golden" + "0" * 58,
        "golden-model",
        "r1",
    )
    assert info.hooks == ("model.layers.0", "model.layers.2") and info.layers == (0, 2)
    assert (info.d_model, info.dtype, info.context_length, info.tokens_per_shard) == (4, "float16", 4, 16)
    assert (info.committed_tokens, info.total_tokens, info.complete, info.has_loss) == (32, 32, True, True)
    assert info.dataset == {"source": "golden", "split": "heldout"}
    assert read_attrs(GOLDEN)["attrs_sha256"] == SEALS[GOLDEN]
    assert [r["rows"] for r in info.records] == [[0, 16], [16, 32]]
    assert ("committed" in read_attrs(GOLDEN)) == (GOLDEN == GOLDEN_V1)


def test_both_versions_hold_the_same_commit_records() -> None:
    assert open_store(GOLDEN_V1).records == open_store(GOLDEN_V2).records


@both
def test_rows_read_exactly(GOLDEN: str) -> None:
    tokens, act, grad = read_rows(GOLDEN, "model.layers.2", 5, 27)
    want_act, want_grad = expected(1, 5, 27)
    assert tokens.tolist() == [3 * r for r in range(5, 27)]
    np.testing.assert_array_equal(act, want_act)
    np.testing.assert_array_equal(grad, want_grad)


@both
@pytest.mark.parametrize("direct_shards", [True, False])
def test_batches_hold_every_usable_row_once(GOLDEN: str, direct_shards: bool) -> None:
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


@both
def test_verify_and_describe(GOLDEN: str) -> None:
    report = verify(GOLDEN)
    assert report.ok and report.checked == 2 and report.complete
    summary = describe(GOLDEN)
    assert summary["n_tokens"] == 32 and summary["shards_committed"] == summary["shards_total"] == 2
    assert "committed" not in summary


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_todays_writer_gives_the_frozen_v2_store_and_the_old_format_by_downgrading(tmp_path: Path) -> None:
    """The writer still writes golden-v2.zarr byte for byte; the test helper that rewrites a store as
    format version 1 (used by the tests of old stores) gives golden.zarr byte for byte, bar the
    ``has_grad`` attribute added to version 1 after that store was frozen."""
    store = tmp_path / "g.zarr"
    make_golden_store.main(store)
    assert _files(store) == _files(Path(GOLDEN_V2))
    attrs = downgrade_to_v1(str(store))
    del attrs["has_grad"], attrs["attrs_sha256"]
    attrs["attrs_sha256"] = attrs_digest(attrs)
    meta = json.loads((store / "zarr.json").read_text())
    (store / "zarr.json").write_text(json.dumps({**meta, "attributes": attrs}, indent=2))
    assert _files(store) == _files(Path(GOLDEN_V1))
