"""SAELens's convention (ce_loss_score, kl_div_score) against SAELens's own ``run_evals``.

SAELens runs here as a user would run it on an HF model: ``HookedProxyLM`` (its wrapper of an
``AutoModelForCausalLM``) around the tiny Llama, an ``ActivationsStore`` over a pretokenized
``datasets.Dataset`` of exactly our contexts, the SAE folder loaded with ``SAE.load_from_disk``,
and ``run_evals`` with its defaults (``exclude_special_tokens=True``). Its hook is the module
path (``HookedProxyLM`` names hooks by module), set on the loaded SAE's metadata.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from pipeline.core.config import ModelConfig
from pipeline.evaluate.conventions import (
    MEAN_KEYS,
    counted_positions,
    needs_masked_splice,
    special_token_ids,
    splice_both,
)
from pipeline.lm.models import load_model
from pipeline.saes.io import save_sae
from pipeline.saes.topk import TopKSAE

sae_lens = pytest.importorskip("sae_lens")

pytestmark = pytest.mark.usefixtures("one_thread")


@dataclass(frozen=True)
class Entry:
    """What :func:`splice_both` reads of an evaluated entry."""

    name: str
    sae: torch.nn.Module
    hook: str
    block: int


HOOK = "model.layers.1"
CE_ABS = 2e-6
"""nats: SAELens averages float32 per-token CE in float32 (an ulp at 6 nats is 4.8e-7); we sum in float64."""
KL_REL = 1e-5
"""SAELens's KL (``F.kl_div`` summed over the vocabulary in float32) differs from ours by ~3e-6 relative."""


def saelens_run_evals(model_dir: Path, sae_dir: Path, ids: torch.Tensor, batch: int) -> dict[str, float]:
    """SAELens's ``run_evals`` (defaults; KL and CE on) over the contexts ``ids`` [n, T], flattened."""
    import datasets
    from sae_lens import SAE
    from sae_lens.evals import EvalConfig, run_evals
    from sae_lens.load_model import HookedProxyLM
    from sae_lens.training.activation_scaler import ActivationScaler
    from sae_lens.training.activations_store import ActivationsStore
    from transformers import AutoModelForCausalLM, AutoTokenizer

    n, t = ids.shape
    assert n % batch == 0, "every context evaluated exactly once"
    sae = SAE.load_from_disk(str(sae_dir))
    hook = sae.cfg.metadata.hf_hook_name
    sae.cfg.metadata.hook_name = hook
    model = HookedProxyLM(
        AutoModelForCausalLM.from_pretrained(model_dir).eval(),
        AutoTokenizer.from_pretrained(model_dir),
        hook_names=[hook],
    )
    store = ActivationsStore(
        model=model,
        dataset=datasets.Dataset.from_dict({"input_ids": ids.tolist()}),
        streaming=False,
        hook_name=hook,
        hook_head_index=None,
        context_size=t,
        d_in=sae.cfg.d_in,
        n_batches_in_buffer=1,
        total_training_tokens=n,  # SAELens warns when it exceeds the dataset's rows
        store_batch_size_prompts=batch,
        train_batch_size_tokens=t,
        prepend_bos=True,
        normalize_activations="none",
        device=torch.device("cpu"),
        dtype="float32",
    )
    config = EvalConfig(
        batch_size_prompts=batch,
        n_eval_reconstruction_batches=n // batch,
        compute_kl=True,
        compute_ce_loss=True,
    )
    with warnings.catch_warnings():
        # SAELens rebuilds each pretokenized row with torch.tensor(tensor): torch's copy warning
        warnings.filterwarnings("ignore", "To copy construct from a tensor", UserWarning)
        metrics, _ = run_evals(sae, store, model, ActivationScaler(), config)
    flat: dict[str, Any] = {}
    for group in ("model_behavior_preservation", "model_performance_preservation"):
        flat |= metrics[group]
    return {k: float(v) for k, v in flat.items()}


