"""Options several ``gsae`` commands share, and the sources they resolve.

``-p`` / ``-s`` (the params file(s) and dotted overrides) for the commands that read params,
the write-lock flags of the commands that write a store, ``gsae push``'s options,
and the evaluated runs that ``gsae summarize`` and ``gsae first-order`` aggregate (run folders,
or ``--evaluate`` with ``--saes``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

DEFAULT_PARAMS = "params.yaml"


def lock_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--break-lock`` and ``--unsafe-lock`` (the store's write lock, cache/lock.py) as keyword arguments."""
    fn = click.option(
        "--unsafe-lock",
        is_flag=True,
        help="Accept a best-effort write lock where the store's filesystem cannot create one atomically.",
    )(fn)
    return click.option(
        "--break-lock", is_flag=True, help="Take the store's write lock even if another process holds it."
    )(fn)


def params_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``-p FILE`` (repeatable, layered) and ``-s KEY=VALUE`` (repeatable)."""
    fn = click.option(
        "-s",
        "--set",
        "overrides",
        multiple=True,
        metavar="KEY=VALUE",
        help="Override a params key (dotted, repeatable).",
    )(fn)
    return click.option(
        "-p",
        "--params",
        "params_path",
        multiple=True,
        default=(DEFAULT_PARAMS,),
        show_default=True,
        help="Params file; repeat to layer files (later ones override earlier ones key by key).",
    )(fn)


def load(params_path: tuple[str, ...], overrides: tuple[str, ...]) -> Any:
    """The params of ``-p`` files and ``-s`` overrides (:func:`pipeline.core.loader.load_params`)."""
    from pipeline.core.loader import load_params

    return load_params(params_path, overrides)


def params_files_or_defaults(params_path: tuple[str, ...]) -> tuple[str, ...]:
    """``params_path``, or none when it is only the default ``params.yaml`` and that is absent
    (``gsae params`` outside a project lists the code defaults)."""
    if params_path == (DEFAULT_PARAMS,) and not Path(DEFAULT_PARAMS).is_file():
        return ()
    return params_path


def run_sources(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The evaluated runs a command reads: run folders, or ``--evaluate`` + ``--saes``; and ``--plots-dir``."""
    fn = click.option("--saes", "saes_dir", help="... and the folder of its trained SAEs (e.g. data/saes).")(
        fn
    )
    fn = click.option(
        "--evaluate", "eval_json", help="A metrics JSON outside a run folder (e.g. metrics/evaluate.json) ..."
    )(fn)
    fn = click.option("--plots-dir", default="plots", show_default=True, help="Folder of the Pareto PNGs.")(
        fn
    )
    return click.argument("runs", nargs=-1)(fn)


def summarize_sources(
    runs: tuple[str, ...], eval_json: str | None, saes_dir: str | None, *, need_saes: bool = True
) -> list[tuple[str, str | None]]:
    """The (metrics JSON, SAE folder) pairs besides the run folders; ``--saes`` may be left out
    when ``need_saes`` is false (the hyper-parameters then come from the entry names)."""
    if saes_dir is not None and eval_json is None:
        raise click.UsageError("--saes needs --evaluate")
    if eval_json is not None and saes_dir is None and need_saes:
        raise click.UsageError("--evaluate and --saes go together")
    pairs: list[tuple[str, str | None]] = [(eval_json, saes_dir)] if eval_json else []
    if not runs and not pairs:
        raise click.UsageError("give run folders or --evaluate/--saes")
    return pairs


def push_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``gsae push``'s argument and options: REPO_ID, the variants, the card's figures, the commit."""
    options = [
        click.argument("repo_id"),
        click.option(
            "--variant",
            "variants",
            multiple=True,
            metavar="NAME",
            help="Push only this variant folder of train.out_dir (repeatable; default: every trained variant).",
        ),
        click.option(
            "--evaluate",
            "eval_json",
            metavar="FILE",
            help="An evaluate.json (e.g. metrics/evaluate.json) whose figures go into the model card.",
        ),
        click.option(
            "--private",
            is_flag=True,
            help="Create the repository private (an existing one keeps its visibility).",
        ),
        click.option(
            "--revision",
            metavar="BRANCH",
            help="Commit to this branch (created when missing; default: main).",
        ),
        click.option("--commit-message", metavar="TEXT", help="The commit's summary line."),
        click.option(
            "--endpoint",
            metavar="URL",
            help="The Hub's URL (default: $HF_ENDPOINT or https://huggingface.co).",
        ),
        click.option(
            "--dry-run",
            "dry_run",
            metavar="DIR",
            help="Write the folder that would be uploaded (SAE folders + README.md) to DIR; upload nothing.",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn
