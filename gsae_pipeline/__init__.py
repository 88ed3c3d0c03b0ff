"""The g-SAE pipeline's Python API: trained SAEs, harvested stores and latent descriptions.

    import gsae_pipeline as gp

    store = "data/cache/heldout/<key>.zarr"
    sae = gp.load_sae("data/saes/gsae-k32-b0.3-x8-sel-s0")     # ours, or a SAELens topk folder
    ds = gp.open_xarray(store, hook=sae.cfg["hook_name"])      # act, grad [token, d_model]
    x = torch.from_numpy(ds.act[:256].values).float()
    g = torch.from_numpy(ds.grad[:256].values).float()
    codes = sae.encode(x, g)                                   # dense [256, n]; any [..., d]
    x_hat = sae.decode(codes)
    loader = DataLoader(gp.StoreDataset(store), batch_size=512) # dicts of act, grad, token, row
    table = gp.load_latents("reports/latents/topk-k32-x8-s0")  # latents.json as a table
    tok = gp.load_tokenizer(gp.store_info(store).model)
    table.contexts(table.top("mean_abs_attr")[0]["id"], store=store, tokenizer=tok)

Importing this package first loads the project's own ``pipeline`` and ``cache`` packages from
beside it (:mod:`gsae_pipeline._bootstrap`), so a ``pipeline.py`` or ``cache.py`` in the
notebook's folder cannot shadow them; a foreign module of either name imported earlier is
refused with ``ShadowedPackageError`` naming its file.

Rule (tests/test_layout.py): this facade imports ``cache`` and ``pipeline``'s ``core``, ``saes``
and ``lm`` (the tokenizer, inside :func:`load_tokenizer`) only, never a stage or the CLI;
nothing of the project imports it.
"""

from __future__ import annotations

from gsae_pipeline._bootstrap import ShadowedPackageError, load_project_packages

load_project_packages()

from gsae_pipeline.latents import LatentsNotFound, LatentTable, load_latents, load_tokenizer  # noqa: E402
from gsae_pipeline.saes import load_sae  # noqa: E402
from gsae_pipeline.store import (  # noqa: E402
    MissingDependency,
    StoreDataset,
    open_dask,
    open_xarray,
    store_info,
)
from pipeline.core.errors import PipelineError  # noqa: E402
from pipeline.saes.base import SAE, SAEOutput  # noqa: E402

__all__ = [
    "SAE",
    "LatentTable",
    "LatentsNotFound",
    "MissingDependency",
    "PipelineError",
    "SAEOutput",
    "ShadowedPackageError",
    "StoreDataset",
    "load_latents",
    "load_sae",
    "load_tokenizer",
    "open_dask",
    "open_xarray",
    "store_info",
]