def assert_same_as_saelens(ours: dict[str, float], theirs: dict[str, float]) -> None:
    """The five means within float32 averaging; the scores within the error that propagates."""
    for key in MEAN_KEYS:
        if key.startswith("ce_"):
            assert ours[key] == pytest.approx(theirs[key], rel=0, abs=CE_ABS), key
        else:
            assert ours[key] == pytest.approx(theirs[key], rel=KL_REL, abs=1e-9), key
    ce_score, kl_score = theirs["ce_loss_score"], theirs["kl_div_score"]
    ce_gap = theirs["ce_loss_with_ablation"] - theirs["ce_loss_without_sae"]
    ce_tol = 3 * CE_ABS * (1 + abs(ce_score)) / abs(ce_gap)
    assert ours["ce_loss_score"] == pytest.approx(ce_score, rel=0, abs=ce_tol)
    assert ours["kl_div_score"] == pytest.approx(kl_score, rel=0, abs=2 * KL_REL * (1 + abs(kl_score)))


def test_special_tokens_are_saelens_defaults(tiny_llama):
    from sae_lens.util import get_special_token_ids
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    assert (
        special_token_ids(tok)
        == sorted(get_special_token_ids(tok))
        == sorted({tok.bos_token_id, tok.eos_token_id})
    )


@pytest.mark.parametrize("family", ["tiny_llama", "tiny_gpt2"])
def test_scores_equal_saelens_run_evals_with_special_tokens_inside(family, request, tmp_path):
    """Contexts as our packer makes them (BOS, text, EOS between documents), plus one without BOS
    at position 0: SAELens reconstructs that position and keeps every EOS clean; our figures in
    its convention equal its own, while our convention's differ. Both tiny models have zero
    biases (as initialised), so their residual stream zeroed at every position gives uniform
    next-token distributions (CE = ln V), as SmolLM2's does (ln 49152 = 10.80)."""
    model_dir = request.getfixturevalue(family)
    lm = load_model(ModelConfig(name=str(model_dir), device="cpu"))
    tok, hook = lm.tokenizer, f"{lm.block_path}.1"
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(2, len(tok), (6, 20), generator=gen)
    ids[:, 0] = tok.bos_token_id
    ids[1, 7] = ids[4, 12] = tok.eos_token_id  # document boundaries inside two contexts
    ids[3, 0] = ids[3, 1]  # a context that does not start with a special token
    counted = counted_positions(ids, special_token_ids(tok))
    assert needs_masked_splice(counted).tolist() == [False, True, False, True, True, False]

    sae = TopKSAE(lm.d_model, 4 * lm.d_model, k=8)
    sae.reset_parameters(torch.Generator().manual_seed(1))
    sae_dir = save_sae(sae, tmp_path / "topk", {"hook_name": hook, "model": str(model_dir)})
    entry = Entry("topk", sae, hook, 1)
    ours, field = splice_both(lm, ids, [entry], {hook: None}, batch_size=4, edits_per_forward=2)
    theirs = saelens_run_evals(model_dir, sae_dir, ids, batch=2)
    assert_same_as_saelens(field["topk"], theirs)
    assert theirs["ce_loss_with_ablation"] == pytest.approx(math.log(len(tok)), abs=CE_ABS)
    # the two conventions measure different things here
    assert field["topk"]["ce_loss_with_ablation"] != pytest.approx(ours.ce["zero:" + hook], abs=1e-3)
    assert field["topk"]["ce_loss_without_sae"] != pytest.approx(ours.ce_clean, abs=1e-5)


