"""`dvc plots show` renders offline: the vendored Vega page template is present, current and used."""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

from stages.vegahtml import TEMPLATE, VENDOR, VENDORED, build
from tests.dvc_project import ROOT, run


def test_the_committed_template_inlines_the_vendored_files() -> None:
    assert TEMPLATE.read_text(encoding="utf-8") == build()
    listed = (VENDOR / "README.md").read_text()
    for name in VENDORED:  # the sha256 the README states is the vendored file's
        digest = hashlib.sha256((VENDOR / name).read_bytes()).hexdigest()
        assert f"`{name}` | `{name.removesuffix('.min.js')}` | `{digest}`" in listed


def test_dvc_config_points_plots_at_the_template() -> None:
    assert run(["dvc", "config", "plots.html_template"], ROOT).strip() == "../plot_templates/offline.html"
    assert (ROOT / ".dvc" / "../plot_templates/offline.html").resolve() == TEMPLATE


def test_plain_dvc_plots_show_embeds_the_vendored_vega_and_no_cdn(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copytree(ROOT / "plot_templates", repo / "plot_templates")
    run(["git", "init", "-q"], repo)
    run(["dvc", "init", "-q"], repo)
    shutil.copy(ROOT / ".dvc" / "config", repo / ".dvc" / "config")  # the project's DVC config
    (repo / "curves.csv").write_text("variant,tokens,fvu\na,100,0.5\na,200,0.3\nb,100,0.6\nb,200,0.4\n")
    (repo / "dvc.yaml").write_text(
        "plots:\n  - fvu:\n      template: plot_templates/lines_by_variant.json\n"
        "      x: tokens\n      y:\n        curves.csv: fvu\n"
    )
    run(["dvc", "plots", "show", "-o", "out"], repo)
    page = (repo / "out" / "index.html").read_text(encoding="utf-8")
    assert re.findall(r'data-vendored="([^"]+)"', page) == list(VENDORED)
    assert "<script src" not in page and "cdn.jsdelivr" not in page
    for name in VENDORED:
        assert (VENDOR / name).read_text(encoding="utf-8") in page
    assert "vegaEmbed(" in page and '"fvu"' in page  # the chart itself, with its data
