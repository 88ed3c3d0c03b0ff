"""A process racing others for a store's write lock (tests/test_s3.py starts several at once).

Kept apart from the test modules so a spawned process imports only the lock, not the tests'
fixtures and models.
"""

from __future__ import annotations

import os
from typing import Any


def contend(url: str, start: Any, tried: Any, results: Any) -> None:
    """Wait for every racer, take the lock at the same moment, report, and keep a won lock until
    every racer has tried."""
    from cache.errors import CacheLocked
    from cache.lock import StoreLock

    lock = StoreLock(url, heartbeat_s=60)
    start.wait()
    try:
        lock.acquire()
        results.put(("holder", os.getpid(), ""))
    except CacheLocked as exc:
        results.put(("locked", os.getpid(), str(exc)))
    except Exception as exc:  # reported to the test, not lost in the child
        results.put(("error", os.getpid(), f"{type(exc).__name__}: {exc}"))
    tried.wait()
    lock.release()
