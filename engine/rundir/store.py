"""The run store: `logs/<run-id>/` directories, the contract between the worker and every reader.

One writer per file, so no locks are needed:
  run.json       written once at creation (id, experiment, parent, command, changed keys)
  config.yaml    the resolved experiment config
  env.json       environment (versions, device, host, git commit, command line)
  state.json     lifecycle: status, pids, host, heartbeat, exit code/signal (supervisor, launcher)
  progress.json  the latest numbers: step, losses, checkpoint, final result (worker)
  metrics.jsonl  append-only records, one JSON object per line (worker)
  metrics.idx    a fixed-width binary index of metrics.jsonl: one 40-byte entry per line (worker)
  system.jsonl   append-only machine samples (supervisor)
  alerts.jsonl   append-only watchdog alerts
  worker.log     stdout and stderr of the worker
  checkpoints/   Trainer checkpoints;  evals/<eval-id>/  evaluations;  notes.md  the user's notes
JSON state files are replaced atomically (temp file + rename); JSONL files are only appended to.
Nothing here imports torch or textual.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
import secrets
import socket
import stat
import struct
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Final, Iterator, cast

from labtui.engine.rundir import records
from labtui.engine.rundir.records import Progress, Row, RunInfo, State, Summary

# the coercers and `clean` live with the records they check; their names here are kept for every reader
from labtui.engine.rundir.records import as_changed as as_changed
from labtui.engine.rundir.records import as_finite as as_finite
from labtui.engine.rundir.records import as_flag as as_flag
from labtui.engine.rundir.records import as_mapping as as_mapping
from labtui.engine.rundir.records import as_real as as_real
from labtui.engine.rundir.records import as_reals as as_reals
from labtui.engine.rundir.records import as_text as as_text
from labtui.engine.rundir.records import as_texts as as_texts
from labtui.engine.rundir.records import as_whole as as_whole
from labtui.engine.rundir.records import clean as clean

RUN_FILE = "run.json"
STATE_FILE = "state.json"
PROGRESS_FILE = "progress.json"
CONFIG_FILE = "config.yaml"
ENV_FILE = "env.json"
METRICS_FILE = "metrics.jsonl"
METRICS_INDEX_FILE = "metrics.idx"
SYSTEM_FILE = "system.jsonl"
ALERTS_FILE = "alerts.jsonl"
LOG_FILE = "worker.log"
NOTES_FILE = "notes.md"
CHECKPOINTS_DIR = "checkpoints"
EVALS_DIR = "evals"

# keys of the run directory's records spelled in many readers (records.py; Final, so they index a TypedDict)
CHECKPOINT_STEP: Final = records.CHECKPOINT_STEP
TOKENS_PER_S: Final = records.TOKENS_PER_S

STATUSES = ("queued", "starting", "running", "completed", "failed", "stopped", "crashed")
LIVE = ("starting", "running")
FINAL = ("completed", "failed", "stopped", "crashed")
# A live run whose supervisor is on another host is judged by its heartbeat alone.
HEARTBEAT_STALE_S = 30.0
# derive_state's `warning` for a run whose supervisor was killed while its worker goes on
SUPERVISOR_GONE = "supervisor gone, worker alive: no heartbeat, no queue advance"


class RunNotFound(LookupError):
    """An unknown or ambiguous run reference; the message lists what to try."""


# --- small file helpers -----------------------------------------------------------------------


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "item"):  # numpy / torch scalars
        return o.item()
    return str(o)


def dumps(obj: Any) -> str:
    """JSON that keeps NaN and Infinity (Python's json reads them back); a NaN loss must stay visible."""
    return json.dumps(obj, default=_json_default, allow_nan=True)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, default=_json_default, indent=2, sort_keys=True) + "\n")


def open_regular(path: Path) -> BinaryIO | None:
    """`path` opened for reading (binary) if it is a regular file, else None: missing, a FIFO (whose
    open would wait for a writer, hanging the reader), a device, a folder, or a symlink (a file of a
    run folder is read only if it is really there: a `notes.md` linked to /etc/passwd is not read)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except (OSError, ValueError):
        return None
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            return os.fdopen(fd, "rb")
    except OSError:
        pass
    os.close(fd)
    return None


def is_regular(path: Path) -> bool:
    """True if `path` is a regular file and not a symlink (what `open_regular` would open)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except (OSError, ValueError):
        return False


