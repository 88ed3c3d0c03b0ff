"""The harvest stages' DVC output when ``harvest.store`` / ``evaluate.store`` is not ``auto``.

``dvc.yaml`` declares ``<harvest.cache_root>/<split>`` as each harvest stage's output. With
``auto`` the store itself lives there; with any other path or URL the store lives where the
user said, and the stage writes ``<cache_root>/<split>/store.json`` (the store's URL and
content key) so the declared output exists, changes exactly when the store's contents do,
and ``dvc repro`` works. DVC then versions that pointer, not the store's data.
"""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.config import Params
from pipeline.fileio import atomic_write_text

STORE_REF = "store.json"


def stage_dir(params: Params) -> Path:
    """The folder dvc.yaml declares as the harvest stage's output for ``params.data.split``."""
    return Path(params.harvest.cache_root) / params.data.split


def record_store(params: Params, url: str, key: str) -> Path | None:
    """Write the pointer for a store outside ``stage_dir`` (``None`` when the store is ``auto``)."""
    if params.harvest.store == "auto":
        return None
    ref = {"store": url, "key": key, "split": params.data.split}
    return atomic_write_text(stage_dir(params) / STORE_REF, json.dumps(ref, indent=2) + "\n")
