"""Typed configuration: one frozen dataclass per params.yaml section, a docstring per field.

Each ``__post_init__`` does the cross-field checks of its section (``ConfigError``). The one
loader that builds these from params.yaml and ``-s`` overrides is :mod:`pipeline.core.loader`;
``gsae params`` reads the field docstrings back from this file (:mod:`stages.paramdoc`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pipeline.core.errors import config_check as _check

Split = Literal["train", "heldout"]


@dataclass(frozen=True)
class ModelConfig:
    name: str = "smollm2-135m"
    """Alias (``smollm2-135m``), Hugging Face hub id, or a local ``save_pretrained`` folder."""
    revision: str | None = None
    """Hub revision (branch, tag or commit); ignored for aliases and local folders."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Dtype the LM computes in."""
    device: str = "auto"
    """``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    trust_remote_code: bool = False
    """Allow model code from the hub; off unless the user asks for it."""


@dataclass(frozen=True)
class DataConfig:
    source: str = "python-docs"
    """Embedded corpus (``python-docs``, ``python-docstrings``, ``shakespeare``), HF dataset id, or local file/dir."""
    split: Split = "train"
    """Which side of the deterministic document split a harvest reads."""
    context_length: int = 128
    """Tokens per packed context (BOS included)."""
    text_column: str = "text"
    """Column holding the text in HF datasets, .jsonl and .parquet files."""
    revision: str | None = None
    """HF dataset revision."""
    hf_split: str = "train"
    """The HF dataset's own split streamed before our train/heldout split is applied."""
    hf_config: str | None = None
    """HF dataset configuration name (e.g. ``wikitext-103-raw-v1``)."""
    heldout_fraction: float = 0.1
    """Fraction of documents (chosen by a hash of their text) reserved for evaluation."""

    def __post_init__(self) -> None:
        _check(self.context_length >= 2, f"data.context_length must be >= 2, got {self.context_length}")
        _check(0.0 < self.heldout_fraction < 1.0, "data.heldout_fraction must be in (0, 1)")


@dataclass(frozen=True)
class HarvestConfig:
    layers: tuple[int, ...] = (15,)
    """Decoder-block indices; the residual stream after each block is cached."""
    tokens: int = 65536
    """Tokens to harvest (rounded down to whole contexts)."""
    store: str = "auto"
    """Store path or fsspec URL; ``auto`` = ``<cache_root>/<split>/<key>.zarr``."""
    cache_root: str = "data/cache"
    """Folder of key-named stores used when ``store`` is ``auto``."""
    batch_size: int = 8
    """Contexts per forward/backward pass."""
    tokens_per_shard: int = 16384
    """Tokens per shard file (a multiple of context_length): the unit of write and commit."""
    chunk_tokens: int = 2048
    """Tokens per inner chunk of a shard (the unit of compression and partial reads)."""
    dtype: Literal["float16", "float32"] = "float16"
    """Storage dtype of activations and gradients."""
    compressor: Literal["zstd", "blosc", "none"] = "zstd"
    """Lossless codec applied to every chunk."""
    compression_level: int = 3
    """Codec level."""
    store_loss: bool = True
    """Also store the per-token next-token loss (``loss`` array, float32); only with ``gradients``
    (an activation-only harvest computes no logits)."""
    gradients: bool = True
    """Store ∂L/∂activation beside each activation (``true``, what a g-SAE trains on), or
    activations only (``false``): the forward stops after the deepest hooked block (no
    logits, no backward), for TopK-only users; training a g-SAE on such a store is refused.
    Part of the store key; the held-out harvest follows it."""
    autocast: Literal["none", "bfloat16", "float16"] = "none"
    """Run the LM's matmuls under torch.autocast in this dtype (residual stream and loss stay
    float32). On a 2-core AVX512-BF16 CPU bf16 harvests SmolLM2 ~4x faster; measured vs
    float32 on its block 15: activations rel. error 6.5e-3, gradients 2.9e-2 (median cosine
    0.9996). Part of the store key."""
    scheduler: str = "none"
    """Where shards are harvested: ``none`` (this process), ``local:N`` (a dask.distributed
    LocalCluster of N worker processes started by the command) or ``tcp://host:port`` (an
    existing dask scheduler; workers must reach ``harvest.store``). Never part of the key:
    every choice writes the same bytes."""

    def __post_init__(self) -> None:
        _check(
            self.scheduler == "none"
            or self.scheduler.startswith("tcp://")
            or (
                self.scheduler.startswith("local:")
                and self.scheduler[6:].isdigit()
                and int(self.scheduler[6:]) > 0
            ),
            f"harvest.scheduler must be none, local:N (N >= 1) or tcp://host:port, got {self.scheduler!r}",
        )
        _check(len(self.layers) > 0, "harvest.layers must list at least one block index")
        _check(len(set(self.layers)) == len(self.layers), "harvest.layers has duplicates")
        _check(self.tokens > 0, "harvest.tokens must be positive")
        _check(self.batch_size > 0, "harvest.batch_size must be positive")
        _check(self.chunk_tokens > 0, "harvest.chunk_tokens must be positive")
        _check(
            self.tokens_per_shard % self.chunk_tokens == 0,
            "harvest.tokens_per_shard must be a multiple of harvest.chunk_tokens",
        )


