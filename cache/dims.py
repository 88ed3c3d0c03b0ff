"""Dimension names of the store's arrays: Zarr v3 ``dimension_names``, what xarray reads.

Every array's first axis is ``token`` (row r = position r mod T of context r div T; all
arrays have the store's N rows, as xarray requires of a shared name), and the second axis of
``<hook>/act`` and ``<hook>/grad`` is ``d_model``. The writer sets them on every array it
creates (:func:`cache.writer.allocate`); stores written before lack them, and readers that
want names take them from here.
"""

from __future__ import annotations

TOKEN_DIM = "token"
"""The rows of every array."""
FEATURE_DIM = "d_model"
"""The second axis of ``act`` and ``grad`` (the model width)."""


def dimension_names(path: str) -> tuple[str, ...]:
    """Zarr v3 ``dimension_names`` of array ``path``: (token,) for ``tokens`` and ``loss``,
    (token, d_model) for ``<hook>/act`` and ``<hook>/grad``."""
    return (TOKEN_DIM,) if path in ("tokens", "loss") else (TOKEN_DIM, FEATURE_DIM)
