"""The ``gsae`` console script: thin click commands over the library (DESIGN §3 CLI).

Every command reads params.yaml (``-p``) with dotted overrides (``-s KEY=VALUE``). Errors
print one line on stderr and exit non-zero; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import click

from pipeline.core.errors import ConfigError
from stages.cache_cli import cache
from stages.errors import error_line
from stages.logs import setup_logging
from stages.options import load as _load
from stages.options import (
    lock_options,
    params_files_or_defaults,
    params_options,
    push_options,
    run_sources,
    summarize_sources,
)

log = logging.getLogger("gsae")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gsae-pipeline")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


@click.group()
@click.version_option(_version(), "--version", prog_name="gsae", message="%(prog)s %(version)s")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.option("-v", "--verbose", is_flag=True, help="Debug-level logging for the project's own loggers.")
@click.pass_context
def cli(ctx: click.Context, debug: bool, verbose: bool) -> None:
    """Harvest LM activations and gradients, train TopK / g-SAE variants, evaluate them."""
    setup_logging(verbose)
    if not verbose:  # `datasets` logs raw parser errors itself; ours is the one line that matters
        os.environ.setdefault("DATASETS_VERBOSITY", "critical")
        logging.getLogger("datasets").setLevel(logging.CRITICAL)
    ctx.obj = {"debug": debug}


@cli.command("params")
@params_options
def params_cmd(params_path: tuple[str, ...], overrides: tuple[str, ...]) -> None:
    """List every params key with its value in the params file(s) (the code default beside it where
    they differ), type, docstring and the DVC stages it reruns."""
    from stages.dvcspec import tracked_by
    from stages.paramdoc import render

    files = params_files_or_defaults(params_path)
    source = " + ".join(files) if files else "code defaults (no params.yaml here)"
    more = f", {len(overrides)} override(s)" if overrides else ""
    click.echo(f'# values: {source}{more} ("code default X" where a value differs from the code\'s)\n')
    click.echo(render(tracked_by(), _load(files, overrides)), nl=False)


@cli.command()
@params_options
@click.option(
    "--heldout",
    is_flag=True,
    help="Harvest the held-out store evaluation reads (evaluate.tokens, evaluate.store).",
)
@click.option("--overwrite", is_flag=True, help="Replace a store that holds a different harvest.")
@click.option("--repair", is_flag=True, help="Re-harvest only the committed shards that fail verification.")
@lock_options
def harvest(
    params_path: tuple[str, ...],
    overrides: tuple[str, ...],
    heldout: bool,
    overwrite: bool,
    repair: bool,
    **lock: Any,
) -> None:
    """Stage 1: run the LM over the text and cache activations + gradients."""
    from pipeline.harvest.run import run_harvest
    from pipeline.stores import heldout_params

    if overwrite and repair:
        raise click.UsageError("--overwrite and --repair exclude each other")
    from stages.allocator import tune_allocator

    params = _load(params_path, overrides)
    if heldout:
        params = heldout_params(params)
    tune_allocator()  # as gsae train: large temporaries stay in the heap (benchmarks/components/allocator.py)
    click.echo(run_harvest(params, overwrite=overwrite, repair=repair, **lock))


def _check_architectures(architectures: tuple[str, ...]) -> None:
    """``-a`` values must be registered (checked lazily: the harvest never imports the SAEs)."""
    from pipeline.saes import REGISTRY

    unknown = sorted(set(architectures) - set(REGISTRY))
    if unknown:
        raise click.BadParameter(
            f"{unknown[0]!r} is not a registered architecture ({', '.join(sorted(REGISTRY))})",
            param_hint="'-a'",
        )


@cli.command()
@params_options
@click.option(
    "-a",
    "--architecture",
    "architectures",
    multiple=True,
    metavar="NAME",
    help="Train only these registered architectures (overrides train.grid.architecture).",
)
@click.option("--dry-run", is_flag=True, help="List the variants the grid expands to and exit.")
@click.option(
    "--allow-other-store",
    is_flag=True,
    help="Train from an explicit train.store even if its model or layer differ from the params.",
)
def train(
    params_path: tuple[str, ...],
    overrides: tuple[str, ...],
    architectures: tuple[str, ...],
    dry_run: bool,
    allow_other_store: bool,
) -> None:
    """Stage 2: train every variant of train.grid on the cached harvest."""
    from pipeline.stores import train_store
    from pipeline.train.run import run_train
    from pipeline.train.sweep import expand_grid
    from stages.allocator import tune_allocator

    if architectures:
        _check_architectures(architectures)
        overrides = (*overrides, f"train.grid.architecture=[{','.join(architectures)}]")
    params = _load(params_path, overrides)
    if dry_run:
        for spec in expand_grid(params.train.grid):
            click.echo(spec.name)
        return
    store = train_store(params, allow_other=allow_other_store)
    tune_allocator()  # process-wide, so here and not in the library
    run_train(params, store_url=store.url, expected_key=store.key, info=store.info)


@cli.command()
@params_options
@click.option("--allow-train-split", is_flag=True, help="Evaluate on a store harvested from the train split.")
def evaluate(params_path: tuple[str, ...], overrides: tuple[str, ...], allow_train_split: bool) -> None:
    """Stage 3: held-out metrics, steering, plots and report for every trained variant."""
    from pipeline.evaluate.run import run_evaluate
    from pipeline.stores import evaluate_store

    params = _load(params_path, overrides)
    store = evaluate_store(params, allow_train_split=allow_train_split)
    run_evaluate(params, store_url=store.url, expected_key=store.key, info=store.info)


@cli.command()
@params_options
def finetune(params_path: tuple[str, ...], overrides: tuple[str, ...]) -> None:
    """Fine-tune trained SAEs with KL + MSE through the LM's suffix (a baseline; finetune.* params)."""
    from pipeline.finetune.run import run_finetune
    from pipeline.stores import finetune_store

    params = _load(params_path, overrides)
    store = finetune_store(params)
    run_finetune(params, store_url=store.url, info=store.info)


