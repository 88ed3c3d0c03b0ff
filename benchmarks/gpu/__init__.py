"""The GPU benchmark (``python -m benchmarks.gpu.run``): matmul ceiling, harvest MFU and the
harvest pipeline, shard writes, trainer and reader throughput, the stage commands on CUDA.
Its figures and the runs behind them are in docs/gpu.md; the JSON of each run in ``results/``."""
