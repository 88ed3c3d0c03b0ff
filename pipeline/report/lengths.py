"""The training-length curve: how each architecture's gap to its baseline moves with training.

Input: evaluated SAE sets at several training lengths (tokens per SAE → one or more
``evaluate.json`` of variant → figures, e.g. the ``train.snapshot_tokens`` snapshots and final
SAEs of sweeps that differ only by seed, all evaluated on the same held-out tokens; the files of
one length are merged, and an entry name in two of them is refused). Per length, each
comparison is paired by k and seed (the same seeds saw the same tokens):

- a gradient-aware variant against the plain one of its family (``gsae`` − ``topk``,
  ``gbatchtopk`` − ``batchtopk``, ``gmatryoshka`` − ``matryoshka``), read with its gradient
  and as its ``@beta0`` twin (the same weights encoded without it);
- a variant with the gradient loss term (``-gl<λ>``) against the same architecture without;
- each family's plain variant against TopK (``batchtopk`` − ``topk``, ``matryoshka`` − ``topk``);
- a *tagged* entry (a file given as ``TOKENS+TAG=PATH``: SAEs that got more work after training,
  e.g. ``klft`` for the KL fine-tune, its name read as ``<variant>+<tag>``) against the same
  variant untagged, against its family's gradient variant (``gsae`` − ``topk+klft``: does the
  gradient beat the fine-tuned baseline?), and against the same variant under another tag
  (``topk+klft`` − ``topk+mseft``: the KL term at equal extra tokens).

Each cell is the mean ± sample sd of the per-seed differences (n seeds; no sd for one).
Outputs: a Markdown table (one row per comparison and metric, one column per length) followed
by the levels themselves (each variant's mean ± sd over seeds, so a gap can be read against
where both sides stand, e.g. a batch-level SAE's inference L0), the same numbers as JSON, and a
PNG of Δ loss recovered, Δ KL and Δ FVU against tokens.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.core.errors import ConfigError, NothingToEvaluate
from pipeline.core.fileio import atomic_write_text
from pipeline.report.entries import mean_sd
from pipeline.report.style import series_colours, short_number
from pipeline.saes.naming import BETA0_SUFFIX, parse_variant

FAMILIES = {"gsae": "topk", "gbatchtopk": "batchtopk", "gmatryoshka": "matryoshka"}
"""Gradient-aware architecture → the plain architecture of its family."""

METRICS = (
    ("loss_recovered", 4),
    ("ce_loss_score", 4),
    ("kl", 4),
    ("fvu", 4),
    ("fo_loss_err", 4),
    ("absorption_rate", 3),
    ("absorption_full", 3),
)
"""Compared figures and their decimals."""

LEVELS = (
    ("loss_recovered", 4),
    ("kl", 4),
    ("fvu", 4),
    ("l0", 1),
    ("absorption_rate", 3),
    ("absorption_full", 3),
)
"""Figures whose levels are tabled beside the gaps, and their decimals."""

TAG_SEPARATOR = "+"
"""Between an entry's variant and the tag of the file it came from: ``topk-k32-x8-s0+klft``."""

Figures = Mapping[str, Mapping[str, float]]
Source = str | Path | tuple[str, str | Path]
"""An evaluate.json, or ``(tag, evaluate.json)``: every entry of the file gets ``+tag``."""


def _key(name: str) -> tuple[str, int, int, float, bool, str]:
    """(architecture, k, seed, λ, is a β = 0 twin, tag) of an entry name."""
    variant, _, tag = name.partition(TAG_SEPARATOR)
    hp = parse_variant(variant)
    return (
        hp["architecture"],
        int(hp["k"]),
        int(hp["seed"]),
        float(hp.get("grad_loss", 0.0)),
        variant.endswith(BETA0_SUFFIX),
        tag,
    )


def _tagged_pairs(
    by_key: Mapping[tuple[str, int, int, float, bool, str], Mapping[str, float]],
) -> dict[str, list[Any]]:
    """The comparisons of tagged entries (module docstring), label → [(entry, baseline)]."""
    pairs: dict[str, list[Any]] = {}
    tags = sorted({key[-1] for key in by_key if key[-1]})
    for (arch, k, seed, lam, twin, tag), f in sorted(by_key.items()):
        if not tag or twin or lam:
            continue
        name = f"{arch}{TAG_SEPARATOR}{tag}"
        base = by_key.get((arch, k, seed, 0.0, False, ""))
        if base is not None:
            pairs.setdefault(f"k{k} {name} − {arch}", []).append((f, base))
        for grad, plain in FAMILIES.items():
            other = by_key.get((grad, k, seed, 0.0, False, ""))
            if plain == arch and other is not None:
                pairs.setdefault(f"k{k} {grad} − {name}", []).append((other, f))
        for later in tags[tags.index(tag) + 1 :]:  # each pair of tags once, in sorted order
            other = by_key.get((arch, k, seed, 0.0, False, later))
            if other is not None:
                pairs.setdefault(f"k{k} {name} − {arch}{TAG_SEPARATOR}{later}", []).append((f, other))
    return pairs


