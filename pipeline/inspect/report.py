"""The inspect stage's Markdown report: what the described entries look like, seeds grouped.

Per series (a variant's architecture and hyper-parameters, seeds pooled; ``@beta0`` twins
their own series) the mean ± sd over seeds of per-entry figures, each itself a mean over the
entry's alive latents: density, mean activation, mean |attribution|, attribution per unit
activation, and for a g-SAE read with the gradient the share of its firings the gradient
added. The matching section (:mod:`pipeline.inspect.matching`) follows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from pipeline.report.entries import group_by, mean_sd

COLUMNS = (
    ("alive", "alive"),
    ("L0", "l0"),
    ("density", "density_mean"),
    ("mean act", "mean_act_mean"),
    ("mean abs attr", "mean_abs_attr_mean"),
    ("abs attr / act", "attr_per_act_mean"),
    ("gradient-added firings", "grad_added_share"),
)
"""(column title, summary key) of the entries table."""


def pm(values: Sequence[Any], digits: int = 3) -> str:
    """``mean ± sd`` (``mean`` alone for one value, ``–`` for none), ``digits`` significant digits."""
    mean, sd, n = mean_sd(values)
    if n == 0:
        return "–"
    text = f"{mean:.{digits}g}" if abs(mean) < 10**digits else f"{mean:.0f}"
    return text if not math.isfinite(sd) else f"{text} ± {sd:.2g}"


def entries_table(summaries: Sequence[dict[str, Any]]) -> str:
    """One row per series: entries pooled over seeds, mean ± sd of each column."""
    head = ["series", "entries", *(title for title, _ in COLUMNS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for group, items in group_by(summaries, lambda s: s["group"]).items():
        cells = [pm([s.get(key) for s in items]) for _, key in COLUMNS]
        lines.append(f"| {group} | {len(items)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def inspect_markdown(
    summaries: Sequence[dict[str, Any]], matching: str | None, settings: dict[str, Any]
) -> str:
    """The whole report."""
    parts = [
        "# Latent descriptions (gsae inspect)",
        "",
        "Open the latent browser: `reports/latents/index.html` (self-contained HTML: any browser, "
        "offline). Per entry, `latents.json` holds the same figures for notebooks (DESIGN §3).",
        "",
        "## Entries",
        "",
        "Each figure is the mean over an entry's alive latents, then mean ± sd over seeds. "
        "Attribution of a firing = −act · (W_dec[i] · g): the first-order change of the "
        "context's summed loss if the latent's contribution were removed.",
        "",
        entries_table(summaries),
        "",
    ]
    if matching:
        parts += [matching, ""]
    parts += ["## Settings", ""]
    parts += [f"- {key}: {value}" for key, value in settings.items()]
    return "\n".join(parts) + "\n"
