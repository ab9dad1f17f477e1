"""Following one run's files incrementally: metrics, machine samples, alerts, the log's tail.

`RunTail.poll()` reads only the bytes appended since the last call (labtui.engine.rundir.store.JsonlReader
keeps the offset and leaves a half-written last line for next time), applies resumes
(labtui.engine.rundir.store.Rewinder: a run resumed from step S redoes S+1.., so the step axis forgets the
abandoned steps), folds the records into bounded series, and `snapshot()` returns an immutable
`TailSnapshot` for the UI thread. The
background monitor owns RunTail objects; widgets only ever see snapshots. No Textual here.

A long history is not parsed as JSON: when much of metrics.jsonl is unread (a big file on the first
poll, or a burst of records later), the entries of its binary index (metrics.idx, written by the
same writer) from the current byte offset on are read with numpy, their (step, loss, t) points
folded in with `Series.extend_arrays`, only the few lines the panels need are parsed (the last
record of each kind, the last tokens/s values), and reading goes on from the byte offset the index
covers. Lines the index does not cover (yet) are read as JSONL, as before. Machine samples are only
kept for the sparklines, so a long system.jsonl is read from its tail.
"""

from __future__ import annotations

import math
import os
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from labtui.engine.rundir import ranks, store

from .series import Point, Series

CHUNK_BYTES = 8 << 20  # per file per poll: a huge history loads in steps, the UI stays live
INDEX_MIN_BYTES = 4 << 20  # a metrics.jsonl above this is loaded from its index (metrics.idx) when it has one
INDEX_BATCH_BYTES = 256 << 10  # and later, this much unread JSONL is folded in from the index too
INDEX_CHUNK = 1 << 18  # index entries (10 MiB) folded per poll: a million records load in four steps
SYSTEM_TAIL_BYTES = 1 << 20  # a longer system.jsonl is read from its last MiB (the sparklines' worth)
SPARK_LEN = 240  # recent samples kept for sparklines
ALERTS_KEPT = 200
LOG_LINES = 8
RANKS_RECHECK_S = 5.0  # the ranks' heartbeats are read again this often even when no file changed (a rank gone)
TOKENS_KEPT = 512  # (step, tokens seen) pairs kept for the chart's tokens axis (thinned by half past twice this)


@dataclass(frozen=True)
class TailSnapshot:
    run_id: str
    train: dict[str, tuple[Point, ...]] = field(default_factory=dict)  # "step" / "time" -> points
    eval: dict[str, tuple[Point, ...]] = field(default_factory=dict)
    train_count: int = 0
    eval_count: int = 0
    bad_count: int = 0  # NaN/Inf train losses
    last_train: dict | None = None
    last_eval: dict | None = None
    last_memory: dict | None = None
    last_system: dict | None = None
    start: dict | None = None  # the latest `start` record
    end: dict | None = None
    t0: float | None = None  # time of the first record: 0 on the time axis
    tokens_per_s: tuple[float, ...] = ()
    gpu_mem: dict[int, tuple[float, ...]] = field(default_factory=dict)  # NVML used / total
    gpu_util: dict[int, tuple[float, ...]] = field(default_factory=dict)
    cpu: tuple[float, ...] = ()
    alerts: tuple[dict, ...] = ()
    log_tail: tuple[str, ...] = ()
    ranks: tuple[dict, ...] = ()  # a multi-process run's heartbeats (ranks.read_ranks), by rank; () for one process
    tokens_at: tuple[tuple[float, float], ...] = ()  # (step, tokens seen) from train records, steps increasing
    metrics_offset: int = 0
    caught_up: bool = True
    corrupt: int = 0  # metrics.jsonl lines skipped (not JSON objects, or wrong-typed fields)
    skipped: int = 0  # records skipped in metrics.jsonl, system.jsonl and alerts.jsonl together
    version: int = 0