@dataclass(frozen=True)
class GridConfig:
    """Sweep grid: every combination of these lists is one variant; an architecture varies only the keys its registered hyper-parameters read (the gradient-free ones ignore beta/value_mode)."""

    architecture: tuple[str, ...] = ("topk", "gsae")
    """Registered SAE architectures (``pipeline.saes.REGISTRY``; an unknown name is refused with the list)."""
    k: tuple[int, ...] = (32,)
    """Active latents per token."""
    beta: tuple[float, ...] = (1.0,)
    """g-SAE gradient weight; gradients are scaled to mean norm √d, so a random unit direction's
    factor |d_i · γg| is ≈ 0.8 and β = 1 weighs the gradient like the pre-activation itself."""
    expansion: tuple[int, ...] = (8,)
    """Dictionary width as a multiple of d_model."""
    value_mode: tuple[str, ...] = ("augmented",)
    """What a gradient-aware decoder receives at the selected latents: ``augmented`` (ReLU(s_i)) or ``selection`` (ReLU(z_i)); checked by the architectures that read it."""
    grad_loss: tuple[float, ...] = (0.0,)
    """λ of the gradient loss term, every architecture: λ · Σ(γg · (x − x̂))² / Σ‖x − x̄‖² beside the
    FVU (γ scales gradients to mean norm √d, so λ = 1 weighs it like the MSE); 0 = off, >= 0.
    In variant names (``-gl0.5``) only when nonzero; needs a store with gradients."""
    lr: tuple[float, ...] = (4e-4,)
    """Adam learning rates."""
    seed: tuple[int, ...] = (0,)
    """Initialisation seeds."""
    layer: tuple[int, ...] = ()
    """Blocks to train SAEs for in one run (each of harvest.layers); empty = the one block of
    train.layer. When set, variant names carry ``L<layer>`` (``topk-k32-x8-L3-s0``)."""


