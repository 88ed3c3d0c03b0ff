"""SHA-256 of files, remembered by (path, size, mtime, inode) so big weights hash once.

The memo is a small JSON file, ``$GSAE_HASH_CACHE`` or ``<XDG cache>/gsae/file-hashes.json``
(``~/.cache/gsae/file-hashes.json``). A file rewritten in place gets a new mtime (and
usually size), so its hash is recomputed; failures to read or write the memo only cost a
rehash.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from pipeline.core.fileio import atomic_write_text

log = logging.getLogger(__name__)

CHUNK = 1 << 22


def memo_path() -> Path:
    """Where the memo lives."""
    explicit = os.environ.get("GSAE_HASH_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "gsae" / "file-hashes.json"


def _load(path: Path) -> dict[str, dict[str, object]]:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of the file's bytes (streamed)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def file_digests(files: list[Path]) -> list[str]:
    """SHA-256 of each file, from the memo when its path, size, mtime and inode match."""
    memo_file = memo_path()
    memo = _load(memo_file)
    changed = False
    out = []
    for f in files:
        st = f.stat()
        key = str(f.resolve())
        stamp = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino}
        entry = memo.get(key)
        if isinstance(entry, dict) and all(entry.get(k) == v for k, v in stamp.items()):
            out.append(str(entry["sha256"]))
            continue
        log.debug("hashing %s (%d bytes)", f, st.st_size)
        digest = sha256_file(f)
        memo[key] = {**stamp, "sha256": digest}
        changed = True
        out.append(digest)
    if changed:
        try:
            atomic_write_text(memo_file, json.dumps(memo, indent=0, sort_keys=True))
        except OSError as exc:
            log.debug("cannot write the hash memo %s: %s", memo_file, exc)
    return out
