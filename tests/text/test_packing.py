"""Lazy packing: the same contexts as packing all at once, seeking by recorded starts, flat memory."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from cache.store import read_info
from pipeline.core.config import DataConfig
from pipeline.core.errors import DataError
from pipeline.core.loader import params_from_dict
from pipeline.harvest.run import run_harvest
from pipeline.lm.models import load_model
from pipeline.text.packing import ContextPacker, ShardContexts, StreamPos, pack_contexts
from pipeline.text.sources import iter_documents
from tests.conftest import tiny_overrides
from tests.lm_factory import build_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A JSON-lines corpus of 600 documents of different lengths."""
    rng = np.random.default_rng(1)
    path = tmp_path_factory.mktemp("corpus") / "docs.jsonl"
    with path.open("w") as f:
        for i in range(600):
            f.write(
                json.dumps({"text": f"Doc {i}: " + "lorem ipsum dolor " * int(rng.integers(1, 12))}) + "\n"
            )
    return path


@pytest.mark.parametrize("T", [16, 33])
def test_shards_equal_packing_everything_at_once(corpus, tokenizer, T):
    data = DataConfig(source=str(corpus))
    n, per = 200, 7
    whole = pack_contexts(iter_documents(data), tokenizer, T, n)
    shards = ShardContexts(data, tokenizer, T, n, per)
    lazy = np.concatenate([shards.shard(i) for i in range(shards.n_shards)])
    assert lazy.shape == (n, T) and np.array_equal(lazy, whole)
    # every recorded start, used alone, seeks to exactly that shard (out of order too)
    starts = dict(shards.starts)
    assert len(starts) == shards.n_shards + 1 and all(isinstance(p, StreamPos) for p in starts.values())
    for i in [shards.n_shards - 1, 3, 0, 12]:
        fresh = ShardContexts(data, tokenizer, T, n, per, starts={i: starts[i]})
        assert np.array_equal(fresh.shard(i), whole[i * per : (i + 1) * per])
    # without a recorded start, an earlier shard is recomputed from the beginning
    assert np.array_equal(shards.shard(2), whole[2 * per : 3 * per])


def test_packer_positions_and_running_out(tokenizer):
    docs = ["alpha beta gamma", "delta", "epsilon zeta eta theta iota kappa"]
    lens = [len(tokenizer(d, add_special_tokens=False)["input_ids"]) + 1 for d in docs]  # + EOS
    p = ContextPacker(iter(docs), tokenizer, 4)  # body of 3 tokens after BOS
    assert p.position == StreamPos(0, 0)
    p.take(1)
    assert p.position == (StreamPos(0, 3) if lens[0] > 3 else StreamPos(1, 3 - lens[0]))
    total = sum(lens) // 3
    with pytest.raises(DataError, match=f"only {total} contexts"):
        ContextPacker(iter(docs), tokenizer, 4, total=total + 1).take(total + 1)


class CountingTokenizer:
    """The LM's tokenizer, counting the documents it tokenizes."""

    def __init__(self, inner) -> None:
        self.inner, self.calls = inner, 0
        self.bos_token_id, self.eos_token_id = inner.bos_token_id, inner.eos_token_id

    def __call__(self, text, **kw):
        self.calls += 1
        return self.inner(text, **kw)


class Interrupt(Exception):
    pass


def test_resume_seeks_instead_of_tokenizing_the_corpus_again(tiny_llama, corpus, tmp_path):
    url = str(tmp_path / "s.zarr")
    params = params_from_dict({}, [*tiny_overrides(tiny_llama, url, tokens=256 * 6), f"data.source={corpus}"])
    lm = load_model(params.model)
    full_count = CountingTokenizer(lm.tokenizer)
    run_harvest(
        dataclasses.replace(
            params, harvest=dataclasses.replace(params.harvest, store=str(tmp_path / "f.zarr"))
        ),
        lm=dataclasses.replace(lm, tokenizer=full_count),
    )

    def stop(index: int) -> None:
        if index == 3:
            raise Interrupt

    with pytest.raises(Interrupt):
        run_harvest(params, lm=lm, on_commit=stop)
    assert read_info(url).committed_shards == 4
    sidecar = json.loads((tmp_path / "s.zarr.stream.json").read_text())
    assert sidecar["shard"] == 4 and sidecar["doc"] > 0
    resumed = CountingTokenizer(lm.tokenizer)
    run_harvest(params, lm=dataclasses.replace(lm, tokenizer=resumed))
    assert not (tmp_path / "s.zarr.stream.json").exists()
    # the resume tokenized only the documents of the last two shards (plus the one it starts in)
    assert 0 < resumed.calls <= full_count.calls - sidecar["doc"]
    assert resumed.calls < full_count.calls / 2
    f, s = tmp_path / "f.zarr", tmp_path / "s.zarr"
    assert {p.relative_to(s): p.read_bytes() for p in s.rglob("*") if p.is_file()} == {
        p.relative_to(f): p.read_bytes() for p in f.rglob("*") if p.is_file()
    }


def test_packing_memory_does_not_grow_with_the_corpus(tmp_path):
    """Peak RSS of packing every shard of a corpus and of one 10x larger (fresh processes): within 10 %."""
    from pipeline.text.footprint import generated_corpus, packing_footprint
    from tests.lm_factory import build_tokenizer as build

    build().save_pretrained(tmp_path / "tok")
    small = packing_footprint(generated_corpus(tmp_path / "small", 500), tmp_path / "tok", "lazy")
    large = packing_footprint(generated_corpus(tmp_path / "large", 5000), tmp_path / "tok", "lazy")
    assert large["tokens"] >= 9 * small["tokens"] > 0
    assert large["peak_rss_mib"] <= 1.1 * small["peak_rss_mib"]


def test_source_without_text_for_the_first_shard_fails_before_allocation(tiny_llama, tmp_path):
    from cache.store import exists

    doc = tmp_path / "one.jsonl"
    doc.write_text(json.dumps({"text": "too short"}) + "\n")
    url = str(tmp_path / "s.zarr")
    params = params_from_dict({}, [*tiny_overrides(tiny_llama, url, tokens=512), f"data.source={doc}"])
    with pytest.raises(DataError, match="no complete context"):
        run_harvest(params)
    assert not exists(url)
