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


@pytest.fixture()
def unloadable_model(tiny_llama, tmp_path) -> Path:
    """A model folder that passes every check short of loading (config.json there, files hashed
    into the key) but whose weights cannot be read: a harvest that loads it fails naming the model."""
    import shutil

    folder = Path(shutil.copytree(tiny_llama, tmp_path / "damaged-model"))
    next(folder.glob("*.safetensors")).write_bytes(b"not a safetensors file")
    return folder


def _source_case(tmp_path: Path, case: str) -> tuple[str, str]:
    """(data.source, the error it gives)."""
    if case == "missing file":
        return str(tmp_path / "no-such-corpus.jsonl"), "data.source not found"
    if case == "bad column":
        path = tmp_path / "rows.jsonl"
        path.write_text('{"body": "a document"}\n')
        return str(path), "data.text_column 'text' not in columns ['body']"
    return "no-such-user/no-such-dataset", "is not a local path, and HF_HUB_OFFLINE is set"


@pytest.mark.parametrize("case", ["missing file", "bad column", "unknown dataset offline"])
def test_data_source_errors_come_before_the_model_loads(
    params_file, unloadable_model, tmp_path, capsys, monkeypatch, case
):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    root = tmp_path / "cache"  # harvest.store auto: the store would go to <root>/train/<key>.zarr
    over = [*tiny_overrides(unloadable_model, "auto"), f"harvest.cache_root={root}"]
    code, err = _harvest([params_file, *over], capsys)  # a good source: the model is loaded, and fails
    _assert_one_line_error(code, err, "cannot load model")
    source, needle = _source_case(tmp_path, case)
    code, err = _harvest([params_file, *over, f"data.source={source}"], capsys)
    _assert_one_line_error(code, err, needle)  # not the model's error: the model was never loaded
    assert not root.exists()  # and nothing was left behind: no empty <root>/train folder


def test_a_harvest_that_fails_before_writing_leaves_no_folder(params_file, tiny_llama, tmp_path, capsys):
    root = tmp_path / "deep" / "cache"
    store = tmp_path / "custom" / "nested" / "s.zarr"
    for over in (
        [*tiny_overrides(tiny_llama, "auto"), f"harvest.cache_root={root}"],
        [*tiny_overrides(tiny_llama, str(store)), f"harvest.cache_root={root}"],
    ):
        too_long = ["data.context_length=512", "harvest.tokens_per_shard=1024", "harvest.chunk_tokens=512"]
        code, err = _harvest([params_file, *over, *too_long], capsys)
        _assert_one_line_error(code, err, "exceeds the model's maximum")  # known only once the model loaded
        assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"], list(tmp_path.rglob("*"))
    code, _ = _harvest([params_file, *tiny_overrides(tiny_llama, str(store), tokens=256)], capsys)
    assert code == 0 and read_info(str(store)).complete  # a harvest that succeeds keeps its folders
