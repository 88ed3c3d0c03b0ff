"""Bad input to ``gsae harvest``: one clear line, non-zero exit, nothing marked complete."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cache import store as cache_store
from cache.store import read_info
from stages.cli import main
from tests.conftest import tiny_overrides


def _harvest(args: list[str], capsys, *flags: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main(["harvest", *flags, "-p", args[0], *sum((["-s", a] for a in args[1:]), [])])
        raise SystemExit(0)
    err = capsys.readouterr().err
    return int(exc.value.code or 0), err


@pytest.fixture()
def params_file(tmp_path) -> str:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"model": {"device": "cpu"}}))
    return str(path)


def _assert_one_line_error(code: int, err: str, *needles: str) -> None:
    lines = [line for line in err.strip().splitlines() if line.startswith("gsae:")]
    assert code != 0, err
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


def _not_complete(url: Path) -> bool:
    return not cache_store.exists(str(url)) or not read_info(str(url)).complete


def test_unknown_model_path(params_file, tmp_path, capsys):
    url = tmp_path / "s.zarr"
    code, err = _harvest([params_file, *tiny_overrides(tmp_path / "no-such-model", str(url))], capsys)
    _assert_one_line_error(code, err, "model")
    assert _not_complete(url)


def test_layer_out_of_range(params_file, tiny_llama, tmp_path, capsys):
    url = tmp_path / "s.zarr"
    code, err = _harvest([params_file, *tiny_overrides(tiny_llama, str(url), layers="[1,7]")], capsys)
    _assert_one_line_error(code, err, "layer 7 out of range", "0..3")
    assert _not_complete(url)


def test_empty_source(params_file, tiny_llama, tmp_path, capsys):
    corpus = tmp_path / "empty"
    corpus.mkdir()
    (corpus / "a.txt").write_text("")
    url = tmp_path / "s.zarr"
    code, err = _harvest(
        [params_file, *tiny_overrides(tiny_llama, str(url)), f"data.source={corpus}"], capsys
    )
    _assert_one_line_error(code, err, "no complete context")
    assert _not_complete(url)


@pytest.mark.parametrize(
    ("length", "needle"), [(1, "context_length must be >= 2"), (512, "exceeds the model's maximum 256")]
)
def test_bad_context_length(params_file, tiny_llama, tmp_path, capsys, length, needle):
    url = tmp_path / "s.zarr"
    over = [
        *tiny_overrides(tiny_llama, str(url)),
        f"data.context_length={length}",
        "harvest.tokens_per_shard=1024",
        "harvest.chunk_tokens=512",
        "harvest.tokens=1024",
    ]
    code, err = _harvest([params_file, *over], capsys)
    _assert_one_line_error(code, err, needle)
    assert _not_complete(url)


def test_unknown_params_key(params_file, tiny_llama, tmp_path, capsys):
    url = tmp_path / "s.zarr"
    code, err = _harvest([params_file, *tiny_overrides(tiny_llama, str(url)), "harvest.layer=3"], capsys)
    _assert_one_line_error(code, err, "unknown params key 'harvest.layer'")
    assert _not_complete(url)


def test_unknown_key_in_file(tmp_path, capsys):
    path = tmp_path / "params.yaml"
    path.write_text("model:\n  nme: x\n")
    code, err = _harvest([str(path)], capsys)
    _assert_one_line_error(code, err, "unknown params key 'model.nme'")


def test_store_of_a_different_key_is_refused(params_file, tiny_llama, tmp_path, capsys):
    url = tmp_path / "s.zarr"
    assert _harvest([params_file, *tiny_overrides(tiny_llama, str(url), tokens=256)], capsys)[0] == 0
    before = read_info(str(url)).key
    code, err = _harvest(
        [params_file, *tiny_overrides(tiny_llama, str(url), tokens=256, layers="[2]")], capsys
    )
    _assert_one_line_error(code, err, "different harvest", "--overwrite")
    assert read_info(str(url)).key == before
    code, _ = _harvest(
        [params_file, *tiny_overrides(tiny_llama, str(url), tokens=256, layers="[2]")], capsys, "--overwrite"
    )
    assert code == 0
    assert read_info(str(url)).key != before and read_info(str(url)).complete
