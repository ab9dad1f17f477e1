"""The run list: one cheap `RunRow` per run directory, re-read only when its files change.

A finished run's row is cached (engine.rundir.cache: keyed by the stamps of its small files, KEY_FILES,
kept in `logs/.labtui-cache/runs.json`, written by the TUI only when it changed), so a new TUI starts
with a thousand finished runs by checking their stamps rather than parsing some 4,000 files. A live
run's row is recomputed every scan, because liveness (pid and heartbeat checks in
`store.Run.state()`) can change without any file changing. No Textual here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields

from labtui.engine.rundir import cache, store

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
    warning: str | None = None  # derive_state's warning, e.g. store.SUPERVISOR_GONE
    executor: str = "local"  # local | slurm
    slurm: dict | None = field(default=None, compare=True, hash=False)  # state.json's `slurm` (records.SlurmJob)
    group: str | None = None  # run.json's group: the runs of one `labtui sweep`

    @property
    def live(self) -> bool:
        return self.status in store.LIVE

    @property
    def final(self) -> bool:
        return self.status in store.FINAL

    @property
    def on_slurm(self) -> bool:
        return self.executor == "slurm"

    def duration(self, now: float) -> float | None:
        if not self.started:
            return None
        return (self.ended or now) - self.started


def _run_dirs(ws: store.Workspace):
    """(run id, key) for every run directory, as `Workspace.iter_runs` lists them (folders holding a
    run.json, by name); the key is the cache stamps of KEY_FILES (one stat each once known: this
    runs over every run every second)."""
    logs = str(ws.logs)
    try:
        with os.scandir(logs) as it:
            names = sorted(e.name for e in it if e.is_dir())
    except OSError:
        return
    for name in names:
        base = os.path.join(logs, name, "")
        key = cache.stamps(base + f for f in KEY_FILES)
        if key[2] is not None:  # run.json (KEY_FILES[2]) makes it a run
            yield name, key


def row_for(run: store.Run, now: float | None = None) -> RunRow:
    """The run's row (`store.Run.row`, the fields of `labtui runs --json` and the TUI's), liveness
    judged at `now`."""
    row = run.row(now)
    return RunRow(**{k: row[k] for k in _ROW_FIELDS if k in row})


CACHE_NAME = "runs"  # logs/.labtui-cache/runs.json
CACHE_VERSION = 4  # an entry's value: the row's field values, in RunRow's order; 2: max_steps from the config
# before the first log; 3: executor and slurm; 4: group
KEY_FILES = (store.STATE_FILE, store.PROGRESS_FILE, store.RUN_FILE, store.NOTES_FILE)
_ROW_FIELDS = tuple(f.name for f in fields(RunRow))
_STATUS = _ROW_FIELDS.index("status")


class Scanner:
    def __init__(self, ws: store.Workspace, clock=None, persist: bool = True):
        self.ws = ws
        self.clock = clock
        self.persist = persist  # keep finished rows in logs/.labtui-cache/runs.json between sessions
        self._cache: dict[str, tuple[tuple, RunRow]] = {}
        self._store = cache.Store(ws.logs, CACHE_NAME, CACHE_VERSION) if persist else None

    def scan(self) -> list[RunRow]:
        rows = []
        seen = set()
        for run_id, key in _run_dirs(self.ws):
            cached = self._cache.get(run_id)
            if cached and cached[0] == key and cached[1].status not in store.LIVE:
                row = cached[1]
            elif (row := self._stored(run_id, key)) is None:
                run = store.Run(self.ws.logs / run_id)
                try:
                    row = row_for(run, self.clock() if self.clock else None)
                except Exception:  # a run directory being created or removed right now
                    continue
                if self._store is not None and row.status in store.FINAL:
                    self._store.put(run_id, key, list(astuple_shallow(row)))
            self._cache[run_id] = (key, row)
            seen.add(run_id)
            rows.append(row)
        for gone in set(self._cache) - seen:
            del self._cache[gone]
        if self._store is not None:
            self._store.prune(seen.__contains__)
            self._store.save()
        if any(r.status == "queued" for r in rows):
            order = engine_api.queue_order(self.ws)
            if order:
                pos = {rid: i + 1 for i, rid in enumerate(order)}
                rows = [_with_pos(r, pos.get(r.id)) if r.status == "queued" else r for r in rows]
        return rows

    def _stored(self, run_id: str, key: tuple) -> RunRow | None:
        """The finished row kept in the cache file for these stamps, if it is well-formed."""
        if self._store is None:
            return None
        values = self._store.get(run_id, key)
        if (isinstance(values, list) and len(values) == len(_ROW_FIELDS) and values[_STATUS] in store.FINAL
                and _row_ok(values)):
            return RunRow(*values)
        return None


# the types of a cached row's fields: a row with another is read again from the run
_ROW_TYPES = {"id": store.as_text, "experiment": store.as_text, "status": store.as_text, "kind": store.as_text,
              "description": store.as_text, "step": store.as_whole, "max_steps": store.as_whole,
              "epoch": store.as_finite, "created": store.as_finite, "started": store.as_finite,
              "ended": store.as_finite, "heartbeat": store.as_finite, "train_loss": store.as_real,
              "eval_loss": store.as_real, "best_step": store.as_whole, "error": store.as_text,
              "exit_signal": store.as_text, "pid": store.as_whole, "host": store.as_text, "parent": store.as_text,
              "parent_experiment": store.as_text, "changed": store.as_changed, "notes": store.as_text,
              "queue_pos": store.as_whole, "warning": store.as_text, "executor": store.as_text,
              "slurm": store.as_mapping, "group": store.as_text}
_ROW_CHECKS = tuple((_ROW_FIELDS.index(name), coerce) for name, coerce in _ROW_TYPES.items())


def _row_ok(values: list) -> bool:
    return all(values[i] is None or coerce(values[i]) is not None for i, coerce in _ROW_CHECKS)


def astuple_shallow(row: RunRow) -> tuple:
    """The field values in order (dataclasses.astuple would deep-copy `changed`)."""
    return tuple(getattr(row, f) for f in _ROW_FIELDS)


def _with_pos(row: RunRow, pos: int | None) -> RunRow:
    from dataclasses import replace

    return replace(row, queue_pos=pos)
