"""Variant names read back into hyper-parameters (``gsae summarize`` without the SAE folders)."""

from __future__ import annotations

import itertools

import pytest

from pipeline.saes import REGISTRY
from pipeline.saes.naming import parse_variant, variant_name


@pytest.mark.parametrize("arch", sorted(REGISTRY))
def test_every_variant_name_reads_back(arch):
    reads = REGISTRY[arch].grid_hparams
    for k, beta, mode, lr, seed, layer, show_lr, lam in itertools.product(
        (16, 32),
        (0.3, 1.0, 1e-05),
        ("augmented", "selection"),
        (4e-4,),
        (0, 12),
        (None, 15),
        (False, True),
        (0.0, 0.5, 2e-06),
    ):
        hp = {"k": k, "beta": beta, "value_mode": mode}
        name = variant_name(
            arch, hp, expansion=8, lr=lr, seed=seed, show_lr=show_lr, layer=layer, grad_loss=lam
        )
        want = {"architecture": arch, "k": k, "expansion": 8, "seed": seed}
        want |= {key: hp[key] for key in ("beta", "value_mode") if key in reads}
        want |= ({"lr": lr} if show_lr else {}) | ({"layer": layer} if layer is not None else {})
        want |= {"grad_loss": lam} if lam else {}
        assert ("-gl" in name) == bool(lam)  # λ = 0 leaves the name as it always was
        assert parse_variant(name) == want, name
        assert parse_variant(name + "@beta0") == want


@pytest.mark.parametrize(
    "name", ["nosuch-k8-s0", "topk-k8", "topk-s0", "topk-k8-q3-s0", "gsae-k8-b1-what-s0"]
)
def test_names_that_are_not_variants_are_refused(name):
    with pytest.raises(ValueError):
        parse_variant(name)


def test_existing_names_are_unchanged_and_series_and_labels_carry_lambda():
    from pipeline.saes.naming import series_name, table_label

    assert variant_name("topk", {"k": 32}, expansion=8, lr=4e-4, seed=0, show_lr=False) == "topk-k32-x8-s0"
    hp = {"k": 32, "beta": 0.3, "value_mode": "selection"}
    assert variant_name("gsae", hp, expansion=8, lr=4e-4, seed=1, show_lr=False) == "gsae-k32-b0.3-x8-sel-s1"
    cfg = {"architecture": "gsae", "d_sae": 4608, "d_in": 576, "hook_name": "model.layers.15", **hp}
    assert series_name(cfg, beta0=False, with_layer=False) == "gsae-b0.3-sel-x8"
    assert (
        series_name({**cfg, "grad_loss": 0.5}, beta0=True, with_layer=False) == "gsae-b0.3-sel-gl0.5-x8@beta0"
    )
    assert table_label("gsae", hp) == "gsae sel β=0.3"
    assert table_label("topk", {"k": 32, "grad_loss": 0.5}) == "topk λ=0.5"
