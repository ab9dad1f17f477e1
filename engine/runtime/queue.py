"""The run queue: `logs/queue.json`, advanced by whoever is around.

The order lives in a file, changed only under an flock, so the queue survives every process that
manages it being killed. Each supervisor advances it when its run ends (after its evaluation),
and so do `labtui run`, `labtui queue`, `labtui runs` and the TUI, so a queue never stalls while
anybody looks. At most `concurrency` runs are live at once: the workspace setting in
`labtui.yaml` (`concurrency: N`), else one per NVIDIA GPU, else 1.
"""

from __future__ import annotations

import errno
import os
from contextlib import contextmanager
from pathlib import Path

import yaml
from labtui.engine.rundir import cache, store

QUEUE_FILE = "queue.json"
LOCK_FILE = ".queue.lock"
SETTINGS_FILE = "labtui.yaml"


def not_writable(e: BaseException) -> bool:
    """The error of a write to a read-only workspace (permissions, a read-only mount)."""
    return isinstance(e, OSError) and e.errno in (errno.EACCES, errno.EPERM, errno.EROFS)


@contextmanager
def _locked(ws: store.Workspace):
    ws.logs.mkdir(parents=True, exist_ok=True)
    with store.file_lock(ws.logs / LOCK_FILE):
        yield


def _listed(ws: store.Workspace) -> list[str]:
    """The order queue.json gives (an empty list when it is missing or damaged)."""
    data = store.read_json(ws.logs / QUEUE_FILE, None)
    order = data.get("order") if isinstance(data, dict) else None
    if not isinstance(order, list):
        return []
    out: list[str] = []
    for x in order:
        if isinstance(x, str) and x and "/" not in x and x not in out:
            out.append(x)
    return out


# run dir -> (state.json's stamp, queued by enqueue, created): a workspace of many finished runs is
# checked with one stat each, not one read each, every time the order is rebuilt; an answer is used
# only while state.json has the same stamp (labtui.engine.rundir.cache's one rule)
_waiting_cache: dict[str, tuple[cache.Stamp, bool, float]] = {}


def _waiting_runs(ws: store.Workspace) -> list[tuple[float, str]]:
    """(created, id) of every run that was put in the queue (state `queued` with the `queued` flag
    that `enqueue` sets), whatever queue.json says. A run just created and about to be started has no
    flag, so it is never picked up from here."""
    out = []
    try:
        entries = list(os.scandir(ws.logs))
    except OSError:
        return out
    for entry in entries:
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        path = os.path.join(entry.path, store.STATE_FILE)
        key = cache.stamp(path)
        if key is None:
            continue
        cached = _waiting_cache.get(entry.path)
        if cached is None or cached[0] != key:
            raw = store.read_json(Path(path), {}) or {}
            raw = raw if isinstance(raw, dict) else {}
            created = raw.get("created")
            created = float(created) if isinstance(created, (int, float)) and not isinstance(created, bool) else 0.0
            cached = (key, raw.get("status") == "queued" and raw.get("queued") is True, created)
            _waiting_cache[entry.path] = cached
        if cached[1]:
            out.append((cached[2], entry.name))
    return out


def _order(ws: store.Workspace) -> list[str]:
    """queue.json's order, then every queued run it does not list, oldest first: a deleted or corrupt
    queue.json (or a run missing from it) strands nothing."""
    order = _listed(ws)
    have = set(order)
    order += [run_id for _, run_id in sorted(_waiting_runs(ws)) if run_id not in have]
    return order


def _save(ws: store.Workspace, order: list[str]) -> None:
    store.atomic_write_json(ws.logs / QUEUE_FILE, {"order": order})


def settings(ws: store.Workspace) -> dict:
    try:
        data = yaml.safe_load((ws.root / SETTINGS_FILE).read_text()) or {}
    except (FileNotFoundError, yaml.YAMLError):
        data = {}
    return data if isinstance(data, dict) else {}


def concurrency(ws: store.Workspace) -> int:
    value = settings(ws).get("concurrency")
    if isinstance(value, int) and value > 0:
        return value
    from labtui.engine.runtime.sysmon import gpus

    return max(1, len(gpus()))


def set_concurrency(ws: store.Workspace, n: int) -> None:
    data = settings(ws)
    data["concurrency"] = int(n)
    store.atomic_write_text(ws.root / SETTINGS_FILE, yaml.safe_dump(data, sort_keys=False))


def occupies_slot(run: store.Run) -> bool:
    """Live, or finished but its supervisor is still busy with the run's after-training evaluation. A
    Slurm run never does: it runs where Slurm puts it, and Slurm keeps its own limits."""
    raw = run.raw_state()
    if raw.get("executor") == "slurm":
        return False
    if raw.get("status") in store.LIVE:
        return run.state().get("status") in store.LIVE  # crashed runs free their slot
    return bool(raw.get("after_run")) and store.process_alive(raw.get("supervisor_pid"), raw.get("supervisor_start"))


def _is_waiting(ws: store.Workspace, run_id: str) -> bool:
    return (ws.logs / run_id).is_dir() and store.Run(ws.logs / run_id).raw_state().get("status") == "queued"


def _busy(ws: store.Workspace, exclude: set[str] = frozenset()) -> int:
    return sum(1 for r in ws.iter_runs() if r.id not in exclude and r.raw_state().get("status") != "queued"
               and occupies_slot(r))


