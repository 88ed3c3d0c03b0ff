"""Write tests/data/golden-v<version>.zarr, the frozen store tests/cache/test_golden.py reads.

Run once per cache format version (``.venv/bin/python -m tests.data.make_golden_store``)
and commit the result. It is the cache format as it was written at that time: the test
reads it with the current reader and expects exact values, so a change to the format or to
the fast shard decoder (cache/shards.py parses zarr's bytes) that cannot read it fails. Do
not rewrite it to make that test pass; bump the format version instead, which writes a new
store beside the old ones. ``golden.zarr`` is the version 1 store (written before the
version went into the name); ``golden-v2.zarr`` the version 2 one (commit records as
objects, :mod:`cache.commits`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from cache.schema import CACHE_VERSION
from cache.writer import ShardWriter, allocate

HERE = Path(__file__).parent
STORE = HERE / f"golden-v{CACHE_VERSION}.zarr"
HOOKS = ("model.layers.0", "model.layers.2")
D, T, N, SHARD = 4, 4, 32, 16


def rows(hook_index: int, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """act[r, j] = r + j/4 + 100·h and grad[r, j] = (j − r)/64 (exact in float16)."""
    r = np.arange(start, stop, dtype=np.float32)[:, None]
    j = np.arange(D, dtype=np.float32)[None, :]
    return r + j / 4 + 100 * hook_index, (j - r) / 64


def main(store: Path = STORE) -> None:
    shutil.rmtree(store, ignore_errors=True)
    provenance = {
        "key": "golden" + "0" * 58,
        "model": "golden-model",
        "model_revision": "r1",
        "tokenizer": "golden-tok",
        "dataset": {"source": "golden", "split": "heldout"},
        "context_length": T,
        "layers": [0, 2],
        "loss": "golden loss",
    }
    allocate(
        str(store),
        provenance,
        hooks=HOOKS,
        d_model=D,
        total_tokens=N,
        tokens_per_shard=SHARD,
        chunk_tokens=8,
        dtype="float16",
        compressor="zstd",
        level=3,
        store_loss=True,
    )
    writer = ShardWriter(str(store))
    for shard in range(N // SHARD):
        start, stop = writer.info.shard_rows(shard)
        acts, grads = {}, {}
        for h, hook in enumerate(HOOKS):
            acts[hook], grads[hook] = rows(h, start, stop)
        tokens = (np.arange(start, stop) * 3).astype(np.int32)
        writer.write(shard, tokens, acts, grads, np.arange(start, stop, dtype=np.float32) / 8)
    writer.finalize()


if __name__ == "__main__":
    main()