@dataclass(frozen=True)
class TrainConfig:
    tokens: int = 262144
    """Tokens each variant trains on (epochs over the cache when it is smaller)."""
    out_dir: str = "data/saes"
    """Trained SAEs go to ``<out_dir>/<variant>/``."""
    store: str = "auto"
    """Cache to read; ``auto`` = the store the harvest params point to."""
    layer: int | None = None
    """Block whose cache is trained on; default the first of harvest.layers."""
    batch_size: int = 4096
    """Tokens per optimizer step."""
    grid: GridConfig = field(default_factory=GridConfig)
    """The variants to train."""
    warmup_steps: int = 50
    """Linear learning-rate warm-up."""
    decay_fraction: float = 0.2
    """Final fraction of steps with linear decay to zero."""
    k_aux: int | None = None
    """AuxK latents; default d_model // 2 (Gao et al.)."""
    aux_coef: float = 0.03125
    """AuxK loss coefficient (1/32, Gao et al.)."""
    dead_tokens: int = 10_000_000
    """A latent not active for this many tokens is dead (Gao et al.)."""
    b_dec_init: Literal["geometric_median", "mean"] = "geometric_median"
    """How b_dec is initialised from a sample."""
    exclude_first: bool = True
    """Skip the first position of each context (BOS / attention sink)."""
    max_norm_multiple: float = 0.0
    """Leave out tokens whose activation norm exceeds this multiple of the median norm (of the
    initialisation sample): later attention sinks (pipeline/train/tokens.py). 0 keeps every
    token; dictionary_learning suggests 10. Not with ``parallel: data``."""
    shuffle_buffer_shards: int = 4
    """Shards mixed in the token-level shuffle buffer."""
    prefetch: int = 2
    """Batches prepared ahead by the background reader."""
    checkpoint_every: int = 0
    """Steps between checkpoints (0 = none)."""
    snapshot_tokens: tuple[int, ...] = ()
    """Token counts (per SAE) after which every variant is also saved, as it is then, to
    ``<out_dir>/.snapshots/<tokens>/<variant>/`` (the training-length curve; each a multiple of
    batch_size × checkpoint_every, below ``tokens``)."""
    seed: int = 0
    """Data-order seed."""
    device: str = "auto"
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""
    autocast: Literal["none", "bfloat16"] = "none"
    """Run the SAE encoder's matrix products (x W_enc, and the g-SAE's |W_dec g|) under
    torch.autocast in bfloat16 on the training device; z, the top-k choice, the decoder, the
    loss, the master weights and Adam's state stay float32 (pipeline/train/precision.py).
    Fast on CPUs with AVX512-BF16 / AMX (elsewhere slower: a warning) and GPUs. Changes the
    weights, so tracked. The default run sets bfloat16: ~1.3x the trainer's speed, FVU and
    loss recovered within the seed spread of float32 (docs/benchmarks.md)."""
    metrics_out: str = "metrics/train_metrics.json"
    """Final training figures per variant (JSON: variant → fvu, l0, dead_frac, ...); wall time goes to ``<stem>.run.json`` beside it."""
    curves_dir: str = "metrics/train_curves"
    """Training curves: ``<curves_dir>/curves.csv``, long format (one row per variant and logged step)."""
    log_every: int = 10
    """Steps between curve points (means over the steps since the previous point)."""
    init_sample_tokens: int = 16384
    """Tokens sampled (from seeded random shards) to set the input scales and init b_dec."""
    parallel: Literal["variants", "data"] = "variants"
    """Under ``torchrun`` (ignored in one process): ``variants`` = each process trains every
    N-th variant on the whole batch stream (outputs bit-identical to one process on CPU);
    ``data`` = each process trains all variants on its rows of each batch, gradients summed."""

    def __post_init__(self) -> None:
        _check(self.tokens > 0, "train.tokens must be positive")
        _check(self.log_every >= 0, "train.log_every must be >= 0")
        _check(self.init_sample_tokens > 0, "train.init_sample_tokens must be positive")
        _check(self.checkpoint_every >= 0, "train.checkpoint_every must be >= 0")
        _check(self.batch_size > 0, "train.batch_size must be positive")
        _check(0.0 <= self.decay_fraction <= 1.0, "train.decay_fraction must be in [0, 1]")
        _check(self.shuffle_buffer_shards >= 1, "train.shuffle_buffer_shards must be >= 1")
        _check(self.warmup_steps >= 0, f"train.warmup_steps must be >= 0, got {self.warmup_steps}")
        _check(self.dead_tokens > 0, f"train.dead_tokens must be positive, got {self.dead_tokens}")
        every = self.batch_size * self.checkpoint_every
        for t in self.snapshot_tokens:
            _check(
                every > 0 and t % every == 0 and 0 < t < self.tokens,
                f"train.snapshot_tokens: {t} is not a multiple of batch_size x checkpoint_every "
                f"({every}) below train.tokens ({self.tokens})",
            )
        _check(
            self.max_norm_multiple == 0 or self.max_norm_multiple > 1,
            f"train.max_norm_multiple must be 0 (off) or > 1, got {self.max_norm_multiple}",
        )
        _check(
            self.max_norm_multiple == 0 or self.parallel == "variants",
            "train.max_norm_multiple needs train.parallel: variants (data mode splits fixed-size batches)",
        )
        _check(self.k_aux is None or self.k_aux >= 0, f"train.k_aux must be >= 0, got {self.k_aux}")


