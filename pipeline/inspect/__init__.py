"""Stage ``gsae inspect`` (after train): what each latent means, straight from the cache.

Modules: :mod:`~pipeline.inspect.run` (the stage), :mod:`~pipeline.inspect.describe` (every
firing of every latent on the described rows: activation, attribution, top and quantile
contexts, the ``latents.json`` document of DESIGN §3), :mod:`~pipeline.inspect.logits` (the
tokens a decoder direction promotes and suppresses through the unembedding),
:mod:`~pipeline.inspect.browser` (the self-contained HTML latent browser),
:mod:`~pipeline.inspect.matching` (latents of two SAEs matched by decoder cosine; ``gsae
match``), :mod:`~pipeline.inspect.pairing` (every pair of a run, mean ± sd over seeds), their
report section and plot in :mod:`~pipeline.inspect.matching_report`, :mod:`~pipeline.inspect.report`
(the stage's Markdown report).

Rule: ``inspect`` never imports another stage folder; it reads the store through ``cache``,
the SAE files through ``saes`` and the LM's unembedding through ``lm``.
"""
