"""Stop, resume and retry runs. Light: no torch.

Only a run's own processes are ever signalled: the worker's process group, after proving that the
pid still belongs to the same process (pid *and* its recorded start time match), so a reused pid,
or a state.json without a start time, is never hit. Resume and retry start through
`queue.start_or_queue`, the one place that applies the workspace's concurrency limit.

A multi-process run (torchrun / accelerate) is stopped the same way: its worker is the launcher's
agent (engine/training/distributed.py), which passes the SIGTERM on to the ranks, and every rank stops
at the same step (it also sees the stop file). The ranks run in sessions of their own, so a kill
(second stop, --now) SIGKILLs each rank's process group as well as the agent's.
"""

from __future__ import annotations

import os
import shlex
import signal
import time
from pathlib import Path

from labtui.engine.rundir import store
from labtui.engine.runtime import launcher
from labtui.engine.runtime.supervisor import STOP_FILE


class LifecycleError(Exception):
    """The action does not apply to the run in its current state; the message says why."""


class NeedsConfirmation(LifecycleError):
    """Retrying a `script` run runs its command again: the caller shows `command` and asks first."""

    def __init__(self, message: str, command: str):
        super().__init__(message)
        self.command = command


class Outcome(str):
    """What an action did, as the line to show the user; `.run` (and `.id`) the run it concerns,
    `.started` False when it was queued instead of started (the concurrency limit)."""

    run: store.Run
    started: bool

    def __new__(cls, message: str, run: store.Run, started: bool = True):
        obj = super().__new__(cls, message)
        obj.run = run
        obj.started = started
        return obj

    @property
    def id(self) -> str:
        return self.run.id


def workspace_of(run: store.Run) -> store.Workspace:
    """The workspace the run folder lives in (not the one its run.json names: it may be a copy)."""
    return store.Workspace(launcher.home_workspace(run))


def stop(run: store.Run, now: bool = False) -> str:
    """SIGTERM the process group of a run or an eval (a run saves a checkpoint, an eval finishes its
    batch and keeps a partial summary; then `stopped`); a second stop, or now=True, SIGKILLs. The
    one stop: `labtui stop`, `labtui evals --stop`, Ctrl-C under `-f`, the TUI.

    A queued run is taken out of the queue. A suspended worker (SIGSTOP, Ctrl-Z) is continued after the
    signal so that it can act on it."""
    is_eval = run.info().get("kind") == "eval"
    raw = run.raw_state()
    if raw.get("executor") == "slurm":  # Slurm signals it, wherever it runs (slurm_runs.stop)
        from labtui.engine.runtime import slurm, slurm_runs

        try:
            return slurm_runs.stop(run, now=now)
        except slurm.SlurmError as e:
            raise LifecycleError(str(e)) from None
    pid, start = raw.get("pid"), raw.get("pid_start")
    if raw.get("status") in store.LIVE and pid and not (isinstance(start, (int, float)) and not isinstance(start, bool)):
        raise LifecycleError(f"{run.id}: state.json does not record when pid {pid} started, so labtui cannot prove "
                             f"that process is this run's worker and will not signal it; check with `ps -p {pid} -o "
                             f"pid,lstart,args` and stop it yourself")
    state = run.derive_state(raw, run.progress())
    status = state.get("status")
    if status == "queued" and not is_eval:  # an eval is never queued: it has not started yet
        from labtui.engine.runtime import queue

        if not queue.cancel(workspace_of(run), run):
            raise LifecycleError(f"{run.id} says it is queued but is not in the queue (it may be starting right "
                                 f"now); nothing changed - see `labtui queue`")
        return f"{run.id}: removed from the queue"
    if status not in store.LIVE:
        raise LifecycleError(f"{run.id} is {status}, not running")
    if not pid:
        raise LifecycleError(f"{run.id} has no worker process yet; try again in a moment")
    if not isinstance(pid, int) or isinstance(pid, bool):
        raise LifecycleError(f"{run.id}: state.json gives pid {pid!r}, not a process id; nothing signalled")
    if not store.process_alive(pid, start):
        raise LifecycleError(f"{run.id}: its worker (pid {pid}) is gone; nothing to stop")
    suspended = store.process_suspended(pid)
    again = run.file(STOP_FILE).exists()
    sig = signal.SIGKILL if (now or again) else signal.SIGTERM
    store.atomic_write_json(run.file(STOP_FILE), {"t": time.time(), "signal": sig.name})
    pgid = raw.get("pgid") or pid

    def send(s: signal.Signals) -> None:
        if os.getpgid(pid) == pgid:
            os.killpg(pgid, s)
        else:  # the worker left its group: signal it alone
            os.kill(pid, s)

    try:
        if sig == signal.SIGKILL:
            _kill_other_groups(pid, pgid)  # a multi-process run's ranks, before their agent goes
        send(sig)
        if suspended and sig != signal.SIGKILL:
            send(signal.SIGCONT)  # a stopped process only acts on the SIGTERM once it runs again
    except ProcessLookupError:
        raise LifecycleError(f"{run.id}: its worker (pid {pid}) is gone; nothing to stop") from None
    except PermissionError:
        raise LifecycleError(f"{run.id}: not allowed to signal its worker (pid {pid}, another user's process)") from None
    if sig == signal.SIGKILL:
        return f"{run.id}: killed (SIGKILL)"
    woke = f"its worker (pid {pid}) was suspended (SIGSTOP or Ctrl-Z): continued it with SIGCONT; " if suspended else ""
    if is_eval:
        return (f"{run.id}: {woke}stopping after the current batch (a partial summary is kept); "
                f"`labtui evals {run.id} --stop` again kills it")
    return (f"{run.id}: {woke}stopping after the current step (a checkpoint is saved); "
            f"`labtui stop {run.id}` again kills it")