@dataclass(frozen=True)
class EvaluateConfig:
    store: str = "auto"
    """Held-out store; ``auto`` = ``<harvest.cache_root>/heldout/<key>.zarr``."""
    tokens: int = 4096
    """Held-out tokens evaluated (from ``first_token`` on); ``--heldout`` harvests first_token + tokens."""
    first_token: int = 0
    """Held-out tokens skipped before the evaluated ones (whole contexts): a validation slice
    for a pilot that stays disjoint from the test slice, in the same store."""
    harvest_tokens: int = 0
    """Tokens the held-out harvest (``gsae harvest --heldout``) takes; 0 = first_token + tokens.
    Runs that evaluate different slices of one held-out store set the same value here."""
    out: str = "metrics/evaluate.json"
    """Metrics JSON (DESIGN §3): variant name → figures."""
    summary: str = "metrics/summary.json"
    """Compact metrics keyed by series and k (``topk-x8.k32.loss_recovered``), stable across grids: the DVC metric."""
    report: str = "reports/report.md"
    """Markdown report written by the stage."""
    plots_dir: str = "reports/plots"
    """PNG and DVC plot data files."""
    batch_size: int = 8
    """Contexts per LM forward."""
    steer_latents: int = 8
    """Alive latents sampled per SAE for the steering test."""
    steer_contexts: int = 4
    """Held-out contexts each latent is steered in."""
    steer_scale: float = 1.0
    """alpha = steer_scale x the latent's mean nonzero activation."""
    splice: Literal["suffix", "full"] = "suffix"
    """``suffix`` runs only the blocks after the hook per variant (from the clean prefix's
    state); ``full`` reruns the whole LM per variant (the slow reference; same figures up to
    float rounding, tests/lm/test_suffix.py)."""
    edits_per_forward: int = 4
    """Variants stacked along the batch in one suffix forward (memory: × contexts × T × vocab floats)."""
    autocast: Literal["none", "bfloat16"] = "none"
    """Precision of the LM's blocks after the hook when splicing and steering (the blocks up to it,
    which the SAEs encode, keep ``model.dtype``). With ``bfloat16`` the whole stage ran 1.38x faster
    on a 2-core CPU with bf16 matrix units, but the figures move beyond float rounding (the mean
    steering KL by 12 %; docs/benchmarks.md): for quick looks."""
    seed: int = 0
    """Seed for latent and context sampling (and the absorption metric's word sample)."""
    absorption_words: int = 2000
    """Vocabulary words (space-led alphabetic single tokens) the first-letter absorption metric
    uses, 80 % to fit its probes, 20 % to score (pipeline/evaluate/absorption.py); 0 disables it."""
    absorption_min_words: int = 10
    """Test words a letter's probe must get right for the letter to be scored (SAEBench: 20)."""
    absorption_grad: bool = False
    """Gradient-aware SAEs select with the gradient of the answer letter's loss (a full forward
    and partial backward per word, ~20x the metric's cost); false: scored as their beta = 0 twin."""

    def __post_init__(self) -> None:
        _check(self.tokens > 0, "evaluate.tokens must be positive")
        _check(self.absorption_words >= 0, "evaluate.absorption_words must be >= 0 (0 disables absorption)")
        _check(
            self.absorption_words == 0 or self.absorption_words >= 50,
            "evaluate.absorption_words must be 0 (off) or >= 50 (probes need words of every letter)",
        )
        _check(self.absorption_min_words >= 1, "evaluate.absorption_min_words must be >= 1")
        _check(self.steer_latents >= 0 and self.steer_contexts >= 0, "evaluate.steer_* must be >= 0")
        _check(self.edits_per_forward >= 1, "evaluate.edits_per_forward must be >= 1")
        _check(self.harvest_tokens >= 0, "evaluate.harvest_tokens must be >= 0 (0 = first_token + tokens)")
        _check(
            self.harvest_tokens == 0 or self.harvest_tokens >= self.first_token + self.tokens,
            "evaluate.harvest_tokens must cover first_token + tokens",
        )


@dataclass(frozen=True)
class InspectConfig:
    store: str = "auto"
    """Store the latents are described on; ``auto`` = the held-out store evaluation reads
    (``evaluate.store``), else a path or fsspec URL of any store of the same model."""
    tokens: int = 8192
    """Tokens described (whole contexts, from ``first_token`` on); the first position of each
    context is not described (the SAE is never applied there, DESIGN §3 Metrics)."""
    first_token: int = 0
    """Tokens of the store skipped before the described ones (a multiple of the context length)."""
    out_dir: str = "reports/latents"
    """Root of the per-entry folders ``<entry>/{index.html, latents.json}`` and the browser's start page."""
    report: str = "reports/latents.md"
    """Markdown report of the stage: per-entry summaries and the g-SAE vs TopK latent matching."""
    metrics: str = "metrics/inspect.json"
    """JSON of the stage's figures: per-entry summaries and the matching figures."""
    top_n: int = 24
    """Top-activation and top-attribution firings listed per latent (all firings when fewer)."""
    quantile_bins: int = 5
    """Activation quantile bins a latent's sampled contexts are drawn from."""
    quantile_samples: int = 4
    """Firings sampled per quantile bin."""
    logit_tokens: int = 10
    """Tokens listed per latent among those its decoder direction promotes (and suppresses)."""
    window: int = 8
    """Tokens shown either side of a firing in the browser's contexts."""
    match_threshold: float = 0.7
    """Decoder cosine above which a latent counts as matched by a latent of another SAE."""
    batch_size: int = 2048
    """Rows encoded at once (memory: rows × latents floats)."""
    seed: int = 0
    """Seed of the quantile sampling."""

    def __post_init__(self) -> None:
        _check(self.tokens > 0, "inspect.tokens must be positive")
        _check(self.first_token >= 0, "inspect.first_token must be >= 0")
        _check(self.top_n >= 1, "inspect.top_n must be >= 1")
        _check(self.quantile_bins >= 1 and self.quantile_samples >= 0, "inspect.quantile_* out of range")
        _check(self.logit_tokens >= 1, "inspect.logit_tokens must be >= 1")
        _check(self.window >= 0, "inspect.window must be >= 0")
        _check(0.0 < self.match_threshold <= 1.0, "inspect.match_threshold must be in (0, 1]")
        _check(self.batch_size >= 1, "inspect.batch_size must be >= 1")


