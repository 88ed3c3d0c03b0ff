"""Wrong inputs and hostile environments: one ``gsae: error:`` line, exit 1, nothing half-written (issue 10)."""

from __future__ import annotations

import errno
import json
import subprocess
from pathlib import Path

import pytest

from cache.store import read_info
from cache.verify import verify
from pipeline.core.loader import params_from_dict
from pipeline.harvest.run import run_harvest
from tests._stores import build_store
from tests.clirun import run_cli
from tests.conftest import tiny_overrides

HOOK = "model.layers.1"


def _one_line(code: int, err: str, *needles: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.startswith("gsae:")]
    assert code == 1 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("gsae: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _sets(items: dict[str, object]) -> list[str]:
    return sum((["-s", f"{k}={v}"] for k, v in items.items()), [])


@pytest.fixture()
def empty_params(tmp_path) -> str:
    p = tmp_path / "p.yaml"
    p.write_text("{}")
    return str(p)


def _train_params(tmp_path: Path, store: str, **extra: object) -> dict[str, object]:
    return {
        "model.name": "tiny-test-model",
        "data.context_length": 16,
        "harvest.layers": "[1]",
        "harvest.tokens_per_shard": 128,
        "harvest.chunk_tokens": 64,
        "train.store": store,
        "train.device": "cpu",
        "train.out_dir": tmp_path / "saes",
        "train.tokens": 1024,
        "train.batch_size": 128,
        "train.init_sample_tokens": 128,
        "train.metrics_out": tmp_path / "m" / "t.json",
        "train.curves_dir": tmp_path / "m" / "c",
        "train.grid.architecture": "[topk]",
        "train.grid.k": "[4]",
        "train.grid.expansion": "[2]",
        "train.log_every": 1,
        **extra,
    }


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"train.warmup_steps": -1}, "train.warmup_steps must be >= 0"),
        ({"train.dead_tokens": 0}, "train.dead_tokens must be positive"),
        ({"train.k_aux": -1}, "train.k_aux must be >= 0"),
        ({"train.device": "cuda"}, "CUDA is not available"),
    ],
)
def test_bad_train_settings(tmp_path, empty_params, capsys, overrides, needle):
    store = build_store(str(tmp_path / "s.zarr"))
    if "cuda" in str(overrides) and __import__("torch").cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, _, err = run_cli(
        ["train", "-p", empty_params, *_sets(_train_params(tmp_path, store, **overrides))], capsys
    )
    _one_line(code, err, needle)


def test_model_device_cuda_without_cuda(tiny_llama, tmp_path, empty_params, capsys):
    if __import__("torch").cuda.is_available():
        pytest.skip("this machine has CUDA")
    over = [*tiny_overrides(tiny_llama, str(tmp_path / "s.zarr")), "model.device=cuda"]
    code, _, err = run_cli(["harvest", "-p", empty_params, *sum((["-s", o] for o in over), [])], capsys)
    _one_line(code, err, "CUDA is not available")


def test_params_top_level_list(tmp_path, capsys):
    p = tmp_path / "p.yaml"
    p.write_text("- a\n- b\n")
    code, _, err = run_cli(["train", "-p", str(p)], capsys)
    _one_line(code, err, "top level must be a mapping")


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("foo://bucket/s.zarr", "unknown storage protocol 'foo'"),
        ("http://127.0.0.1:9/s.zarr", "cannot reach store"),
    ],
)
def test_unknown_protocol_and_unreachable_http(url, needle, capsys):
    code, _, err = run_cli(["cache", "info", url], capsys)
    _one_line(code, err, needle)


