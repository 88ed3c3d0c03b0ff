"""The language model: loading (alias, hub id, local folder, GGUF), its blocks, and suffix-only passes.

Modules: :mod:`~pipeline.lm.models` (load, identity, hook names, block output edits),
:mod:`~pipeline.lm.gguf_folder` (a GGUF file converted once to a cached HF folder),
:mod:`~pipeline.lm.filehash` (memoised file digests), :mod:`~pipeline.lm.suffix` (the blocks
after a hook, run from a captured clean state).

Rule: ``lm`` imports only ``core``. Harvest and evaluate load the LM; train never does.
"""