class RunTail:
    def __init__(self, run_dir: Path, capacity: int = 512, chunk_bytes: int = CHUNK_BYTES):
        self.path = Path(run_dir)
        self.run_id = self.path.name
        self.chunk_bytes = chunk_bytes
        # each skips and counts a record with wrong-typed fields as a line that is not JSON (store.RECORD_CHECKS)
        self.metrics = store.JsonlReader(self.path / store.METRICS_FILE)
        self.rewinder = store.Rewinder()
        self.system = store.JsonlReader(self.path / store.SYSTEM_FILE)
        self.alerts_reader = store.JsonlReader(self.path / store.ALERTS_FILE)
        self.series = {
            ("train", "step"): Series(capacity),
            ("train", "time"): Series(capacity),
            ("eval", "step"): Series(capacity),
            ("eval", "time"): Series(capacity),
        }
        self.last: dict[str, dict | None] = {"train": None, "eval": None, "memory": None, "system": None,
                                             "start": None, "end": None}
        self.t0: float | None = None
        self.tokens_per_s: deque[float] = deque(maxlen=SPARK_LEN)
        self.tokens_at: list[tuple[float, float]] = []  # the chart's tokens axis: series.remap of the step axis
        self.cpu: deque[float] = deque(maxlen=SPARK_LEN)
        self.gpu_mem: dict[int, deque[float]] = {}
        self.gpu_util: dict[int, deque[float]] = {}
        self.alerts: deque[dict] = deque(maxlen=ALERTS_KEPT)
        self.log_tail: tuple[str, ...] = ()
        self._log_size = -1
        self.ranks: tuple[dict, ...] = ()
        self._ranks_seen: tuple = ()
        self._ranks_read = -math.inf
        self.version = 0
        self.caught_up = False
        self.was_caught_up = False  # the history up to some moment has been read once
        self.indexed_records = 0  # records loaded from metrics.idx rather than parsed
        self._more_indexed = False
        self._opened = False

    # --- reading ------------------------------------------------------------------------------

    def poll(self) -> bool:
        """Read what was appended since the last call (at most `chunk_bytes` a file); True if anything changed."""
        changed = False
        if not self._opened:
            self._opened = True
            self._open()
        self._more_indexed = False
        changed |= self._poll_index()
        # the index covers more than this poll folded: take it next poll rather than parse it here
        batch = [] if self._more_indexed else self.metrics.read_new(self.chunk_bytes)
        records, rewind = self.rewinder.feed(batch)
        if rewind is not None:  # resumed from an earlier checkpoint: those steps are done again
            self._rewind(rewind)
            changed = True
        for rec in records:
            self._metric(rec)
            changed = True
        for rec in self.system.read_new(self.chunk_bytes):
            self._system(rec)
            changed = True
        for rec in self.alerts_reader.read_new(self.chunk_bytes):
            self.alerts.append(rec)
            changed = True
        changed |= self._poll_log()
        changed |= self._poll_ranks()
        caught_up = all(r.offset >= r.size() for r in (self.metrics, self.system, self.alerts_reader))
        if caught_up != self.caught_up:
            self.caught_up = caught_up
            changed = True
        self.was_caught_up |= caught_up
        if changed:
            self.version += 1
        return changed

    def _open(self) -> None:
        """First poll: a long system.jsonl is read from its tail (only the sparklines' worth is kept)."""
        try:
            size = os.stat(self.system.path).st_size
        except OSError:
            size = 0
        if size > SYSTEM_TAIL_BYTES and self.system.offset == 0:
            self.system.offset = _line_start(self.system.path, size - SYSTEM_TAIL_BYTES)

    def _poll_index(self) -> bool:
        """Fold what metrics.idx says about the unread part of metrics.jsonl, when that part is big."""
        pending = self.metrics.size() - self.metrics.offset
        if pending < (INDEX_MIN_BYTES if self.metrics.offset == 0 else INDEX_BATCH_BYTES):
            return False
        try:
            batch = self._index_batch()
        except Exception:  # noqa: BLE001 - the JSONL is always there to fall back on
            return False
        if batch is None:
            return False
        self._fold(batch)
        return True

    def _index_batch(self) -> dict | None:
        """Everything `_fold` needs for the index entries from the current JSONL offset on, read and
        checked before any state changes; None when the index does not cover that offset."""
        import numpy as np

        got = store.read_metrics_index(self.metrics.path, offset=self.metrics.offset, limit=INDEX_CHUNK)
        if got is None:
            return None
        entries, end = got
        count = len(entries)
        rewinder = store.Rewinder()  # the resumes, applied to a copy until _fold
        rewinder.last_step = self.rewinder.last_step
        keep, rewind = rewinder.feed_entries(entries)
        if not keep.all():
            entries = entries[keep]
        code = entries["kind"] & store.KIND_MASK
        has_value = (entries["kind"] & store.HAS_VALUE) != 0
        lines: dict[str, dict | None] = {}
        recent: list[float] = []
        f = store.open_regular(self.metrics.path)
        if f is None:
            return None
        with f:
            for kind in ("train", "eval", "start", "end", "memory"):
                where = np.flatnonzero(code == store.KIND_CODES[kind])
                if where.size:
                    lines[kind] = store.indexed_record(f, entries[int(where[-1])])
            trains = np.flatnonzero(code == store.KIND_CODES["train"])
            # tokens seen is not in the index: read a few train lines spread over the batch (TOKENS_KEPT
            # over a million-record history, 64 in a batch of new records: ~0.02 ms a line)
            want = min(trains.size, max(64, TOKENS_KEPT * trains.size // (4 * INDEX_CHUNK)))
            sample = trains[np.unique(np.linspace(0, trains.size - 1, want).astype(np.int64))] if want else trains
            tokens = [(float(entries[i]["step"]), (store.indexed_record(f, entries[i]) or {}).get("tokens"))
                      for i in sample.tolist()]
            for i in reversed(trains[-8 * SPARK_LEN:].tolist()):
                tps = (store.indexed_record(f, entries[i]) or {}).get(store.TOKENS_PER_S)
                if isinstance(tps, (int, float)):
                    recent.append(float(tps))
                    if len(recent) == SPARK_LEN:
                        break
        return {"entries": entries, "code": code, "has_value": has_value, "end": end, "count": count,
                "more": count == INDEX_CHUNK, "rewinder": rewinder, "rewind": rewind, "lines": lines,
                "recent": recent[::-1], "tokens": tokens}

    def _fold(self, b: dict) -> None:
        import numpy as np

        entries, code, has_value = b["entries"], b["code"], b["has_value"]
        if b["rewind"] is not None:
            self._rewind(b["rewind"])
        self.rewinder = b["rewinder"]
        t = entries["t"]
        if self.t0 is None:
            timed = np.flatnonzero(np.isfinite(t))
            if timed.size:
                self.t0 = float(t[timed[0]])
        for name in ("train", "eval"):
            sel = (code == store.KIND_CODES[name]) & has_value
            y, x_step, x_t = entries["value"][sel], entries["step"][sel], t[sel]
            ok = np.isfinite(x_step)
            self.series[(name, "step")].extend_arrays(x_step[ok], y[ok])
            if self.t0 is not None:
                ok = np.isfinite(x_t)
                self.series[(name, "time")].extend_arrays(x_t[ok] - self.t0, y[ok])
        bad = np.flatnonzero(code == store.KIND_CORRUPT)
        self.metrics.skipped += int(bad.size)
        room = max(0, 100 - len(self.metrics.corrupt_lines))
        self.metrics.corrupt_lines.extend(int(o) for o in entries["offset"][bad[:room]])
        for kind, rec in b["lines"].items():
            self.last[kind] = rec
        self.tokens_per_s.extend(b["recent"])
        for step, tokens in b["tokens"]:
            self._tokens(step, tokens)
        self.metrics.offset = b["end"]
        self.indexed_records += b["count"]
        self._more_indexed = b["more"]

    def _poll_log(self) -> bool:
        log = self.path / store.LOG_FILE
        try:
            size = os.stat(log).st_size
        except OSError:
            size = 0
        if size == self._log_size:
            return False
        self._log_size = size
        self.log_tail = tuple(store.tail_lines(log, LOG_LINES, max_bytes=16_000))
        return True

    def _poll_ranks(self) -> bool:
        """Read ranks/<rank>.json again when one changed (or every RANKS_RECHECK_S, so a rank whose
        process is gone shows as gone); True when what a panel shows changed. One stat of a missing
        folder for a single-process run."""
        seen = _stats(ranks.ranks_dir(self.path), ".json")
        clock = time.monotonic()
        if seen == self._ranks_seen and clock - self._ranks_read < RANKS_RECHECK_S:
            return False
        self._ranks_seen, self._ranks_read = seen, clock
        got = tuple(ranks.read_ranks(self.path)) if seen else ()
        if [_sans_age(r) for r in got] == [_sans_age(r) for r in self.ranks]:
            return False
        self.ranks = got
        return True

    def _metric(self, rec: dict) -> None:
        kind = rec.get("kind")
        t = rec.get("t")
        if self.t0 is None and isinstance(t, (int, float)):
            self.t0 = float(t)
        if kind == "train":
            self.last["train"] = rec
            self._add("train", rec, rec.get("loss"))
            self._tokens(rec.get("step"), rec.get("tokens"))
            tps = rec.get(store.TOKENS_PER_S)
            if isinstance(tps, (int, float)):
                self.tokens_per_s.append(float(tps))
        elif kind == "eval":
            self.last["eval"] = rec
            self._add("eval", rec, rec.get("eval_loss"))
        elif kind in ("memory", "start", "end"):
            self.last[kind] = rec

    def _add(self, name: str, rec: dict, y) -> None:
        if y is None:
            return
        try:
            y = float(y)
        except (TypeError, ValueError):
            return
        step = rec.get("step")
        if isinstance(step, (int, float)):
            self.series[(name, "step")].add(step, y)
        t = rec.get("t")
        if isinstance(t, (int, float)) and self.t0 is not None:
            self.series[(name, "time")].add(t - self.t0, y)

    def _rewind(self, step: float) -> None:
        """A resume from `step`: the step axis (and tokens seen by step) forget what came after it."""
        for name in ("train", "eval"):
            self.series[(name, "step")].truncate(step)
        while self.tokens_at and self.tokens_at[-1][0] > step:
            self.tokens_at.pop()

    def _tokens(self, step, tokens) -> None:
        """Keep (step, tokens seen) for the tokens axis: steps increasing, a bounded number of pairs."""
        if not (isinstance(step, (int, float)) and isinstance(tokens, (int, float)) and tokens > 0
                and math.isfinite(step) and math.isfinite(tokens)):
            return
        if self.tokens_at and step <= self.tokens_at[-1][0]:
            return
        self.tokens_at.append((float(step), float(tokens)))
        if len(self.tokens_at) > 2 * TOKENS_KEPT:
            last = self.tokens_at[-1]
            self.tokens_at = self.tokens_at[::2]
            if self.tokens_at[-1] != last:
                self.tokens_at.append(last)

    def _system(self, rec: dict) -> None:
        self.last["system"] = rec
        cpu = rec.get("cpu")
        if isinstance(cpu, (int, float)):
            self.cpu.append(float(cpu))
        for g in rec.get("gpus") or []:
            i = g.get("index", 0)
            used, total = g.get("mem_used"), g.get("mem_total")
            if isinstance(used, (int, float)) and total:
                self.gpu_mem.setdefault(i, deque(maxlen=SPARK_LEN)).append(used / total)
            if isinstance(g.get("util"), (int, float)):
                self.gpu_util.setdefault(i, deque(maxlen=SPARK_LEN)).append(float(g["util"]))

    # --- the UI's view ------------------------------------------------------------------------

    def snapshot(self) -> TailSnapshot:
        train_step = self.series[("train", "step")]
        return TailSnapshot(
            run_id=self.run_id,
            train={axis: tuple(self.series[("train", axis)].points()) for axis in ("step", "time")},
            eval={axis: tuple(self.series[("eval", axis)].points()) for axis in ("step", "time")},
            train_count=train_step.count,
            eval_count=self.series[("eval", "step")].count,
            bad_count=train_step.bad,
            last_train=self.last["train"],
            last_eval=self.last["eval"],
            last_memory=self.last["memory"],
            last_system=self.last["system"],
            start=self.last["start"],
            end=self.last["end"],
            t0=self.t0,
            tokens_per_s=tuple(self.tokens_per_s),
            gpu_mem={i: tuple(d) for i, d in self.gpu_mem.items()},
            gpu_util={i: tuple(d) for i, d in self.gpu_util.items()},
            cpu=tuple(self.cpu),
            alerts=tuple(self.alerts),
            log_tail=self.log_tail,
            ranks=self.ranks,
            tokens_at=tuple(self.tokens_at),
            metrics_offset=self.metrics.offset,
            caught_up=self.caught_up,
            corrupt=self.metrics.skipped,
            skipped=self.metrics.skipped + self.system.skipped + self.alerts_reader.skipped,
            version=self.version,
        )


def _stats(folder: Path, suffix: str) -> tuple:
    """(name, mtime_ns, size) of the files of `folder` whose names end with `suffix`; () without it."""
    out = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return ()
    for e in entries:
        if e.name.endswith(suffix):
            try:
                st = e.stat()
            except OSError:  # replaced or removed since the listing
                continue
            out.append((e.name, st.st_mtime_ns, st.st_size))
    return tuple(sorted(out))


def _sans_age(rec: dict) -> dict:
    return {k: v for k, v in rec.items() if k != "heartbeat_age"}


def _line_start(path: Path, offset: int) -> int:
    """The offset of the first line that starts at or after `offset`."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, offset - 1))
            head = f.read(1 << 16)
    except OSError:
        return 0
    nl = head.find(b"\n")
    return offset if nl < 0 else max(0, offset - 1) + nl + 1


def eta_seconds(last_train: dict | None, start: dict | None) -> float | None:
    """Seconds left at the average pace since the (latest) start: (max - step) / steps per second."""
    if not last_train:
        return None
    step, total = last_train.get("step"), last_train.get("max_steps")
    if not isinstance(step, (int, float)) or not total or step >= total:
        return 0.0 if total and isinstance(step, (int, float)) and step >= total else None
    step0 = (start or {}).get("step") or 0
    t_start, t_now = (start or {}).get("t"), last_train.get("t")
    if isinstance(t_start, (int, float)) and isinstance(t_now, (int, float)) and step > step0 and t_now > t_start:
        pace = (step - step0) / (t_now - t_start)
    else:
        pace = last_train.get("steps_per_s")
    if not isinstance(pace, (int, float)) or not math.isfinite(pace) or pace <= 0:
        return None
    return (total - step) / pace
