"""Stage 1, ``gsae harvest``: text through the LM, activations and loss gradients into the Zarr cache.

Modules: :mod:`~pipeline.harvest.run` (the stage: lock, allocate, resume, repair, commit),
:mod:`~pipeline.harvest.forward` (the model passes of a batch and a shard),
:mod:`~pipeline.harvest.writers` (the writer thread), :mod:`~pipeline.harvest.distributed`
(``harvest.scheduler``: shards as dask tasks), :mod:`~pipeline.harvest.identity` (the store's
content key).

Rule: ``harvest`` never imports ``train`` or ``evaluate``; it hands its store on through
:mod:`pipeline.stores` (the pointer file).
"""