@dataclass(frozen=True)
class FinetuneConfig:
    store: str = "auto"
    """Store whose contexts (tokens, and gradients for a g-SAE) the fine-tune reads; ``auto`` =
    the training store (``train.store``): the training split, disjoint from the held-out one."""
    variants: tuple[str, ...] = ()
    """Variant folders of ``train.out_dir`` to fine-tune; empty = all."""
    out_dir: str = "data/saes-klft"
    """Where the fine-tuned variants are written, one folder per variant under its own name."""
    tokens: int = 65536
    """Fine-tuning tokens per SAE: the last ``tokens`` of the store, whole contexts, one pass."""
    batch_contexts: int = 8
    """Contexts per step (each runs the LM's suffix once per SAE, forward and backward)."""
    lr: float = 5e-5
    """Adam learning rate (constant)."""
    kl_coef: float = 1.0
    """Weight of KL(p_clean ‖ p_spliced), nats per prediction."""
    mse_coef: float = 1.0
    """Weight of the normalised reconstruction error Σ‖x − x̂‖² / Σ‖x − x̄‖²."""
    checkpoint_every: int = 25
    """Steps between checkpoints (0 = none); a rerun with the same settings resumes from the last."""
    seed: int = 0
    """Seed of the order in which the contexts are visited."""

    def __post_init__(self) -> None:
        _check(self.tokens > 0, "finetune.tokens must be positive")
        _check(self.batch_contexts >= 1, "finetune.batch_contexts must be >= 1")
        _check(self.lr > 0, "finetune.lr must be positive")
        _check(self.kl_coef >= 0 and self.mse_coef >= 0, "finetune.kl_coef and mse_coef must be >= 0")
        _check(self.kl_coef + self.mse_coef > 0, "finetune.kl_coef and mse_coef cannot both be 0")
        _check(self.checkpoint_every >= 0, "finetune.checkpoint_every must be >= 0")


@dataclass(frozen=True)
class Params:
    model: ModelConfig = field(default_factory=ModelConfig)
    """The language model."""
    data: DataConfig = field(default_factory=DataConfig)
    """The text."""
    harvest: HarvestConfig = field(default_factory=HarvestConfig)
    """Stage 1."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Stage 2."""
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    """Stage 3."""
    inspect: InspectConfig = field(default_factory=InspectConfig)
    """The latent descriptions and browser (after train)."""
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    """The KL fine-tune of trained SAEs through the LM's suffix (``gsae finetune``, after train)."""

    def __post_init__(self) -> None:
        _check(
            self.harvest.tokens_per_shard % self.data.context_length == 0,
            "harvest.tokens_per_shard must be a multiple of data.context_length",
        )
        _check(
            self.harvest.tokens >= self.data.context_length,
            "harvest.tokens must hold at least one context (>= data.context_length)",
        )
        _check(
            self.evaluate.first_token >= 0 and self.evaluate.first_token % self.data.context_length == 0,
            "evaluate.first_token must be a non-negative multiple of data.context_length",
        )
        _check(
            self.inspect.first_token % self.data.context_length == 0,
            "inspect.first_token must be a multiple of data.context_length",
        )
        layer = self.train.layer
        _check(
            layer is None or layer in self.harvest.layers,
            f"train.layer {layer} is not among harvest.layers {list(self.harvest.layers)}",
        )
        grid_layers = self.train.grid.layer
        _check(layer is None or not grid_layers, "set train.layer or train.grid.layer, not both")
        _check(
            set(grid_layers) <= set(self.harvest.layers),
            f"train.grid.layer {list(grid_layers)} is not a subset of harvest.layers {list(self.harvest.layers)}",
        )
        _check(len(set(grid_layers)) == len(grid_layers), "train.grid.layer has duplicates")
