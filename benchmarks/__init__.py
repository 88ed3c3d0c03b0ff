"""Benchmarks of the g-SAE pipeline, one sub-package per suite (index: benchmarks/README.md).

- ``benchmarks.components``: one pipeline component against its bare loop, its alternative
  or its target, on the CPU (``make bench``);
- ``benchmarks.peers``: ours against SAELens and sparsify on the same inputs (``make bench-peers``);
- ``benchmarks.scaleup``: what grows with the corpus, the store and the process count
  (docs/scaling.md);
- ``benchmarks.gpu``: the GPU figures of docs/gpu.md;
- ``benchmarks.common``: the synthetic store and the fresh-interpreter runs the suites share.

Every script runs from the repository root as ``python -m benchmarks.<suite>.<name>``. This
file stays import-light (stdlib only): the peers' child scripts import the package inside
the peers' own venvs, where neither torch's nor this project's dependencies may be present.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the repository root
