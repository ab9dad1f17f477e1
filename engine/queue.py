"""The run queue: `logs/queue.json`, advanced by whoever is around.

The order lives in a file, changed only under an flock, so the queue survives every process that
manages it being killed. Each supervisor advances it when its run ends (after its evaluation),
and so do `labtui run`, `labtui queue`, `labtui runs` and the TUI, so a queue never stalls while
anybody looks. At most `concurrency` runs are live at once: the workspace setting in
`labtui.yaml` (`concurrency: N`), else one per NVIDIA GPU, else 1.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path

import yaml

from . import store

QUEUE_FILE = "queue.json"
LOCK_FILE = ".queue.lock"
SETTINGS_FILE = "labtui.yaml"


@contextmanager
def _locked(ws: store.Workspace):
    ws.logs.mkdir(parents=True, exist_ok=True)
    fd = os.open(ws.logs / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _order(ws: store.Workspace) -> list[str]:
    data = store.read_json(ws.logs / QUEUE_FILE, {}) or {}
    return [str(x) for x in data.get("order", [])]


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
    from .sysmon import gpus

    return max(1, len(gpus()))


def set_concurrency(ws: store.Workspace, n: int) -> None:
    data = settings(ws)
    data["concurrency"] = int(n)
    store.atomic_write_text(ws.root / SETTINGS_FILE, yaml.safe_dump(data, sort_keys=False))


def occupies_slot(run: store.Run) -> bool:
    """Live, or finished but its supervisor is still busy with the run's after-training evaluation."""
    raw = run.raw_state()
    if raw.get("status") in store.LIVE:
        return run.state().get("status") in store.LIVE  # crashed runs free their slot
    return bool(raw.get("after_run")) and store.process_alive(raw.get("supervisor_pid"), raw.get("supervisor_start"))


def queued(ws: store.Workspace) -> list[store.Run]:
    out = []
    for run_id in _order(ws):
        run = store.Run(ws.logs / run_id)
        if run.path.is_dir() and run.raw_state().get("status") == "queued":
            out.append(run)
    return out


def enqueue(ws: store.Workspace, run: store.Run) -> None:
    with _locked(ws):
        order = _order(ws)
        if run.id not in order:
            order.append(run.id)
        _save(ws, order)
    run.update_state(status="queued", queued=True)


def advance(ws: store.Workspace) -> list[str]:
    """Start queued runs while slots are free; returns the ids started."""
    from . import launcher

    started: list[str] = []
    with _locked(ws):
        order = _order(ws)
        if not order:
            return started
        keep = [r for r in order if (ws.logs / r).is_dir() and store.Run(ws.logs / r).raw_state().get("status") == "queued"]
        busy = sum(1 for r in ws.iter_runs() if r.id not in keep and r.raw_state().get("status") != "queued" and occupies_slot(r))
        free = concurrency(ws) - busy
        while free > 0 and keep:
            run = store.Run(ws.logs / keep.pop(0))
            launcher.start(run)
            started.append(run.id)
            free -= 1
        _save(ws, keep)
    return started


def cancel(ws: store.Workspace, run: store.Run) -> bool:
    with _locked(ws):
        order = _order(ws)
        if run.id not in order:
            return False
        order.remove(run.id)
        _save(ws, order)
    run.update_state(status="stopped", error="cancelled before it started", queued=False)
    return True


def move(ws: store.Workspace, run: store.Run, delta: int | None = None, to: int | None = None) -> int:
    """Move a queued run by `delta` places (negative = earlier) or to position `to` (0 = next)."""
    with _locked(ws):
        order = _order(ws)
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
    ws = store.Workspace(Path(info.get("workspace") or run.path.parent.parent))
    advance(ws)
