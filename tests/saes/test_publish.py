"""``gsae push``: trained SAE folders and their model card reach a Hub repository (a local
stand-in for the Hub's HTTP API, tests/hubserver.py), byte for byte; bad input is one line."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.clirun import run_cli
from tests.hubserver import FakeHub, serve_hub
from tests.saes.conftest import GSAE_AUG, GSAE_SEL, TOPK, Trained

REPO = "someone/tiny-saes"
TOKEN = "hf_test_token"


@pytest.fixture()
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeHub]:
    """The stand-in, a token in ``$HF_TOKEN`` and no saved login of the machine's."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-saved-token"))
    with serve_hub() as served:
        yield served


@pytest.fixture()
def params(tmp_path: Path) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text("{}\n")
    return path


def _evaluate_json(tmp_path: Path) -> Path:
    figures = {
        TOPK: {"fvu": 0.1234, "l0": 4.0, "loss_recovered": 0.9711, "ce_loss_score": 0.9555, "kl": 0.25},
        GSAE_AUG: {"fvu": 0.2345, "l0": 4.0, "loss_recovered": 0.9622, "selection_shift": 0.31},
        f"{GSAE_AUG}@beta0": {"fvu": 0.2001, "l0": 4.0, "loss_recovered": 0.9677, "selection_shift": 0.0},
    }
    path = tmp_path / "evaluate.json"
    path.write_text(json.dumps(figures))
    return path


def _push(args: list[str], params: Path, trained: Trained, capsys: pytest.CaptureFixture[str]):
    return run_cli(["push", "-p", str(params), "-s", f"train.out_dir={trained.out_dir}", *args], capsys)


