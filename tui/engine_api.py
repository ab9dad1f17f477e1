"""The engine calls the TUI makes in-process (all light): lifecycle and queue.

The engine modules are imported where they are called (from worker threads and the monitor's
tick), so the dashboard opens without them. Training and evaluation themselves never run in this
process: see `tui/cli_runner.py`.
"""

from __future__ import annotations

from labtui.engine.rundir import store

# --- lifecycle --------------------------------------------------------------------------------


def stop(run: store.Run, now: bool = False):
    from labtui.engine.runtime import lifecycle

    return lifecycle.stop(run, now=now)


def resume(run: store.Run, ws: store.Workspace | None = None, now: bool = False):
    """The line saying what happened (`.started` False: queued by the concurrency limit)."""
    from labtui.engine.runtime import lifecycle

    return lifecycle.resume(run, ws, now=now)


def retry(run: store.Run, ws: store.Workspace | None = None, now: bool = False, confirmed: bool = False):
    """The new run's line (`.id` its id, `.started`); a command run needs confirmed=True (see script_command)."""
    from labtui.engine.runtime import lifecycle

    return lifecycle.retry(run, ws, now=now, confirmed=confirmed)


def script_command(run: store.Run) -> str | None:
    """The command a retry of this run would run again (None unless it is a `labtui run -- COMMAND` run)."""
    from labtui.engine.runtime import lifecycle

    return lifecycle.script_command(run)


def slots_full(ws: store.Workspace) -> str | None:
    """None if a run started now stays within the workspace's concurrency, else why not
    ("1 run already running, concurrency 1"), for a "queue it or start anyway" question."""
    from labtui.engine.runtime import queue

    return None if queue.slot_free(ws) else queue.full_message(ws)


# --- queue ------------------------------------------------------------------------------------


def queue_order(ws: store.Workspace) -> list[str]:
    from labtui.engine.runtime import queue

    return [r.id for r in queue.queued(ws)]


def cancel(ws: store.Workspace, run: store.Run) -> str:
    """Take a queued run out of the queue; raises (the message says why) when it is not in it."""
    from labtui.engine.runtime import queue

    if not queue.cancel(ws, run):
        raise ValueError(f"{run.id} is not in the queue; nothing changed")
    return f"{run.id}: removed from the queue"


def move(ws: store.Workspace, run: store.Run, delta: int):
    from labtui.engine.runtime import queue

    return queue.move(ws, run, delta)


def notify_crashes(ws: store.Workspace, rows: list[dict]) -> int:
    """Notify each run of `rows` ({id, status}) found crashed with no supervisor left to record it, once
    per run and event, and re-send its notifications whose sender died (runtime.notify.crashed_by_reader;
    the sending is a detached process: this never waits for it)."""
    from labtui.engine.runtime import notify

    return notify.crashed_by_reader(ws, rows)


def advance_queue(ws: store.Workspace) -> list[str]:
    """Start queued runs whose slot is free (the monitor's tick); the ids started."""
    from labtui.engine.runtime import queue

    return queue.advance(ws)


# --- Slurm ------------------------------------------------------------------------------------


def slurm_sync(ws: store.Workspace, runs: list[store.Run]):
    """Reconcile these Slurm runs' state.json with Slurm (runtime.slurm_runs.sync: one squeue call
    for all, cached and backed off). Where Slurm is not installed, or this engine has no Slurm
    support, nothing happens (None); another failure raises, with Slurm's words."""
    try:
        from labtui.engine.runtime import slurm_runs
    except ModuleNotFoundError as e:
        if e.name and e.name.endswith("slurm_runs"):
            return None
        raise
    from labtui.engine.runtime.slurm import SlurmUnavailable

    try:
        return slurm_runs.sync(ws, runs)
    except SlurmUnavailable:
        return None
