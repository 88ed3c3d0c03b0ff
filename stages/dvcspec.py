"""Which params keys each DVC stage reads, and which keys no stage tracks.

This is the declaration ``dvc.yaml`` is checked against (tests/test_dvc_stages.py): each
stage's ``params:`` must equal exactly its reads minus :data:`RUNTIME_ONLY`, every config
field must be read by some stage or be runtime-only, and every field must be written out
in params.yaml. Add a config field or make a stage read another one, and the test fails
until this file and dvc.yaml say so.

Runtime-only keys change how fast or where a stage runs, never what it writes (bar
provenance records such as the store attributes or cfg.json's ``training`` copy, and
float differences between devices of the kind documented in README "Reproducibility"):
``model.device``, ``harvest.batch_size``, ``harvest.scheduler`` (every scheduler writes
the same bytes, tests/harvest/test_distributed.py), ``train.device``, ``train.prefetch``,
``train.checkpoint_every`` (a resumed run ends bit-identical), ``train.parallel`` (only read
under torchrun; ``variants`` is bit-identical to one process, ``data`` equal up to float
rounding, docs/scaling.md), ``evaluate.batch_size``,
``evaluate.splice`` and ``evaluate.edits_per_forward`` (the suffix splice gives the full
recomputation's figures up to float rounding, tests/lm/test_suffix.py).
They stay in params.yaml, read by the commands, tracked by no stage.

``train.log_every`` is *not* runtime-only: it sets the resolution of the training curves
and the end-of-training figures (the mean of the last ten curve points), both stage outputs.

The stores: ``train`` reads the keys that name the training store, and ``evaluate`` those
of the held-out store, because ``gsae train`` / ``gsae evaluate`` check that the store the
harvest recorded was harvested with these settings (:mod:`pipeline.stores`; the key itself
is recomputed only for a store without the harvest's pointer); a change there reruns the
harvest too.
"""

from __future__ import annotations

STAGES = ("harvest", "harvest_heldout", "train", "evaluate", "inspect")
"""Stage names in dvc.yaml."""

COMMANDS = {
    "harvest": "harvest",
    "harvest_heldout": "harvest",
    "train": "train",
    "evaluate": "evaluate",
    "inspect": "inspect",
}
"""The ``gsae`` command (a function of stages/cli.py) each stage runs."""

RUNTIME_ONLY = frozenset(
    {
        "model.device",
        "harvest.batch_size",
        "harvest.scheduler",
        "train.device",
        "train.prefetch",
        "train.checkpoint_every",
        "train.parallel",
        "evaluate.batch_size",
        "evaluate.splice",
        "evaluate.edits_per_forward",
        "inspect.batch_size",
    }
)
"""Keys that change speed or placement only: in params.yaml, in no stage's ``params:``."""

COMMAND_ONLY = frozenset(
    f"finetune.{name}"
    for name in (
        "store", "variants", "out_dir", "tokens", "batch_contexts", "lr", "kl_coef", "mse_coef",
        "checkpoint_every", "seed",
    )
)  # fmt: skip
"""Keys read only by ``gsae finetune``, which is not a stage of the default dvc.yaml (an experiment
that runs it lists them in its own): in params.yaml, in no stage's ``params:``."""

_MODEL_ID = {"model.name", "model.revision", "model.dtype"}
_MODEL_LOAD = _MODEL_ID | {"model.trust_remote_code", "model.device"}
_TEXT = {
    "data.source",
    "data.context_length",
    "data.text_column",
    "data.revision",
    "data.hf_split",
    "data.hf_config",
    "data.heldout_fraction",
}
_STORE_FORMAT = {
    "harvest.layers",
    "harvest.cache_root",
    "harvest.tokens_per_shard",
    "harvest.chunk_tokens",
    "harvest.dtype",
    "harvest.compressor",
    "harvest.compression_level",
    "harvest.store_loss",
    "harvest.gradients",
}
_TRAIN_STORE = (
    _MODEL_ID | _TEXT | _STORE_FORMAT | {"data.split", "harvest.tokens", "harvest.store", "harvest.autocast"}
)
"""What ``pipeline.stores`` reads to find and check the training store."""
_HELDOUT_STORE = (
    _MODEL_ID
    | _TEXT
    | _STORE_FORMAT
    | {
        "evaluate.tokens",
        "evaluate.store",
        "evaluate.first_token",
        "evaluate.harvest_tokens",
    }
)
"""The same for the held-out store (``heldout_params`` swaps split, tokens and store)."""

