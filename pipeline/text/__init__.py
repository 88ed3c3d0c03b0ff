"""Text in: sources (embedded corpora, local files, hub datasets), the held-out split, packing.

Modules: :mod:`~pipeline.text.sources` (documents of a split, the source fingerprint),
:mod:`~pipeline.text.corpora` (the embedded offline corpora), :mod:`~pipeline.text.packing`
(documents → fixed contexts, lazily shard by shard, with resumable stream positions),
:mod:`~pipeline.text.footprint` (peak memory of packing a corpus, in a fresh process).

Rule: ``text`` imports only ``core``. Only the harvest reads text.
"""
