"""Tiny synthetic cache stores for tests, written with cache.writer."""

from __future__ import annotations

import numpy as np

from cache.writer import ShardWriter, allocate


def build_store(
    url: str,
    *,
    n_tokens: int = 1024,
    d: int = 16,
    context_length: int = 16,
    tokens_per_shard: int = 128,
    chunk_tokens: int = 64,
    hooks: tuple[str, ...] = ("model.layers.1",),
    dtype: str = "float32",
    model: str = "tiny-test-model",
    key: str = "k" * 64,
    seed: int = 0,
    complete: bool = True,
    shards: int | None = None,
    compressor: str = "zstd",
    layers: tuple[int, ...] | None = None,
    gradients: bool = True,
) -> str:
    """Random store; ``act[:, 0]`` holds the row index so tests can identify tokens.

    ``gradients=False`` writes an activation-only store (``harvest.gradients: false``).

    ``shards`` commits only that many shards (an incomplete store when fewer than all).
    """
    rng = np.random.default_rng(seed)
    attrs = {
        "key": key,
        "model": model,
        "model_revision": "none",
        "tokenizer": model,
        "dataset": {"source": "synthetic", "split": "train"},
        "context_length": context_length,
        "loss": "test",
    }
    if layers is not None:
        attrs["layers"] = list(layers)
    allocate(
        url,
        attrs,
        hooks=hooks,
        d_model=d,
        total_tokens=n_tokens,
        tokens_per_shard=tokens_per_shard,
        chunk_tokens=chunk_tokens,
        dtype=dtype,
        compressor=compressor,
        store_grad=gradients,
    )
    writer = ShardWriter(url)
    n_shards = -(-n_tokens // tokens_per_shard)
    for s in range(n_shards if shards is None else shards):
        start, stop = writer.info.shard_rows(s)
        rows = np.arange(start, stop)
        acts, grads = {}, {}
        for h in hooks:
            a = rng.normal(size=(stop - start, d)).astype(np.float32) * 3.0 + 1.0
            a[:, 0] = rows
            acts[h] = a
            grads[h] = rng.normal(size=(stop - start, d)).astype(np.float32) * 0.01
        writer.write(s, rows.astype(np.int32), acts, grads if gradients else {})
    if complete and shards is None:
        writer.finalize()
    return url


def downgrade_to_v1(path: str) -> dict:
    """Rewrite the local version 2 store at ``path`` as cache format version 1 wrote it.

    Version 1 kept every commit record in the group attribute ``committed`` (in shard order)
    and had no ``commits/`` objects; its seal ``attrs_sha256`` covered
    ``gsae_cache_version: 1``. Returns the new attributes.
    """
    import json
    import shutil
    from pathlib import Path

    from cache.schema import attrs_digest

    root = Path(path)
    meta = json.loads((root / "zarr.json").read_text())
    attrs = meta["attributes"]
    assert attrs["gsae_cache_version"] == 2
    n = -(-attrs["n_tokens"] // attrs["tokens_per_shard"])
    records = [
        json.loads((root / "commits" / str(i) / "zarr.json").read_text())["attributes"] for i in range(n)
    ]
    old = {k: v for k, v in attrs.items() if k not in ("n_tokens", "complete", "attrs_sha256")}
    old["gsae_cache_version"] = 1
    old["n_tokens"], old["committed"], old["complete"] = attrs["n_tokens"], records, attrs["complete"]
    old["attrs_sha256"] = attrs_digest(old)
    meta["attributes"] = old
    (root / "zarr.json").write_text(json.dumps(meta, indent=2))
    shutil.rmtree(root / "commits")
    return old


def tiny_train_params(tmp, grid: dict, **train: object):  # noqa: ANN001, ANN201
    """Params of a 4-step training run (batch 128) on a :func:`build_store` store, outputs under ``tmp``."""
    from pipeline.core.loader import params_from_dict

    return params_from_dict(
        {
            "data": {"context_length": 16},
            "harvest": {"layers": [1], "tokens_per_shard": 128, "chunk_tokens": 64},
            "train": {
                "out_dir": str(tmp / "saes"),
                "metrics_out": str(tmp / "train.json"),
                "curves_dir": str(tmp / "curves"),
                "tokens": 128 * 4,
                "batch_size": 128,
                "log_every": 2,
                "warmup_steps": 1,
                "init_sample_tokens": 256,
                "shuffle_buffer_shards": 2,
                "device": "cpu",
                "grid": grid,
                **train,
            },
        }
    )
