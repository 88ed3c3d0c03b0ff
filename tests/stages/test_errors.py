"""The one line a failed command prints (stages/errors.py), for each kind of exception."""

from __future__ import annotations

import pytest

from pipeline.core.errors import ConfigError
from stages.errors import error_line


def test_pipeline_errors_are_errors():
    assert error_line(ConfigError("harvest.tokens must be positive\nmore")) == (
        "gsae: error: harvest.tokens must be positive",
        1,
    )


def test_an_os_error_names_its_file(tmp_path):
    with pytest.raises(FileNotFoundError) as exc:
        (tmp_path / "runs" / "cfg.json").read_text()
    line, code = error_line(exc.value)
    assert line == f"gsae: error: No such file or directory: {tmp_path / 'runs' / 'cfg.json'}" and code == 1


def test_anything_else_is_unexpected_and_points_at_debug():
    with pytest.raises(KeyError) as exc:
        {}["architecture"]
    line, code = error_line(exc.value)
    assert line.startswith("gsae: unexpected KeyError: 'architecture'") and "--debug" in line and code == 2
    assert "\n" not in error_line(RuntimeError(""))[0]
