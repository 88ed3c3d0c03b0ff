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
import threading
import urllib.error
import urllib.request

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