def comparisons(figures: Figures) -> dict[str, dict[str, list[float]]]:
    """Comparison label → metric → per-seed differences, for one length's figures."""
    by_key = {_key(name): f for name, f in figures.items()}
    pairs: dict[str, list[tuple[Mapping[str, float], Mapping[str, float]]]] = {}
    for (arch, k, seed, lam, twin, tag), f in sorted(by_key.items()):
        if tag:
            continue
        plain = FAMILIES.get(arch)
        if plain is not None and lam == 0:  # gradient selection vs its family's plain variant
            base = by_key.get((plain, k, seed, 0.0, False, ""))
            label = f"k{k} {arch}{'@β0' if twin else ''} − {plain}"
            if base is not None:
                pairs.setdefault(label, []).append((f, base))
        if lam > 0 and not twin:  # the gradient loss term vs the same architecture without
            base = by_key.get((arch, k, seed, 0.0, False, ""))
            if base is not None:
                pairs.setdefault(f"k{k} {arch} λ={lam:g} − {arch}", []).append((f, base))
        if arch in FAMILIES.values() and arch != "topk" and lam == 0 and not twin:
            base = by_key.get(("topk", k, seed, 0.0, False, ""))
            if base is not None:
                pairs.setdefault(f"k{k} {arch} − topk", []).append((f, base))
    for label, rows in _tagged_pairs(by_key).items():
        pairs.setdefault(label, []).extend(rows)
    return {
        label: {m: [float(a[m]) - float(b[m]) for a, b in rows if m in a and m in b] for m, _ in METRICS}
        for label, rows in pairs.items()
    }


def length_table(curve: Mapping[int, Figures]) -> dict[str, dict[str, dict[int, tuple[float, float, int]]]]:
    """Comparison → metric → tokens → (mean, sd, n) of the paired differences."""
    out: dict[str, dict[str, dict[int, tuple[float, float, int]]]] = {}
    for tokens in sorted(curve):
        for label, metrics in comparisons(curve[tokens]).items():
            for metric, diffs in metrics.items():
                if diffs:
                    out.setdefault(label, {}).setdefault(metric, {})[tokens] = mean_sd(diffs)
    return out


def _variant_label(name: str) -> str:
    """An entry's variant without its seed: 'k32 gsae@β0', 'k32 topk λ=1'."""
    arch, k, _, lam, twin, tag = _key(name)
    return (
        f"k{k} {arch}"
        + (f"{TAG_SEPARATOR}{tag}" if tag else "")
        + (f" λ={lam:g}" if lam > 0 else "")
        + ("@β0" if twin else "")
    )


def level_table(curve: Mapping[int, Figures]) -> dict[str, dict[str, dict[int, tuple[float, float, int]]]]:
    """Variant (without seed) → metric → tokens → (mean, sd, n) over seeds of the figure itself."""
    values: dict[str, dict[str, dict[int, list[float]]]] = {}
    for tokens in sorted(curve):
        for name, figures in sorted(curve[tokens].items()):
            for metric, _ in LEVELS:
                if metric in figures:
                    cells = values.setdefault(_variant_label(name), {}).setdefault(metric, {})
                    cells.setdefault(tokens, []).append(float(figures[metric]))
    return {
        label: {m: {t: mean_sd(v) for t, v in cells.items()} for m, cells in ms.items()}
        for label, ms in sorted(values.items())
    }


def _cell(value: tuple[float, float, int] | None, digits: int, signed: bool = True) -> str:
    if value is None:
        return "–"
    mean, sd, n = value
    return (
        (f"{mean:+.{digits}f}" if signed else f"{mean:.{digits}f}")
        + (f" ± {sd:.{digits}f}" if n > 1 and math.isfinite(sd) else "")
        + f" (n={n})"
    )


def markdown(
    table: Mapping[str, Mapping[str, Mapping[int, tuple[float, float, int]]]],
    lengths: Sequence[int],
    metrics: Sequence[tuple[str, int]] = METRICS,
    first: str = "comparison",
    prefix: str = "Δ ",
) -> str:
    """One row per comparison (or variant) and metric, one column per training length."""
    head = f"| {first} | metric | " + " | ".join(f"{short_number(t)} tokens" for t in lengths) + " |"
    lines = [head, "|---|---|" + "---:|" * len(lengths)]
    for label, by_metric in table.items():
        for metric, digits in metrics:
            cells = by_metric.get(metric, {})
            if cells:
                lines.append(
                    f"| {label} | {prefix}{metric} | "
                    + " | ".join(_cell(cells.get(t), digits, signed=bool(prefix)) for t in lengths)
                    + " |"
                )
    return "\n".join(lines) + "\n"


