"""Contract every registered SAE architecture must meet, plus g-SAE specifics."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from pipeline.core.errors import SAEFormatError
from pipeline.saes import REGISTRY, get_sae_class
from pipeline.saes.base import SAE
from pipeline.saes.gsae import GSAE
from pipeline.saes.io import load_sae, save_sae
from pipeline.saes.topk import TopKSAE

D, N, K, B = 16, 64, 4, 32


pytestmark = pytest.mark.usefixtures("one_thread")


def make(arch: str, seed: int = 0, **kw: object) -> SAE:
    cls = get_sae_class(arch)
    if "beta" in cls.grid_hparams:
        kw.setdefault("beta", 0.7)
    sae = cls(D, N, K, **kw)
    sae.reset_parameters(torch.Generator().manual_seed(seed))
    with torch.no_grad():  # non-trivial biases
        g = torch.Generator().manual_seed(seed + 1)
        sae.b_enc.copy_(0.1 * torch.randn(N, generator=g))
        sae.b_dec.copy_(0.5 * torch.randn(D, generator=g))
    return sae


def data(seed: int = 0, scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(B, D, generator=g), 0.05 * torch.randn(B, D, generator=g)


ARCHS = sorted(REGISTRY)


@pytest.mark.parametrize("arch", ARCHS)
def test_shapes(arch: str) -> None:
    sae = make(arch)
    x, g = data()
    out = sae(x, g)  # training mode: the selection may be batch-level
    assert out.x_hat.shape == (B, D) and out.acts.shape == (B, N) and out.pre.shape == (B, N)
    assert out.indices.shape[0] == B and out.values.shape == out.indices.shape
    assert ((out.acts != 0).sum(dim=1) <= out.indices.shape[1]).all()
    assert (out.acts != 0).sum(dim=1).float().mean() <= K  # k active per token, on average
    assert torch.equal(out.acts.gather(1, out.indices), out.values)
    assert torch.allclose(out.x_hat, sae.decode(out.acts), atol=1e-5)
    assert sae.W_enc.shape == (D, N) and sae.W_dec.shape == (N, D)


@pytest.mark.parametrize("arch", ARCHS)
def test_inference_is_token_by_token(arch: str) -> None:
    """After training (one pass here) an SAE in eval mode encodes each token on its own."""
    sae = make(arch)
    x, g = data(seed=7)
    sae(x, g)
    sae.eval()
    whole = sae(x, g)
    for t in range(0, B, 5):
        one = sae(x[t : t + 1], g[t : t + 1])
        assert torch.equal(one.acts[0] != 0, whole.acts[t] != 0)
        assert torch.allclose(one.acts[0], whole.acts[t], atol=1e-6)


@pytest.mark.parametrize("arch", ARCHS)
def test_save_load_reproduces_on_raw_inputs(arch: str, tmp_path) -> None:
    c = 2.0**-3  # activation scale used in training (a power of two, as pipeline.train.normalize gives)
    sae = make(arch, grad_scale=float(np.float32(3.7)))
    x_raw, g_raw = data(scale=8.0)
    x_fit, g_fit = data(seed=11, scale=8.0)
    sae(
        x_fit * c, g_fit
    )  # a training pass (sets what an architecture learns for inference, e.g. a threshold)
    sae.eval()
    trained = sae(x_raw * c, g_raw)  # the model as trained: scaled activations, raw grads × γ inside
    save_sae(sae, tmp_path / "v", {"hook_name": "h", "model": "m", "cache_key": "abc"}, act_scale=c)
    loaded, cfg = load_sae(tmp_path / "v")
    assert cfg["architecture"] == arch and cfg["d_in"] == D and cfg["d_sae"] == N and cfg["k"] == K
    assert cfg["grad_scale"] == sae.grad_scale and cfg["model_name"] == "m"
    out = loaded(x_raw, g_raw)
    # unit-norm fold: latents in raw units (trained / c), everything else bit-exact
    assert torch.equal(out.indices.sort(1).values, trained.indices.sort(1).values)
    assert torch.equal(out.pre, trained.pre / c)
    assert torch.equal(out.values, trained.values / c)
    assert torch.equal(out.x_hat, trained.x_hat / c)

    # the DESIGN §1 formulas applied by hand to the files reproduce the trained model
    w = load_file(str(tmp_path / "v" / "sae_weights.safetensors"))
    assert torch.allclose(w["W_dec"].norm(dim=1), torch.ones(N), atol=1e-6)  # unit decoder rows
    cfg = json.loads((tmp_path / "v" / "cfg.json").read_text())
    x, gr = x_raw.double(), g_raw.double() * cfg["grad_scale"]
    z = (x - w["b_dec"].double()) @ w["W_enc"].double() + w["b_enc"].double()
    s = z + cfg["beta"] * z * (gr @ w["W_dec"].double().T).abs()  # β = 0 recorded for gradient-free ones
    if cfg.get("threshold") is not None:  # threshold inference (BatchTopK): s_i > θ fires
        picked = s > cfg["threshold"]
    else:
        idx = s.topk(K, dim=1).indices
        assert torch.equal(idx.sort(1).values, trained.indices.sort(1).values)
        picked = torch.zeros_like(s, dtype=torch.bool).scatter(1, idx, True)
    vals = (s if cfg["value_mode"] == "augmented" else z).relu() * picked
    x_hat = vals @ w["W_dec"].double() + w["b_dec"].double()
    assert torch.equal(vals > 0, trained.acts != 0)
    assert torch.allclose(x_hat, (trained.x_hat / c).double(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_loss_falls_and_decoder_rows_stay_unit_norm(arch: str) -> None:
    sae = make(arch)
    x, g = data(scale=2.0)
    opt = torch.optim.Adam(sae.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        out = sae(x, g)
        loss = (out.x_hat - x).pow(2).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        sae.remove_parallel_grad_()
        par = (sae.W_dec.grad * sae.W_dec).sum(1)
        assert par.abs().max() < 1e-4
        opt.step()
        sae.normalize_decoder_()
        losses.append(float(loss.detach()))
        assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(N), atol=1e-5)
    assert losses[-1] < 0.5 * losses[0]


def naive_gsae(sae: GSAE, x: torch.Tensor, g: torch.Tensor) -> tuple[list[set[int]], list[dict[int, float]]]:
    """Per-token python-loop reference of the g-SAE selection (DESIGN §1)."""
    W_enc, b_enc = sae.W_enc.detach().double(), sae.b_enc.detach().double()
    W_dec, b_dec = sae.W_dec.detach().double(), sae.b_dec.detach().double()
    sets, values = [], []
    for t in range(x.shape[0]):
        xt, gt = x[t].double(), g[t].double() * sae.grad_scale
        scores, pre = [], []
        for i in range(sae.d_sae):
            z = float(sum((xt[j] - b_dec[j]) * W_enc[j, i] for j in range(sae.d_in)) + b_enc[i])
            f = abs(float(sum(W_dec[i, j] * gt[j] for j in range(sae.d_in))))
            scores.append(z + sae.beta * z * f)
            pre.append(z)
        top = sorted(range(sae.d_sae), key=lambda i: scores[i], reverse=True)[: sae.k]
        sets.append(set(top))
        src = scores if sae.value_mode == "augmented" else pre
        values.append({i: max(0.0, src[i]) for i in top})
    return sets, values


@pytest.mark.parametrize("mode", ["augmented", "selection"])
def test_gsae_selection_matches_naive_reference(mode: str) -> None:
    sae = make("gsae", beta=2.0, value_mode=mode, grad_scale=5.0)
    x, g = data(seed=3)
    x, g = x[:6], g[:6]
    out = sae(x, g)
    sets, values = naive_gsae(sae, x, g)
    for t in range(x.shape[0]):
        got = out.indices[t].tolist()
        assert set(got) == sets[t]
        for j, i in enumerate(got):
            assert out.values[t, j].item() == pytest.approx(values[t][i], rel=1e-4, abs=1e-5)


def test_gsae_selection_uses_the_gradient() -> None:
    sae = make("gsae", beta=50.0, grad_scale=20.0)
    topk = make("topk")
    x, g = data(seed=4)
    assert not torch.equal(sae(x, g).indices.sort(1).values, topk(x).indices.sort(1).values)


@pytest.mark.parametrize("mode", ["augmented", "selection"])
def test_beta_zero_is_topk_bit_for_bit(mode: str) -> None:
    gs, tk = make("gsae", beta=0.0, value_mode=mode), make("topk")
    x, g = data(seed=5)
    a, b = gs(x, g), tk(x)
    for u, v in zip(a, b, strict=True):
        assert torch.equal(u, v)
    ((a.x_hat - x) ** 2).sum().backward()
    ((b.x_hat - x) ** 2).sum().backward()
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        assert torch.equal(getattr(gs, name).grad, getattr(tk, name).grad)


def test_augmented_vs_selection_values() -> None:
    aug = make("gsae", beta=1.5, value_mode="augmented", grad_scale=4.0)
    sel = make("gsae", beta=1.5, value_mode="selection", grad_scale=4.0)
    x, g = data(seed=6)
    a, s = aug(x, g), sel(x, g)
    assert torch.equal(a.indices, s.indices)  # same selection
    f = aug.grad_factor(g).gather(1, a.indices)
    z = a.pre.gather(1, a.indices)
    assert torch.equal(s.values, z.relu())  # selection: ReLU(z_i)
    assert torch.allclose(a.values, (z * (1 + 1.5 * f)).relu(), rtol=1e-6, atol=1e-6)  # augmented: ReLU(s_i)
    assert torch.allclose(a.values, s.values * (1 + 1.5 * f), rtol=1e-5, atol=1e-6)
    assert (a.values >= s.values).all() and (a.values > s.values).any()


def test_gsae_without_gradient_refused() -> None:
    with pytest.raises(ValueError, match="gradient"):
        make("gsae", beta=1.0)(data()[0])


def test_registry() -> None:
    assert {"topk", "gsae"} <= set(REGISTRY)
    assert REGISTRY["topk"] is TopKSAE and REGISTRY["gsae"] is GSAE
    with pytest.raises(Exception, match="unknown SAE architecture"):
        get_sae_class("nope")


def test_load_errors(tmp_path) -> None:
    with pytest.raises(SAEFormatError, match="missing cfg.json"):
        load_sae(tmp_path)
    save_sae(make("topk"), tmp_path / "v", {})
    w = load_file(str(tmp_path / "v" / "sae_weights.safetensors"))
    w["W_dec"] = w["W_dec"][:, :3].contiguous()
    save_file(w, str(tmp_path / "v" / "sae_weights.safetensors"))
    with pytest.raises(SAEFormatError, match=r"W_dec has shape \(64, 3\)"):
        load_sae(tmp_path / "v")
    (tmp_path / "v" / "sae_weights.safetensors").unlink()
    with pytest.raises(SAEFormatError, match="missing sae_weights.safetensors"):
        load_sae(tmp_path / "v")


def test_changed_selections_counts_what_left_the_plain_top_k() -> None:
    from pipeline.saes.base import changed_selections

    pre = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0], [1.0, 2.0, 3.0, 4.0, 5.0]])
    same = torch.tensor([[1, 0], [3, 4]])
    moved = torch.tensor([[0, 4], [0, 1]])  # one changed in row 0, two in row 1
    assert int(changed_selections(pre, same)) == 0
    assert int(changed_selections(pre, moved)) == 3


@pytest.mark.parametrize("arch", ARCHS)
def test_hparams_are_a_documented_frozen_dataclass(arch: str) -> None:
    """Each architecture's hparams: frozen, one docstring per field, rebuilt from its own cfg.json."""
    import dataclasses

    from pipeline.saes.io import hparams_from_cfg
    from stages.paramdoc import _attribute_docs

    cls = get_sae_class(arch)
    hp_cls = cls.hparams_class
    assert dataclasses.is_dataclass(hp_cls) and hp_cls.__dataclass_params__.frozen
    docs: dict[str, str] = {}
    for klass in reversed(hp_cls.__mro__):
        if dataclasses.is_dataclass(klass):
            docs |= _attribute_docs(klass)
    assert {f.name for f in dataclasses.fields(hp_cls)} <= {n for n, d in docs.items() if d}
    sae = make(arch)
    with pytest.raises(dataclasses.FrozenInstanceError):
        sae.hp.k = 3  # type: ignore[misc]
    assert hparams_from_cfg(cls, sae.hparams()) == sae.hp


