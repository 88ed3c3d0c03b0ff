"""``gsae cache``: inspect, verify and repair cache stores (local paths or fsspec URLs).

A group of its own so that stages/cli.py keeps the pipeline's stages; cli.py registers it.
"""

from __future__ import annotations

import json
from typing import Any

import click

from pipeline.core.errors import PipelineError
from stages.options import load as _load
from stages.options import lock_options, params_options


@click.group()
def cache() -> None:
    """Inspect and check cache stores (local paths or fsspec URLs)."""


@cache.command("info")
@click.argument("url")
def cache_info(url: str) -> None:
    """Print a store's schema, model, hooks, tokens, shards and bytes as JSON."""
    from cache.verify import describe

    click.echo(json.dumps(describe(url), indent=2))


@cache.command("verify")
@click.argument("url")
def cache_verify(url: str) -> None:
    """Exit 0 only if every committed shard matches its checksum."""
    from cache.verify import verify

    report = verify(url)
    for problem in report.bad:
        click.echo(f"BAD {problem}", err=True)
    state = "complete" if report.complete else "incomplete"
    if not report.ok:
        raise PipelineError(f"{url}: {len(report.bad)} problem(s) in {report.checked} committed shards")
    click.echo(f"OK {url}: {report.checked} committed shards verified ({state})")


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
