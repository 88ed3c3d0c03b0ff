"""The harvest parts of the GPU benchmark (benchmarks/gpu/run.py): ``harvest``, forward +
activation backward (and the activation-only forward) tokens/s and MFU per model shape;
``hpipe``, ``run_harvest`` against that bare loop; ``writer``, where a shard write spends its
time on this host."""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks import ROOT
from benchmarks.common.synthetic_store import allocate_synthetic
from benchmarks.gpu.measure import median_time, record
from benchmarks.gpu.shapes import activation_flops, arch_configs, harvest_flops, random_lm, smollm2_folder
from pipeline.core.loader import params_from_dict
from pipeline.harvest.forward import forward_activations, forward_backward
from pipeline.harvest.run import run_harvest
from pipeline.lm.models import LoadedModel, load_model


def bare_rate(
    lm: LoadedModel,
    layer: int,
    ids: torch.Tensor,
    batch: int,
    autocast: str,
    reps: int,
    gradients: bool = True,
) -> float:
    """Tokens/s of the model passes alone (``forward_backward`` or ``forward_activations``)."""
    dev = lm.device
    step = forward_backward if gradients else forward_activations

    def run() -> None:
        for b in range(0, ids.shape[0], batch):
            out = step(lm, [layer], ids[b : b + batch], autocast)
            del out

    return ids.numel() / median_time(run, dev, reps=reps, warmup=1)


