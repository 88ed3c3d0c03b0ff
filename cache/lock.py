"""A store's write lock: one writer at a time, with owner and heartbeat.

The lock is a small JSON file beside the store (``<store>.lock``, outside the Zarr tree
so re-allocating the store cannot delete it) holding the owner (user, host, pid, command),
when it was taken and a heartbeat the holder refreshes every ``heartbeat_s`` seconds.

A second writer is refused with a message naming the holder. A lock whose holder is a
process of this host that no longer runs (a killed harvest) is taken over with a log
line, so a plain rerun resumes. Any other lock is only broken when asked
(``--break-lock``); the message says when the heartbeat stopped so the user can tell a
stale lock from a live writer on another machine. On local disks the lock is created
with ``O_EXCL`` (atomic); on other fsspec filesystems creation is best effort. The
folders a local lock had to create are removed again on release when they are still empty,
so a harvest that fails before writing its store leaves no empty folder behind.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import logging
import os
import socket
import sys
import threading
import time
from typing import Any

import fsspec

from cache.errors import CacheLocked, CacheWriteError

logger = logging.getLogger(__name__)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner() -> dict[str, Any]:
    try:
        user = getpass.getuser()
    except Exception:  # no user name in this environment
        user = str(os.getuid())
    now = time.time()
    return {
        "user": user,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "command": " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))[:200],
        "started": now,
        "heartbeat": now,
    }


def describe_holder(holder: dict[str, Any]) -> str:
    """``user@host pid N (command), heartbeat Ns ago``."""
    age = time.time() - float(holder.get("heartbeat", 0) or 0)
    return (
        f"{holder.get('user', '?')}@{holder.get('host', '?')} pid {holder.get('pid', '?')} "
        f"({holder.get('command', '?')}), last heartbeat {age:.0f}s ago"
    )


class StoreLock:
    """Context manager holding the write lock of the store at ``url``."""

    def __init__(self, url: str, *, break_lock: bool = False, heartbeat_s: float = 10.0) -> None:
        self.url, self.break_lock, self.heartbeat_s = url, break_lock, heartbeat_s
        self.fs, root = fsspec.core.url_to_fs(url)
        self.path = root.rstrip("/") + ".lock"
        self.local = "file" in (
            self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        )
        self.owner = _owner()
        self._made: list[str] = []
        """Folders created for the lock file, deepest first (removed on release when empty)."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def holder(self) -> dict[str, Any] | None:
        """The lock file's content, ``None`` when there is no lock (an unreadable lock reads as ``{}``)."""
        try:
            return json.loads(self.fs.cat_file(self.path))
        except FileNotFoundError:
            return None
        except (ValueError, OSError):
            return {}

    def _create(self) -> bool:
        blob = json.dumps(self.owner).encode()
        try:
            if self.local:
                self._make_parents()
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                with os.fdopen(fd, "wb") as f:
                    f.write(blob)
                return True
            if self.fs.exists(self.path):
                return False
            self.fs.pipe_file(self.path, blob)
            return True
        except FileExistsError:
            return False
        except OSError as exc:
            raise CacheWriteError(
                f"cannot write store {self.url}: cannot create its lock {self.path}: {exc.strerror or exc}"
            ) from exc

    def _make_parents(self) -> None:
        folder = os.path.abspath(os.path.dirname(self.path) or ".")
        missing = []
        while not os.path.isdir(folder) and os.path.dirname(folder) != folder:
            missing.append(folder)
            folder = os.path.dirname(folder)
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        self._made = missing

    def acquire(self) -> None:
        """Take the lock or raise ``CacheLocked`` naming its holder."""
        for _ in range(3):
            if self._create():
                break
            holder = self.holder()
            if holder is None:
                continue  # released in between
            dead = (
                holder.get("host") == self.owner["host"]
                and isinstance(holder.get("pid"), int)
                and not _pid_alive(holder["pid"])
            )
            if self.break_lock or dead:
                why = (
                    "breaking it as asked" if self.break_lock else "that process no longer runs; taking over"
                )
                logger.warning("store %s was locked by %s: %s", self.url, describe_holder(holder), why)
                self.fs.rm_file(self.path)
                continue
            raise CacheLocked(
                f"store {self.url} is locked by {describe_holder(holder)}; wait for it to finish, or "
                "if that process is gone rerun with --break-lock"
            )
        else:
            raise CacheLocked(f"store {self.url}: could not take its lock {self.path}")
        self._thread = threading.Thread(target=self._beat, name="gsae-lock-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            if not self.held():
                logger.error("store %s: lost its lock (broken by another process)", self.url)
                return
            self.owner["heartbeat"] = time.time()
            with contextlib.suppress(OSError):  # a full disk must not kill the harvest; the lock stays
                self._rewrite()

    def _rewrite(self) -> None:
        """Replace the lock's content; atomically on local disks, so a reader never sees half a file."""
        blob = json.dumps(self.owner).encode()
        if not self.local:
            self.fs.pipe_file(self.path, blob)
            return
        tmp = f"{self.path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(blob)
        os.replace(tmp, self.path)

    def held(self) -> bool:
        """Whether the lock file still names this process."""
        holder = self.holder()
        return holder is not None and all(holder.get(k) == self.owner[k] for k in ("pid", "host", "started"))

    def check(self) -> None:
        """``CacheLocked`` when another process broke this lock (then this writer must stop)."""
        for _ in range(3):
            holder = self.holder()
            if holder != {}:  # {} = unreadable for a moment (a non-local filesystem mid-rewrite): look again
                break
            time.sleep(0.05)
        if holder != {} and not self.held():
            raise CacheLocked(f"store {self.url}: this writer's lock was broken by another process; stopping")

    def release(self) -> None:
        """Stop the heartbeat and remove the lock if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            if self.held():
                self.fs.rm_file(self.path)
        except OSError:
            logger.warning("could not remove the lock %s", self.path)
        for folder in self._made:  # deepest first; stops mattering at the first one still in use
            with contextlib.suppress(OSError):
                os.rmdir(folder)

    def __enter__(self) -> StoreLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
