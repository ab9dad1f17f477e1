"""The one cache of derived data: what is computed from a workspace's files and kept to save reading
them again (the run list's rows, History's evaluation rows and comparisons, an eval's predictions as
columns). metrics.idx is not a cache of this kind: it is written with metrics.jsonl, by its writer.

Where: `logs/.labtui-cache/` (DIR), one file per store: `runs.json`, `history.json`,
`columns/<run-id>/<eval-id>.json`. Deleting the folder is always safe (one slower start).

The rule: an entry records the `stamp` of every file it was derived from, and is used only while each
of those files has the same stamp. A stamp is (size, mtime_ns, ctime_ns, inode, digest), digest a
SHA-1 of the whole file when it has at most SMALL bytes, else of its first and last CHUNK bytes.
An edit in place changes ctime (which no one can set back, unlike mtime with os.utime), a replaced
or copied file has another inode, and the digest catches an edited small file (every JSON file of
a run) on a file system whose ctime or inodes cannot be trusted. The digest is read once per
process per (size, mtime, ctime, inode); after that a stamp costs one stat.

A store file is a header line (format, name, version, the digest of the rest) and one JSON line of
entries: a file that is damaged, hand-edited, of another version or of another store is a miss,
and is rewritten (atomically) on the next save. A workspace that cannot be written keeps its
caches in memory for the process. Standard library only.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import threading
from pathlib import Path
from typing import Any, Callable, Iterable

from labtui.engine.rundir import store

DIR = ".labtui-cache"
FORMAT = 1  # the store file's layout; each store has a version of its own for its entries' shape
SMALL = 8192  # files up to this size are digested whole
CHUNK = 4096  # larger ones: their first and last CHUNK bytes

Stamp = tuple  # (size, mtime_ns, ctime_ns, inode, digest); None for a missing file

def _hash(data: bytes) -> str:
    """A checksum, not a seal (SHA-1: the fastest here), 64 bits of it: enough to see a change."""
    return hashlib.sha1(data, usedforsecurity=False).hexdigest()[:16]


_digests: dict[str, tuple[tuple, str]] = {}  # path -> (stat part, digest): read once per version
_digests_lock = threading.Lock()


_READ = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def _digest(path: str, size: int) -> str:
    """The content part of a regular file's stamp (plain os calls: a scan digests thousands)."""
    try:
        fd = os.open(path, _READ)  # never follows a link, never waits on a FIFO
    except OSError:
        return ""
    try:
        data = os.read(fd, SMALL + 1) if size <= SMALL else os.pread(fd, CHUNK, 0) + os.pread(fd, CHUNK, size - CHUNK)
    except OSError:
        return ""
    finally:
        os.close(fd)
    return _hash(data)


def stamp(path: str | os.PathLike) -> Stamp | None:
    """The file's stamp (see the module's rule), or None when it does not exist."""
    p = os.fspath(path)
    try:
        st = os.lstat(p)
    except (OSError, ValueError):
        return None
    part = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    hit = _digests.get(p)
    if hit is not None and hit[0] == part:
        return (*part, hit[1])
    digest = _digest(p, st.st_size) if stat.S_ISREG(st.st_mode) else ""
    with _digests_lock:
        _digests[p] = (part, digest)
    return (*part, digest)


def stamps(paths: Iterable[str | os.PathLike]) -> tuple:
    """The stamps of several files, in order: what an entry derived from all of them is keyed by."""
    return tuple(stamp(p) for p in paths)


def path_for(logs: str | os.PathLike, name: str) -> Path:
    """Where the store `name` of the workspace whose logs folder is `logs` lives."""
    return Path(logs) / DIR / f"{name}.json"


def _as_stamps(x: Any) -> tuple | None:
    if not isinstance(x, list):
        return None
    return tuple(tuple(s) if isinstance(s, list) else s for s in x)


class Store:
    """One cache file: entries key -> (stamps, value), value anything JSON can hold. Thread-safe."""

    def __init__(self, logs: str | os.PathLike, name: str, version: int):
        self.path = path_for(logs, name)
        self.name = name
        self.version = version
        self.lock = threading.RLock()
        self.entries: dict[str, tuple[tuple, Any]] = {}
        self.loaded = False
        self.dirty = False

    def load(self) -> None:
        """Read the file once (a damaged or foreign one: no entries)."""
        with self.lock:
            if self.loaded:
                return
            self.loaded = True
            f = store.open_regular(self.path)
            if f is None:
                return
            try:
                with f:
                    head, _, body = f.read().partition(b"\n")
                h = json.loads(head)
                if (h.get("format") != FORMAT or h.get("name") != self.name or h.get("version") != self.version
                        or h.get("digest") != _hash(body)):
                    return
                entries = json.loads(body)
                for key, (st, value) in entries.items():
                    stamps_ = _as_stamps(st)
                    if stamps_ is not None:
                        self.entries[key] = (stamps_, value)
            except (OSError, ValueError, TypeError, AttributeError):
                self.entries.clear()

    def get(self, key: str, stamps_: tuple) -> Any:
        """The value stored under `key` if it was derived from files with these stamps (None for a
        file that was missing then and is still missing), else None."""
        with self.lock:
            self.load()
            hit = self.entries.get(key)
            if hit is None or hit[0] != tuple(stamps_):
                return None
            return hit[1]

    def put(self, key: str, stamps_: tuple, value: Any) -> None:
        with self.lock:
            self.load()
            entry = (tuple(stamps_), value)
            if self.entries.get(key) != entry:
                self.entries[key] = entry
                self.dirty = True

    def prune(self, keep: Callable[[str], bool]) -> None:
        """Drop the entries whose key `keep` refuses (what is gone from the workspace)."""
        with self.lock:
            self.load()
            gone = [k for k in self.entries if not keep(k)]
            for k in gone:
                del self.entries[k]
            self.dirty = self.dirty or bool(gone)

    def save(self) -> None:
        """Write the entries if they changed, atomically; a workspace that cannot be written keeps
        them in memory only."""
        with self.lock:
            if not self.dirty:
                return
            self.dirty = False
            body = json.dumps({k: [list(st), v] for k, (st, v) in self.entries.items()},
                              separators=(",", ":")).encode()
            head = json.dumps({"format": FORMAT, "name": self.name, "version": self.version,
                               "digest": _hash(body)})
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                store.atomic_write_text(self.path, head + "\n" + body.decode())
            except OSError:  # a read-only workspace: the cache lives for this process only
                pass