def slots(ws: store.Workspace) -> tuple[int, int]:
    """(runs holding a slot now, the concurrency limit)."""
    return _busy(ws), concurrency(ws)


def slot_free(ws: store.Workspace) -> bool:
    """Whether a run started now stays within the limit (nothing queued is waiting for a slot either)."""
    busy, limit = slots(ws)
    return busy < limit and not queued(ws)


def full_message(ws: store.Workspace) -> str:
    """Why a run started now would wait: "1 run already running, concurrency 1, 2 queued ahead"."""
    busy, limit = slots(ws)
    waiting = len(queued(ws))
    ahead = f", {waiting} queued ahead" if waiting else ""
    return f"{busy} run{'s' if busy != 1 else ''} already running, concurrency {limit}{ahead}"


def queued(ws: store.Workspace) -> list[store.Run]:
    """The runs waiting, in the order they start. Reads only (no lock), so it works in a read-only workspace."""
    return [store.Run(ws.logs / run_id) for run_id in _order(ws) if _is_waiting(ws, run_id)]


def enqueue(ws: store.Workspace, run: store.Run, resume: bool = False) -> None:
    with _locked(ws):
        order = _order(ws)
        if run.id not in order:
            order.append(run.id)
        _save(ws, order)
        run.update_state(status="queued", queued=True, queued_resume=bool(resume) or None)


def start_or_queue(ws: store.Workspace, run: store.Run, *, now: bool = False, resume: bool = False) -> tuple[bool, str]:
    """The one place that decides whether a run starts now (`labtui run`, resume, retry, the TUI).

    It starts when a slot is free under the workspace's concurrency and no queued run is waiting for
    one, or when `now` (the user's explicit "start anyway"); otherwise it joins the end of the queue.
    Returns (started, why it was queued: "1 run already running, concurrency 1").

    A Slurm run (`launch.executor: slurm`) is submitted to Slurm instead (slurm_runs.submit: Slurm
    queues it; slurm.SlurmError when it refuses), whatever the local limit."""
    from labtui.engine.runtime import launcher, slurm_runs

    if slurm_runs.is_slurm(run):
        slurm_runs.submit(run, resume=resume)
        return True, ""

    with _locked(ws):
        order = [r for r in _order(ws) if r != run.id]
        waiting = [r for r in order if _is_waiting(ws, r)]
        busy, limit = _busy(ws, exclude={run.id}), concurrency(ws)
        if now or (not waiting and busy < limit):
            if order != _listed(ws):
                _save(ws, order)
            launcher.start(run, resume=resume)
            return True, ""
        _save(ws, order + [run.id])
        run.update_state(status="queued", queued=True, queued_resume=bool(resume) or None)
    ahead = f", {len(waiting)} queued ahead" if waiting else ""
    return False, f"{busy} run{'s' if busy != 1 else ''} already running, concurrency {limit}{ahead}"


def advance(ws: store.Workspace) -> list[str]:
    """Start queued runs while slots are free; returns the ids started. In a workspace this process
    cannot write (nothing can be started there anyway) it does nothing."""
    from labtui.engine.runtime import launcher

    started: list[str] = []
    if not _listed(ws) and not _waiting_runs(ws):
        return started  # nothing queued: no lock taken, nothing written
    try:
        with _locked(ws):
            order = _order(ws)
            keep = [r for r in order if _is_waiting(ws, r)]
            busy = _busy(ws, exclude=set(keep))
            free = concurrency(ws) - busy
            while free > 0 and keep:
                run = store.Run(ws.logs / keep.pop(0))
                launcher.start(run, resume=bool(run.raw_state().get("queued_resume")))
                started.append(run.id)
                free -= 1
            if keep != _listed(ws):
                _save(ws, keep)
    except OSError as e:
        if not_writable(e):
            return started
        raise
    return started


def cancel(ws: store.Workspace, run: store.Run) -> bool:
    """Take a queued run out of the queue (`stopped`, "cancelled before it started"); False if it is not queued."""
    with _locked(ws):
        order = _order(ws)
        if run.id not in order or not _is_waiting(ws, run.id):
            if run.id in order:
                order.remove(run.id)
                _save(ws, order)
            return False
        order.remove(run.id)
        _save(ws, order)
        run.update_state(status="stopped", error="cancelled before it started", queued=False, queued_resume=None)
    return True


def move(ws: store.Workspace, run: store.Run, delta: int | None = None, to: int | None = None) -> int:
    """Move a queued run by `delta` places (negative = earlier) or to position `to` (0 = next)."""
    with _locked(ws):
        order = [r for r in _order(ws) if _is_waiting(ws, r)]
        if run.id not in order:
            raise ValueError(f"{run.id} is not queued")
        i = order.index(run.id)
        order.pop(i)
        j = to if to is not None else i + (delta or 0)
        j = max(0, min(len(order), j))
        order.insert(j, run.id)
        _save(ws, order)
    return j


def on_run_end(run: store.Run, state: dict) -> None:
    """Supervisor hook: the run has ended, start what is next."""
    info = run.info()
    if info.get("kind") == "eval":
        return
    from labtui.engine.runtime.launcher import home_workspace

    advance(store.Workspace(home_workspace(run)))
