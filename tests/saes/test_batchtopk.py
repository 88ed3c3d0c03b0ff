"""BatchTopK and its gradient-aware twin: batch-level selection, the learned threshold, β = 0, shift."""

from __future__ import annotations

import pytest
import torch

from pipeline.saes.base import SAE
from pipeline.saes.batchtopk import BatchTopKSAE, batch_mask
from pipeline.saes.gbatchtopk import GBatchTopKSAE
from pipeline.saes.io import load_sae, save_sae
from tests.saes.test_contract import make

pytestmark = pytest.mark.usefixtures("one_thread")
D, N, K, B = 16, 64, 4, 64


def batch(seed: int, rows: int = B) -> tuple[torch.Tensor, torch.Tensor]:
    """Activations with a per-token scale (so tokens differ in how many latents clear the bar)."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.exp(torch.randn(rows, 1, generator=g))
    return scale * torch.randn(rows, D, generator=g), 0.3 * torch.randn(rows, D, generator=g)


def counts(out) -> torch.Tensor:  # noqa: ANN001
    return (out.acts != 0).sum(dim=1)


@pytest.mark.parametrize("arch", ["batchtopk", "gbatchtopk"])
def test_training_keeps_k_times_batch_across_the_batch(arch: str) -> None:
    sae = make(arch, beta=2.0) if arch == "gbatchtopk" else make(arch)
    x, g = batch(0)
    out = sae(x, g)
    per_row = counts(out)
    assert int(per_row.sum()) == K * B  # exactly k·B kept (all positive here)
    assert per_row.min() < K < per_row.max()  # ... unevenly: per-token L0 varies
    assert out.indices.shape == (B, int(per_row.max()))
    # the kept entries are the k·B largest scores of the whole batch
    s = (sae.scores(out.pre, g) if arch == "gbatchtopk" else out.pre).detach()
    kept = out.acts != 0
    assert float(s[kept].min()) >= float(s[~kept].max())


def test_batch_mask_keeps_only_positive_scores() -> None:
    s = torch.tensor([[3.0, -1.0, 0.5], [-2.0, -3.0, 1.0]])
    assert batch_mask(s, 2).tolist() == [[True, False, True], [False, False, True]]  # 4 asked, 3 positive


def test_threshold_inference_reproduces_training_sparsity() -> None:
    """θ from a run of training batches gives held-out tokens about k active latents each."""
    sae = make("batchtopk")
    for step in range(40):
        sae(*batch(100 + step))
    assert torch.isfinite(sae.threshold) and float(sae.threshold) > 0
    sae.eval()
    x, _ = batch(7, rows=2048)
    out = sae(x)
    l0 = counts(out).float()
    assert 0.75 * K < float(l0.mean()) < 1.25 * K, float(l0.mean())
    assert l0.std() > 0.5  # per-token L0 still varies at inference
    assert (out.values[out.values != 0] > sae.threshold).all()  # every firing latent cleared θ


def test_threshold_is_a_running_average_of_batch_minima() -> None:
    sae = make("batchtopk", threshold_decay=0.5)
    minima = []
    for step in range(3):
        x, _ = batch(step)
        out = sae(x)
        minima.append(float(out.pre.detach()[out.acts != 0].min()))
    # bias-corrected EMA with decay 0.5: weights 1, 2, 4 over the three minima
    expect = (minima[0] + 2 * minima[1] + 4 * minima[2]) / 7
    assert float(sae.threshold) == pytest.approx(expect, rel=1e-6)


def test_untrained_threshold_refuses_inference() -> None:
    sae = make("batchtopk").eval()
    with pytest.raises(ValueError, match="no inference threshold"):
        sae(batch(0)[0])


@pytest.mark.parametrize("mode", ["augmented", "selection"])
def test_gbatchtopk_at_beta_zero_is_batchtopk_bit_for_bit(mode: str) -> None:
    gb, bt = make("gbatchtopk", beta=0.0, value_mode=mode), make("batchtopk")
    for step in range(3):  # training: outputs, parameter gradients and thresholds
        x, g = batch(step)
        a, b = gb(x, g), bt(x)
        for u, v in zip(a, b, strict=True):
            assert torch.equal(u, v)
        ((a.x_hat - x) ** 2).sum().backward()
        ((b.x_hat - x) ** 2).sum().backward()
        for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
            assert torch.equal(getattr(gb, name).grad, getattr(bt, name).grad)
    assert torch.equal(gb.threshold, bt.threshold) and torch.equal(gb.threshold_beta0, bt.threshold)
    gb.eval(), bt.eval()
    x, g = batch(9)
    for u, v in zip(gb(x, g), bt(x), strict=True):
        assert torch.equal(u, v)


def test_gbatchtopk_selects_with_the_gradient_and_counts_the_shift() -> None:
    sae = make("gbatchtopk", beta=30.0, value_mode="selection", grad_scale=5.0)
    x, g = batch(3)
    out = sae(x, g)
    assert int(counts(out).sum()) == K * B
    plain = batch_mask(out.pre, K)  # what the same SAE keeps at β = 0
    chosen = out.acts != 0
    changed, selected = sae.selection_changes(out.pre, out.indices, out.values)
    assert int(selected) == K * B and int(changed) == int((chosen & ~plain).sum()) > 0
    assert torch.equal(out.values, out.pre.gather(1, out.indices).relu() * (out.values != 0))  # ReLU(z)


def test_gbatchtopk_inference_needs_the_gradient_and_its_twin_thresholds_z() -> None:
    sae = make("gbatchtopk", beta=30.0, grad_scale=5.0)
    for step in range(20):
        sae(*batch(200 + step))
    assert float(sae.threshold) != float(sae.threshold_beta0)
    sae.eval()
    x, g = batch(5, rows=512)
    with pytest.raises(ValueError, match="gradient"):
        sae(x)
    twin = sae.gradient_free_twin()
    assert isinstance(twin, GBatchTopKSAE) and twin.beta == 0.0 and sae.beta == 30.0
    out = twin(x)
    assert torch.equal(out.acts != 0, out.pre > sae.threshold_beta0)
    changed, selected = twin.selection_changes(out.pre, out.indices, out.values)
    assert int(changed) == 0 and int(selected) > 0
    full = sae(x, g)
    changed, selected = sae.selection_changes(full.pre, full.indices, full.values)
    assert int(changed) == int(((full.acts != 0) & ~(full.pre > sae.threshold_beta0)).sum()) > 0


@pytest.mark.parametrize("arch", ["batchtopk", "gbatchtopk"])
def test_threshold_saved_in_raw_units_and_restored(arch: str, tmp_path) -> None:
    c = 2.0**-2
    sae: SAE = make(arch)
    for step in range(5):
        x, g = batch(step)
        sae(x * c, g)
    save_sae(sae, tmp_path / "v", {"hook_name": "model.layers.1"}, act_scale=c)
    loaded, cfg = load_sae(tmp_path / "v")
    assert isinstance(loaded, BatchTopKSAE) and not loaded.training
    assert cfg["threshold"] == float(sae.threshold) / c and float(loaded.threshold) == cfg["threshold"]
    assert cfg["threshold_decay"] == 0.99 and cfg["beta"] == (0.7 if arch == "gbatchtopk" else 0.0)
    sae.eval()
    x, g = batch(11)
    assert torch.equal(loaded(x, g).acts, sae(x * c, g).acts / c)


def _full_topk_mask(s: torch.Tensor, k: int) -> torch.Tensor:
    flat = s.reshape(-1)
    top = torch.topk(flat, min(k * s.shape[0], flat.numel()), sorted=False)
    mask = torch.zeros_like(flat, dtype=torch.bool)
    mask[top.indices] = top.values > 0
    return mask.view_as(s)


@pytest.mark.parametrize("case", ["wide", "outlier_rows", "few_positive", "small"])
def test_batch_mask_equals_the_full_top_k(case: str) -> None:
    """The sampled lower bound (pipeline/saes/batchtopk.py ``_candidates``) never changes the
    selection: against a plain top-k of the whole batch, on the sampled path and its fallbacks."""
    g = torch.Generator().manual_seed(3)
    rows, n = (16, 8) if case == "small" else (256, 1024)
    s = torch.randn(rows, n, generator=g)
    if case == "outlier_rows":  # two rows that would take most of the batch's budget
        s[[5, 77]] *= 40.0
    if case == "few_positive":  # fewer positive scores than k·B: the bound falls below 0
        s = s - 2.5
    for k in (1, 8, 32):
        assert torch.equal(batch_mask(s, k), _full_topk_mask(s, k)), (case, k)


def test_ragged_decode_equals_the_padded_one_bit_for_bit() -> None:
    """Batch-level rows are padded to the batch's largest count; summing only their nonzero
    slots (``ragged_rows``) gives the same reconstruction, and the gradients of the weights
    agree to float rounding."""
    sae = make("batchtopk")
    x, _ = batch(4)
    x[3] *= 30.0  # one outlier row: most rows are mostly padding
    with torch.no_grad():
        out = sae(x)
    assert int((out.values == 0).sum()) * 4 > out.values.numel()  # the compact path is taken
    dense = torch.nn.functional.embedding_bag(
        out.indices, sae.W_dec, per_sample_weights=out.values, mode="sum"
    )
    assert torch.equal(sae.decode_sparse(out.indices, out.values, bias=False), dense)
    values = out.values.clone().requires_grad_(True)
    sae.decode_sparse(out.indices, values).square().sum().backward()
    ragged_grad = sae.W_dec.grad.clone()
    sae.W_dec.grad = None
    (dense + sae.b_dec).square().sum().backward()  # padded reference, same inputs
    torch.testing.assert_close(ragged_grad, sae.W_dec.grad, rtol=1e-5, atol=1e-5)