_GRID = {
    f"train.grid.{k}"
    for k in ("architecture", "k", "beta", "expansion", "value_mode", "grad_loss", "lr", "seed", "layer")
}
_TRAIN = _GRID | {
    f"train.{k}"
    for k in (
        "tokens",
        "out_dir",
        "store",
        "layer",
        "batch_size",
        "warmup_steps",
        "decay_fraction",
        "k_aux",
        "aux_coef",
        "dead_tokens",
        "b_dec_init",
        "exclude_first",
        "max_norm_multiple",
        "snapshot_tokens",
        "shuffle_buffer_shards",
        "prefetch",
        "checkpoint_every",
        "seed",
        "device",
        "autocast",
        "metrics_out",
        "curves_dir",
        "log_every",
        "init_sample_tokens",
        "parallel",
    )
}
_EVALUATE = {
    f"evaluate.{k}"
    for k in (
        "store",
        "tokens",
        "out",
        "summary",
        "report",
        "plots_dir",
        "batch_size",
        "steer_latents",
        "steer_contexts",
        "steer_scale",
        "absorption_words",
        "absorption_min_words",
        "absorption_grad",
        "seed",
        "first_token",
        "harvest_tokens",
        "splice",
        "edits_per_forward",
        "autocast",
    )
}
_INSPECT = {
    f"inspect.{k}"
    for k in (
        "store",
        "tokens",
        "first_token",
        "out_dir",
        "report",
        "metrics",
        "top_n",
        "quantile_bins",
        "quantile_samples",
        "logit_tokens",
        "window",
        "match_threshold",
        "batch_size",
        "seed",
    )
}

HELDOUT_SWAPPED = {
    "data.split": None,
    "harvest.autocast": None,
    "harvest.tokens": "evaluate.harvest_tokens",
    "harvest.store": "evaluate.store",
}
"""Fields ``heldout_params`` overwrites for the held-out store: reading them there reads the
named key instead (``data.split`` and ``harvest.autocast`` become constants; the token count
comes from ``evaluate.harvest_tokens`` or ``first_token + tokens``)."""

READS: dict[str, frozenset[str]] = {
    "harvest": frozenset(_MODEL_LOAD | _TRAIN_STORE | {"harvest.batch_size", "harvest.scheduler"}),
    "harvest_heldout": frozenset(_MODEL_LOAD | _HELDOUT_STORE | {"harvest.batch_size", "harvest.scheduler"}),
    "train": frozenset(_TRAIN_STORE | _TRAIN),
    "evaluate": frozenset(_MODEL_LOAD | _HELDOUT_STORE | _EVALUATE | {"train.out_dir", "train.curves_dir"}),
    "inspect": frozenset(_MODEL_LOAD | _HELDOUT_STORE | _INSPECT | {"train.out_dir"}),
}
"""Every config field each stage's command reads (runtime-only ones included)."""


def tracked(stage: str) -> frozenset[str]:
    """The keys ``dvc.yaml`` must list under ``params:`` for ``stage``."""
    return READS[stage] - RUNTIME_ONLY


def tracked_by() -> dict[str, list[str]]:
    """key → the stages a change of it reruns (directly, through their params)."""
    out: dict[str, list[str]] = {}
    for stage in STAGES:
        for key in tracked(stage):
            out.setdefault(key, []).append(stage)
    return out
