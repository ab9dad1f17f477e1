"""The engine modules the TUI calls in-process (all light): lifecycle, queue, evaluations.

They are built alongside the TUI; where one is missing the action says so instead of failing,
and `available()` lets screens grey out the keys. Training and evaluation themselves never run
in this process: see `tui/cli_runner.py`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from labtui.engine import store


class Unavailable(RuntimeError):
    """The engine module behind an action is not installed; the message says which."""


def _module(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(f"labtui.engine.{name}")
    except ImportError:
        return None


def available(name: str) -> bool:
    return _module(name) is not None


def _need(name: str, what: str) -> ModuleType:
    mod = _module(name)
    if mod is None:
        raise Unavailable(f"{what} needs engine/{name}.py, which this installation does not have yet")
    return mod


# --- lifecycle --------------------------------------------------------------------------------


def stop(run: store.Run, now: bool = False):
    return _need("lifecycle", "stopping a run").stop(run, now=now)


def resume(run: store.Run, ws: store.Workspace | None = None, now: bool = False):
    """The line saying what happened (`.started` False: queued by the concurrency limit)."""
    return _need("lifecycle", "resuming a run").resume(run, ws, now=now)


def retry(run: store.Run, ws: store.Workspace | None = None, now: bool = False, confirmed: bool = False):
    """The new run's line (`.id` its id, `.started`); a command run needs confirmed=True (see script_command)."""
    return _need("lifecycle", "retrying a run").retry(run, ws, now=now, confirmed=confirmed)


def script_command(run: store.Run) -> str | None:
    """The command a retry of this run would run again (None unless it is a `labtui run -- COMMAND` run)."""
    mod = _module("lifecycle")
    return mod.script_command(run) if mod is not None else None


def slots_full(ws: store.Workspace) -> str | None:
    """None if a run started now stays within the workspace's concurrency, else why not
    ("1 run already running, concurrency 1"), for a "queue it or start anyway" question."""
    mod = _module("queue")
    if mod is None or mod.slot_free(ws):
        return None
    return mod.full_message(ws)


# --- queue ------------------------------------------------------------------------------------


def queue_order(ws: store.Workspace) -> list[str] | None:
    mod = _module("queue")
    if mod is None or not hasattr(mod, "queued"):
        return None
    try:
        return [r.id for r in mod.queued(ws)]
    except Exception:
        return None


def cancel(ws: store.Workspace, run: store.Run) -> str:
    """Take a queued run out of the queue; raises (the message says why) when it is not in it."""
    if not _need("queue", "cancelling a queued run").cancel(ws, run):
        raise ValueError(f"{run.id} is not in the queue; nothing changed")
    return f"{run.id}: removed from the queue"


def move(ws: store.Workspace, run: store.Run, delta: int):
    return _need("queue", "moving a queued run").move(ws, run, delta)


def advance_queue(ws: store.Workspace) -> list[str]:
    """Start queued runs whose slot is free (the monitor's tick); the ids started."""
    mod = _module("queue")
    return mod.advance(ws) if mod is not None else []
