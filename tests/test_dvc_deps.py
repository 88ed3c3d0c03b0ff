"""Code deps of every DVC stage: every file the command uses is covered, every dep is used.

Code deps are folders (``pipeline/train``, ``cache``, ``stages``) plus single top-level seam
modules (``pipeline/stores.py``): a change anywhere in a dep reruns the stage, which at worst
is a needless rerun; a file the command runs that no dep covers could leave an output stale,
and that must never happen. Checked for the default pipeline (dvc.yaml) and the experiment
(experiments/gsae-vs-topk/dvc.yaml), statically (each command's import closure,
tests/import_closure.py) and, for the default pipeline, at runtime: each stage's command runs
once on a tiny project in a child process that records the project files it loads
(tests/loaded_files.py). The experiment's stages run the same commands with other params, so
they must list the same code deps as the default stage that runs the same command.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import yaml

from stages import dvcspec
from tests.import_closure import PACKAGES, ROOT, command_closure, rel
from tests.loaded_files import loaded_files

DEFAULT = ROOT / "dvc.yaml"
EXPERIMENT = ROOT / "experiments" / "gsae-vs-topk" / "dvc.yaml"
EXPERIMENTS = sorted((ROOT / "experiments").glob("*/dvc.yaml"))
"""Every experiment's dvc.yaml (its code deps follow the same rule)."""
NOT_TRAIN = ("pipeline/lm", "pipeline/text")
"""Train reads activations from its store: neither the LM nor the text is a dep of it."""


def _stages(dvc_yaml: Path) -> dict[str, dict]:
    """Stage name → definition (a ``foreach`` stage's ``do`` template)."""
    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    return {name: s.get("do", s) for name, s in stages.items()}


def _command(stage: dict) -> str:
    words = stage["cmd"].split()
    assert words[0] == "gsae", stage["cmd"]
    return words[1]


def _code_deps(dvc_yaml: Path, stage: dict) -> list[str]:
    """The stage's deps inside the project's packages, repository-relative (data deps left out)."""
    deps = []
    for dep in stage.get("deps", []):
        if "${" in dep.split("/")[0]:
            continue  # ${harvest.cache_root}/train and the like: data
        path = (dvc_yaml.parent / dep).resolve()
        if path.is_relative_to(ROOT) and path.relative_to(ROOT).parts[0] in PACKAGES:
            assert path.exists(), f"{dvc_yaml.relative_to(ROOT)}: dep {dep} does not exist"
            deps.append(path.relative_to(ROOT).as_posix())
    return deps


def _covered(file: str, deps: list[str]) -> bool:
    return any(file == d or file.startswith(d + "/") for d in deps)


def _uncovered(files: set[str], deps: list[str]) -> set[str]:
    return {f for f in files if not _covered(f, deps)}


CASES = [
    pytest.param(dvc_yaml, name, id=f"{dvc_yaml.relative_to(ROOT)}:{name}")
    for dvc_yaml in (DEFAULT, *EXPERIMENTS)
    for name in _stages(dvc_yaml)
]


@pytest.mark.parametrize(("dvc_yaml", "name"), CASES)
def test_deps_cover_the_import_closure_and_each_is_imported(dvc_yaml: Path, name: str):
    stage = _stages(dvc_yaml)[name]
    closure = rel(command_closure(_command(stage)))
    deps = _code_deps(dvc_yaml, stage)
    assert deps, f"{name} lists no code deps"
    assert _uncovered(closure, deps) == set(), f"{name}: files its command can import are under no dep"
    unused = [d for d in deps if not any(_covered(f, [d]) for f in closure)]
    assert unused == [], f"{name}: deps its command never imports (needless reruns)"
    assert len(set(deps)) == len(deps), f"{name}: a dep is listed twice"
    nested = [(a, b) for a in deps for b in deps if a != b and _covered(a, [b])]
    assert nested == [], f"{name}: a dep lies inside another"


@pytest.mark.parametrize("experiment", EXPERIMENTS, ids=lambda p: p.parent.name)
def test_experiment_lists_the_default_code_deps_of_its_commands(experiment: Path):
    """So the default pipeline's runtime check covers the experiment's stages too
    (``gsae summarize``, which the default pipeline does not run, is checked statically only)."""
    default: dict[str, list[list[str]]] = {}
    for stage in _stages(DEFAULT).values():
        default.setdefault(_command(stage), []).append(sorted(_code_deps(DEFAULT, stage)))
    compared = set()
    for name, stage in _stages(experiment).items():
        for deps in default.get(_command(stage), []):
            assert sorted(_code_deps(experiment, stage)) == deps, name
            compared.add(_command(stage))
    assert "harvest" in compared
    if experiment == EXPERIMENT:
        assert compared == {"harvest", "train", "evaluate"}


