"""The background monitor: one thread that reads the run store and posts messages to the app.

Every `poll_interval` seconds (or at once when woken) it
  - scans the run list (cheap rows, cached for finished runs) and posts `RunsScanned` on change;
  - notices runs that ended and alerts that fired, in any run (`RunEnded`, `AlertFired`),
    including runs started before the TUI was opened;
  - reads the new bytes of the selected run's files (`RunTail`, by offset) and posts `RunData`
    (a long history in chunks, one after another; after that one read a tick, however fast the
    run writes, so this thread never starves the UI of the GIL);
  - the same for the runs marked on the dashboard, whose chart overlays them (`MarkedData`, to
    the screen that marked them);
  - follows one log file by offset for the log screen (`LogLines`);
  - reads each run's evaluations when their folders changed (`EvalsScanned`: the headline eval's
    accuracy, evaluations still going with their progress and ETA), never on the UI thread;
  - notifies a crash it finds that no supervisor recorded, once per run and event (the run's
    notified.json says whether anybody did already), and re-sends notifications whose sender died
    (runtime.notify.crashed_by_reader: the sending is a detached process, never waited for);
  - reconciles the Slurm runs that have not ended with Slurm (runtime.slurm_runs.sync, at most every
    SLURM_SYNC_EVERY_S; nothing where Slurm is not installed);
  - says when one of these parts fails, and when it works again (`MonitorStatus`, in the title bar).
It never touches a widget. Recently selected runs keep their tails, so switching back is instant.
"""

from __future__ import annotations

import codecs
import os
import threading
import time
import traceback
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from labtui.engine.rundir import cache, store
from textual.message import Message

from . import baseline, engine_api, messages
from .scan import RunRow, Scanner
from .tail import RunTail, TailSnapshot

LOG_TAIL_BYTES = 64_000
LOG_CHUNK_BYTES = 1 << 20
ADVANCE_EVERY_S = 2.0  # how often a queue with waiting runs is checked for a free slot
ORPHANS_EVERY_S = 60.0  # how often every run is checked for a notification whose sender died mid-send
SLURM_SYNC_EVERY_S = 5.0  # how often Slurm is asked about the Slurm runs that have not ended
SNAPSHOT_EVERY_S = 1.0  # a history that takes longer to load shows its progress this often (each
# snapshot is drawn on the UI thread, which a shorter load would only slow down)


@dataclass(frozen=True)
class EvalInfo:
    """A run's evaluations as the dashboard shows them: the headline eval (labtui.engine.analysis.evalstore's rule;
    its row with `rule` and `why`), the evaluations still going (rows with `eta_s`), all rows."""

    headline: dict | None = None
    running: tuple[dict, ...] = ()
    rows: tuple[dict, ...] = ()


