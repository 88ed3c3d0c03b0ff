"""What ``benchmarks/peers/run.py`` reports: the notes on each nearest equivalent, the result
rows (ours / peer ratios) and the printed table."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from statistics import median
from typing import Any

log = logging.getLogger("peers")

ALWAYS_NOTES = [
    "neither peer trains a g-SAE (gradient-aware selection): only TopK is compared",
    "SAELens and sparsify: the converted HF folder of the embedded GGUF model (.bench/smollm2, float32; "
    "neither loads GGUF)",
    "both peers get our packed python-docs contexts (.bench/contexts.npy) as a pre-tokenized in-memory HF "
    "dataset (input_ids, 128 tokens a row); our harvest packs the same contexts itself (checked: same tokens)",
    "the BOS position is left out of training on every side (ours: train.exclude_first; SAELens: "
    "exclude_special_tokens=[BOS]; sparsify: exclude_tokens=[BOS]); BOS occurs only at position 0",
    "each side keeps its own TopK training recipe (init, aux loss, scaling); Adam at lr 4e-4 on every side "
    "(sparsify's default optimizer is signum)",
    "SAELens: n_batches_in_buffer=512 (a 65,536-token mixing buffer, as our 4-shard shuffle buffer); "
    "its default (20 x 128 tokens) is smaller than one 4,096-token batch and is refused",
    "sparsify: its CLI places the model on CUDA (device_map), so sparsify.Trainer is called directly on CPU",
    "ours: gsae harvest and gsae train tune glibc's allocator as they ship (stages/allocator.py; our timed "
    "child processes do the same); the peers run as they ship",
]


@dataclass
class Report:
    """Everything the run found; written as JSON with --json."""

    command: str
    sizes: dict[str, Any]
    results: dict[str, Any] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=lambda: list(ALWAYS_NOTES))
    versions: dict[str, dict[str, str]] = field(default_factory=dict)

    def note(self, text: str) -> None:
        log.info("note: %s", text)
        self.notes.append(text)


def row(what: str, ours: float, peer: float, target: str, unit: str) -> dict[str, Any]:
    return {
        "measurement": what,
        "ratio": ours / peer,
        "target": target,
        "ours": ours,
        "peer": peer,
        "unit": unit,
    }


def median_row(what: str, ours: list[float], peer: list[float], target: str, unit: str) -> dict[str, Any]:
    """One row over rounds: the median of the per-round ratios, the median figures of each side,
    and the ratios' range (several rounds only)."""
    ratios = [o / p for o, p in zip(ours, peer, strict=True)]
    found = row(what, median(ours), median(peer), target, unit)
    if len(ratios) > 1:
        found.update(ratio=median(ratios), ratio_min=min(ratios), ratio_max=max(ratios), ratios=ratios)
    return found


def print_table(rep: Report) -> None:
    print(
        f"\n{'ratio (ours / peer)':>19}  {'target':<7}  {'measurement':<48} {'ours':>10}{'':6} {'peer':>10}"
    )
    for r in rep.rows:
        print(
            f"{r['ratio']:>19.3f}  {r['target']:<7}  {r['measurement']:<48} "
            f"{r['ours']:>10,.1f} {r['unit']:<5} {r['peer']:>10,.1f} {r['unit']}"
        )
        if "ratio_min" in r:  # several rounds: the ratio is their median
            print(f"{'':>19}  {'':<7}  (range over rounds {r['ratio_min']:.3f} to {r['ratio_max']:.3f})")
    print("\nWhat was done where a peer cannot do the same thing exactly:")
    for n in rep.notes:
        print(f"  - {n}")
    print("\nVersions:")
    for side, found in rep.versions.items():
        print(f"  {side}: " + ", ".join(f"{k} {v}" for k, v in found.items()))
    print(f"\nCommand: {rep.command}")
