"""Upgrading a version 1 store (every commit record in the ``committed`` attribute) to version 2.

Version 2 keeps one object per commit record (:mod:`cache.commits`). A writer that resumes
or repairs a version 1 store upgrades it first, in place: the layout and the seal
``attrs_sha256`` are checked, every record is written as its object, and one atomic
metadata write then replaces the attributes with the same ones minus ``committed``, with
``gsae_cache_version`` 2 and the seal recomputed. A kill before that last write leaves a
version 1 store (its objects are ignored and written again by the next upgrade); after
it, a version 2 store. Readers read both versions without upgrading anything.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import zarr

from cache.commits import create_commits_group, write_record
from cache.integrity import validate_layout
from cache.schema import CACHE_VERSION, CacheInfo, attrs_digest

logger = logging.getLogger(__name__)


def upgrade_v1(url: str, group: zarr.Group, info: CacheInfo) -> CacheInfo:
    """Upgrade the version 1 store ``group`` at ``url`` in place; returns its new info, records loaded."""
    info = validate_layout(url, group, info)
    create_commits_group(group)
    for record in info.records:
        write_record(group, record)
    attrs = {k: v for k, v in info.attrs.items() if k not in ("committed", "attrs_sha256")}
    attrs["gsae_cache_version"] = CACHE_VERSION
    if info.attrs_sha256 is not None:
        attrs["attrs_sha256"] = attrs_digest(attrs)
    group.attrs.put(attrs)
    logger.info(
        "store %s: upgraded from cache format version %d to %d (%d commit records as objects)",
        url,
        info.version,
        CACHE_VERSION,
        len(info.records),
    )
    return replace(CacheInfo.from_attrs(attrs), committed=info.records)
