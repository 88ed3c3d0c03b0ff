"""Stage 3, ``gsae evaluate``: SAEs spliced back into the LM on held-out tokens; metrics and report.

Modules: :mod:`~pipeline.evaluate.run` (the stage), :mod:`~pipeline.evaluate.heldout` (the
evaluated window of the held-out store), :mod:`~pipeline.evaluate.metrics` (FVU, L0, loss
recovered), :mod:`~pipeline.evaluate.splice` (CE and KL with reconstructions spliced in),
:mod:`~pipeline.evaluate.steering` (the steering effect of single latents).

Rule: ``evaluate`` never imports ``harvest`` or ``train``; it writes its files through
:mod:`pipeline.report`.
"""
