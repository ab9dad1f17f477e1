"""Stop, resume and retry runs. Light: no torch.

Only a run's own processes are ever signalled: the worker's process group, after checking that
the pid still belongs to the same process (its start time), so a reused pid is never hit.
"""

from __future__ import annotations

import os
import signal
import time

from . import launcher, store
from .supervisor import STOP_FILE


class LifecycleError(Exception):
    """The action does not apply to the run in its current state; the message says why."""


def stop(run: store.Run, now: bool = False) -> str:
    """SIGTERM the run's process group (checkpoint, then `stopped`); a second stop, or now=True, SIGKILLs."""
    state = run.state()
    status = state.get("status")
    if status == "queued":
        from . import queue

        queue.cancel(store.Workspace(run.info().get("workspace") or run.path.parent.parent), run)
        return f"{run.id}: removed from the queue"
    if status not in store.LIVE:
        raise LifecycleError(f"{run.id} is {status}, not running")
    raw = run.raw_state()
    pid, start = raw.get("pid"), raw.get("pid_start")
    if not pid:
        raise LifecycleError(f"{run.id} has no worker process yet; try again in a moment")
    if not store.process_alive(pid, start):
        raise LifecycleError(f"{run.id}: its worker (pid {pid}) is gone; nothing to stop")
    again = run.file(STOP_FILE).exists()
    sig = signal.SIGKILL if (now or again) else signal.SIGTERM
    store.atomic_write_json(run.file(STOP_FILE), {"t": time.time(), "signal": sig.name})
    pgid = raw.get("pgid") or pid
    try:
        if os.getpgid(pid) == pgid:
            os.killpg(pgid, sig)
        else:  # the worker left its group: signal it alone
            os.kill(pid, sig)
    except ProcessLookupError:
        raise LifecycleError(f"{run.id}: its worker (pid {pid}) is gone; nothing to stop") from None
    if sig == signal.SIGKILL:
        return f"{run.id}: killed (SIGKILL)"
    return f"{run.id}: stopping after the current step (a checkpoint is saved); `labtui stop {run.id}` again kills it"


def resume(run: store.Run) -> store.Run:
    """Continue a stopped, failed or crashed run from its latest checkpoint, as the same run."""
    state = run.state()
    status = state.get("status")
    if status not in ("stopped", "failed", "crashed"):
        raise LifecycleError(f"{run.id} is {status}; only stopped, failed or crashed runs can be resumed")
    if run.info().get("kind") != "train":
        raise LifecycleError(f"{run.id} runs a command of its own; use `labtui retry {run.id}` to run it again")
    if run.latest_checkpoint() is None:
        raise LifecycleError(f"{run.id} has no checkpoint to resume from; use `labtui retry {run.id}` to start it again")
    try:
        run.file(STOP_FILE).unlink()
    except FileNotFoundError:
        pass
    launcher.start(run, resume=True)
    return run


def retry(run: store.Run) -> store.Run:
    """A new run with the same resolved config (or command), linked to the old one as its parent."""
    info = run.info()
    ws = store.Workspace(info.get("workspace") or run.path.parent.parent)
    if info.get("kind") == "script":
        new = launcher.create_script_run(ws, info["script_command"], ["labtui", "retry", run.id], name=info.get("experiment"))
        meta = store.read_json(new.file(store.RUN_FILE), {})
        meta["parent"] = run.id
        store.atomic_write_json(new.file(store.RUN_FILE), meta)
        launcher.start(new)
        return new
    config_text = run.file(store.CONFIG_FILE).read_text()
    meta = {k: info.get(k) for k in ("experiment", "experiment_file", "chain", "description", "kind", "overrides", "workspace")}
    meta.update(parent=run.id, parent_experiment=info.get("experiment"), changed={}, command=["labtui", "retry", run.id])
    new = ws.create_run(info.get("experiment") or run.id, meta, config_text)
    launcher.start(new)
    return new