def part_harvest(dev: torch.device, smoke: bool, peak_bf16: float, shapes: str = "all") -> None:
    T = 32 if smoke else 128
    for name, cfg in arch_configs(smoke).items():
        if shapes != "all" and name not in shapes.split("+"):
            continue
        layer = cfg.num_hidden_layers // 2
        batch_tokens = 1024 if smoke else {"smollm2-135m": 32768, "llama-1b": 32768, "llama-8b": 16384}[name]
        modes = [
            ("fp32", torch.float32, "none"),
            ("autocast-bf16", torch.float32, "bfloat16"),
            ("bf16-weights", torch.bfloat16, "none"),
        ]
        if name == "llama-8b":
            modes = modes[2:]
        elif name != "smollm2-135m":  # float32 on the larger shapes was measured once (docs/gpu.md)
            modes = modes[1:]
        for kind, flops in (("grad", harvest_flops(cfg, layer, T)), ("act", activation_flops(cfg, layer, T))):
            for mode, dtype, amp in modes:
                lm = random_lm(cfg, dev, dtype, name)
                g = torch.Generator(device="cpu").manual_seed(0)
                ids = torch.randint(0, cfg.vocab_size, (4 * batch_tokens // T, T), generator=g).to(dev)
                if dev.type == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                reps = 2 if smoke else 3
                rate = bare_rate(lm, layer, ids, batch_tokens // T, amp, reps, gradients=kind == "grad")
                mem = torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else 0.0
                record(
                    "harvest",
                    f"{name}/{kind}/{mode}",
                    tok_s=rate,
                    layer=layer,
                    T=T,
                    batch_tokens=batch_tokens,
                    tflops=rate * flops / 1e12,
                    mfu_vs_bf16_peak=rate * flops / peak_bf16 if peak_bf16 else 0.0,
                    peak_mem_gib=mem,
                )
                del lm, ids
                if dev.type == "cuda":
                    torch.cuda.empty_cache()


def docstrings_jsonl(where: Path) -> Path:
    """``python-docstrings`` as a JSON-lines file (``.gpu/docstrings.jsonl`` when carried): the
    timed harvests then read and tokenize text as from any local dataset, without the
    corpus's own extraction (parsing every stdlib module, ~50 s on 2 cores)."""

    carried = ROOT / ".gpu" / "docstrings.jsonl"
    if carried.exists():
        return carried
    path = where / "docstrings.jsonl"
    if not path.exists():
        from pipeline.text.corpora import python_docstrings

        path.write_text("".join(json.dumps({"text": t}) + "\n" for t in python_docstrings()))
    return path


def _pipeline_lm(shape: str, folder: Path, dev: torch.device, smoke: bool, tokens_dtype: str) -> LoadedModel:
    if shape == "smollm2":
        return load_model(params_from_dict({}, [f"model.name={folder}", f"model.device={dev}"]).model)
    from transformers import AutoTokenizer

    lm = random_lm(arch_configs(smoke)["llama-1b"], dev, getattr(torch, tokens_dtype), "llama-1b-random")
    return LoadedModel(
        lm.model,
        AutoTokenizer.from_pretrained(folder),
        lm.name,
        "random",
        "smollm2",
        lm.blocks,
        lm.block_path,
        dev,
    )


def harvest_pipeline_ratio(dev: torch.device, smoke: bool) -> None:
    """``run_harvest`` vs the bare loop on the same contexts, per writer setting; and the text
    packing alone. SmolLM2 shape at block 15 (bf16 autocast), the 1B shape at block 8 (bf16 weights)."""
    from pipeline.text.packing import ShardContexts

    with tempfile.TemporaryDirectory() as tmp:
        folder = smollm2_folder(dev, smoke, Path(tmp))
        text = docstrings_jsonl(Path(tmp))
        # python-docstrings read back from that file: no extraction, and no ``datasets`` needed
        from pipeline.text import corpora

        corpora.python_docstrings = lambda: (json.loads(line)["text"] for line in text.open())  # type: ignore[assignment]
        # (shape, layer, tokens, contexts per batch, autocast, model dtype, gradients)
        runs = [("smollm2", 15, 1048576, 256, "bfloat16", "float32", g) for g in (True, False)]
        if "llama-1b" in arch_configs(smoke):
            runs.append(("llama-1b", 8, 262144, 256, "none", "bfloat16", True))
        if smoke:
            runs = [("smollm2", 2, 8192, 8, "none", "float32", g) for g in (True, False)]
        for shape, layer, tokens, batch, autocast, dtype, gradients in runs:
            params = params_from_dict(
                {},
                [
                    f"model.name={folder}",
                    f"model.device={dev}",
                    f"harvest.layers=[{layer}]",
                    "data.source=python-docstrings",
                    f"harvest.tokens={tokens}",
                    f"harvest.batch_size={batch}",
                    f"harvest.store={tmp}/h-{shape}-{gradients}.zarr",
                    f"harvest.cache_root={tmp}/root",  # the DVC pointer beside it too: nothing in the repo
                    f"harvest.tokens_per_shard={tokens // 8}",
                    f"harvest.chunk_tokens={tokens // 32}",
                    f"harvest.autocast={autocast}",
                    f"harvest.gradients={str(gradients).lower()}",
                ],
            )
            lm = _pipeline_lm(shape, folder, dev, smoke, dtype)
            n_ctx = tokens // 128
            t = time.perf_counter()
            packed = ShardContexts(params.data, lm.tokenizer, 128, n_ctx, n_ctx // 8)
            contexts = np.concatenate([packed.shard(i) for i in range(8)])
            text_rate = contexts.size / (time.perf_counter() - t)
            ids = torch.from_numpy(contexts).to(dev)
            bare1 = bare_rate(lm, layer, ids, batch, autocast, reps=1, gradients=gradients)
            t = time.perf_counter()
            run_harvest(params, lm=lm)
            harvest = contexts.size / (time.perf_counter() - t)
            bare2 = bare_rate(lm, layer, ids, batch, autocast, reps=1, gradients=gradients)
            bare = (bare1 + bare2) / 2
            record(
                "harvest_pipeline",
                f"{shape}/{'grad' if gradients else 'act'}/{autocast}/{dtype}",
                bare_tok_s=bare,
                harvest_tok_s=harvest,
                ratio=harvest / bare,
                text_packing_tok_s=text_rate,
                tokens=int(contexts.size),
                batch=batch,
            )
            del lm, ids
            if dev.type == "cuda":
                torch.cuda.empty_cache()


def part_writer(dev: torch.device, smoke: bool) -> None:
    """Where a shard write spends its time on this host: zarr write per compressor, raw zstd, digests."""
    import concurrent.futures
    import hashlib

    import numcodecs
    import xxhash

    from cache.writer import ShardWriter

    d, shard = 576, 8192 if smoke else 65536
    rng = np.random.default_rng(0)
    act = (rng.normal(size=(shard, d)) * 4).astype(np.float16)
    grad = (rng.normal(size=(shard, d)) * 0.01).astype(np.float16)
    mb = 2 * act.nbytes / 1e6
    with tempfile.TemporaryDirectory() as tmp:
        import zarr

        for comp, conc in (("zstd", None), ("zstd", 64), ("blosc", None), ("none", None)):
            url = f"{tmp}/{comp}-{conc}.zarr"
            cfg = {"async.concurrency": conc, "threading.max_workers": os.cpu_count()} if conc else {}
            allocate_synthetic(url, 4, d=d, shard=shard, hook="h", chunk=shard // 32, compressor=comp)
            w = ShardWriter(url)
            times = []
            with zarr.config.set(cfg):
                for i in range(3):
                    t = time.perf_counter()
                    w.write(
                        i, np.zeros(shard, np.int32), {"h": act}, {"h": grad}, np.zeros(shard, np.float32)
                    )
                    times.append(time.perf_counter() - t)
            record(
                "writer",
                f"shard_write/{comp}/concurrency={conc}",
                mb_s=mb / statistics.median(times),
                tok_s=shard / statistics.median(times),
            )
    z = numcodecs.Zstd(level=3)
    chunks = np.array_split(np.concatenate([act.view(np.uint8).ravel(), grad.view(np.uint8).ravel()]), 64)
    t = time.perf_counter()
    for c in chunks:
        z.encode(c)
    record("writer", "zstd3_1thread", mb_s=mb / (time.perf_counter() - t))
    with concurrent.futures.ThreadPoolExecutor(os.cpu_count()) as pool:
        t = time.perf_counter()
        list(pool.map(z.encode, chunks))
        record("writer", f"zstd3_{os.cpu_count()}threads", mb_s=mb / (time.perf_counter() - t))
    for name, fn in (
        ("sha256", lambda b: hashlib.sha256(b).digest()),
        ("xxh3", lambda b: xxhash.xxh3_64(b).digest()),
    ):
        t = time.perf_counter()
        fn(act.tobytes())
        fn(grad.tobytes())
        record("writer", name, mb_s=mb / (time.perf_counter() - t))
