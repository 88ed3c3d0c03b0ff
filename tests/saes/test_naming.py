"""Variant names read back into hyper-parameters (``gsae summarize`` without the SAE folders)."""

from __future__ import annotations

import itertools

import pytest

from pipeline.saes import REGISTRY
from pipeline.saes.naming import parse_variant, variant_name


@pytest.mark.parametrize("arch", sorted(REGISTRY))
def test_every_variant_name_reads_back(arch):
    reads = REGISTRY[arch].grid_hparams
    for k, beta, mode, lr, seed, layer, show_lr in itertools.product(
        (16, 32), (0.3, 1.0, 1e-05), ("augmented", "selection"), (4e-4,), (0, 12), (None, 15), (False, True)
    ):
        hp = {"k": k, "beta": beta, "value_mode": mode}
        name = variant_name(arch, hp, expansion=8, lr=lr, seed=seed, show_lr=show_lr, layer=layer)
        want = {"architecture": arch, "k": k, "expansion": 8, "seed": seed}
        want |= {key: hp[key] for key in ("beta", "value_mode") if key in reads}
        want |= ({"lr": lr} if show_lr else {}) | ({"layer": layer} if layer is not None else {})
        assert parse_variant(name) == want, name
        assert parse_variant(name + "@beta0") == want


@pytest.mark.parametrize(
    "name", ["nosuch-k8-s0", "topk-k8", "topk-s0", "topk-k8-q3-s0", "gsae-k8-b1-what-s0"]
)
def test_names_that_are_not_variants_are_refused(name):
    with pytest.raises(ValueError):
        parse_variant(name)