def _kill_other_groups(pid: int, pgid: int) -> None:
    """SIGKILL the process groups of `pid`'s descendants that are not in `pgid` (torchrun starts each rank
    in a session of its own). Descendants of the proven worker are the run's own processes."""
    import psutil

    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return
    groups = set()
    for child in children:
        try:
            groups.add(os.getpgid(child.pid))
        except OSError:
            continue
    for group in groups - {pgid, os.getpgid(0)}:
        try:
            os.killpg(group, signal.SIGKILL)
        except OSError:
            pass


def _started_or_queued(ws: store.Workspace, run: store.Run, now: bool, resume: bool, started_line: str) -> Outcome:
    from labtui.engine.runtime import queue, slurm

    try:
        started, why = queue.start_or_queue(ws, run, now=now, resume=resume)
    except slurm.SlurmError as e:  # a Slurm run that sbatch refused (the run is `failed` with the reason)
        raise LifecycleError(f"{run.id}: {e}") from None
    job = (run.raw_state().get("slurm") or {}).get("job_id") if run.raw_state().get("executor") == "slurm" else None
    if started and job:
        return Outcome(f"{started_line}; submitted to Slurm as job {job}", run, True)
    if started:
        return Outcome(started_line, run, True)
    return Outcome(f"queued: {why}", run, False)


def resume(run: store.Run, ws: store.Workspace | None = None, now: bool = False) -> Outcome:
    """Continue a stopped, failed or crashed run from its newest complete checkpoint, as the same run.

    Starts at once if the concurrency limit allows (or `now`), else queues it."""
    state = run.state()
    status = state.get("status")
    if status not in ("stopped", "failed", "crashed"):
        raise LifecycleError(f"{run.id} is {status}; only stopped, failed or crashed runs can be resumed")
    if run.info().get("kind") != "train":
        raise LifecycleError(f"{run.id} runs a command of its own; use `labtui retry {run.id}` to run it again")
    if run.latest_checkpoint() is None:
        why = run.checkpoint_note()
        why = f" ({why.split(': ', 1)[1]})" if ": " in why else ""
        raise LifecycleError(f"{run.id} has no complete checkpoint to resume from{why}; use `labtui retry {run.id}` "
                             f"to start it again")
    slurm_run = run.raw_state().get("executor") == "slurm"
    try:
        plan = None if slurm_run else launcher.plan_for(run, resume=True)  # a Slurm node checks its own
        if plan is not None:
            launcher.check_resume(run, plan)
    except launcher.LaunchError as e:
        raise LifecycleError(str(e)) from None
    try:
        run.file(STOP_FILE).unlink()
    except FileNotFoundError:
        pass
    return _started_or_queued(ws or workspace_of(run), run, now, True, f"resuming from {run.checkpoint_note()}")


def script_command(run: store.Run) -> str | None:
    """The shell line a retry of a `script` run would run (None for other runs)."""
    info = run.info()
    cmd = info.get("script_command")
    if info.get("kind") != "script" or not isinstance(cmd, list):
        return None
    return shlex.join(str(c) for c in cmd)


def retry(run: store.Run, ws: store.Workspace | None = None, now: bool = False, confirmed: bool = False) -> Outcome:
    """A new run with the same resolved config (or command), linked to the old one as its parent.

    It is made in `ws` (the workspace the caller works in; default: the one the run folder is in), never
    in the workspace the old run.json names. A `script` run's command runs again only when `confirmed`
    (otherwise NeedsConfirmation, carrying the command to show). Starts at once if the concurrency limit
    allows (or `now`), else queues the new run."""
    info = run.info()
    ws = ws or workspace_of(run)
    if info.get("kind") == "script":
        command = script_command(run)
        if command is None:
            raise LifecycleError(f"{run.id} records no command to run again")
        if not confirmed:
            raise NeedsConfirmation(f"retrying {run.id} runs this command again: {command}", command)
        new = launcher.create_script_run(ws, [str(c) for c in info["script_command"]], ["labtui", "retry", run.id],
                                         name=str(info.get("experiment") or "") or None)
        meta = store.read_json(new.file(store.RUN_FILE), {})
        meta.update(parent=run.id, cwd=str(_cwd_in(ws, info)))
        store.atomic_write_json(new.file(store.RUN_FILE), meta)
        return _started_or_queued(ws, new, now, False, f"started {new.id}, running again: {command}")
    config_text = store.read_text(run.file(store.CONFIG_FILE), "")
    if not config_text.strip():
        raise LifecycleError(f"{run.id} has no readable config.yaml to retry with")
    meta = {k: info.get(k) for k in ("experiment", "experiment_file", "chain", "description", "kind", "overrides")}
    meta.update(parent=run.id, parent_experiment=info.get("experiment"), changed={}, command=["labtui", "retry", run.id],
                workspace=str(ws.root))
    new = ws.create_run(str(info.get("experiment") or run.id), meta, config_text)
    return _started_or_queued(ws, new, now, False, f"started {new.id} with the config of {run.id}")


def _cwd_in(ws: store.Workspace, info: dict) -> Path:
    """Where a retried command runs: the same place relative to the workspace, if that is inside `ws`."""
    old_ws, old_cwd = info.get("workspace"), info.get("cwd")
    if isinstance(old_ws, str) and isinstance(old_cwd, str):
        try:
            candidate = ws.root / Path(old_cwd).relative_to(old_ws)
        except ValueError:
            candidate = None
        if candidate is not None and candidate.is_dir() and candidate.resolve().is_relative_to(ws.root):
            return candidate
    return ws.root
