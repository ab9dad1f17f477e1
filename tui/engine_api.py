"""The engine modules the TUI calls in-process (all light): lifecycle, queue, evaluations.

They are built alongside the TUI; where one is missing the action says so instead of failing,
and `available()` lets screens grey out the keys. Training and evaluation themselves never run
in this process: see `tui/cli_runner.py`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from engine import store


class Unavailable(RuntimeError):
    """The engine module behind an action is not installed; the message says which."""


def _module(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(f"engine.{name}")
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


def resume(run: store.Run):
    return _need("lifecycle", "resuming a run").resume(run)


def retry(run: store.Run) -> store.Run:
    return _need("lifecycle", "retrying a run").retry(run)


# --- queue ------------------------------------------------------------------------------------


def queue_order(ws: store.Workspace) -> list[str] | None:
    mod = _module("queue")
    if mod is None or not hasattr(mod, "queued"):
        return None
    try:
        return [r.id for r in mod.queued(ws)]
    except Exception:
        return None


def cancel(ws: store.Workspace, run: store.Run):
    return _need("queue", "cancelling a queued run").cancel(ws, run)


def move(ws: store.Workspace, run: store.Run, delta: int):
    return _need("queue", "moving a queued run").move(ws, run, delta)
