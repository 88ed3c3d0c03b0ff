"""Text sources through ``datasets``, the deterministic split, and packing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.core.config import DataConfig
from pipeline.core.errors import DataError
from pipeline.text.packing import pack_contexts
from pipeline.text.sources import in_heldout, iter_documents, source_fingerprint
from tests.lm_factory import build_tokenizer

DOCS = [f"Document number {i}. " + "word " * (20 + i) for i in range(60)]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def _split(docs: list[str], split: str) -> list[str]:
    return [d for d in docs if in_heldout(d, 0.2) == (split == "heldout")]


def test_split_is_deterministic_and_disjoint():
    train, held = _split(DOCS, "train"), _split(DOCS, "heldout")
    assert train and held and not set(train) & set(held)
    assert len(train) + len(held) == len(DOCS)


def test_split_of_pinned_strings():
    """The split is a contract (every store's held-out side depends on it): pinned values, SHA-256
    fractions 0.261, 0.504 and 0.162 against heldout_fraction 0.2."""
    texts = ["The quick brown fox.", "To be, or not to be", "g-SAE"]
    assert [in_heldout(t, 0.2) for t in texts] == [False, False, True]
    assert [in_heldout(t, 0.3) for t in texts] == [True, False, True]


@pytest.mark.parametrize("kind", ["txt-folder", "jsonl", "parquet"])
@pytest.mark.parametrize("split", ["train", "heldout"])
def test_local_sources(kind, split, tmp_path):
    if kind == "txt-folder":
        source = tmp_path / "corpus"
        source.mkdir()
        for i, d in enumerate(DOCS):
            (source / f"{i:03d}.txt").write_text(d)
    elif kind == "jsonl":
        source = tmp_path / "c.jsonl"
        source.write_text("".join(json.dumps({"body": d, "id": i}) + "\n" for i, d in enumerate(DOCS)))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        source = tmp_path / "c.parquet"
        pq.write_table(pa.table({"body": DOCS}), source)
    cfg = DataConfig(
        source=str(source),
        split=split,
        text_column="body" if kind != "txt-folder" else "text",
        heldout_fraction=0.2,
    )
    assert list(iter_documents(cfg)) == _split(DOCS, split)


def test_python_docs_split_sizes():
    train = list(iter_documents(DataConfig(split="train")))
    held = list(iter_documents(DataConfig(split="heldout")))
    assert len(held) >= 3 and len(train) > 5 * len(held)
    assert sum(map(len, held)) > 30_000  # ~12k SmolLM2 tokens: room for evaluate.tokens=4096


def test_local_fingerprint_follows_the_content(tmp_path):
    """Same files at two paths: same fingerprint; one byte changed: another one."""
    a, b = tmp_path / "a", tmp_path / "b"
    for folder in (a, b):
        folder.mkdir()
        (folder / "x.txt").write_text("one document")
    fp = [source_fingerprint(DataConfig(source=str(p)))["fingerprint"] for p in (a, b)]
    assert fp[0] == fp[1] and len(fp[0]) == 16
    (b / "x.txt").write_text("one document!")
    assert source_fingerprint(DataConfig(source=str(b)))["fingerprint"] != fp[0]


def test_missing_column_and_missing_path(tmp_path):
    f = tmp_path / "c.jsonl"
    f.write_text(json.dumps({"body": "x"}) + "\n")
    with pytest.raises(DataError, match="text_column 'text'"):
        list(iter_documents(DataConfig(source=str(f))))
    with pytest.raises(DataError, match="not found"):
        list(iter_documents(DataConfig(source=str(tmp_path / "nope.txt"))))


def test_packing_layout(tokenizer):
    ctx = pack_contexts(iter(DOCS), tokenizer, 16, 5)
    assert ctx.shape == (5, 16) and ctx.dtype == np.int32
    assert (ctx[:, 0] == tokenizer.bos_token_id).all()
    stream = []
    for d in DOCS:
        stream += tokenizer(d, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert ctx[:, 1:].reshape(-1).tolist() == stream[: 5 * 15]


def test_packing_errors(tokenizer):
    with pytest.raises(DataError, match="no complete context"):
        pack_contexts(iter([]), tokenizer, 16, 1)
    with pytest.raises(DataError, match="fewer than the 1000 asked"):
        pack_contexts(iter(DOCS[:2]), tokenizer, 16, 1000)


def test_module_text_keeps_docstrings_and_comments_in_source_order() -> None:
    from pipeline.text.corpora import module_text

    source = b'''#!/usr/bin/env python3
# -*- coding: utf-8 -*-
"""Module doc."""
import os  # noqa: F401

# A comment block
# that spans two lines.
def f():
    """Function doc."""
    return 1  # pragma: no cover

class C:
    """Class doc."""
'''
    assert (
        module_text(source)
        == "Module doc.\n\nA comment block that spans two lines.\n\nFunction doc.\n\nClass doc."
    )
    assert module_text(b"def broken(:\n") == ""


def test_python_docstrings_source_is_lazy_split_and_fingerprinted() -> None:
    import itertools

    from pipeline.text import corpora

    first = list(itertools.islice(iter_documents(DataConfig(source="python-docstrings")), 3))
    held = list(itertools.islice(iter_documents(DataConfig(source="python-docstrings", split="heldout")), 3))
    assert len(first) == 3 and len(held) == 3 and not set(first) & set(held)
    assert all(not in_heldout(t, 0.1) for t in first) and all(in_heldout(t, 0.1) for t in held)
    fp = source_fingerprint(DataConfig(source="python-docstrings"))["fingerprint"]
    assert fp == corpora.docstrings_fingerprint() and len(fp) == 16
    names = [name for name, _ in corpora.docstring_files()]
    assert names[0].startswith("python3") and any(n.startswith("numpy/") for n in names)
