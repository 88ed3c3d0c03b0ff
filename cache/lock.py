"""A store's write lock: one writer at a time, with owner and heartbeat.

The lock is a small JSON file beside the store (``<store>.lock``, outside the Zarr tree
so re-allocating the store cannot delete it) holding the owner (user, host, pid, command),
when it was taken and a heartbeat the holder refreshes every ``heartbeat_s`` seconds.

A second writer is refused with a message naming the holder. A lock whose holder is a
process of this host that no longer runs (a killed harvest) is taken over with a log
line, so a plain rerun resumes. Any other lock is only broken when asked
(``--break-lock``); the message says when the heartbeat stopped so the user can tell a
stale lock from a live writer on another machine. The folders a local lock had to create
are removed again on release when they are still empty, so a harvest that fails before
writing its store leaves no empty folder behind.

The lock is created atomically, so of writers racing for it exactly one wins:

- local disk: ``open(O_CREAT | O_EXCL)``;
- S3 (``s3://``, ``s3a://``): a conditional PUT, ``If-None-Match: *`` (s3fs's
  ``pipe_file(mode="create")``), which the server refuses with 412 Precondition Failed
  when the object exists (AWS S3 and servers that implement conditional writes);
- ``memory://``: fsspec's memory filesystem is a dict inside this process, so a check and
  create under one process-wide ``threading.Lock`` is atomic for every writer that can
  see it.

Any other fsspec filesystem has no atomic create known here: taking its lock is refused
(``CacheLockUnsupported``) unless asked for a best-effort lock (``unsafe=True``,
``--unsafe-lock``: an existence check then a write, which two writers starting at the same
moment can both pass). Refreshing the heartbeat overwrites the holder's own lock file (an
atomic rename on local disks, one PUT on S3); releasing deletes it.
"""

from __future__ import annotations

import contextlib
import errno
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

from cache.errors import CacheLocked, CacheLockUnsupported, CacheWriteError

logger = logging.getLogger(__name__)

CONDITIONAL_PUT = frozenset({"s3", "s3a"})
"""Protocols whose filesystem creates an object only if absent (``pipe_file(mode="create")``)."""

_MEMORY = threading.Lock()
"""Makes check-and-create atomic on ``memory://`` (a dict of this process)."""


def lock_kind(fs: fsspec.AbstractFileSystem) -> str:
    """How a lock is created atomically on ``fs``: ``local``, ``conditional``, ``memory`` or ``none``."""
    protocols = set(fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))
    if "file" in protocols:
        return "local"
    if protocols & CONDITIONAL_PUT:
        return "conditional"
    if "memory" in protocols:
        return "memory"
    return "none"


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
    """Context manager holding the write lock of the store at ``url``.

    ``unsafe`` accepts a best-effort lock on a filesystem with no atomic create (see the
    module docstring); without it such a filesystem is refused.
    """

    def __init__(
        self, url: str, *, break_lock: bool = False, heartbeat_s: float = 10.0, unsafe: bool = False
    ) -> None:
        self.url, self.break_lock, self.heartbeat_s, self.unsafe = url, break_lock, heartbeat_s, unsafe
        self.fs, root = fsspec.core.url_to_fs(url)
        self.path = root.rstrip("/") + ".lock"
        self.kind = lock_kind(self.fs)
        self.local = self.kind == "local"
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
        """Create the lock file holding this owner; ``False`` when it exists (atomic: module docstring)."""
        blob = json.dumps(self.owner).encode()
        try:
            if self.kind == "local":
                self._make_parents()
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                with os.fdopen(fd, "wb") as f:
                    f.write(blob)
            elif self.kind == "conditional":
                self.fs.pipe_file(self.path, blob, mode="create")  # If-None-Match: * (412 if it exists)
            elif self.kind == "memory":
                with _MEMORY:
                    if self.fs.exists(self.path):
                        return False
                    self.fs.pipe_file(self.path, blob)
            else:
                return self._create_best_effort(blob)
            return True
        except FileExistsError:
            return False
        except OSError as exc:
            hint = ""
            if self.kind == "conditional" and exc.errno in (errno.EINVAL, errno.ENOSYS):
                hint = " (does the server support conditional writes, If-None-Match?)"
            raise CacheWriteError(
                f"cannot write store {self.url}: cannot create its lock {self.path}: "
                f"{exc.strerror or exc}{hint}"
            ) from exc

    def _make_parents(self) -> None:
        folder = os.path.abspath(os.path.dirname(self.path) or ".")
        missing = []
        while not os.path.isdir(folder) and os.path.dirname(folder) != folder:
            missing.append(folder)
            folder = os.path.dirname(folder)
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        self._made = missing

    def _create_best_effort(self, blob: bytes) -> bool:
        """Check, write, read back: two writers starting at the same moment can both pass."""
        if not self.unsafe:
            scheme = self.url.split("://", 1)[0] if "://" in self.url else self.kind
            raise CacheLockUnsupported(
                f"store {self.url}: its filesystem ({scheme}://) cannot create the write lock atomically, "
                "so two writers could both take it; write the store to a local disk, s3:// or memory://, "
                "or rerun with --unsafe-lock for a best-effort lock (make sure no other process writes it)"
            )
        if self.fs.exists(self.path):
            return False
        logger.warning("store %s: taking a best-effort lock (no atomic create on this filesystem)", self.url)
        self.fs.pipe_file(self.path, blob)
        return self.held()

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