def plot(table: Mapping[str, Mapping[str, Mapping[int, tuple[float, float, int]]]], path: Path) -> None:
    """Δ loss recovered, Δ KL and Δ FVU against training tokens (log axis), one line per comparison
    measured at two lengths or more when the table has several (the others are in the table
    only), error bars of ± sd where there are several seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    several = len({t for ms in table.values() for cells in ms.values() for t in cells}) > 1
    drawn = [
        label for label, ms in table.items() if any(len(c) >= (2 if several else 1) for c in ms.values())
    ]
    colours = series_colours(drawn)  # only the drawn lines share the palette (no two alike)
    fig, axes = plt.subplots(1, 3, figsize=(18, 4.8))
    for ax, metric in zip(axes, ("loss_recovered", "kl", "fvu"), strict=True):
        for label in drawn:
            cells = table[label].get(metric, {})
            if len(cells) < (2 if several else 1):
                continue
            xs = sorted(cells)
            ys = [cells[t][0] for t in xs]
            err = [cells[t][1] if cells[t][2] > 1 and math.isfinite(cells[t][1]) else 0.0 for t in xs]
            ax.errorbar(
                xs,
                ys,
                yerr=err,
                label=label,
                color=colours[label],
                marker="o",
                capsize=3,
                linestyle="--" if "@β0" in label else "-",
            )
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({t for m in table.values() for t in m.get(metric, {})}))
        ax.set_xticklabels([short_number(t) for t in ax.get_xticks()])
        ax.set_xlabel("training tokens per SAE")
        ax.set_ylabel(f"Δ {metric} (paired by seed)")
        ax.set_title(f"Δ {metric} vs training length")
    axes[0].legend(fontsize=7, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def read_length(tokens: int, paths: Sequence[Source]) -> dict[str, Mapping[str, float]]:
    """The merged entries of one length's evaluate.json files (a tagged file's entries named
    ``<entry>+<tag>``). ``NothingToEvaluate`` when a file is missing; ``ConfigError`` when two
    files hold the same entry (which one would count?)."""
    merged: dict[str, Mapping[str, float]] = {}
    for source in paths:
        tag, path = source if isinstance(source, tuple) else ("", source)
        p = Path(path)
        if not p.is_file():
            raise NothingToEvaluate(
                f"{p}: no such evaluate.json (evaluate the {short_number(tokens)}-token SAEs first)"
            )
        for name, figures in json.loads(p.read_text()).items():
            if not isinstance(figures, dict):
                continue
            name = f"{name}{TAG_SEPARATOR}{tag}" if tag else name
            if name in merged:
                raise ConfigError(f"{p}: entry {name} is also in another file given for {tokens} tokens")
            merged[name] = figures
    return merged


def write_lengths(
    curve_files: Mapping[int, Source | list[Source]], out: str | Path, plot_path: str | Path
) -> dict[str, Any]:
    """Read ``tokens → evaluate.json`` (a :data:`Source`, or a list of them, merged), write the tables (``out``),
    the gaps as JSON (``out`` with .json) and the plot; returns the gaps. ``NothingToEvaluate``
    when a file is missing or nothing pairs."""
    curve = {
        int(tokens): read_length(int(tokens), paths if isinstance(paths, list) else [paths])
        for tokens, paths in curve_files.items()
    }
    table = length_table(curve)
    if not table:
        raise NothingToEvaluate(
            "no comparison pairs up: the files hold no family baseline beside its variants"
        )
    lengths = sorted(curve)
    body = (
        "# Gaps vs training length\n\n"
        + "Δ = variant − baseline per seed at the same k; mean ± sd over seeds (n).\n\n"
    )
    levels = "\n## Levels\n\nEach variant's figure, mean ± sd over seeds (n).\n\n" + markdown(
        level_table(curve), lengths, LEVELS, first="variant", prefix=""
    )
    atomic_write_text(out, body + markdown(table, lengths) + levels)
    as_json = {
        label: {m: {str(t): list(v) for t, v in cells.items()} for m, cells in ms.items()}
        for label, ms in table.items()
    }
    atomic_write_text(Path(out).with_suffix(".json"), json.dumps(as_json, indent=2, sort_keys=True) + "\n")
    plot(table, Path(plot_path))
    return as_json
