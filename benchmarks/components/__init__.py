"""CPU benchmarks of one pipeline component each: the harvest against its bare model loop,
the train stage's figures, the allocator tuning, the model load, shard writes and the
reader's checksum cost. ``make bench`` runs the first five (benchmarks/README.md)."""
