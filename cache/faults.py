"""Named fault points for the fault-injection script (tests/stress/fault_inject.py).

It lives in cache/ because the store writer has fault points and cache/ imports nothing
from the library; the library's checkpoints use it too.

``fault_point(name)`` does nothing unless the environment variable ``GSAE_FAULT`` is
``name`` or ``name:N``; then the N-th time (default the first) the process reaches that
point it kills itself with SIGKILL, exactly like a power cut or an OOM kill at that
instant. Reading the variable once per call costs nanoseconds next to the I/O around it.
"""

from __future__ import annotations

import os
import signal
import threading

PHASES = ("allocation", "shard_write", "commit", "commit_record", "finalize", "checkpoint_write", "sae_write")

_hits: dict[str, int] = {}
_lock = threading.Lock()


def fault_point(name: str) -> None:
    """SIGKILL this process here when ``GSAE_FAULT`` asks for ``name`` (see module doc)."""
    spec = os.environ.get("GSAE_FAULT")
    if not spec:
        return
    target, _, nth = spec.partition(":")
    if target != name:
        return
    with _lock:
        _hits[name] = _hits.get(name, 0) + 1
        hit = _hits[name]
    if hit == (int(nth) if nth else 1):
        os.kill(os.getpid(), signal.SIGKILL)
