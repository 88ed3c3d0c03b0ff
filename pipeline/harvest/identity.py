"""A store's identity: its content key, computed from everything that determines its rows.

The key hashes the model's identity (hub commit, or the digests of a local folder's files),
the dataset's fingerprint (hub commit, or the digests of local files), and every harvest
setting that changes the stored bytes. Only the harvest computes it;
:func:`pipeline.stores.record_store` hands it on to train and evaluate.
"""

from __future__ import annotations

from typing import Any

from cache.schema import content_key
from pipeline.core.config import Params
from pipeline.lm.models import model_identity, pretrained_source
from pipeline.text.sources import source_fingerprint


def key_fields(params: Params) -> dict[str, Any]:
    """Everything that determines a store's contents (hashed into its key)."""
    _, _, revision = pretrained_source(params.model)
    h, d = params.harvest, params.data
    fields = {
        "model": model_identity(params.model),
        "model_revision": revision,
        "model_dtype": params.model.dtype,
        "dataset": source_fingerprint(d),
        "context_length": d.context_length,
        "layers": list(h.layers),
        "dtype": h.dtype,
        "tokens_per_shard": h.tokens_per_shard,
        "chunk_tokens": h.chunk_tokens,
        "compressor": [h.compressor, h.compression_level],
        "store_loss": h.store_loss,
        # whole contexts only: the store's total rows (the attributes' n_tokens counts committed rows)
        "n_tokens": harvest_rows(params),
    }
    if h.autocast != "none":  # only when set, so stores harvested before the option keep their keys
        fields["autocast"] = h.autocast
    if not h.gradients:  # the same: gradient stores keep the keys they had before the option
        fields["gradients"] = False
    return fields


def harvest_rows(params: Params) -> int:
    """Rows the store of these params holds when complete: whole contexts of ``harvest.tokens``."""
    T = params.data.context_length
    return params.harvest.tokens // T * T


def store_key(params: Params) -> str:
    """The content key of the store these params describe."""
    return content_key(key_fields(params))


def store_url(params: Params, key: str | None = None) -> str:
    """``harvest.store``, or ``<cache_root>/<split>/<key16>.zarr`` when it is ``auto``."""
    if params.harvest.store != "auto":
        return params.harvest.store
    key = key or store_key(params)
    return f"{params.harvest.cache_root.rstrip('/')}/{params.data.split}/{key[:16]}.zarr"
