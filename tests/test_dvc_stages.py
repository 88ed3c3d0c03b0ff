"""dvc.yaml against the code: each stage's params are exactly its reads, its cmd the declared one.

Fails when a config field is added without a decision in stages/dvcspec.py and a line in
params.yaml, or when dvc.yaml tracks a runtime-only key or misses an output-changing one.
The code deps are checked in tests/test_dvc_deps.py.
"""

from __future__ import annotations

import pytest
import yaml

from stages import dvcspec
from stages.paramdoc import leaf_fields
from tests.import_closure import ROOT

DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())
LEAVES = [f.key for f in leaf_fields()]


def _flat(tree: dict, prefix: str = "") -> set[str]:
    out: set[str] = set()
    for k, v in tree.items():
        key = f"{prefix}{k}"
        out |= _flat(v, key + ".") if isinstance(v, dict) else {key}
    return out


def _expand(entry: str) -> set[str]:
    """A params entry (a leaf key or a whole section) as the leaf keys it tracks."""
    keys = {k for k in LEAVES if k == entry or k.startswith(entry + ".")}
    assert keys, f"dvc.yaml params entry {entry!r} is not a config key or section"
    return keys


def _stage_params(stage: str) -> set[str]:
    out: set[str] = set()
    for entry in DVC["stages"][stage].get("params", []):
        if isinstance(entry, dict):  # {params_file: [keys]}
            for keys in entry.values():
                for key in keys:
                    out |= _expand(key)
        else:
            out |= _expand(entry)
    return out


def test_every_config_field_is_decided_and_written_in_params_yaml():
    decided = set().union(*dvcspec.READS.values()) | dvcspec.RUNTIME_ONLY | dvcspec.COMMAND_ONLY
    assert set(LEAVES) - decided == set(), (
        "config fields no stage reads and not runtime-only (stages/dvcspec.py)"
    )
    assert decided - set(LEAVES) == set(), "stages/dvcspec.py names keys that are not config fields"
    written = _flat(yaml.safe_load((ROOT / "params.yaml").read_text()))
    assert set(LEAVES) - written == set(), (
        "config fields missing from params.yaml (code defaults hide them from DVC)"
    )
    assert set(dvcspec.READS) == set(dvcspec.STAGES) == set(DVC["stages"])


@pytest.mark.parametrize("stage", dvcspec.STAGES)
def test_stage_params_are_exactly_its_output_changing_reads(stage):
    listed = _stage_params(stage)
    assert listed & dvcspec.RUNTIME_ONLY == set(), f"{stage} tracks runtime-only keys"
    assert dvcspec.tracked(stage) - listed == set(), f"{stage} reads params dvc.yaml does not list"
    assert listed - dvcspec.tracked(stage) == set(), f"{stage} lists params it does not read"


def test_stage_commands_match_dvcspec():
    for stage, command in dvcspec.COMMANDS.items():
        assert DVC["stages"][stage]["cmd"].split()[:2] == ["gsae", command]


def test_runtime_only_keys_change_no_output_relevant_key():
    """The runtime-only keys never enter a store key."""
    from pipeline.core.loader import params_from_dict
    from pipeline.harvest.identity import key_fields

    base = params_from_dict({})
    changed = params_from_dict({}, ["model.device=cpu", "harvest.batch_size=3"])
    assert key_fields(base) == key_fields(changed)


def _record_reads(monkeypatch) -> set[str]:
    """Record every config field read from project code (not copies/validation) from now on.

    ``dataclasses.replace``, ``params_to_dict`` (provenance copies into store attributes and
    cfg.json) and ``__post_init__`` (cross-field validation) read every field without using
    it, so reads from those frames are not counted.
    """
    import dataclasses
    import sys

    from pipeline.core import config

    seen: set[str] = set()
    sections = {
        config.ModelConfig: "model",
        config.DataConfig: "data",
        config.HarvestConfig: "harvest",
        config.TrainConfig: "train",
        config.GridConfig: "train.grid",
        config.EvaluateConfig: "evaluate",
        config.InspectConfig: "inspect",
    }
    skip = {"params_to_dict", "__post_init__"}
    for cls, section in sections.items():
        names = {f.name for f in dataclasses.fields(cls) if f"{section}.{f.name}" in LEAVES}

        def getter(self, name, _names=names, _section=section):
            if name in _names:
                code = sys._getframe(1).f_code
                if not code.co_filename.endswith("dataclasses.py") and code.co_name not in skip:
                    seen.add(f"{_section}.{name}")
            return object.__getattribute__(self, name)

        monkeypatch.setattr(cls, "__getattribute__", getter)
    return seen


def test_stage_commands_read_only_declared_fields(tiny_llama, tmp_path, monkeypatch, capsys):
    """Run each stage's command in-process on a tiny model, recording the config fields it reads."""
    from tests.clirun import run_cli
    from tests.dvc_project import tiny_params, write_params

    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, tiny_params(tiny_llama))
    commands = {
        "harvest": ["harvest"],
        "harvest_heldout": ["harvest", "--heldout"],
        "train": ["train"],
        "evaluate": ["evaluate"],
        "inspect": ["inspect"],
    }
    for stage, args in commands.items():
        with monkeypatch.context() as m:
            seen = _record_reads(m)
            code, _, err = run_cli(args, capsys)
        assert code == 0, err
        assert seen, stage
        if stage in ("harvest_heldout", "evaluate", "inspect"):  # reads of the swapped fields read other keys
            swapped = {k for k in seen if k in dvcspec.HELDOUT_SWAPPED}
            seen = (seen - swapped) | {v for k in swapped if (v := dvcspec.HELDOUT_SWAPPED[k])}
        undeclared = seen - dvcspec.READS[stage]
        assert undeclared == set(), f"{stage} reads fields stages/dvcspec.py does not declare"