def test_exact_reconstruction_scores_one_with_stored_gradients(tiny_llama):
    """An SAE that returns its input (and checks it got a gradient row per token, as a g-SAE
    would) scores 1 on both, through the second splice of the contexts with an EOS inside."""
    from tests.evaluate.test_splice import IdentitySAE

    lm = load_model(ModelConfig(name=str(tiny_llama), device="cpu"))
    hook = f"{lm.block_path}.2"
    ids = torch.randint(2, len(lm.tokenizer), (5, 16), generator=torch.Generator().manual_seed(3))
    ids[:, 0] = lm.tokenizer.bos_token_id
    ids[2, 9] = lm.tokenizer.eos_token_id
    grads = torch.randn(*ids.shape, lm.d_model)
    _, field = splice_both(lm, ids, [Entry("id", IdentitySAE(), hook, 2)], {hook: grads}, batch_size=2)
    m = field["id"]
    assert m["ce_loss_with_sae"] == pytest.approx(m["ce_loss_without_sae"], abs=1e-6)
    assert m["ce_loss_score"] == pytest.approx(1.0, abs=1e-4)
    assert m["kl_div_with_sae"] == pytest.approx(0.0, abs=1e-7) and m["kl_div_score"] == pytest.approx(1.0)
    assert m["ce_loss_with_ablation"] > m["ce_loss_without_sae"] and m["kl_div_with_ablation"] > 1e-3


def _ce_with_hook(lm, ids: torch.Tensor, block: int, edit) -> float:  # noqa: ANN001
    """Mean next-token CE of ``ids`` with ``edit(hidden) → hidden`` on block ``block``'s output:
    a plain forward hook, independent of our editors."""

    def hook(_module, _inp, out):  # noqa: ANN001, ANN202
        hidden = out[0] if isinstance(out, tuple) else out
        new = edit(hidden)
        return (new, *out[1:]) if isinstance(out, tuple) else new

    handle = lm.blocks[block].register_forward_hook(hook)
    try:
        with torch.no_grad():
            logits = lm.model(input_ids=ids).logits.float()
    finally:
        handle.remove()
    return float(torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten()))


def test_outlier_positions_stay_clean_in_ours_and_are_reconstructed_in_saelens_convention(tiny_llama):
    """``clean`` (activation outliers left out of training): our SAE splice and zero ablation
    keep those positions' clean activations, checked against a plain forward hook; SAELens's
    figures do not move, since its convention reconstructs every non-special token."""
    lm = load_model(ModelConfig(name=str(tiny_llama), device="cpu"))
    tok, hook = lm.tokenizer, f"{lm.block_path}.1"
    ids = torch.randint(2, len(tok), (6, 16), generator=torch.Generator().manual_seed(3))
    ids[:, 0] = tok.bos_token_id
    ids[2, 9] = tok.eos_token_id
    outliers = torch.zeros(ids.shape, dtype=torch.bool)
    outliers[1, 1] = outliers[4, 1] = outliers[4, 7] = True
    sae = TopKSAE(lm.d_model, 4 * lm.d_model, k=8)
    sae.reset_parameters(torch.Generator().manual_seed(1))
    entry = Entry("topk", sae, hook, 1)
    plain, plain_field = splice_both(lm, ids, [entry], {hook: None}, batch_size=4)
    ours, field = splice_both(lm, ids, [entry], {hook: None}, clean={hook: outliers}, batch_size=4)

    keep = outliers.clone()
    keep[:, 0] = True

    def spliced(hidden: torch.Tensor) -> torch.Tensor:
        x_hat = sae(hidden.reshape(-1, hidden.shape[-1])).x_hat.view_as(hidden)
        return torch.where(keep.unsqueeze(-1), hidden, x_hat)

    assert ours.ce["topk"] == pytest.approx(_ce_with_hook(lm, ids, 1, spliced), abs=1e-5)
    zeroed = _ce_with_hook(lm, ids, 1, lambda h: torch.where(keep.unsqueeze(-1), h, torch.zeros_like(h)))
    assert ours.ce["zero:" + hook] == pytest.approx(zeroed, abs=1e-5)
    assert ours.ce["topk"] != pytest.approx(plain.ce["topk"], abs=1e-4)  # the mask mattered
    for key, value in plain_field["topk"].items():
        assert field["topk"][key] == pytest.approx(value, rel=1e-5, abs=CE_ABS), key