def test_invalid_json_data_file(tiny_llama, tmp_path, empty_params, capsys):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"text": "ok"}\n{"text": broken\n')
    over = [*tiny_overrides(tiny_llama, str(tmp_path / "s.zarr")), f"data.source={data}"]
    code, _, err = run_cli(["harvest", "-p", empty_params, *sum((["-s", o] for o in over), [])], capsys)
    _one_line(code, err, "cannot read data.source", "JSON")


def test_tokens_not_a_multiple_of_the_context_are_reported(tiny_llama, tmp_path, caplog):
    url = tmp_path / "s.zarr"
    run_harvest(params_from_dict({}, tiny_overrides(tiny_llama, str(url), tokens=1000)))
    assert (
        "harvest.tokens 1000 is not a multiple of data.context_length 32: harvesting 992 tokens"
        in caplog.text
    )
    assert read_info(str(url)).total_tokens == 992


def test_evaluate_refuses_a_train_split_store(tmp_path, empty_params, capsys):
    store = build_store(str(tmp_path / "s.zarr"))  # dataset split "train"
    code, _, err = run_cli(["evaluate", "-p", empty_params, "-s", f"evaluate.store={store}"], capsys)
    _one_line(code, err, "'train'-split text", "--allow-train-split")


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"model.name": "other-model"}, "holds model 'tiny-test-model', params say 'other-model'"),
        ({"harvest.layers": "[2]"}, "train layer 2"),
    ],
)
def test_train_refuses_a_store_of_another_model_or_layer(tmp_path, empty_params, capsys, extra, needle):
    store = build_store(str(tmp_path / "s.zarr"))
    root = tmp_path / "s.zarr" / "zarr.json"
    meta = json.loads(root.read_text())
    meta["attributes"]["layers"] = [1]  # what a real harvest records
    meta["attributes"].pop("attrs_sha256")
    root.write_text(json.dumps(meta))
    args = _sets(_train_params(tmp_path, store, **extra))
    code, _, err = run_cli(["train", "-p", empty_params, *args], capsys)
    _one_line(code, err, needle, "--allow-other-store")
    if "harvest.layers" not in extra:
        code, _, err = run_cli(["train", "-p", empty_params, *args, "--allow-other-store"], capsys)
        assert code == 0, err


def test_unwritable_out_dir_fails_before_training(tmp_path, empty_params, capsys, caplog):
    store = build_store(str(tmp_path / "s.zarr"))
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _, err = run_cli(
        [
            "train",
            "-p",
            empty_params,
            *_sets(_train_params(tmp_path, store, **{"train.out_dir": blocker / "saes"})),
        ],
        capsys,
    )
    _one_line(code, err, "train.out_dir", "not writable")
    assert "step 1 " not in caplog.text


def test_variants_are_written_all_or_none(tmp_path, empty_params, capsys, monkeypatch):
    import pipeline.train.run

    store = build_store(str(tmp_path / "s.zarr"))
    real, calls = pipeline.train.run.save_sae, []

    def full_disk(sae, folder, cfg, **kw):
        calls.append(folder)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(sae, folder, cfg, **kw)

    monkeypatch.setattr(pipeline.train.run, "save_sae", full_disk)
    args = _sets(_train_params(tmp_path, store, **{"train.grid.architecture": "[topk,gsae]"}))
    code, _, err = run_cli(["train", "-p", empty_params, *args], capsys)
    _one_line(code, err, "No space left on device", "no variant was written")
    assert sorted(p.name for p in (tmp_path / "saes").iterdir()) == []


def test_diverging_training_stops_with_one_line(tmp_path, empty_params, capsys):
    store = build_store(str(tmp_path / "s.zarr"))
    args = _sets(_train_params(tmp_path, store, **{"train.grid.lr": "[1.0e+30]", "train.warmup_steps": 0}))
    code, _, err = run_cli(["train", "-p", empty_params, *args], capsys)
    _one_line(code, err, "training loss is nan", "nothing written")
    assert not (tmp_path / "m" / "t.json").exists()


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    try:
        return (
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
            ).returncode
            == 0
        )
    except OSError:
        return False


def test_disk_full_and_read_only_store(tiny_llama, tmp_path, empty_params, capsys):
    mnt = tmp_path / "mnt"
    if not _mount_tmpfs(mnt, "150k"):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        url = mnt / "s.zarr"
        args = sum((["-s", o] for o in tiny_overrides(tiny_llama, str(url))), [])
        code, _, err = run_cli(["harvest", "-p", empty_params, *args], capsys)
        _one_line(code, err, f"cannot write store {url}", "No space left on device", "rerun to resume")
        info = read_info(str(url))
        assert not info.complete and 0 < info.committed_shards < info.n_shards and verify(str(url)).ok
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        code, _, err = run_cli(["harvest", "-p", empty_params, *args], capsys)
        _one_line(code, err, f"store {url}", "Read-only file system")
        subprocess.run(["mount", "-o", "remount,rw,size=4m", str(mnt)], check=True)
        code, _, err = run_cli(["harvest", "-p", empty_params, *args], capsys)
        assert code == 0, err
        assert read_info(str(url)).complete and verify(str(url)).ok
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)
