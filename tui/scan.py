"""The run list: one cheap `RunRow` per run directory, re-read only when its files change.

A finished run's row is cached by the modification times of its small JSON files; a live run's
row is recomputed every scan, because liveness (pid and heartbeat checks in
`store.Run.state()`) can change without any file changing. No Textual here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from engine import store

from . import engine_api


@dataclass(frozen=True)
class RunRow:
    id: str
    experiment: str
    status: str
    kind: str = "train"
    description: str = ""
    step: int = 0
    max_steps: int | None = None
    epoch: float | None = None
    created: float | None = None
    started: float | None = None
    ended: float | None = None
    heartbeat: float | None = None
    train_loss: float | str | None = None
    eval_loss: float | str | None = None
    best_step: int | None = None
    error: str | None = None
    exit_signal: str | None = None
    pid: int | None = None
    host: str | None = None
    parent: str | None = None
    parent_experiment: str | None = None
    changed: dict = field(default_factory=dict, compare=True, hash=False)
    notes: str = ""  # the first line of notes.md
    queue_pos: int | None = None

    @property
    def live(self) -> bool:
        return self.status in store.LIVE

    @property
    def final(self) -> bool:
        return self.status in store.FINAL

    def duration(self, now: float) -> float | None:
        if not self.started:
            return None
        return (self.ended or now) - self.started


def _mtime(path) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return 0


def row_for(run: store.Run, now: float | None = None) -> RunRow:
    """The fields of `Run.summary()` (the `labtui runs --json` row), with liveness judged at `now`."""
    info, state, progress = run.info(), run.state(now), run.progress()
    notes = run.notes().strip()
    return RunRow(
        id=run.id, experiment=info.get("experiment") or run.id, status=state.get("status", "queued"),
        kind=info.get("kind") or "train", description=info.get("description") or "",
        step=progress.get("step") or 0, max_steps=progress.get("max_steps"), epoch=progress.get("epoch"),
        created=info.get("created"), started=state.get("started"), ended=state.get("ended"),
        heartbeat=state.get("heartbeat"), train_loss=progress.get("train_loss"),
        eval_loss=progress.get("best_eval_loss"), best_step=progress.get("best_step"), error=state.get("error"),
        exit_signal=state.get("exit_signal"), pid=state.get("pid"), host=state.get("host"),
        parent=info.get("parent"), parent_experiment=info.get("parent_experiment"),
        changed=info.get("changed") or {}, notes=notes.splitlines()[0] if notes else "",
    )


class Scanner:
    def __init__(self, ws: store.Workspace, clock=None):
        self.ws = ws
        self.clock = clock
        self._cache: dict[str, tuple[tuple, RunRow]] = {}

    def scan(self) -> list[RunRow]:
        rows = []
        seen = set()
        for run in self.ws.iter_runs():
            key = tuple(_mtime(run.file(name)) for name in (store.STATE_FILE, store.PROGRESS_FILE, store.RUN_FILE,
                                                           store.NOTES_FILE))
            cached = self._cache.get(run.id)
            if cached and cached[0] == key and cached[1].status not in store.LIVE:
                row = cached[1]
            else:
                try:
                    row = row_for(run, self.clock() if self.clock else None)
                except Exception:  # a run directory being created or removed right now
                    continue
                self._cache[run.id] = (key, row)
            seen.add(run.id)
            rows.append(row)
        for gone in set(self._cache) - seen:
            del self._cache[gone]
        if any(r.status == "queued" for r in rows):
            order = engine_api.queue_order(self.ws)
            if order:
                pos = {rid: i + 1 for i, rid in enumerate(order)}
                rows = [_with_pos(r, pos.get(r.id)) if r.status == "queued" else r for r in rows]
        return rows


def _with_pos(row: RunRow, pos: int | None) -> RunRow:
    from dataclasses import replace

    return replace(row, queue_pos=pos)