class Monitor:
    def __init__(self, ws: store.Workspace, post: Callable[[Message], object], poll_interval: float = 1.0,
                 tails_kept: int = 6, chunk_bytes: int | None = None, clock: Callable[[], float] | None = None):
        self.ws = ws
        self.post = post
        self.poll_interval = poll_interval
        self.tails_kept = tails_kept
        self.chunk_bytes = chunk_bytes
        self.scanner = Scanner(ws, clock)
        self.tails: OrderedDict[str, RunTail] = OrderedDict()
        self.rows: tuple[RunRow, ...] = ()
        self.ticks = 0
        self.last_error: str | None = None  # what failed in the last tick (None: all went well)
        self.evals: dict[str, EvalInfo] = {}
        self._eval_cache: dict[str, tuple] = {}  # run id -> (evals/ stamp, (eval folder, stamp) of those going, info)
        self._headline_cache: dict[str, tuple] = {}  # run id -> (rows, baseline's headline, step, EvalInfo)
        self._base_row: dict | None = None  # the baseline's headline eval at the last tick
        self._selected: str | None = None
        self._marked: tuple[str, ...] = ()  # the dashboard's marked runs, in the order marked
        self._marked_target = None  # where their snapshots go (the dashboard screen)
        self._marked_snaps: dict[str, TailSnapshot] = {}  # the last snapshot posted of each
        self._marked_posted: tuple[str, ...] = ()
        self._posted_for: str | None = None
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._statuses: dict[str, str] | None = None
        self._alerts: dict[str, store.JsonlReader] = {}
        self._followed_log: dict | None = None
        self._lock = threading.Lock()
        self._advanced = float("-inf")
        self._slurm_synced = float("-inf")
        self._crash_told: set[str] = set()  # crashed runs handed to notify (a resumed one leaves the set)
        self._orphans_checked = float("-inf")
        self._slurm_error: Exception | None = None  # the last sync's failure, said again until one works

    # --- called from the UI thread ------------------------------------------------------------

    def select(self, run_id: str | None) -> None:
        if run_id != self._selected:
            self._selected = run_id
            self._posted_for = None  # the app dropped its snapshot: post one for this run
            self.wake()

    def mark(self, run_ids: tuple[str, ...] | list[str], target=None) -> None:
        """Read the runs `run_ids` too and post their snapshots to `target` as `MarkedData` (all of
        them, whenever one changed); () stops."""
        with self._lock:
            self._marked = tuple(run_ids)
            self._marked_target = target if run_ids else None
            self._marked_posted = ()
        self.wake()

    @property
    def marked(self) -> tuple[str, ...]:
        return self._marked

    @property
    def selected(self) -> str | None:
        return self._selected

    def follow_log(self, run_id: str | None, target=None) -> None:
        """Post the log of `run_id` to `target` (a widget or screen), last 64 kB first; None stops."""
        with self._lock:
            self._followed_log = None if run_id is None else {"run_id": run_id, "target": target, "offset": None,
                                                       "decoder": codecs.getincrementaldecoder("utf-8")("replace")}
        self.wake()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()

    def prime(self) -> tuple[RunRow, ...]:
        """Scan once, before the thread starts, so the first frame already lists the runs.

        The thread's first tick then finds nothing new to post. Alerts written from here on are
        toasted; those from before are in the panels. The evaluations are read by that first tick,
        after the first frame (a thousand runs' evals take 0.2-0.4 s to read).
        """
        self._scan(post_rows=False)
        return self.rows

    def tail(self, run_id: str) -> RunTail | None:
        return self.tails.get(run_id)

    # --- the thread ---------------------------------------------------------------------------

    def run(self, cancelled: Callable[[], bool] = lambda: False) -> None:
        while not (self._stopped.is_set() or cancelled()):
            self._wake.clear()
            self.tick(cancelled)
            self._wake.wait(self.poll_interval)

    def tick(self, cancelled: Callable[[], bool] = lambda: False) -> None:
        errors = []
        for part in (self._sync_slurm, self._scan, self._advance_queue, self._notify_crashes, self._scan_evals, self._poll_selected,
                     self._poll_marked, self._poll_log):
            if self._stopped.is_set() or cancelled():
                return
            try:
                part()
            except Exception as e:  # a half-written file must never stop the monitor
                what = part.__name__.strip("_").replace("_", " ")
                errors.append(f"{what}: " + "".join(traceback.format_exception_only(type(e), e)).strip())
        error = "; ".join(errors) or None
        if error != self.last_error:  # the title bar says so, and says when it works again
            self.last_error = error
            self.post(messages.MonitorStatus(error))
        self.ticks += 1

    def _scan(self, post_rows: bool = True) -> None:
        rows = tuple(self.scanner.scan())
        if rows != self.rows:
            self.rows = rows
            if post_rows:
                self.post(messages.RunsScanned(rows))
        first = self._statuses is None
        previous = self._statuses or {}
        for row in rows:
            old = previous.get(row.id)
            if not first and old is not None and old != row.status and old not in store.FINAL and row.final:
                self.post(messages.RunEnded(row, old))
            self._poll_alerts(row, skip_existing=first)
        self._statuses = {r.id: r.status for r in rows}
        for gone in set(self._alerts) - set(self._statuses):
            del self._alerts[gone]

    def _scan_evals(self, post: bool = True) -> None:
        """Each run's evaluations, read again only when its evals/ folder changed (or one of its
        evaluations is still going); posts `EvalsScanned` when something changed."""
        infos = {}
        for row in self.rows:
            info = self._eval_info(row)
            if info is not None:
                infos[row.id] = info
        if infos:
            infos = self._headlines(infos)
        for gone in set(self._eval_cache) - {r.id for r in self.rows}:
            del self._eval_cache[gone]
        if infos != self.evals:
            self.evals = infos
            if post:
                self.post(messages.EvalsScanned(infos))

    def _headlines(self, infos: dict[str, EvalInfo]) -> dict[str, EvalInfo]:
        """Each run's headline eval by labtui.engine.analysis.evalstore's rule, against the baseline's headline eval
        (its N and split) when a baseline is marked: the figure History shows for the run. Chosen again
        only for a run whose evals, step or baseline changed (the same EvalInfo otherwise)."""
        from labtui.engine.analysis import evalstore

        steps = {r.id: r.step for r in self.rows}
        base_id = baseline.get(self.ws)
        base = infos.get(base_id) if base_id else None
        base_row = evalstore.choose_headline(base.rows, None, steps.get(base_id)) if base else None
        if base_row is not None and base_row == self._base_row:
            base_row = self._base_row  # the same one: compared by identity below, once per run
        self._base_row = base_row
        out = {}
        for rid, info in infos.items():
            against = None if rid == base_id else base_row
            step = steps.get(rid)
            hit = self._headline_cache.get(rid)
            if hit is not None and hit[0] is info.rows and hit[1] is against and hit[2] == step:
                out[rid] = hit[3]
                continue
            out[rid] = replace(info, headline=base_row if rid == base_id else
                               evalstore.choose_headline(info.rows, base_row, step))
            self._headline_cache[rid] = (info.rows, against, step, out[rid])
        for gone in set(self._headline_cache) - set(infos):
            del self._headline_cache[gone]
        return out

    def _eval_info(self, row: RunRow) -> EvalInfo | None:
        folder = self.ws.logs / row.id / "evals"
        top = cache.stamp(folder)
        if top is None:
            self._eval_cache.pop(row.id, None)
            return None
        cached = self._eval_cache.get(row.id)
        if cached is not None and cached[0] == top:
            _, watched, info = cached
            if all(cache.stamp(path) == s for path, s in watched):
                return info
        from labtui.engine.analysis import evalstore  # light, but not needed before the first eval

        run = store.Run(self.ws.logs / row.id)
        # each eval folder's mtime before its files are read: a change made during the read is seen
        # at the next tick (taken after the read, it would hide that change for good)
        before = {str(p): cache.stamp(p) for p in run.evals()}
        rows = tuple(evalstore.list_evals(run))
        running = []
        for r in rows:
            if r.get("status") in store.FINAL:
                continue
            progress = store.Run(Path(r["path"])).progress()
            rate, done, total = progress.get("examples_per_s"), r.get("done"), r.get("total")
            eta = None
            if all(isinstance(x, (int, float)) for x in (rate, done, total)) and rate > 0 and total >= done:
                eta = (total - done) / rate
            running.append({**r, "eta_s": eta})
        info = EvalInfo(running=tuple(running), rows=rows)  # the headline: _headlines, with the baseline
        # the eval folders still going: their files are rewritten, which changes the folder's stamp
        watched = tuple((r["path"], before.get(r["path"])) for r in rows if r.get("status") not in store.FINAL)
        self._eval_cache[row.id] = (top, watched, info)
        return info

    def _advance_queue(self) -> None:
        """Start queued runs whose slot came free, so the queue moves while the TUI is open even when
        every supervisor was killed. Only when a run is queued, at most every ADVANCE_EVERY_S."""
        if not any(r.status == "queued" and not r.on_slurm for r in self.rows):  # Slurm queues its own
            return
        now = time.monotonic()
        if now - self._advanced < ADVANCE_EVERY_S:
            return
        self._advanced = now
        if engine_api.advance_queue(self.ws):
            self.wake()  # show them starting at once

    def _notify_crashes(self) -> None:
        """Hand each run newly seen `crashed` to notify (which sends only a crash nobody recorded, and
        only once: an open TUI, `labtui runs` and the supervisor share notified.json), and every run
        each ORPHANS_EVERY_S for the notifications whose sender died mid-send."""
        crashed = {r.id for r in self.rows if r.status == "crashed"}
        self._crash_told &= crashed
        now = time.monotonic()
        sweep = now - self._orphans_checked >= ORPHANS_EVERY_S
        rows = [r for r in self.rows if sweep or (r.id in crashed and r.id not in self._crash_told)]
        if sweep:
            self._orphans_checked = now
        if rows:
            self._crash_told |= crashed
            engine_api.notify_crashes(self.ws, [{"id": r.id, "status": r.status} for r in rows])

    def _sync_slurm(self) -> None:
        """Ask Slurm about the Slurm runs that have not ended (the engine writes what it says into
        their state.json; the scan right after reads it). Only when there are such runs, at most
        every SLURM_SYNC_EVERY_S; a failure stays in the title bar until a sync works."""
        runs = [r.id for r in self.rows if r.on_slurm and not r.final]
        if not runs:
            self._slurm_error = None
            return
        now = time.monotonic()
        if now - self._slurm_synced < SLURM_SYNC_EVERY_S:
            if self._slurm_error is not None:
                raise self._slurm_error.with_traceback(None)
            return
        self._slurm_synced = now
        try:
            engine_api.slurm_sync(self.ws, [store.Run(self.ws.logs / run_id) for run_id in runs])
        except Exception as e:
            self._slurm_error = e
            raise
        self._slurm_error = None

    def _poll_alerts(self, row: RunRow, skip_existing: bool) -> None:
        reader = self._alerts.get(row.id)
        if reader is None:
            if not row.live and row.status != "queued":
                return
            path = self.ws.logs / row.id / store.ALERTS_FILE
            reader = store.JsonlReader(path)
            if skip_existing:  # alerts from before the TUI opened are in the panel, not toasts
                reader.offset = reader.size()
            self._alerts[row.id] = reader
        for alert in reader.read_new():
            self.post(messages.AlertFired(row, alert))
        if row.final:
            del self._alerts[row.id]

    def _poll_selected(self) -> None:
        run_id = self._selected
        if run_id is None:
            return
        tail = self._tail_for(run_id)
        if tail is None:
            return
        posted = time.monotonic()
        changed = False
        loading = not tail.was_caught_up  # a long history loads in chunks, one after another
        while not self._stopped.is_set() and self._selected == run_id:
            if not tail.poll():
                break
            changed = True
            if tail.caught_up or not loading:
                break  # once loaded, one read a tick: a fast writer must not keep this thread busy
            if time.monotonic() - posted > SNAPSHOT_EVERY_S:
                self.post(messages.RunData(tail.snapshot()))
                posted = time.monotonic()
                changed = False
        if (changed or self._posted_for != run_id) and self._selected == run_id:
            self.post(messages.RunData(tail.snapshot()))
            self._posted_for = run_id

    def _tail_for(self, run_id: str) -> RunTail | None:
        """The run's tail, made on first use; the least recently used beyond `tails_kept` (and the
        marked runs') are dropped, never a marked run's or the selected run's."""
        tail = self.tails.get(run_id)
        if tail is None:
            path = self.ws.logs / run_id
            if not path.is_dir():
                return None
            tail = RunTail(path, **({"chunk_bytes": self.chunk_bytes} if self.chunk_bytes else {}))
            self.tails[run_id] = tail
            keep = {*self._marked, self._selected, run_id}
            while len(self.tails) > self.tails_kept + len(self._marked):
                old = next((k for k in self.tails if k not in keep), None)
                if old is None:
                    break
                del self.tails[old]
        self.tails.move_to_end(run_id)
        return tail

    def _poll_marked(self) -> None:
        """Read the marked runs' new records (a long history in chunks, for at most SNAPSHOT_EVERY_S a
        tick) and post all their snapshots when one changed, or the set did."""
        with self._lock:
            marked, target = self._marked, self._marked_target
        if not marked or target is None:
            self._marked_snaps.clear()
            return
        deadline = time.monotonic() + SNAPSHOT_EVERY_S
        snaps, changed = [], marked != self._marked_posted
        for run_id in marked:
            if self._stopped.is_set():
                return
            tail = self._tail_for(run_id)
            if tail is None:
                continue
            if run_id != self._selected:  # the selected run's tail was read by _poll_selected just now
                loading = not tail.was_caught_up
                while tail.poll() and loading and not tail.caught_up and time.monotonic() < deadline:
                    pass
            snap = self._marked_snaps.get(run_id)
            if snap is None or snap.version != tail.version:
                snap = self._marked_snaps[run_id] = tail.snapshot()
                changed = True
            snaps.append(snap)
        for gone in set(self._marked_snaps) - set(marked):
            del self._marked_snaps[gone]
        with self._lock:
            if self._marked != marked:  # marked again meanwhile: the next tick posts that set
                return
            if changed:
                self._marked_posted = marked
        if changed:
            target.post_message(messages.MarkedData(tuple(snaps)))

    def _poll_log(self) -> None:
        with self._lock:
            log = self._followed_log
        if log is None:
            return
        path = self.ws.logs / log["run_id"] / store.LOG_FILE
        try:
            size = os.stat(path).st_size
        except OSError:
            size = 0
        reset = False
        if log["offset"] is None or size < log["offset"]:
            log["offset"] = max(0, size - LOG_TAIL_BYTES)
            reset = True
        if size == log["offset"] and not reset:
            return
        data = b""
        if size > log["offset"]:
            f = store.open_regular(path)  # a FIFO or a link to another file is not the run's log
            if f is None:
                return
            with f:
                f.seek(log["offset"])
                data = f.read(LOG_CHUNK_BYTES)
        log["offset"] += len(data)
        text = log["decoder"].decode(data)
        if reset and log["offset"] - len(data) > 0:
            text = text.split("\n", 1)[-1]  # drop the partial first line of a tail
        with self._lock:
            if self._followed_log is not log:
                return
        msg = messages.LogLines(log["run_id"], text, reset=reset)
        target = log["target"]
        if target is not None:
            target.post_message(msg)
        else:
            self.post(msg)
        if log["offset"] < size:
            self.wake()
