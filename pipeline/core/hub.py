"""Fail fast, with one line, when a Hugging Face hub id is used without the hub.

Without this, ``transformers`` and ``datasets`` retry for 30–50 s before failing with a
multi-line error. :func:`hub_access` answers once per process: ``HF_HUB_OFFLINE`` (or
``TRANSFORMERS_OFFLINE`` / ``HF_DATASETS_OFFLINE``) set means offline; otherwise one HTTP
``HEAD`` of the hub endpoint (``HF_ENDPOINT``; proxies from the environment apply) must get
an answer, any status, within :data:`PROBE_TIMEOUT_S`, name resolution included.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import threading
import urllib.error
import urllib.request
from pathlib import Path

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 3.0
"""Seconds the reachability probe may take (name resolution included)."""
DEFAULT_ENDPOINT = "https://huggingface.co"
_TRUE = {"1", "true", "yes", "on"}


def offline_env(*extra: str) -> str | None:
    """The offline variable that is set (``HF_HUB_OFFLINE`` first), else None."""
    for name in ("HF_HUB_OFFLINE", *extra):
        if os.environ.get(name, "").strip().lower() in _TRUE:
            return name
    return None


def endpoint() -> str:
    """The hub URL requests go to."""
    return os.environ.get("HF_ENDPOINT", "").strip() or DEFAULT_ENDPOINT


@functools.lru_cache(maxsize=8)
def _reachable(url: str, timeout: float) -> str | None:
    """None when ``url`` answers a HEAD request (any HTTP status) within ``timeout``, else why not."""
    result: list[str | None] = [f"no answer within {timeout:g} s"]

    def probe() -> None:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
                result[0] = None
        except urllib.error.HTTPError:  # the server answered
            result[0] = None
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            result[0] = getattr(reason, "strerror", None) or str(reason) or type(exc).__name__

    worker = threading.Thread(target=probe, name="gsae-hub-probe", daemon=True)
    worker.start()
    worker.join(timeout)
    return result[0]


def hub_access(*offline_vars: str) -> str | None:
    """None when the hub can be used; else one phrase saying why not."""
    var = offline_env(*offline_vars)
    if var is not None:
        return f"{var} is set"
    why = _reachable(endpoint(), PROBE_TIMEOUT_S)
    if why is not None:
        log.debug("hub probe of %s failed: %s", endpoint(), why)
        return f"the hub ({endpoint()}) is unreachable: {why}"
    return None


def cached_model(repo_id: str, revision: str | None) -> bool:
    """Whether ``repo_id``'s config.json is in the local hub cache (usable offline)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers depends on it
        return False
    try:
        found = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    except Exception:  # a malformed id: let the loader report it
        return False
    return isinstance(found, str)


_COMMIT = re.compile(r"[0-9a-f]{40}")


def _cached_commit(repo_id: str, revision: str, repo_type: str, cache_dir: str | None) -> str | None:
    """The commit ``revision`` points at in the local hub cache (its ``refs/<revision>`` file), if there."""
    from huggingface_hub import constants

    folder = Path(cache_dir or constants.HF_HUB_CACHE) / f"{repo_type}s--{repo_id.replace('/', '--')}"
    ref = folder / "refs" / revision
    if ref.is_file():
        commit = ref.read_text().strip()
        return commit if _COMMIT.fullmatch(commit) else None
    return None


@functools.lru_cache(maxsize=32)  # one answer per process: the key and the loading see the same commit
def resolve_commit(
    repo_id: str, revision: str | None, repo_type: str = "model", cache_dir: str | None = None
) -> str | None:
    """The commit a hub repo's ``revision`` (default ``main``) resolves to now.

    Asked from the hub when it can be used (:func:`hub_access`), else read from the local
    hub cache; ``None`` when neither knows (loading will then fail with its own line).
    A full commit hash is returned as is. Keys and attributes record this commit, not
    the moving name, so a new upload under ``main`` makes a new store.
    """
    rev = revision or "main"
    if _COMMIT.fullmatch(rev):
        return rev
    if hub_access("TRANSFORMERS_OFFLINE" if repo_type == "model" else "HF_DATASETS_OFFLINE") is None:
        try:
            from huggingface_hub import HfApi

            return HfApi(endpoint=endpoint()).repo_info(repo_id, revision=rev, repo_type=repo_type).sha
        except Exception as exc:  # unknown repo, gated, a network error: let the loader report it
            log.debug("cannot resolve %s@%s on the hub: %s", repo_id, rev, exc)
    return _cached_commit(repo_id, rev, repo_type, cache_dir)
