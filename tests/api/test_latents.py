"""``gsae_pipeline.load_latents``: the browser's latents.json of a real ``gsae inspect`` run as a table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import gsae_pipeline as gp
from cache.reader import read_rows
from pipeline.core.errors import DataError, ModelLoadError
from tests.api.conftest import GSAE, HOOK, Project

T = 32


def test_the_table_holds_every_latent(project: Project) -> None:
    table = gp.load_latents(project.latents / GSAE)
    doc = json.loads((project.latents / GSAE / "latents.json").read_text())
    assert len(table) == 64 == len(doc["latents"])
    assert table.meta["sae"] == GSAE and table.meta["with_gradient"] is True and "latents" not in table.meta
    assert [r["id"] for r in table] == list(range(64))
    assert table[7] == next(x for x in doc["latents"] if x["id"] == 7)
    assert {"density", "mean_act", "max_act", "mean_abs_attr"} <= set(table.columns)
    density = table.column("density")
    assert density.shape == (64,) and density.tolist() == [x["density"] for x in table]
    top = table.top("mean_act", 5)
    assert [r["mean_act"] for r in top] == sorted(table.column("mean_act"), reverse=True)[:5]
    frame = table.to_pandas()
    assert frame.shape[0] == 64 and frame.loc[7, "density"] == table[7]["density"]
    with pytest.raises(KeyError, match="no latent 99"):
        table[99]
    with pytest.raises(KeyError, match="not a numeric latent field"):
        table.column("top_act")


def test_contexts_are_read_back_from_the_store(project: Project) -> None:
    table = gp.load_latents(project.latents / GSAE / "latents.json")
    latent = table.top("density", 1)[0]
    assert latent["density"] > 0
    tokens, _, _ = read_rows(project.heldout_store, HOOK, 0, 256)
    tokenizer = gp.load_tokenizer(gp.store_info(project.heldout_store).model)
    contexts = table.contexts(latent["id"], store=project.heldout_store, window=3, tokenizer=tokenizer)
    assert len(contexts) == len(latent["top_act"]) > 0
    for c, (row, act, attr) in zip(contexts, latent["top_act"], strict=True):
        assert (c["row"], c["act"], c["attr"]) == (row, act, attr)
        start = row - row % T
        lo, hi = max(start, row - 3), min(start + T, row + 4)
        assert c["ids"] == tokens[lo:hi].tolist() and c["ids"][c["at"]] == tokens[row]
        assert c["tokens"] == [tokenizer.decode([i]) for i in c["ids"]]
    by_attr = table.contexts(latent["id"], "top_attr", n=2, store=project.heldout_store)
    assert [c["row"] for c in by_attr] == [r for r, _, _ in latent["top_attr"][:2]]
    assert "tokens" not in by_attr[0] and len(by_attr[0]["ids"]) <= 2 * table.meta["window"] + 1


def test_missing_and_malformed_documents(tmp_path: Path) -> None:
    with pytest.raises(gp.LatentsNotFound, match="run `gsae inspect` first"):
        gp.load_latents(tmp_path)
    (tmp_path / "latents.json").write_text('{"sae": "x"}')
    with pytest.raises(DataError, match="not a latents.json document"):
        gp.load_latents(tmp_path)
    with pytest.raises(ModelLoadError, match="cannot load the tokenizer"):
        gp.load_tokenizer(str(tmp_path / "no-such-model"))
    assert np.isnan(
        gp.LatentTable({"latents": [{"id": 0, "mean_abs_attr": None}]}).column("mean_abs_attr")[0]
    )
