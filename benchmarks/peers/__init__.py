"""Ours against SAELens 6 and sparsify on the same model, block, tokens and width
(``python -m benchmarks.peers.run``, ``make bench-peers``; docs/benchmarks.md).

The ``child_*`` modules run as child processes, ``child_saelens`` and ``child_sparsify`` in
the peers' own venvs: this file and ``child_common`` import only the stdlib and numpy.
"""
