"""The params loader: defaults, overrides, unknown keys, types and cross-field checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.core.config import Params
from pipeline.core.errors import ConfigError
from pipeline.core.loader import load_params, params_from_dict, params_to_dict

ROOT = Path(__file__).resolve().parents[2]


def test_project_params_load():
    p = load_params(ROOT / "params.yaml")
    assert p.model.name == "smollm2-135m" and p.harvest.layers == (15,)
    grid = p.train.grid  # the default run compares TopK with the experiment's g-SAE over three seeds
    assert (
        set(grid.architecture) == {"topk", "gsae"}
        and len(grid.seed) >= 3
        and grid.value_mode == ("selection",)
    )


def test_overrides_parse_yaml_values():
    p = params_from_dict({}, ["harvest.layers=[3,5]", "harvest.tokens=4096", "train.grid.beta=[0.5,2]"])
    assert p.harvest.layers == (3, 5) and p.harvest.tokens == 4096 and p.train.grid.beta == (0.5, 2.0)
    assert params_from_dict({}, ["harvest.layers=7"]).harvest.layers == (7,)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("harvest.bogus=1", "unknown params key 'harvest.bogus'"),
        ("nosection.x=1", "unknown params key 'nosection'"),
        ("harvest.tokens=many", "harvest.tokens must be an integer"),
        ("harvest.dtype=int8", "harvest.dtype must be one of"),
        ("data.context_length=1", "context_length must be >= 2"),
        ("harvest.tokens_per_shard=1000", "multiple of"),
        ("train.layer=3", "train.layer 3 is not among harvest.layers"),
        ("noequals", "KEY=VALUE"),
    ],
)
def test_bad_values(override, message):
    with pytest.raises(ConfigError, match=message):
        params_from_dict({}, [override])


def test_round_trip_through_dict():
    p = params_from_dict({}, ["harvest.layers=[1,2]"])
    assert params_from_dict(params_to_dict(p)) == p
    assert Params() == params_from_dict({})


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")


def test_heldout_store_size_covers_the_evaluated_slice() -> None:
    from pipeline.stores import heldout_params

    base = {
        "data": {"context_length": 16},
        "harvest": {"tokens": 64, "tokens_per_shard": 64, "chunk_tokens": 16, "autocast": "bfloat16"},
    }
    held = heldout_params(params_from_dict(base, ["evaluate.tokens=32", "evaluate.first_token=48"]))
    assert held.harvest.tokens == 80 and held.data.split == "heldout"
    assert held.harvest.autocast == "none"  # held-out stores are always float32
    shared = heldout_params(params_from_dict(base, ["evaluate.tokens=32", "evaluate.harvest_tokens=128"]))
    assert shared.harvest.tokens == 128
    for bad in ("evaluate.first_token=8", "evaluate.harvest_tokens=40"):
        with pytest.raises(ConfigError):
            params_from_dict(base, ["evaluate.tokens=32", "evaluate.first_token=16", bad])


@pytest.mark.parametrize(
    ("override", "hint"),
    [
        ("train.lr=0.001", "did you mean 'train.grid.lr' (train.grid keys take lists"),
        ("train.k=[8]", "did you mean 'train.grid.k'"),
        ("harvest.layer=3", "did you mean 'harvest.layers'?"),
        ("train.grid.expansions=[4]", "did you mean 'train.grid.expansion'?"),
        ("trian.tokens=5", "unknown params key 'trian' — did you mean 'train'?"),
    ],
)
def test_unknown_keys_suggest_the_key_meant(override, hint):
    with pytest.raises(ConfigError) as exc:
        params_from_dict({}, [override])
    assert hint in str(exc.value) and "(known: " in str(exc.value)


def test_unknown_key_without_a_near_one_suggests_nothing():
    with pytest.raises(ConfigError) as exc:
        params_from_dict({}, ["evaluate.zzzz=1"])
    assert "did you mean" not in str(exc.value)
