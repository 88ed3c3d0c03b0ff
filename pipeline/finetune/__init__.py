"""Command ``gsae finetune`` (after train): the KL fine-tune of trained SAEs, a baseline.

Modules: :mod:`~pipeline.finetune.objective` (KL(p_clean ‖ p_spliced) through the LM's
suffix plus the normalised MSE, for one batch), :mod:`~pipeline.finetune.run` (the resumable
loop over the training store's last contexts, and the fine-tuned variant folders).

Rule: ``finetune`` never imports another stage folder; it reads the store through ``cache``
and ``stores``, the SAE files through ``saes``, runs the LM through ``lm`` and checkpoints
with ``core``.
"""
