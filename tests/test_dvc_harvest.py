"""``dvc repro`` of the harvest stages in a temp git repo; a second repro does nothing."""

from __future__ import annotations

from cache.store import read_info
from tests.dvc_project import make_project, run


def test_dvc_repro_harvest_then_noop(tiny_llama, tmp_path):
    repo = make_project(tmp_path, tiny_llama)
    out = run(["dvc", "repro", "harvest", "harvest_heldout"], repo)
    assert "Running stage 'harvest'" in out and "Running stage 'harvest_heldout'" in out
    stores = sorted((repo / "data" / "cache").glob("*/*.zarr"))
    assert [s.parent.name for s in stores] == ["heldout", "train"]
    assert all(read_info(str(s)).complete for s in stores)
    again = run(["dvc", "repro", "harvest", "harvest_heldout"], repo)
    assert "Running stage" not in again
    assert "didn't change" in again