def test_push_uploads_every_sae_folder_and_the_model_card(
    hub: FakeHub, trained: Trained, params: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    ev = _evaluate_json(tmp_path)
    code, out, err = _push([REPO, "--endpoint", hub.url, "--evaluate", str(ev)], params, trained, capsys)
    assert code == 0, err
    assert out.strip().startswith(f"{hub.url}/{REPO}/commit/")
    files = hub.repos[REPO]["main"]
    expected = {
        f"{n}/{f}" for n in (TOPK, GSAE_AUG, GSAE_SEL) for f in ("cfg.json", "sae_weights.safetensors")
    }
    assert set(files) == expected | {"README.md", ".gitattributes"}
    for name in expected:  # the bytes that arrived are the local files'
        assert files[name] == (trained.out_dir / name).read_bytes(), name
    assert all(r.authorization == f"Bearer {TOKEN}" for r in hub.requests)
    assert [r.endpoint for r in hub.requests] == ["create", "tree", "validate", "preupload", "commit"]
    assert hub.created[0]["name"] == "tiny-saes" and hub.created[0]["organization"] == "someone"
    assert hub.created[0].get("visibility") != "private"
    assert hub.commits[0]["summary"] == "Upload 3 SAE(s) with gsae push"

    card = files["README.md"].decode()
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["library_name"] == "saelens" and "g-sae" in meta["tags"]
    assert "base_model" not in meta  # the synthetic store names no hub model
    cfg = json.loads((trained.dirs[GSAE_AUG] / "cfg.json").read_text())
    row = next(line for line in card.splitlines() if line.startswith(f"| `{GSAE_AUG}` | gsae |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2:] == [
        f"{cfg['hook_name']} / {cfg['metadata']['hook_name']}",
        str(cfg["d_in"]),
        str(cfg["d_sae"]),
        "4",
        "4.0",
        "augmented",
        format(cfg["grad_scale"], ".6g"),
        str(cfg["tokens_seen"]),
    ]
    assert f"| `{TOPK}` | 0.1234 | 4.0 | – | 0.9711 | 0.9555 | 0.2500 |" in card
    assert f"| `{GSAE_AUG}@beta0` | 0.2001 |" in card and "From `evaluate.json`" in card
    assert "import pipeline.saes.saelens_plugin" in card and 'pip install "gsae-pipeline[interop]' in card
    assert f'SAE.from_pretrained("{REPO}", "{GSAE_AUG}")' in card
    assert f'SAE.from_pretrained("{REPO}", "{TOPK}")' in card
    assert "model `tiny-test-model`" in card


def test_push_to_a_branch_with_a_message_and_again_to_an_existing_repo(
    hub: FakeHub, trained: Trained, params: Path, capsys: pytest.CaptureFixture[str]
):
    args = [REPO, "--endpoint", hub.url, "--variant", TOPK, "--private"]
    code, _, err = _push(
        [*args, "--revision", "dev", "--commit-message", "first SAEs"], params, trained, capsys
    )
    assert code == 0, err
    assert hub.created[0]["visibility"] == "private"
    assert set(hub.repos[REPO]["dev"]) == {
        ".gitattributes",
        "README.md",
        f"{TOPK}/cfg.json",
        f"{TOPK}/sae_weights.safetensors",
    }
    assert set(hub.repos[REPO]["main"]) == {".gitattributes"}  # the branch got the commit, main did not
    assert hub.commits[-1] == {"summary": "first SAEs", "description": "", "repo": REPO, "revision": "dev"}
    card = hub.repos[REPO]["dev"]["README.md"].decode()
    assert "saelens_plugin" not in card and "g-sae" not in card  # a TopK needs no plug-in
    code, _, err = _push([REPO, "--endpoint", hub.url, "--variant", GSAE_SEL], params, trained, capsys)
    assert code == 0, err  # the repository exists already: pushed to it
    assert len(hub.created) == 1 and f"{GSAE_SEL}/cfg.json" in hub.repos[REPO]["main"]
    assert f"`{TOPK}`" not in hub.repos[REPO]["main"]["README.md"].decode()  # TOPK is on dev only
    # a later push to dev: the card describes the SAE folder already there as well as the new one
    code, _, err = _push(
        [REPO, "--endpoint", hub.url, "--variant", GSAE_SEL, "--revision", "dev"], params, trained, capsys
    )
    assert code == 0, err
    dev = hub.repos[REPO]["dev"]
    assert dev[f"{TOPK}/cfg.json"] == (trained.dirs[TOPK] / "cfg.json").read_bytes()  # left as it was
    card = dev["README.md"].decode()
    assert f"| `{GSAE_SEL}` | gsae |" in card and f"| `{TOPK}` | topk |" in card
    assert "saelens_plugin" in card and "2 sparse autoencoder(s)" in card
    assert any(
        r.endpoint == "download" and r.path.endswith(f"resolve/dev/{TOPK}/cfg.json") for r in hub.requests
    )


def test_dry_run_writes_what_would_be_uploaded_and_sends_nothing(
    hub: FakeHub, trained: Trained, params: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    dest = tmp_path / "staged"
    code, out, err = _push([REPO, "--endpoint", hub.url, "--dry-run", str(dest)], params, trained, capsys)
    assert code == 0, err
    assert out.strip() == f"3 SAE folder(s) + README.md written to {dest} (nothing uploaded)"
    assert hub.requests == [] and list(tmp_path.glob(".staged.*")) == []  # no temporary folder left
    staged = {p.relative_to(dest).as_posix(): p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    code, _, err = _push([REPO, "--endpoint", hub.url], params, trained, capsys)
    assert code == 0, err
    uploaded = {k: v for k, v in hub.repos[REPO]["main"].items() if k != ".gitattributes"}
    assert staged == uploaded
    code, _, err = _push([REPO, "--dry-run", str(dest)], params, trained, capsys)
    assert (
        code == 1
        and err.strip()
        == f"gsae: error: {dest} exists and is not an empty folder: give --dry-run a new folder"
    )


def _one_line_error(code: int, err: str) -> str:
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith("gsae: error: "), (code, err)
    return lines[0]


def test_bad_inputs_are_one_line(
    hub: FakeHub,
    trained: Trained,
    params: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.chdir(tmp_path)  # outside a project: no params.yaml, train.out_dir's default data/saes
    code, _, err = run_cli(["push", REPO], capsys)
    assert _one_line_error(code, err).startswith("gsae: error: no trained SAE variants in data/saes")
    empty = tmp_path / "no-saes"
    empty.mkdir()
    code, _, err = run_cli(["push", "-p", str(params), "-s", f"train.out_dir={empty}", REPO], capsys)
    assert "no trained SAE variants in" in _one_line_error(code, err)
    code, _, err = _push([REPO, "--variant", "topk-k99-x4-s0"], params, trained, capsys)
    line = _one_line_error(code, err)
    assert "no trained variant 'topk-k99-x4-s0'" in line and TOPK in line
    code, _, err = _push(["a/b/c"], params, trained, capsys)
    assert "is not a Hub repository id" in _one_line_error(code, err)
    code, _, err = _push([REPO, "--evaluate", str(tmp_path / "missing.json")], params, trained, capsys)
    assert "no evaluation file" in _one_line_error(code, err)
    assert hub.requests == []

    hub.fail["commit"] = 500
    code, _, err = _push([REPO, "--endpoint", hub.url], params, trained, capsys)
    assert _one_line_error(code, err) == (
        f"gsae: error: committing to {REPO} failed: HTTP 500: injected failure of commit"
    )
    hub.fail = {"create": 403}
    code, _, err = _push(["other/repo", "--endpoint", hub.url], params, trained, capsys)
    line = _one_line_error(code, err)
    assert "creating repository other/repo" in line and "HTTP 403" in line and "HF_TOKEN" in line
    hub.fail = {}

    monkeypatch.delenv("HF_TOKEN")
    code, _, err = _push([REPO, "--endpoint", hub.url], params, trained, capsys)
    assert "no Hugging Face token" in _one_line_error(code, err)


def test_an_unreachable_hub_is_one_line(
    hub: FakeHub, trained: Trained, params: Path, capsys: pytest.CaptureFixture[str]
):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    code, _, err = _push([REPO, "--endpoint", dead, "--variant", TOPK], params, trained, capsys)
    assert f"cannot reach {dead}" in _one_line_error(code, err)


def _card_block(card: str, marker: str) -> str:
    """The card's first python block that contains ``marker``."""
    blocks = re.findall(r"```python\n(.*?)```", card, flags=re.S)
    return next(b for b in blocks if marker in b)


def test_the_cards_loading_instructions_load_the_pushed_saes(
    hub: FakeHub,
    trained: Trained,
    params: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    one_thread: None,
):
    """The card's loading snippets, run as printed against the pushed repository: the g-SAE loads
    through the SAELens plug-in and selects exactly as our own loader does, the TopK loads in plain
    SAELens, and the project's API loads the downloaded g-SAE folder bit for bit."""
    pytest.importorskip("sae_lens")
    import huggingface_hub.constants as hf_constants
    import torch

    from pipeline.saes.io import load_sae

    code, _, err = _push(
        [REPO, "--endpoint", hub.url, "--variant", GSAE_AUG, "--variant", TOPK], params, trained, capsys
    )
    assert code == 0, err
    card = hub.repos[REPO]["main"]["README.md"].decode()
    # hf_hub_download reads the Hub's address and the cache folder from these at call time
    monkeypatch.setattr(hf_constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(
        hf_constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}"
    )
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    x, g = trained.x[:64], trained.g[:64]
    scope: dict = {"x": x, "grad": g}
    exec(_card_block(card, "saelens_plugin"), scope)
    ours, _ = load_sae(trained.dirs[GSAE_AUG])
    with torch.no_grad():
        expected = ours(x, g).acts
    assert type(scope["sae"]).__name__ == "GSAELensSAE"
    assert torch.equal(scope["acts"] != 0, expected != 0)  # the same latents, selected with the gradient
    assert (scope["acts"] - expected).abs().max().item() <= 1e-5 * trained.scale
    topk: dict = {}
    exec(_card_block(card, f'"{TOPK}"'), topk)
    assert type(topk["sae"]).__name__ == "TopKSAE" and topk["sae"].cfg.k == 4
    api: dict = {}
    exec(_card_block(card, "import gsae_pipeline"), api)  # the project's own loader, on the same files
    with torch.no_grad():
        assert torch.equal(api["sae"].encode(x, g), expected)
    fetched = {p.parent.name for p in (tmp_path / "hub-cache").rglob("sae_weights.safetensors")}
    assert fetched == {GSAE_AUG, TOPK}  # both came from the stand-in
