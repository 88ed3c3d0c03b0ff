"""Reporting: metrics files, plot data, PNG plots, the Markdown report, and ``gsae summarize``.

Modules: :mod:`~pipeline.report.entries` (one result per variant, mean ± sd and grouping, shared by every table),
:mod:`~pipeline.report.markdown` (``reports/report.md`` and ``metrics/evaluate.json``),
:mod:`~pipeline.report.plotdata` (long CSVs and the compact summary for DVC),
:mod:`~pipeline.report.plots` (the PNGs), :mod:`~pipeline.report.summarize` (seed tables and
paired differences of a grid).

Rule: ``report`` imports no stage: it formats what the stages hand it.
"""