def test_data_deps_name_the_runs_evaluate_and_summarize_read():
    """evaluate reads the trained SAEs and the training curves (its plots); summarize each run
    folder's evaluate.json and saes/<variant>/cfg.json. Not a stage's code, but as stale if missed."""
    default = _stages(DEFAULT)["evaluate"]["deps"]
    assert {"${train.out_dir}", "${train.curves_dir}"} <= set(default)
    stages = yaml.safe_load(EXPERIMENT.read_text())["stages"]
    evaluate = stages["evaluate"]
    for item in evaluate["foreach"]:
        sweep = yaml.safe_load((EXPERIMENT.parent / "sweeps" / f"{item}.yaml").read_text())["train"]
        deps = {d.replace("${item}", item) for d in evaluate["do"]["deps"]}
        assert {sweep["out_dir"], sweep["curves_dir"], f"sweeps/{item}.yaml"} <= deps, item
    summarized = 0
    for name, stage in stages.items():
        words = stage.get("cmd", "").split()
        if words[:2] == ["gsae", "summarize"]:
            runs = list(itertools.takewhile(lambda w: not w.startswith("-"), words[2:]))
            assert runs, name
            summarized += len(runs)
            for run in runs:
                assert {f"{run}/evaluate.json", f"{run}/saes"} <= set(stage["deps"]), name
    assert summarized


def test_train_depends_on_neither_the_lm_nor_the_text():
    for dvc_yaml in (DEFAULT, EXPERIMENT):
        deps = _code_deps(dvc_yaml, _stages(dvc_yaml)["train"])
        overlap = [
            d for d in deps if _covered(d, list(NOT_TRAIN)) or any(_covered(n, [d]) for n in NOT_TRAIN)
        ]
        assert overlap == [], f"{dvc_yaml.relative_to(ROOT)}: train depends on LM or text code"


def test_dvc_ignores_bytecode():
    """Folder deps hash every file in them: Python's bytecode must not count."""
    ignored = (ROOT / ".dvcignore").read_text().split()
    assert "__pycache__/" in ignored and "*.pyc" in ignored


@pytest.fixture(scope="module")
def loaded(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    """Stage → project files its command loaded, running the default stages in order on tiny params."""
    from tests.dvc_project import tiny_params, write_params

    project = tmp_path_factory.mktemp("loaded")
    write_params(project, tiny_params(tiny_llama))
    stages = _stages(DEFAULT)
    assert list(stages) == list(dvcspec.STAGES)  # dependency order: harvests, train, evaluate
    return {name: loaded_files(stage["cmd"].split()[1:], project) for name, stage in stages.items()}


@pytest.mark.parametrize("name", dvcspec.STAGES)
def test_files_a_real_run_loads_are_covered(loaded: dict[str, set[str]], name: str):
    stage = _stages(DEFAULT)[name]
    files = loaded[name]
    assert {"stages/cli.py", "pipeline/core/config.py"} <= files  # the recording works
    assert _uncovered(files, _code_deps(DEFAULT, stage)) == set(), f"{name} loaded files under no dep"
    # what makes the static check (all the experiment gets) trustworthy
    missed = {f for f in files if f.endswith(".py")} - rel(command_closure(_command(stage)))
    assert missed == set(), f"{name} loaded modules the static import closure misses"


def test_train_loads_no_lm_text_or_harvest_code(loaded: dict[str, set[str]]):
    foreign = loaded["train"] - _uncovered(loaded["train"], [*NOT_TRAIN, "pipeline/harvest"])
    assert foreign == set(), "gsae train loaded LM, text or harvest code"
    assert any(f.startswith("pipeline/lm/") for f in loaded["harvest"])  # the check can fail


def test_closure_sees_function_level_and_decorator_imports():
    """The closure helper itself: a lazy import inside the command is followed."""
    closure = rel(command_closure("evaluate"))
    assert {
        "pipeline/evaluate/run.py",
        "pipeline/report/markdown.py",
        "pipeline/report/plots.py",
        "cache/shards.py",
    } <= closure
    assert "pipeline/evaluate/run.py" not in rel(command_closure("harvest"))
    assert not any(f.startswith("pipeline/saes/") for f in rel(command_closure("harvest")))
