"""``gsae cache``: inspect and verify cache stores (local paths or fsspec URLs).

A group of its own so that stages/cli.py keeps the pipeline's stages. cli.py registers it and
adds ``cache repair`` to it there, because repairing re-runs the harvest.
"""

from __future__ import annotations

import json

import click

from pipeline.core.errors import PipelineError


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
