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

What is no longer used is deleted (`sweep`, in a background thread, once per process and workspace,
at the first write of a cache there): a cache file that cannot be read or is of an older format,
or of an older version than the store of that name in this process; the columns of an eval whose
folder is gone; a writer's temporary file left for an hour; the caches of the layout before this
one (`logs/.labtui-runs-cache.json`, `logs/.labtui-history-cache.json`, and
`evals/<eval-id>/predictions.columns.json` beside each eval's predictions). Entries of runs and
evals that are gone drop out of `runs.json` and `history.json` when their owners save them.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from labtui.engine.rundir import store

DIR = ".labtui-cache"
FORMAT = 1  # the store file's layout; each store has a version of its own for its entries' shape
SMALL = 8192  # files up to this size are digested whole
CHUNK = 4096  # larger ones: their first and last CHUNK bytes

Stamp = tuple  # (size, mtime_ns, ctime_ns, inode, digest); None for a missing file

COLUMNS = "columns"  # columns/<run-id>/<eval-id>.json: kept while logs/<run-id>/evals/<eval-id> is there
OLD_FILES = (".labtui-runs-cache.json", ".labtui-history-cache.json")  # in logs/: the layout before DIR
OLD_EVAL_FILE = "predictions.columns.json"  # in each eval's folder: the layout before DIR
TMP_AGE_S = 3600.0  # a writer's temporary file this old was left by a killed process

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
        self.logs = Path(logs)
        self.path = path_for(logs, name)
        self.name = name
        self.version = version
        with _swept_lock:  # what sweep compares the files of this kind with: the newest known here
            _versions[_kind(name)] = max(version, _versions.get(_kind(name), version))
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
                return
        sweep_soon(self.logs)


# --- what is no longer used ------------------------------------------------------------------

_versions: dict[str, int] = {}  # a store's kind (its name up to the first "/") -> its version here
_swept: set[str] = set()  # the logs folders swept (or being swept) by this process
_swept_lock = threading.Lock()


def _kind(name: str) -> str:
    return name.partition("/")[0]


def _header(path: Path) -> dict | None:
    f = store.open_regular(path)
    if f is None:
        return None
    try:
        with f:
            head = json.loads(f.readline(4096))
    except (OSError, ValueError):
        return None
    return head if isinstance(head, dict) else None


def _outdated(path: Path, name: str) -> bool:
    """A cache file no store reads again: unreadable, not the store its path names, or of an older
    format or an older version than this process's store of that name (a newer one is left alone)."""
    h = _header(path)
    if h is None or h.get("name") != name:
        return True
    fmt, version = h.get("format"), h.get("version")
    if not isinstance(fmt, int) or not isinstance(version, int) or fmt < FORMAT:
        return True
    with _swept_lock:
        current = _versions.get(_kind(name))
    return fmt == FORMAT and current is not None and version < current


def _is_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def sweep(logs: str | os.PathLike) -> list[Path]:
    """Delete what no cache reads again (the module's doc says what); returns what was deleted.
    Anything that cannot be deleted (a read-only workspace) stays. Links are never followed."""
    logs = Path(logs)
    root = logs / DIR
    gone: list[Path] = []

    def remove(p: Path) -> None:
        try:
            p.unlink()
        except OSError:
            return
        gone.append(p)

    now = time.time()
    for folder, _, files in os.walk(root):
        rel = Path(folder).relative_to(root).as_posix()
        for f in files:
            p = Path(folder, f)
            if f.startswith(".") and f.endswith(".tmp"):  # store.atomic_write_text's
                try:
                    if now - os.lstat(p).st_mtime > TMP_AGE_S:
                        remove(p)
                except OSError:
                    pass
                continue
            if not f.endswith(".json"):
                continue  # not a cache file: not ours to delete
            name = f[:-5] if rel == "." else f"{rel}/{f[:-5]}"
            parts = name.split("/")
            if parts[0] == COLUMNS and (len(parts) != 3 or not _is_dir(logs / parts[1] / store.EVALS_DIR / parts[2])):
                remove(p)
            elif _outdated(p, name):
                remove(p)
    try:
        runs = list(os.scandir(root / COLUMNS))
    except OSError:
        runs = []
    for entry in runs:  # the folder of a run that is gone, once its columns are
        if entry.is_dir(follow_symlinks=False) and not os.path.lexists(logs / entry.name):
            try:
                os.rmdir(entry.path)
            except OSError:
                pass
    for f in OLD_FILES:
        p = logs / f
        if p.is_file() and not p.is_symlink():
            remove(p)
    try:
        run_dirs = [e for e in os.scandir(logs) if not e.name.startswith(".") and e.is_dir(follow_symlinks=False)]
    except OSError:
        run_dirs = []
    for run in run_dirs:
        try:
            evals = [e for e in os.scandir(os.path.join(run.path, store.EVALS_DIR)) if e.is_dir(follow_symlinks=False)]
        except OSError:
            continue
        for ev in evals:
            p = Path(ev.path, OLD_EVAL_FILE)
            if os.path.lexists(p):
                remove(p)
    return gone


def _sweep_quietly(logs: Path) -> None:
    try:
        sweep(logs)
    except Exception:  # noqa: BLE001 - tidying up must never break a reader or a writer
        pass


def sweep_soon(logs: str | os.PathLike) -> None:
    """`sweep(logs)` in a background thread, the first time this process writes a cache there."""
    key = os.fspath(logs)
    with _swept_lock:
        if key in _swept:
            return
        _swept.add(key)
    threading.Thread(target=_sweep_quietly, args=(Path(key),), name="labtui-cache-sweep", daemon=True).start()
