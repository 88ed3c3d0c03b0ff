"""Scaling up (docs/scaling.md): per-shard harvest time and bytes per token, reader rate per
process, memory of the text path and of a whole harvest for a corpus and one 10x larger,
training on one vs two processes, and the on-paper estimate for 1B tokens.

"Scale" here means growing the job, not the input normalisation (pipeline/train/normalize.py).
"""
