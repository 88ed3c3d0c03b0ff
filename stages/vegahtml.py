"""The offline page template of ``dvc plots show``: vendored Vega inlined into one HTML file.

DVC's default page loads Vega, Vega-Lite and Vega-Embed from a CDN, so offline every Vega
chart renders zero-height without a notice. ``.dvc/config`` points ``plots.html_template``
at ``plot_templates/offline.html``, which inlines the three libraries vendored from npm in
``plot_templates/vendor/`` (exact versions in :data:`VENDORED`). Regenerate the template
after changing the vendored files with ``python -m stages.vegahtml``; tests/stages/test_vegahtml.py
checks that the committed template equals what :func:`build` makes of them.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENDOR = ROOT / "plot_templates" / "vendor"
TEMPLATE = ROOT / "plot_templates" / "offline.html"
VENDORED = ("vega@5.33.1.min.js", "vega-lite@5.23.0.min.js", "vega-embed@6.29.0.min.js")
"""The npm builds inlined, in load order (vega-lite and vega-embed need vega)."""

HEAD = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC Plot (offline)</title>
"""
TAIL = """    <style>
        table { border-spacing: 15px; }
        body { font-family: sans-serif; }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def build(vendor: Path = VENDOR) -> str:
    """The template text: DVC's placeholders ``{refresh_tag}`` and ``{plot_divs}`` around the
    vendored scripts (no ``{scripts}`` placeholder, so DVC adds no CDN tags)."""
    scripts = []
    for name in VENDORED:
        code = (vendor / name).read_text(encoding="utf-8")
        if "</script" in code or "{plot_divs}" in code or "{refresh_tag}" in code:
            raise ValueError(
                f"{name} cannot be inlined: it contains a closing script tag or a DVC placeholder"
            )
        scripts.append(f'    <script data-vendored="{name}">\n{code}\n    </script>\n')
    return HEAD + "".join(scripts) + TAIL


def main() -> None:
    TEMPLATE.write_text(build(), encoding="utf-8")
    sys.stdout.write(f"wrote {TEMPLATE}\n")


if __name__ == "__main__":
    main()
