"""Tests of the benchmark package: its own bookkeeping and its layout (``pytest -q`` runs them)."""
