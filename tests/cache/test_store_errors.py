"""Creating stores: ``file://`` URLs work, write failures are never "not found"."""

from __future__ import annotations

import pytest

from cache.store import exists, open_group
from pipeline.core.errors import CacheNotFound, CacheWriteError


def test_file_url_store_is_created_with_its_parents(tmp_path):
    url = f"file://{tmp_path}/new/nested/store.zarr"
    open_group(url, "w")
    assert (tmp_path / "new" / "nested" / "store.zarr" / "zarr.json").is_file()
    assert exists(url)


def test_write_failure_is_a_write_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(CacheWriteError, match=r"cannot (create|write) (the cache )?store"):
        open_group(str(blocker / "store.zarr"), "w")
    with pytest.raises(CacheWriteError):
        open_group(f"file://{blocker}/store.zarr", "w")


def test_reading_a_missing_store_is_not_found(tmp_path):
    with pytest.raises(CacheNotFound):
        open_group(str(tmp_path / "missing.zarr"), "r")