def read_text(path: Path, default: str = "") -> str:
    """A regular file's text (undecodable bytes replaced), or `default` (see `open_regular`)."""
    f = open_regular(path)
    if f is None:
        return default
    try:
        with f:
            return f.read().decode("utf-8", "replace")
    except OSError:
        return default


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive flock on `path` (created if missing) for the block: one writer at a time across processes."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def read_json(path: Path, default: Any = None) -> Any:
    """A regular file's JSON, or `default` when it is missing, not a regular file, or not JSON."""
    f = open_regular(path)
    if f is None:
        return default
    try:
        with f:
            return json.load(f)
    except (ValueError, OSError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return default


def append_jsonl(path: Path, record: dict) -> None:
    """One write() of one complete line, so concurrent readers see whole lines or a partial tail."""
    line = (dumps(record) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


class JsonlWriter:
    """Keeps the file open for a long stream of appends (the training callback's hot path)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, record: dict) -> None:
        os.write(self._fd, (dumps(record) + "\n").encode())

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


# --- typed fields: a field of the wrong type is a missing field ---------------------------------
#
# A run folder may hold anything (an older or newer writer, a hand edit, a disk error): every reader
# takes its files through `clean`, so `"created": "yesterday"` reads as no creation time rather than a
# TypeError in whatever formats it. The JSON files' keys and types are declared once, as TypedDicts in
# records.py (RunInfo, State, Progress, EnvInfo, ...); the coercer tables below are derived from them.

RUN_FIELDS = records.RUN_FIELDS
STATE_FIELDS = records.STATE_FIELDS
PROGRESS_FIELDS = records.PROGRESS_FIELDS
ENV_FIELDS = records.ENV_FIELDS


def record_check(fields: dict[str, Callable[[Any], Any]]) -> Callable[[dict], bool]:
    """A test for a JSONL record: each of `fields` it has is null or of its type. A record that fails it
    is skipped and counted by the readers, like a line that is not JSON."""
    items = tuple(fields.items())

    def ok(rec: dict) -> bool:
        for key, coerce in items:
            value = rec.get(key)
            if value is not None and coerce(value) is None:
                return False
        return True

    return ok


_NUMBER_OR_NONE = frozenset((int, float, type(None)))
_TEXT_OR_NONE = frozenset((str, type(None)))


def metric_ok(rec: dict) -> bool:
    """metrics.jsonl: `kind` a string; `step`, `t`, `max_steps`, `epoch` finite numbers; the losses and
    rates numbers (NaN kept); each absent or null. Written out for speed: it runs for every record
    read as JSONL (under a microsecond, against some 7 to parse it) and for every record written."""
    g = rec.get
    step, t, max_steps, epoch = g("step"), g("t"), g("max_steps"), g("epoch")
    if not (type(step) in _NUMBER_OR_NONE and type(t) in _NUMBER_OR_NONE and type(max_steps) in _NUMBER_OR_NONE
            and type(epoch) in _NUMBER_OR_NONE and type(g("loss")) in _NUMBER_OR_NONE
            and type(g("eval_loss")) in _NUMBER_OR_NONE and type(g(TOKENS_PER_S)) in _NUMBER_OR_NONE
            and type(g("steps_per_s")) in _NUMBER_OR_NONE and type(g("kind")) in _TEXT_OR_NONE):
        return False
    # x - x is 0.0 for a finite float, NaN for NaN and the infinities
    if type(step) is float and step - step != 0.0 or type(t) is float and t - t != 0.0:
        return False
    return not (type(max_steps) is float and max_steps - max_steps != 0.0
                or type(epoch) is float and epoch - epoch != 0.0)


def _gpus(x: Any) -> list | None:
    """system.jsonl's `gpus`: a list of per-device objects whose numbers are numbers."""
    if not isinstance(x, list):
        return None
    for g in x:
        if not isinstance(g, dict) or not _GPU_OK(g):
            return None
    return x


_GPU_OK = record_check({"index": as_whole, "name": as_text, "mem_used": as_real, "mem_total": as_real, "util": as_real,
                        "temp": as_real, "power": as_real, "power_limit": as_real})
system_ok = record_check({"kind": as_text, "t": as_finite, "cpu": as_real, "cpu_count": as_whole, "ram_used": as_real,
                          "ram_total": as_real, "ram_percent": as_real, "proc_rss": as_real, "proc_cpu": as_real,
                          "proc_count": as_whole, "disk_free": as_real, "disk_total": as_real, "gpus": _gpus})
alert_ok = record_check({"kind": as_text, "severity": as_text, "step": as_finite, "t": as_finite, "message": as_text,
                         "hint": as_text})


# the record test of each JSONL file of a run folder, which a JsonlReader of that file applies by default
RECORD_CHECKS: dict[str, Callable[[dict], bool]] = {METRICS_FILE: metric_ok, SYSTEM_FILE: system_ok,
                                                    ALERTS_FILE: alert_ok}
_BY_NAME: Any = object()


class JsonlReader:
    """Reads an append-only JSONL file incrementally from a byte offset.

    A partial last line (the writer is mid-write, or died mid-write) is left for the next call; a line
    that is not a JSON object, or a record that fails `check` (wrong-typed fields), is skipped and
    counted in `skipped`, and the rest of the chunk is kept. `check` defaults to the test of the run
    file of that name (RECORD_CHECKS: metrics.jsonl `metric_ok`, ...); None checks nothing. Only a
    regular file is read (a FIFO or a symlink reads as empty, see `open_regular`). Never raises on content.
    """

    def __init__(self, path: Path, offset: int = 0, check: Callable[[dict], bool] | None = _BY_NAME):
        self.path = Path(path)
        self.offset = offset
        self.check = RECORD_CHECKS.get(self.path.name) if check is _BY_NAME else check
        self.skipped = 0
        self.corrupt_lines: list[int] = []  # byte offsets of skipped lines (first 100)

    @property
    def corrupt(self) -> int:
        """The number of skipped lines (the older name of `skipped`)."""
        return self.skipped

    @corrupt.setter
    def corrupt(self, n: int) -> None:
        self.skipped = n

    def read_new(self, max_bytes: int | None = None) -> list[dict]:
        f = open_regular(self.path)
        if f is None:
            return []
        try:
            with f:
                f.seek(self.offset)
                data = f.read() if max_bytes is None else f.read(max_bytes)
        except OSError:
            return []
        end = data.rfind(b"\n")
        if end < 0:
            return []
        chunk = data[: end + 1]
        check = self.check
        records = _loads_lines(chunk)
        if records is not None and (check is None or all(map(check, records))):
            self.offset += len(chunk)  # every line a good JSON object: parsed in one go
            return records
        records = []
        pos = self.offset
        loads = json.loads
        for line in chunk.split(b"\n")[:-1]:
            if line.strip():
                try:
                    rec = loads(line)
                except (ValueError, RecursionError):
                    rec = None
                if isinstance(rec, dict) and (check is None or check(rec)):
                    records.append(rec)
                else:
                    self.skipped += 1
                    if len(self.corrupt_lines) < 100:
                        self.corrupt_lines.append(pos)
            pos += len(line) + 1
        self.offset += len(chunk)
        return records

    def size(self) -> int:
        """The file's size (0 when it is missing or not a regular file: nothing there to read)."""
        try:
            st = os.lstat(self.path)
        except (OSError, ValueError):
            return 0
        return st.st_size if stat.S_ISREG(st.st_mode) else 0


# --- the metrics index ------------------------------------------------------------------------
#
# metrics.idx holds one fixed-width little-endian entry per line of metrics.jsonl, appended by the
# same writer right after the line: (uint64 byte offset of the line, uint32 its length with the
# newline, int32 kind code | HAS_VALUE, float64 step, float64 value, float64 t). The value is the
# train loss, the eval loss, or 1.0/0.0 for a resumed/fresh `start`; a missing step or t is NaN.
# A reader loads the whole index with one numpy read (40 bytes a record instead of ~300 bytes of
# JSON to parse), uses the entries that cover metrics.jsonl contiguously from byte 0, and carries
# on with the JSONL from the byte offset they end at. Anything the index does not cover (no index,
# an older writer, a crash between the two writes) is simply read as JSONL.

INDEX_ENTRY = struct.Struct("<QIiddd")  # offset, length, kind | flags, step, value, t
KIND_CODES = {"train": 1, "eval": 2, "start": 3, "end": 4, "memory": 5, "checkpoint": 6, "summary": 7}
KIND_OTHER = 0  # a record of another kind (or a blank line)
KIND_CORRUPT = 255  # a line that is not a JSON object
KIND_MASK = 0xFF
HAS_VALUE = 0x100  # the value field holds a number (NaN included); otherwise the record has none
_NAN = float("nan")


def _num_or_nan(x: Any) -> float:
    return float(x) if isinstance(x, (int, float)) else _NAN


def _kind_code(rec: Any) -> int:
    if not isinstance(rec, dict) or not metric_ok(rec):  # a record with wrong-typed fields is skipped like a corrupt line
        return KIND_CORRUPT
    kind = rec.get("kind")
    return KIND_CODES.get(kind, KIND_OTHER) if isinstance(kind, str) else KIND_OTHER


def index_entry(rec: Any, offset: int, length: int) -> bytes:
    """The metrics.idx entry of one metrics.jsonl line (`rec` its parsed record, None if corrupt)."""
    code = _kind_code(rec)
    if code == KIND_CORRUPT:
        return INDEX_ENTRY.pack(offset, length, KIND_CORRUPT, _NAN, _NAN, _NAN)
    if code == 1:
        y = rec.get("loss")
    elif code == 2:
        y = rec.get("eval_loss")
    elif code == 3:
        y = 1.0 if rec.get("resumed") else 0.0
    else:
        y = None
    if y is not None:
        try:
            y = float(y)
            code |= HAS_VALUE
        except (TypeError, ValueError):
            y = _NAN
    else:
        y = _NAN
    return INDEX_ENTRY.pack(offset, length, code, _num_or_nan(rec.get("step")), y, _num_or_nan(rec.get("t")))


def index_dtype():
    """The numpy dtype of a metrics.idx entry (numpy is imported here, not when the store loads)."""
    import numpy as np

    return np.dtype([("offset", "<u8"), ("length", "<u4"), ("kind", "<i4"), ("step", "<f8"), ("value", "<f8"),
                     ("t", "<f8")])


def _parse_line(line: bytes) -> Any:
    try:
        return json.loads(line) if line.strip() else {}
    except (ValueError, RecursionError):
        return None


class IndexedJsonlWriter(JsonlWriter):
    """A JsonlWriter that also appends each line's entry to a binary index (metrics.idx).

    On opening it brings the index up to date with the JSONL (lines written by an older writer, or
    before a crash between the two writes, are indexed by parsing them), and it ends a partial last
    line left by a crash with a newline, so the next record is not glued to it. The index is an
    accelerator: if anything about it fails, the JSONL is still written and readers fall back to it.
    """

    def __init__(self, path: Path, index_path: Path | None = None):
        super().__init__(path)
        self.index_path = Path(index_path) if index_path else self.path.with_suffix(".idx")
        self._end = os.fstat(self._fd).st_size
        self._ifd = -1
        try:
            self._ifd = os.open(self.index_path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            self._catch_up()
        except Exception:  # noqa: BLE001 - never take the writer down for the index
            self._drop_index()

    def _drop_index(self) -> None:
        if self._ifd >= 0:
            try:
                os.ftruncate(self._ifd, 0)  # a stale index must not claim lines it does not describe
            except OSError:
                pass
            os.close(self._ifd)
            self._ifd = -1

    def _catch_up(self) -> None:
        size = os.fstat(self._ifd).st_size
        whole = size - size % INDEX_ENTRY.size
        if whole != size:  # a crash mid-entry
            os.ftruncate(self._ifd, whole)
        covered = 0
        with open(self.path, "rb") as f:
            if whole:
                off, length, code = INDEX_ENTRY.unpack(os.pread(self._ifd, INDEX_ENTRY.size, whole - INDEX_ENTRY.size))[:3]
                f.seek(off)
                line = f.read(length)
                kind = _kind_code(_parse_line(line))
                if off + length <= self._end and line.endswith(b"\n") and kind == code & KIND_MASK:
                    covered = off + length
                else:  # metrics.jsonl was replaced or cut: index it again from the start
                    os.ftruncate(self._ifd, 0)
            if covered == self._end:
                return
            if self._end:
                f.seek(self._end - 1)
                if f.read(1) != b"\n":  # a partial last line (the writer died mid-write): end it
                    os.write(self._fd, b"\n")
                    self._end += 1
            f.seek(covered)
            pos = covered
            out = []
            for line in f:
                if pos >= self._end:
                    break
                out.append(index_entry(_parse_line(line), pos, len(line)))
                pos += len(line)
                if len(out) >= 4096:
                    os.write(self._ifd, b"".join(out))
                    out = []
            if out:
                os.write(self._ifd, b"".join(out))

    def write(self, record: dict) -> None:
        line = (dumps(record) + "\n").encode()
        os.write(self._fd, line)
        offset = self._end
        self._end += len(line)
        if self._ifd >= 0:
            try:
                os.write(self._ifd, index_entry(record, offset, len(line)))
            except OSError:
                self._drop_index()

    def close(self) -> None:
        if self._ifd >= 0:
            os.close(self._ifd)
            self._ifd = -1
        super().close()


def read_metrics_index(path: Path, index_path: Path | None = None, offset: int = 0, limit: int | None = None):
    """`(entries, end)`: the entries of metrics.idx that cover `path` (metrics.jsonl) contiguously from
    the line at byte `offset` (0: the whole file; else where a reader stopped), at most `limit` of
    them, as a numpy structured array (`index_dtype()`), and the byte offset they cover up to.
    None when no usable index covers that offset; the caller then reads the JSONL. The last entry
    is checked against its line, so an index that does not describe this file is not used."""
    import numpy as np

    path = Path(path)
    index_path = Path(index_path) if index_path else path.with_suffix(".idx")
    if not (is_regular(path) and is_regular(index_path)):
        return None
    dtype = index_dtype()
    try:
        n = os.stat(index_path).st_size // dtype.itemsize
        size = os.stat(path).st_size
        start = _find_entry(index_path, dtype, n, offset) if n else None
        if start is None:
            return None
        count = n - start if limit is None else min(n - start, limit)
        entries = np.fromfile(index_path, dtype=dtype, count=count, offset=start * dtype.itemsize)
    except (OSError, ValueError):
        return None
    if not len(entries):
        return None
    ends = entries["offset"] + entries["length"]
    gaps = np.flatnonzero(entries["offset"][1:] != ends[:-1])
    k = int(gaps[0]) + 1 if gaps.size else len(entries)
    k = min(k, int(np.searchsorted(ends[:k], size, side="right")))  # entries past the file's end
    if k == 0:
        return None
    last = entries[k - 1]
    f = open_regular(path)
    if f is None:
        return None
    try:
        with f:
            f.seek(int(last["offset"]))
            line = f.read(int(last["length"]))
    except OSError:
        return None
    if not line.endswith(b"\n") or _kind_code(_parse_line(line)) != int(last["kind"]) & KIND_MASK:
        return None
    return entries[:k], int(ends[k - 1])


def _find_entry(index_path: Path, dtype, n: int, offset: int) -> int | None:
    """The number of the entry of metrics.idx whose line starts at byte `offset` of metrics.jsonl
    (entries are in file order), by bisection reading one entry a step; None if none does."""
    size = dtype.itemsize
    pos = dtype.fields["offset"][1]
    f = open_regular(index_path)
    if f is None:
        return None
    with f:
        def at(i: int) -> int:
            f.seek(i * size + pos)
            return int.from_bytes(f.read(8), "little")

        lo, hi = 0, n
        while lo < hi:
            mid = (lo + hi) // 2
            if at(mid) < offset:
                lo = mid + 1
            else:
                hi = mid
        return lo if lo < n and at(lo) == offset else None


def indexed_record(f: BinaryIO, entry) -> dict | None:
    """The record of the line an index entry points at (`f`: metrics.jsonl opened in binary mode);
    None when that line is not a well-formed metric record."""
    f.seek(int(entry["offset"]))
    rec = _parse_line(f.read(int(entry["length"])))
    return rec if isinstance(rec, dict) and metric_ok(rec) else None


def _loads_lines(chunk: bytes) -> list[dict] | None:
    """The records of complete JSONL lines parsed as one JSON array (a single pass of the C parser);
    None if any line is not exactly one JSON object, and the caller then goes line by line."""
    try:
        lines = [ln for ln in chunk.decode("utf-8").split("\n") if ln.strip()]
        if not lines:
            return []
        records = json.loads("[" + ",".join(lines) + "]")
    except (ValueError, RecursionError):
        return None
    if len(records) != len(lines) or not all(type(r) is dict for r in records):
        return None
    return records


def read_jsonl(path: Path, check: Callable[[dict], bool] | None = _BY_NAME) -> list[dict]:
    """The records of a JSONL file (bad lines, and records failing `check`, skipped; see JsonlReader)."""
    return JsonlReader(path, check=check).read_new()


def skipped_records(run: "Run") -> dict[str, int]:
    """How many lines of each JSONL file of the run the readers skip (not JSON objects, or wrong-typed
    fields): `labtui show --json`'s `skipped_records`. metrics.jsonl is counted from its index where
    that covers it (a huge history is not parsed for this)."""
    out = {}
    metrics = run.file(METRICS_FILE)
    reader = JsonlReader(metrics)
    n = 0
    try:
        got = read_metrics_index(metrics)
    except Exception:  # noqa: BLE001 - the JSONL is always there to fall back on
        got = None
    if got is not None:
        entries, reader.offset = got
        n = int(((entries["kind"] & KIND_MASK) == KIND_CORRUPT).sum())
    reader.read_new()
    out[METRICS_FILE] = n + reader.skipped
    for name in (SYSTEM_FILE, ALERTS_FILE):
        reader = JsonlReader(run.file(name))
        reader.read_new()
        out[name] = reader.skipped
    return out


class Rewinder:
    """Applies resumes to a stream of metric records, incrementally.

    After a crash the run resumes from its last checkpoint at step S and does steps S+1.. again.
    The worker marks that with a `{"kind": "start", "resumed": true, "step": S}` record; records
    before it with a step past S belong to the abandoned segment and are dropped, so the history
    has each step once. `feed` returns (kept new records, rewind step or None); a caller holding
    earlier records drops those past the rewind step.
    """

    def __init__(self):
        self.last_step = -1

    def feed(self, records: list[dict]) -> tuple[list[dict], int | None]:
        """Records are expected to pass `metric_ok`; a step that is not a finite number counts as 0."""
        kept: list[dict] = []
        rewind = None
        for rec in records:
            if rec.get("kind") == "start" and rec.get("resumed"):
                s = _step_of(rec)
                if s < self.last_step:
                    rewind = s if rewind is None else min(rewind, s)
                    kept = [r for r in kept if _step_of(r) <= s or r.get("kind") not in ("train", "eval")]
                self.last_step = s
            elif rec.get("kind") in ("train", "eval"):
                self.last_step = max(self.last_step, _step_of(rec))
            kept.append(rec)
        return kept, rewind

    def feed_entries(self, entries) -> tuple[Any, int | None]:
        """`feed` on metrics.idx entries (read_metrics_index) instead of records: (a boolean mask of
        the entries kept, rewind step or None). A resumed `start` is an entry of kind start with value 1."""
        import numpy as np

        code = entries["kind"] & KIND_MASK
        step = entries["step"]
        step = np.where(np.isfinite(step), step, 0.0)
        keep = np.ones(len(entries), dtype=bool)
        steps_seen = (code == KIND_CODES["train"]) | (code == KIND_CODES["eval"])
        last_step, prev, rewind = self.last_step, 0, None
        for i in np.flatnonzero((code == KIND_CODES["start"]) & (entries["value"] == 1.0)).tolist():
            if np.any(steps_seen[prev:i]):
                last_step = max(last_step, int(step[prev:i][steps_seen[prev:i]].max()))
            s = int(step[i])
            if s < last_step:
                rewind = s if rewind is None else min(rewind, s)
                keep[:i] &= ~(steps_seen[:i] & (step[:i] > s))
            last_step, prev = s, i + 1
        if np.any(steps_seen[prev:]):
            last_step = max(last_step, int(step[prev:][steps_seen[prev:]].max()))
        self.last_step = last_step
        return keep, rewind


def _step_of(rec: dict) -> int:
    s = as_finite(rec.get("step"))
    return int(s) if s is not None else 0


def metrics_history(run: "Run") -> list[dict]:
    """All metric records of a run, each step once (resumes applied)."""
    kept, _ = Rewinder().feed(read_jsonl(run.file(METRICS_FILE)))
    return kept


def tail_lines(path: Path, n: int = 20, max_bytes: int = 64_000) -> list[str]:
    """The last `n` non-blank lines of a log (a regular file), each as a terminal shows it: a line a
    progress bar redrew with carriage returns is its last state (`fmt.last_cr_segment`). Not made
    printable: the caller that prints them does that (`fmt.printable`)."""
    from labtui.engine.rundir.fmt import last_cr_segment

    f = open_regular(path) if n > 0 else None
    if f is None:
        return []
    try:
        with f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except OSError:
        return []
    text = data.decode("utf-8", "replace").replace("\r\n", "\n")
    lines = [last_cr_segment(ln) for ln in text.split("\n")]
    return [ln for ln in lines if ln.strip()][-n:]


# --- ids --------------------------------------------------------------------------------------


def slugify(name: str) -> str:
    slug = re.sub(r"[^a-zA-Z0-9]+", "-", name).strip("-").lower()
    return slug[:40] or "run"


def new_run_id(name: str, now: float | None = None) -> str:
    """Sortable and unique: `20261122-031500-demo-baseline-a3f9`."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now or time.time()))
    return f"{stamp}-{slugify(name)}-{secrets.token_hex(2)}"


def new_run_dir(parent: Path, name: str) -> Path:
    """A new, empty folder `parent/<new_run_id(name)>` (runs and evals alike): the id is taken by
    creating the folder, so two processes never get the same one."""
    parent.mkdir(parents=True, exist_ok=True)
    while True:
        path = parent / new_run_id(name)
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue


def matching(items: list, ref: str, key: Callable[[Any], str]) -> list:
    """How a run or eval reference picks among `items`: the item whose key is `ref`, else those
    whose key starts with it, else those whose key contains it (the caller says what 0 or 2+ mean)."""
    exact = [x for x in items if key(x) == ref]
    if exact:
        return exact[:1]
    return [x for x in items if key(x).startswith(ref)] or [x for x in items if ref in key(x)]


def jsonable(x: Any) -> Any:
    """`x` with NaN/Inf as strings ("nan", "inf") at any depth, and dict keys as strings: NaN is not
    JSON for most readers, so every JSON labtui prints or appends carries them so."""
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    return x


# --- process liveness -------------------------------------------------------------------------


def process_start_time(pid: int) -> float | None:
    """The process's start time (Unix seconds), or None when it cannot be read (gone, not permitted)."""
    try:
        import psutil

        return psutil.Process(pid).create_time()
    except Exception:
        return None


def process_alive(pid: int | None, start_time: float | None) -> bool:
    """True only if `pid` runs and is provably the same process: its start time is known and matches.

    A reused pid is dead, and so is a pid whose recorded start time is unknown (an old or hand-edited
    state.json): labtui never treats, or signals, a process whose identity it cannot prove as its own."""
    if not pid or not isinstance(start_time, (int, float)) or isinstance(start_time, bool):
        return False
    try:
        import psutil

        p = psutil.Process(int(pid))
        if p.status() == psutil.STATUS_ZOMBIE:
            return False
        return abs(p.create_time() - float(start_time)) <= 1.0
    except Exception:
        return False


def process_suspended(pid: int | None) -> bool:
    """True if the process is stopped (SIGSTOP, Ctrl-Z, a debugger): it cannot act on a signal until continued."""
    if pid is None:
        return False
    try:
        import psutil

        return psutil.Process(pid).status() in (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP)
    except Exception:
        return False


# A checkpoint folder is complete when the Trainer got as far as its state and the weights are there;
# a kill during a save leaves a folder without them, which a resume or an eval must not pick.
CHECKPOINT_STATE_FILE = "trainer_state.json"
CHECKPOINT_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin", "model.safetensors", "pytorch_model.bin",
                      "model.safetensors.index.json", "pytorch_model.bin.index.json")


def checkpoint_problem(path: Path) -> str | None:
    """Why a checkpoint folder cannot be resumed from or evaluated ("no trainer_state.json"), or None if complete."""
    path = Path(path)
    try:
        state = path / CHECKPOINT_STATE_FILE
        if not state.is_file() or state.stat().st_size == 0:
            return f"no {CHECKPOINT_STATE_FILE}"
        if not any((path / w).is_file() and (path / w).stat().st_size > 0 for w in CHECKPOINT_WEIGHTS):
            return "no model or adapter weights"
    except OSError as e:
        return f"unreadable ({e.strerror})"
    return None


# --- runs -------------------------------------------------------------------------------------


@dataclass
class Run:
    path: Path
    _info: RunInfo | None = field(default=None, repr=False)

    @property
    def id(self) -> str:
        return self.path.name

    def file(self, name: str) -> Path:
        return self.path / name

    # raw files
    # The JSON files come through `clean`: a field of the wrong type reads as missing (records.py).
    def info(self) -> RunInfo:
        if self._info is None:
            self._info = records.run_info(read_json(self.file(RUN_FILE)))
        return self._info

    def raw_state(self) -> State:
        return records.state(read_json(self.file(STATE_FILE)))

    def progress(self) -> Progress:
        return records.progress(read_json(self.file(PROGRESS_FILE)))

    def config(self) -> dict:
        import yaml

        text = read_text(self.file(CONFIG_FILE))
        try:
            cfg = yaml.safe_load(text) if text else None
        except (yaml.YAMLError, ValueError, RecursionError):
            return {}
        return cfg if isinstance(cfg, dict) else {}

    def config_max_steps(self) -> int | None:
        """training.max_steps of the run's config.yaml, when it is a positive whole number."""
        training = self.config().get("training")
        value = training.get("max_steps") if isinstance(training, dict) else None
        return value if type(value) is int and value > 0 else None

    def env(self) -> records.EnvInfo:
        return records.env_info(read_json(self.file(ENV_FILE)))

    def notes(self) -> str:
        """notes.md, if it is a regular file in the run folder (not a symlink to elsewhere)."""
        return read_text(self.file(NOTES_FILE))

    def write_notes(self, text: str) -> None:
        atomic_write_text(self.file(NOTES_FILE), text)

    def update_state(self, **updates: Any) -> State:
        """Write `updates` into state.json, keeping what else it holds as it is (even a field of the
        wrong type: a reader skips it, a writer does not lose it); returns the state as a reader sees it."""
        state = read_json(self.file(STATE_FILE))
        state = state if isinstance(state, dict) else {}
        state.update(updates)
        state["updated"] = time.time()
        atomic_write_json(self.file(STATE_FILE), state)
        return records.state(state)

    def write_progress(self, progress: Progress) -> None:
        atomic_write_json(self.file(PROGRESS_FILE), progress)

    # derived
    def state(self, now: float | None = None) -> State:
        """state.json with the worker's final result folded in and crashes detected.

        A run that says it is live but whose processes are gone (checked by pid *and* start time,
        so a reused pid does not count) is `crashed`, with the signal when the supervisor saw it,
        otherwise "no heartbeat since HH:MM, process gone".
        """
        return self.derive_state(self.raw_state(), self.progress(), now)

    def derive_state(self, state: State, progress: Progress, now: float | None = None) -> State:
        """`state()` from state.json and progress.json contents the caller has read already.

        A live run whose supervisor is gone while its worker still runs (the supervisor was killed)
        stays `running` with `warning` = SUPERVISOR_GONE: nobody heartbeats, samples the machine,
        records the outcome or advances the queue for it until it ends (readers then fold in the
        worker's own result)."""
        result = progress.get("result") if isinstance(progress, dict) else None
        status = state.get("status", "queued")
        if status in LIVE:
            live = self._liveness(state, now)
            if live is None and isinstance(result, dict) and result.get("status") in FINAL:
                # the worker wrote its end but the supervisor has not (yet) recorded it
                state.update(result)
                status = state["status"]
            elif live is None:
                hb = next((t for t in (state.get("heartbeat"), state.get("started"), state.get("created"))
                           if isinstance(t, (int, float)) and not isinstance(t, bool)), None)
                since = time.strftime("%H:%M", time.localtime(hb)) if hb else "?"
                state["status"] = "crashed"
                state["error"] = state.get("error") or f"no heartbeat since {since}, process gone"
                state["crash_detected_by"] = "reader"
            elif live == "worker" and state.get("supervisor_pid"):
                state["warning"] = SUPERVISOR_GONE
        return state

    def _liveness(self, state: State, now: float | None = None) -> str | None:
        """What keeps a live-looking run alive: "remote" (a fresh heartbeat from another host),
        "supervisor", "worker" (its supervisor is gone), "starting" (being handed over), or None."""
        now = now or time.time()

        def t(key: str) -> float:
            v = state.get(key)
            return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else 0.0

        if state.get("host") and state["host"] != socket.gethostname():
            return "remote" if now - t("heartbeat") < HEARTBEAT_STALE_S else None
        if process_alive(state.get("supervisor_pid"), state.get("supervisor_start")):
            return "supervisor"
        if process_alive(state.get("pid"), state.get("pid_start")):
            return "worker"
        if state.get("status") == "starting" and not state.get("supervisor_pid"):
            # the launcher has not handed over yet; give it a moment
            return "starting" if now - t("updated") < 10 else None
        return None

    def _live(self, state: State, now: float | None = None) -> bool:
        return self._liveness(state, now) is not None

    def checkpoints(self) -> list[Path]:
        """Every checkpoints/checkpoint-N folder, oldest first, complete or not (see `checkpoint_problem`)."""
        d = self.file(CHECKPOINTS_DIR)
        if not d.is_dir():
            return []
        cps = [p for p in d.iterdir() if p.is_dir() and re.fullmatch(r"checkpoint-\d+", p.name)]
        return sorted(cps, key=lambda p: int(p.name.split("-")[1]))

    def checkpoint_choice(self) -> tuple[Path | None, list[tuple[Path, str]]]:
        """(the newest complete checkpoint or None, [(newer incomplete folder, why)...] skipped on the way)."""
        skipped: list[tuple[Path, str]] = []
        for cp in reversed(self.checkpoints()):
            problem = checkpoint_problem(cp)
            if problem is None:
                return cp, skipped
            skipped.append((cp, problem))
        return None, skipped

    def latest_checkpoint(self) -> Path | None:
        """The newest *complete* checkpoint (a folder left half-written by a kill is skipped)."""
        return self.checkpoint_choice()[0]

    def checkpoint_note(self) -> str:
        """Which checkpoint a resume or an eval of "latest" uses, and why not a newer one:
        "checkpoint-40: checkpoint-80 is incomplete (no trainer_state.json)"."""
        cp, skipped = self.checkpoint_choice()
        why = "; ".join(f"{p.name} is incomplete ({problem})" for p, problem in skipped)
        if cp is None:
            return "no complete checkpoint" + (f": {why}" if why else "")
        return cp.name + (f": {why}" if why else "")

    def evals(self) -> list[Path]:
        d = self.file(EVALS_DIR)
        if not d.is_dir():
            return []
        return sorted(p for p in d.iterdir() if p.is_dir())

    def row(self, now: float | None = None, notes: bool = True) -> Row:
        """Every field of the run's row, from its small files (run.json, state.json, progress.json and,
        with `notes`, notes.md; no metrics parsing), liveness judged at `now`: the one source of
        `labtui runs --json` (summary) and the TUI's run list (tui.scan.row_for). The readers give
        each field its type or leave it out (`clean`); NaN and Inf stay floats here."""
        info, progress = self.info(), self.progress()
        state = self.derive_state(self.raw_state(), progress, now)  # = self.state(now), progress.json read once
        text = self.notes().strip() if notes else ""
        return {
            "id": self.id,
            "experiment": info.get("experiment") or self.id,
            "description": info.get("description") or "",
            "kind": info.get("kind") or "train",
            "status": state.get("status") or "queued",
            "step": progress.get("step") or 0,
            # before its first log a run's progress has no max_steps: `0/120` from its config, not `0/?`
            "max_steps": progress.get("max_steps") or (self.config_max_steps() if (info.get("kind") or "train") == "train"
                                                       else None),
            "epoch": progress.get("epoch"),
            "created": info.get("created"),
            "started": state.get("started"),
            "ended": state.get("ended"),
            "train_loss": progress.get("train_loss"),
            "eval_loss": progress.get("best_eval_loss"),
            "best_step": progress.get("best_step"),
            TOKENS_PER_S: progress.get(TOKENS_PER_S),
            "parent": info.get("parent"),
            "pid": state.get("pid"),
            "heartbeat": state.get("heartbeat"),
            "exit_code": state.get("exit_code"),
            "exit_signal": state.get("exit_signal"),
            "error": state.get("error"),
            "warning": state.get("warning"),  # e.g. SUPERVISOR_GONE (derive_state)
            "checkpoint": progress.get("checkpoint"),
            "host": state.get("host"),
            "group": info.get("group"),
            "parent_experiment": info.get("parent_experiment"),
            "changed": info.get("changed") or {},
            "notes": text.splitlines()[0] if text else "",  # its first line
            "executor": state.get("executor") or "local",
            "slurm": state.get("slurm"),
        }

    def summary(self) -> Summary:
        """The row of `labtui runs --json`: `row()` without the TUI's fields, NaN and Inf as strings."""
        row: dict[str, Any] = dict(self.row(notes=False))
        return cast(Summary, {k: jsonable(row[k]) for k in SUMMARY_FIELDS})


SUMMARY_FIELDS = records.SUMMARY_FIELDS  # the keys of `labtui runs --json`'s rows, in order


# the experiments/ folder of the checkout labtui runs from (`labtui demo` and Launch fall back to it)
SHIPPED_EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"


def creation_order(run: Run) -> tuple[float, str]:
    """A sort key, oldest first: run.json's `created`, then the id (ids made in the same second, as a
    sweep's are, sort by name, not by age)."""
    return run.info().get("created") or 0, run.id


class Workspace:
    """A folder with `experiments/` and `logs/`; runs live in `logs/<run-id>/`."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def experiments(self) -> Path:
        return self.root / "experiments"

    def iter_runs(self) -> Iterator[Run]:
        if not self.logs.is_dir():
            return
        for p in sorted(self.logs.iterdir()):
            if p.is_dir() and (p / RUN_FILE).exists():
                yield Run(p)

    def runs(self) -> list[Run]:
        return list(self.iter_runs())

    def runs_in_group(self, name: str) -> list[Run]:
        """The runs whose run.json names `name` as their group (the runs of one `labtui sweep`), by id (a
        sweep's runs are made in the same second: `creation_order` sorts them as they were made)."""
        return [r for r in self.iter_runs() if r.info().get("group") == name]

    def run(self, ref: str) -> Run:
        """A run by full id or unique prefix (or `last`, the newest)."""
        if not isinstance(ref, str) or not ref.strip():
            raise RunNotFound("no run id given (a run id, a unique prefix of one, or 'last')")
        runs = self.runs()
        if ref in ("last", "latest", "@"):
            if not runs:
                raise RunNotFound(f"no runs in {self.logs}")
            return max(runs, key=creation_order)
        matches = matching(runs, ref, lambda r: r.id)
        if len(matches) == 1:
            return matches[0]
        if not matches:
            hint = f"; newest: {runs[-1].id}" if runs else ""
            raise RunNotFound(f"no run matches '{ref}' in {self.logs}{hint} (see `labtui runs`)")
        names = ", ".join(r.id for r in matches[:5])
        more = f" and {len(matches) - 5} more" if len(matches) > 5 else ""
        raise RunNotFound(f"'{ref}' matches {len(matches)} runs: {names}{more}; give more of the id")

    def create_run(self, name: str, info: dict, config_text: str | None = None) -> Run:
        path = new_run_dir(self.logs, name)
        run_id = path.name
        run = Run(path)
        now = time.time()
        atomic_write_json(path / RUN_FILE, {"id": run_id, "created": now, **info})
        if config_text is not None:
            atomic_write_text(path / CONFIG_FILE, config_text)
        atomic_write_json(path / STATE_FILE, {"status": "queued", "created": now, "updated": now})
        return run