def test_hyperparameters_are_read_only_attributes() -> None:
    sae = make("gsae", beta=2.0)
    assert sae.beta == 2.0 and sae.k == K
    with pytest.raises(AttributeError, match="with_hparams"):
        sae.beta = 0.0
    twin = sae.with_hparams(beta=0.0)
    assert twin.beta == 0.0 and sae.beta == 2.0 and torch.equal(twin.W_dec, sae.W_dec)


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    from tests._stores import build_store

    return build_store(str(tmp_path_factory.mktemp("contract") / "s.zarr"), n_tokens=512, seed=5)


@pytest.mark.parametrize("arch", ARCHS)
def test_trains_through_the_real_trainer_and_loads_back(arch: str, tiny_store: str, tmp_path) -> None:
    """``run_train`` on a tiny store: every architecture trains, is saved, loads as itself and
    encodes the store's tokens as the trainer left it."""
    from cache.reader import read_rows
    from pipeline.train.run import run_train
    from tests._stores import tiny_train_params

    grid = {"architecture": [arch], "k": [K], "expansion": [4], "beta": [2.0], "lr": [3e-3]}
    params = tiny_train_params(tmp_path, grid, dead_tokens=200)
    metrics = run_train(params, store_url=tiny_store, expected_key=None)
    ((name, m),) = metrics.items()
    assert name.startswith(f"{arch}-k{K}-") and m["steps"] == 4 and 0 < m["fvu"] < float("inf")
    sae, cfg = load_sae(tmp_path / "saes" / name)
    assert type(sae) is get_sae_class(arch) and cfg["architecture"] == arch and not sae.training
    _, act, grad = read_rows(tiny_store, "model.layers.1", 0, 256)
    x, g = torch.from_numpy(act), torch.from_numpy(grad)
    with torch.no_grad():
        out = sae(x, g)
    assert torch.isfinite(out.x_hat).all() and 0 < float((out.acts != 0).sum(1).float().mean()) <= 4 * K
    curve = (tmp_path / "curves" / "curves.csv").read_text().splitlines()
    assert len([row for row in curve if row.startswith(f"{name},")]) == 2  # logged every 2 of 4 steps
