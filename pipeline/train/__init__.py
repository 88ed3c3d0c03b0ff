"""Stage 2, ``gsae train``: many SAE variants fitted in one pass over shuffled shards of the cache.

Modules: :mod:`~pipeline.train.run` (the stage: store, grid, groups, outputs),
:mod:`~pipeline.train.sweep` (the grid → variant specs), :mod:`~pipeline.train.trainer` (the
step over all variants of a batch), :mod:`~pipeline.train.adam` (the fused Adam),
:mod:`~pipeline.train.normalize` (input and gradient scales, decoder-bias init),
:mod:`~pipeline.core.checkpoint` (resumable state, all-or-nothing outputs; shared with the fine-tune),
:mod:`~pipeline.train.distributed` (``torchrun``), :mod:`~pipeline.train.record` (cfg.json
provenance and the metrics of a run), :mod:`~pipeline.train.precision` (``train.autocast``: the
encoder's GEMMs in bf16).

Rule: ``train`` never imports ``harvest``, ``evaluate``, ``lm`` or ``text``: it reads the
store the pointer names (:mod:`pipeline.stores`) and hands its curves to evaluation through
:mod:`pipeline.curves`.
"""
