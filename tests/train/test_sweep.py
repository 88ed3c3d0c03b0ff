"""Grid expansion into named variant specs."""

from __future__ import annotations

import pytest

from pipeline.core.config import GridConfig
from pipeline.core.errors import ConfigError
from pipeline.saes.gbatchtopk import GBatchTopKHParams
from pipeline.saes.topk import TopKHParams
from pipeline.train.sweep import VariantSpec, expand_grid


def names(**kw: object) -> list[str]:
    return [s.name for s in expand_grid(GridConfig(**kw))]


def test_default_grid_names() -> None:
    assert names() == ["topk-k32-x8-s0", "gsae-k32-b1-x8-aug-s0"]


def test_topk_ignores_beta_and_value_mode() -> None:
    got = names(beta=(0.0, 0.5, 1.0), value_mode=("augmented", "selection"), seed=(0, 1))
    assert got.count("topk-k32-x8-s0") == 1 and got.count("topk-k32-x8-s1") == 1
    assert len(got) == 2 + 3 * 2 * 2 and len(set(got)) == len(got)
    assert "gsae-k32-b0.5-x8-sel-s1" in got
    spec = expand_grid(GridConfig(architecture=("topk",), beta=(2.0,)))[0]
    assert spec.hparams == TopKHParams(k=32)  # topk's hparams have no beta / value_mode at all


def test_lr_in_name_only_when_several() -> None:
    assert names(architecture=("topk",), lr=(1e-3,)) == ["topk-k32-x8-s0"]
    assert names(architecture=("topk",), lr=(1e-3, 4e-4)) == [
        "topk-k32-x8-lr0.001-s0",
        "topk-k32-x8-lr0.0004-s0",
    ]


def test_order_and_fields_are_deterministic() -> None:
    a = expand_grid(GridConfig(k=(16, 32), expansion=(4, 8)))
    # architecture outermost, then k, then expansion (the default grid has topk and gsae)
    assert [(s.architecture, s.k, s.expansion) for s in a] == [
        (arch, k, x) for arch in ("topk", "gsae") for k in (16, 32) for x in (4, 8)
    ]
    assert a[0] == VariantSpec("topk", TopKHParams(16), 4, 4e-4, 0)
    assert a[0].d_sae(576) == 2304


def test_duplicates_collapse() -> None:
    assert names(architecture=("topk", "topk"), k=(32, 32)) == ["topk-k32-x8-s0"]


@pytest.mark.parametrize(
    ("kw", "msg"),
    [
        ({"architecture": ("topk", "relu")}, "unknown architecture 'relu'"),
        ({"k": (0,)}, "k values must be positive"),
        ({"beta": (-1.0,)}, r"train.grid \(gsae\): beta must be >= 0"),
        ({"value_mode": ("both",)}, r"train.grid \(gsae\): value_mode must be one of"),
        ({"architecture": ("gbatchtopk",), "beta": ()}, "train.grid.beta must list at least one value"),
        ({"lr": ()}, "lr must list at least one value"),
    ],
)
def test_bad_grids(kw: dict, msg: str) -> None:
    with pytest.raises(ConfigError, match=msg):
        expand_grid(GridConfig(**kw))


def test_every_architecture_takes_exactly_the_grid_keys_of_its_hparams() -> None:
    """The registry drives the sweep: new architectures vary what their hparams declare."""
    specs = expand_grid(
        GridConfig(
            architecture=("batchtopk", "gbatchtopk"), beta=(0.0, 2.0), value_mode=("selection",), k=(8,)
        )
    )
    assert [s.name for s in specs] == [
        "batchtopk-k8-x8-s0",
        "gbatchtopk-k8-b0-x8-sel-s0",
        "gbatchtopk-k8-b2-x8-sel-s0",
    ]
    assert specs[2].hparams == GBatchTopKHParams(k=8, beta=2.0, value_mode="selection")
    assert specs[2].hparams.threshold_decay == 0.99  # not a grid key: the dataclass default


def test_one_naming_home_for_variants_series_and_labels() -> None:
    from pipeline.saes.naming import series_name, table_label

    cfg = {
        "architecture": "gbatchtopk",
        "k": 32,
        "beta": 0.5,
        "value_mode": "selection",
        "threshold_decay": 0.99,
        "d_in": 576,
        "d_sae": 4608,
        "hook_name": "model.layers.15",
    }
    assert series_name(cfg, beta0=True, with_layer=True) == "gbatchtopk-b0.5-sel-x8-L15@beta0"
    assert series_name({**cfg, "architecture": "batchtopk"}, beta0=False, with_layer=False) == "batchtopk-x8"
    assert table_label("gsae", {"beta": 0.3, "value_mode": "selection"}) == "gsae sel β=0.3"
    assert table_label("topk", {"beta": 0.3, "value_mode": "selection"}, with_grad=True) == "topk"
    assert (
        table_label("gbatchtopk", {"beta": 1.0, "value_mode": "augmented"}, with_grad=False)
        == "gbatchtopk aug β=1 @β0"
    )