@cli.command()
@params_options
def inspect(params_path: tuple[str, ...], overrides: tuple[str, ...]) -> None:
    """Describe every latent of every trained variant: latents.json + the HTML latent browser."""
    from pipeline.inspect.run import run_inspect
    from pipeline.stores import inspect_store

    params = _load(params_path, overrides)
    store = inspect_store(params)
    run_inspect(params, store_url=store.url, expected_key=store.key, info=store.info)


@cli.command()
@click.argument("sae_a", type=click.Path(exists=True, file_okay=False))
@click.argument("sae_b", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--latents-a", type=click.Path(exists=True, dir_okay=False), help="latents.json of SAE_A (gsae inspect)."
)
@click.option("--latents-b", type=click.Path(exists=True, dir_okay=False), help="latents.json of SAE_B.")
@click.option(
    "--threshold", default=0.7, show_default=True, help="Best cosine at which a latent counts as matched."
)
def match(sae_a: str, sae_b: str, latents_a: str | None, latents_b: str | None, threshold: float) -> None:
    """Match the latents of two trained SAE folders by decoder cosine (both directions)."""
    from pipeline.inspect.matching import match as match_pair
    from pipeline.inspect.matching import stats_from_files
    from pipeline.inspect.matching_report import pair_table

    a, b = stats_from_files(sae_a, latents_a), stats_from_files(sae_b, latents_b)
    click.echo(pair_table(match_pair(a, b, threshold)))


@cli.command()
@run_sources
@click.option(
    "-o",
    "--out",
    default="results.md",
    show_default=True,
    help="Markdown table (the numbers go to the same name with .json).",
)
def summarize(
    runs: tuple[str, ...], out: str, plots_dir: str, eval_json: str | None, saes_dir: str | None
) -> None:
    """Aggregate evaluated run folders (evaluate.json + saes/) over seeds: tables and Pareto plots.

    Without the SAE folders (``--evaluate`` alone, or a run folder without ``saes/``) the
    hyper-parameters come from the entry names."""
    from pipeline.report.summarize import write_results

    pairs = summarize_sources(runs, eval_json, saes_dir, need_saes=False)
    summary = write_results(runs, out, plots_dir, pairs)
    click.echo(f"{len(summary)} groups → {out}")


@cli.command()
@click.argument("points", nargs=-1, required=True, metavar="TOKENS[+TAG]=EVALUATE_JSON...")
@click.option("-o", "--out", default="lengths.md", show_default=True, help="Markdown table (+ .json).")
@click.option(
    "--plot", "plot_path", default="lengths.png", show_default=True, help="PNG of the gaps vs tokens."
)
def lengths(points: tuple[str, ...], out: str, plot_path: str) -> None:
    """Each family's gradient variants and baselines, paired by seed, at several training
    lengths (an evaluate.json per length, e.g. of train.snapshot_tokens snapshots; a length
    given several times merges its files, e.g. sweeps that differ by seed; +TAG marks SAEs
    trained further, e.g. 4194304+klft=… for KL fine-tunes, compared with their untagged selves)."""
    from pipeline.report.lengths import Source, write_lengths

    split = [(*t.partition("+")[::2], path) for t, _, path in (p.partition("=") for p in points)]
    split = [(t, tag, path) for t, tag, path in split if t.isdigit() and path and (tag.isalnum() or not tag)]
    if len(split) != len(points):
        raise ConfigError(
            f"gsae lengths: every point must be TOKENS[+TAG]=EVALUATE_JSON, got {' '.join(points)}"
        )
    files: dict[int, list[Source]] = {}
    for t, tag, path in split:
        files.setdefault(int(t), []).append((tag, path) if tag else path)
    table = write_lengths(files, out, plot_path)
    click.echo(f"{len(table)} comparisons at {len(files)} lengths → {out}, {plot_path}")


@cli.command("first-order")
@run_sources
@click.option(
    "-o", "--out", default="first_order.md", show_default=True, help="Markdown (+ .json, .tracking.json)."
)
@click.option("--store", "store_url", required=True, help="The held-out store the runs were evaluated on.")
@click.option("--tokens", required=True, type=int, help="evaluate.tokens of the runs.")
@click.option("--first-token", default=0, show_default=True, help="evaluate.first_token of the runs.")
def first_order(
    runs: tuple[str, ...],
    out: str,
    plots_dir: str,
    eval_json: str | None,
    saes_dir: str | None,
    store_url: str,
    tokens: int,
    first_token: int,
) -> None:
    """`gsae summarize` plus the first-order loss error (fo_loss_err, recomputed from the store and
    SAE files, no LM) of every entry and its Spearman ρ with CE spliced − CE clean."""
    from pipeline.evaluate.firstorder import checked_first_order
    from pipeline.report.summarize import sources, write_results

    pairs = summarize_sources(runs, eval_json, saes_dir)
    extra: dict[str, dict[str, dict[str, float]]] = {}
    for path, saes in sources(runs, pairs):
        if saes is None:  # pragma: no cover - summarize_sources requires --saes here
            raise click.UsageError("gsae first-order needs the SAE folders")
        figures = checked_first_order(path, saes, store_url, first_token=first_token, tokens=tokens)
        for name, f in figures.items():
            click.echo(
                f"{name}: fo_loss_err {f['fo_loss_err']:.5f} fo_loss_delta {f['fo_loss_delta']:+.5f} "
                f"(fvu {f['fvu']:.4f})"
            )
        extra[str(path)] = {n: {k: v for k, v in f.items() if k != "fvu"} for n, f in figures.items()}
    summary = write_results(runs, out, plots_dir, pairs, extra)
    click.echo(f"{len(summary)} groups → {out}")


@cli.command()
@click.option(
    "--format",
    "fmt",
    required=True,
    metavar="NAME",
    help="Target layout: sparsify (topk variants) or saelens (batchtopk, matryoshka variants, as JumpReLU).",
)
@click.argument("src", type=click.Path(exists=True, file_okay=False))
@click.argument("dest", type=click.Path(file_okay=False))
def export(fmt: str, src: str, dest: str) -> None:
    """Write the trained variant folder SRC to DEST in another library's layout."""
    from pipeline.saes.export import FORMATS, export_sae

    if fmt not in FORMATS:  # checked here, not by click.Choice: the harvest must not import the SAEs
        raise click.BadParameter(
            f"{fmt!r} is not one of {', '.join(sorted(FORMATS))}", param_hint="'--format'"
        )
    click.echo(export_sae(src, dest, fmt))


@cli.command()
@params_options
@push_options
def push(
    params_path: tuple[str, ...],
    overrides: tuple[str, ...],
    repo_id: str,
    variants: tuple[str, ...],
    eval_json: str | None,
    dry_run: str | None,
    **where: Any,
) -> None:
    """Upload trained SAE folders (train.out_dir) with a model card to the Hub model repository REPO_ID.

    The token is huggingface_hub's: $HF_TOKEN, or the one `hf auth login` saved."""
    from pipeline.saes.publish import PushTarget, publish

    target = PushTarget(repo_id, **where)  # --revision, --private, --commit-message, --endpoint
    params = _load(params_files_or_defaults(params_path), overrides)  # outside a project: -s train.out_dir=
    click.echo(
        publish(target, params.train.out_dir, variants, eval_json, version=_version(), dry_run=dry_run)
    )


@cache.command("repair")
@params_options
@click.option("--heldout", is_flag=True, help="Repair the held-out store (evaluate.store).")
@lock_options
def cache_repair(
    params_path: tuple[str, ...], overrides: tuple[str, ...], heldout: bool, **lock: Any
) -> None:
    """Re-harvest only the damaged shards of the store the params describe (= gsae harvest --repair)."""
    from pipeline.harvest.run import run_harvest
    from pipeline.stores import heldout_params

    params = _load(params_path, overrides)
    if heldout:
        params = heldout_params(params)
    click.echo(run_harvest(params, repair=True, **lock))


cli.add_command(cache)

_RESUME_HINT = "committed shards and checkpoints are kept; rerun the same command to resume"


def main(argv: list[str] | None = None) -> None:
    """Console entry point: one-line errors unless --debug."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        cli.main(args=args, prog_name="gsae", standalone_mode=False)
    except click.exceptions.Abort as exc:
        interrupted = isinstance(exc.__cause__ or exc.__context__, KeyboardInterrupt)
        click.echo(f"gsae: interrupted ({_RESUME_HINT})" if interrupted else "gsae: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo(f"gsae: interrupted ({_RESUME_HINT})", err=True)
        sys.exit(130)
    except Exception as exc:
        if debug:
            raise
        line, code = error_line(exc)
        click.echo(line, err=True)
        sys.exit(code)


if __name__ == "__main__":
    main()
