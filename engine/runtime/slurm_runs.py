"""Runs on Slurm: submitting a run (or an eval) as a batch job, and keeping its state.json in step with
what Slurm says. Light: no torch. The Slurm commands themselves are engine/runtime/slurm.py.

A run with `launch.executor: slurm` (or `labtui run --slurm`) is created as usual; then `submit` writes
`<run>/job.sbatch`, whose batch step execs labtui's own supervisor (which runs the worker, or the
torchrun shim, exactly as on this machine; a torchrun or accelerate run's ranks are started by an srun
step on every node of the job, slurm_job.py), submits it with `sbatch --parsable` and records the job in
state.json. The state contract (the CLI and the TUI read it):

    executor: "slurm"
    slurm: {job_id: str, cluster: str | None, state: Slurm's state ("PENDING", "RUNNING", ...),
            reason: one line (why it waits, or how it ended: slurm.describe) | None,
            node: str | None, submitted: epoch, checked: epoch (Slurm last asked),
            job_ids: [every job id of this run, oldest first]}

A pending job's run is `queued` (its `slurm.reason` says why). Once the supervisor runs on the node it
writes `running` and the run lives as a local one does (judged by its heartbeat from another host).
`sync` is the one reconciliation: every reader (the CLI's runs, show, queue, logs -f, stop, resume;
the TUI's monitor) calls it, and it asks Slurm once for all the Slurm runs not yet ended (through a
Poller shared by the process, cached and backed off), then writes what changed. What the supervisor
wrote as the run's own end always wins; Slurm's final state (TIMEOUT, CANCELLED, OUT_OF_MEMORY,
NODE_FAIL, PREEMPTED...) is written only for a run whose supervisor could not record its end (it was
killed with the job). Where Slurm cannot be asked (no squeue here, slurmctld down), nothing changes.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Iterable

from labtui.engine.config.experiment import launch_settings
from labtui.engine.rundir import cache, store
from labtui.engine.runtime import launcher, slurm, slurm_job
from labtui.engine.runtime.launcher import STOP_FILE

EXECUTOR = "slurm"
SUPERVISOR_MODULE = "labtui.engine.runtime.supervisor"
EVALUATE_MODULE = "labtui.engine.training.evaluate"
RECHECK_S = 60.0  # `slurm.checked` is rewritten at least this often while nothing else changes

# one Poller for the process: a long-lived TUI asks Slurm at most once per (backed-off) interval
POLLER = slurm.Poller()


def executor_of(cfg: dict | None) -> str:
    launch = (cfg or {}).get("launch")
    value = launch.get("executor") if isinstance(launch, dict) else None
    return value if isinstance(value, str) and value else "local"


def is_slurm(run: store.Run) -> bool:
    """A run (or eval) that was submitted to Slurm, or is to be (its config says executor slurm)."""
    raw = run.raw_state()
    if raw.get("executor") is not None:
        return raw.get("executor") == EXECUTOR
    return run.info().get("kind") in ("train", None) and executor_of(run.config()) == EXECUTOR


def slurm_info(state: dict) -> dict:
    """state.json's `slurm` dict (an empty one when missing or of the wrong type)."""
    value = state.get(EXECUTOR)
    return dict(value) if isinstance(value, dict) else {}


def job_id(state: dict) -> str | None:
    value = slurm_info(state).get("job_id")
    return str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value) else None


# --- submitting ----------------------------------------------------------------------------------


def batch_command(run: store.Run, resume: bool = False, command: list[str] | None = None) -> list[str]:
    """What the batch step execs: labtui's supervisor on the run directory, running the worker (or the
    distributed shim, or an eval worker) as it does on this machine."""
    inner = command or launcher.worker_command(run, resume)
    return [sys.executable, "-m", SUPERVISOR_MODULE, str(run.path), "--", *inner]


def check_settings(settings: slurm.SlurmSettings, cfg: dict | None = None, kind: str | None = "train") -> None:
    """More than one node needs a launcher that starts ranks on each (torchrun or accelerate, through
    srun); a single Python process or a script runs on one node only."""
    if settings.nodes == 1:
        return
    name = launch_settings(cfg)["launcher"]
    if kind not in ("train", None):
        raise slurm.SlurmError(f"slurm.nodes is {settings.nodes}, but a {kind} run is one process on one node; "
                               f"set slurm.nodes: 1")
    if name == "python":
        raise slurm.SlurmError(f"slurm.nodes is {settings.nodes}, but launch.launcher is python: one process on one "
                               f"node; set launch.launcher: torchrun (or accelerate) to start ranks on every node, "
                               f"or slurm.nodes: 1")


def rank_step_note(run: store.Run, cfg: dict | None, settings: slurm.SlurmSettings, resume: bool = False) -> list[str]:
    """job.sbatch's comment lines on how the supervisor starts the ranks of a multi-process run (see
    slurm_job.rank_step), with the endpoint and job id it fills in on the node."""
    if run.info().get("kind") != "train" or launch_settings(cfg)["launcher"] == "python":
        return []
    shim = launcher.worker_command(run, resume)
    step = slurm_job.rank_step(settings, shim, "FIRST_NODE:FREE_PORT", "$SLURM_JOB_ID")
    return [f"The supervisor starts the ranks on {settings.nodes} node(s), once per node, with torchrun's c10d "
            f"rendezvous on this (the first) node:", "  " + shlex.join(step)]


def sbatch_text(run: store.Run, resume: bool = False, dependency: str | None = None, config: dict | None = None,
                command: list[str] | None = None) -> str:
    """The `<run>/job.sbatch` that `submit` writes (see there); slurm.SlurmError for settings it cannot use."""
    cfg = config if config is not None else run.config()
    settings = slurm.SlurmSettings.from_config(cfg)
    if command is not None:  # an evaluation (submit_eval, with the run's slurm: section): one process
        settings = dataclasses.replace(settings, nodes=1)
    check_settings(settings, cfg, run.info().get("kind"))
    workdir = run.info().get("workspace")
    if not (isinstance(workdir, str) and os.path.isdir(workdir)):
        workdir = str(launcher.home_workspace(run))
    notes = rank_step_note(run, cfg, settings, resume) if command is None else []
    return slurm.render_sbatch(run.path, settings, batch_command(run, resume, command), dependency=dependency,
                               workdir=workdir, notes=notes)


def submit(run: store.Run, resume: bool = False, dependency: str | None = None, config: dict | None = None,
           command: list[str] | None = None) -> str:
    """Write `<run>/job.sbatch` and submit it; returns the job id, recorded in state.json (status queued).

    `dependency` is sbatch's (`afterany:123` chains runs); `config` the experiment whose `slurm:`
    section applies (default: the run's own); `command` the worker to run instead of the run's own
    (an eval's). Raises slurm.SlurmError (refused, not installed, no answer) with Slurm's words; the
    run is then `failed` with that line."""
    try:
        text = sbatch_text(run, resume, dependency, config, command)
        path = run.file(slurm.SBATCH_FILE)
        store.atomic_write_text(path, text)
        job, cluster = slurm.submit_job(path)
    except slurm.SlurmError as e:
        run.update_state(status="failed", executor=EXECUTOR, error=f"not submitted to Slurm: {e}", ended=time.time(),
                         queued=False)
        raise
    prev = slurm_info(run.raw_state())
    ids = [str(j) for j in prev.get("job_ids") or [] if isinstance(j, (str, int))]
    now = time.time()
    info = {"job_id": job, "cluster": cluster, "state": "PENDING",
            "reason": f"Slurm job {job} submitted" + (f", after job {dependency.split(':', 1)[-1]}" if dependency else ""),
            "node": None, "submitted": now, "checked": now, "job_ids": [*ids, job]}
    run.update_state(status="queued", executor=EXECUTOR, slurm=info, queued=False, queued_resume=None, error=None,
                     ended=None, exit_code=None, exit_signal=None, pid=None, supervisor_pid=None, error_where=None,
                     error_rank=None, crash_detected_by=None)
    return job


def submit_chain(runs: list[store.Run], after: str | None = None) -> list[str]:
    """Submit runs one after another: each waits for the one before to end, however it ends
    (`--dependency=afterany:PREV`). Returns the job ids."""
    ids: list[str] = []
    for run in runs:
        prev = ids[-1] if ids else after
        ids.append(submit(run, dependency=f"afterany:{prev}" if prev else None))
    return ids


def submit_eval(ev: store.Run, run_config: dict) -> str:
    """An evaluation as its own Slurm job (`<eval>/job.sbatch`), with the evaluated run's `slurm:` section."""
    return submit(ev, config=run_config, command=[sys.executable, "-m", EVALUATE_MODULE, str(ev.path)])


# --- stopping ------------------------------------------------------------------------------------


def stop(run: store.Run, now: bool = False) -> str:
    """`labtui stop` of a Slurm run. Pending: `scancel`, the run is `stopped` ("cancelled before it
    started"). Running: the stop file, then TERM to the batch step (labtui's supervisor), which asks
    the worker to checkpoint and stop; again, or now=True: `scancel` (Slurm's TERM, then KILL)."""
    sync(store.Workspace(launcher.home_workspace(run)), [run])
    raw = run.raw_state()
    job = job_id(raw)
    status = run.state().get("status")
    if job is None:
        raise slurm.SlurmError(f"{run.id} is a Slurm run but state.json names no job id; nothing cancelled")
    if status in store.FINAL:
        raise slurm.SlurmError(f"{run.id} is {status}, not running (Slurm job {job})")
    again = run.file(STOP_FILE).exists()
    store.atomic_write_json(run.file(STOP_FILE), {"t": time.time(), "signal": "KILL" if (now or again) else "TERM",
                                                  "slurm_job": job})
    if status == "queued" and raw.get("status") == "queued":
        slurm.cancel(job)
        _write(run, status="stopped", error=f"cancelled before it started (scancel of Slurm job {job})",
               ended=time.time(), slurm_updates={"state": "CANCELLED", "reason": f"Slurm job {job} cancelled by labtui stop"})
        return f"{run.id}: Slurm job {job} cancelled before it started (stopped)"
    if now or again:
        slurm.cancel(job)
        return f"{run.id}: Slurm job {job} cancelled (scancel: TERM, then KILL after Slurm's KillWait)"
    slurm.cancel(job, "TERM", batch_only=True)
    return (f"{run.id}: stopping after the current step (a checkpoint is saved; Slurm job {job}); "
            f"`labtui stop {run.id}` again cancels the job")


# --- reconciling with Slurm ----------------------------------------------------------------------

# run dir -> (state.json's stamp, a Slurm run not yet ended): one stat per run per sync, not a read
_active_cache: dict[str, tuple[cache.Stamp, bool]] = {}


def _active(path: Path) -> bool:
    state_path = path / store.STATE_FILE
    key = cache.stamp(str(state_path))
    if key is None:
        return False
    cached = _active_cache.get(str(path))
    if cached is None or cached[0] != key:
        raw = store.read_json(state_path, {}) or {}
        raw = raw if isinstance(raw, dict) else {}
        active = raw.get("executor") == EXECUTOR and raw.get("status") not in store.FINAL and job_id(raw) is not None
        cached = (key, active)
        _active_cache[str(path)] = cached
    return cached[1]


def active_runs(ws: store.Workspace) -> list[store.Run]:
    """Slurm runs and evals (in `logs/*/evals/`) whose state.json has not recorded an end."""
    out = []
    try:
        entries = sorted(os.scandir(ws.logs), key=lambda e: e.name)
    except OSError:
        return out
    for entry in entries:
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        path = Path(entry.path)
        if _active(path):
            out.append(store.Run(path))
        evals = path / store.EVALS_DIR
        if evals.is_dir():
            out += [store.Run(p) for p in sorted(evals.iterdir()) if p.is_dir() and _active(p)]
    return out


def sync(ws: store.Workspace, runs: Iterable[store.Run] | None = None, fresh: bool = False) -> None:
    """Bring the state.json of every Slurm run not yet ended (or of `runs`, those of them that are
    Slurm runs) in step with Slurm: one `slurm.poll` for all of them. Pending -> `queued` with the
    reason; running -> the node; a final Slurm state whose end the supervisor did not record ->
    failed/crashed (or `stopped`, when a labtui stop asked for it) with slurm.describe's line. Never
    raises for Slurm being unreachable (nothing changes then) or for a damaged run folder."""
    try:
        todo = active_runs(ws) if runs is None else [r for r in runs if _active(r.path)]
    except OSError:
        return
    if not todo:
        return
    by_job: dict[str, list[store.Run]] = {}
    for run in todo:
        job = job_id(run.raw_state())
        if job is not None:
            by_job.setdefault(job, []).append(run)
    try:
        jobs = POLLER.poll(list(by_job), fresh=fresh)
    except slurm.SlurmError:
        return
    for job, info in jobs.items():
        for run in by_job.get(job, []):
            try:
                _reconcile(run, info)
            except OSError:  # a read-only workspace, a run folder being deleted: the next reader tries again
                continue


def _reconcile(run: store.Run, info: slurm.JobInfo) -> None:
    raw = run.raw_state()
    if raw.get("status") in store.FINAL or job_id(raw) != info.job_id:
        return
    status, line = slurm.describe(info)
    have = slurm_info(raw)
    now = time.time()
    node = info.node or have.get("node")
    if info.state == slurm.UNKNOWN:  # Slurm forgot it: the run directory (heartbeat, pids) decides
        if have.get("state") != slurm.UNKNOWN:
            _write(run, slurm_updates={"state": slurm.UNKNOWN, "reason": line, "checked": now})
        return
    if not info.final:
        updates = {"state": info.state, "reason": line, "node": node, "checked": now}
        if (info.state in slurm.PENDING_STATES and raw.get("status") in store.LIVE
                and run.state().get("status") not in store.LIVE):  # Slurm requeued it (node failure, preemption)
            _write(run, status="queued", slurm_updates=updates)
            return
        changed = any(have.get(k) != v for k, v in updates.items() if k != "checked")
        stale = now - float(have.get("checked") or 0) > RECHECK_S if isinstance(have.get("checked"), (int, float)) else True
        if changed or stale:
            _write(run, slurm_updates=updates)
        return
    # Slurm says the job ended, and state.json has no end: the supervisor did not get to write it
    derived = run.state()
    stopped = run.file(STOP_FILE).exists()
    updates = {"state": info.state, "reason": line, "node": node, "checked": now}
    if derived.get("status") in store.FINAL and derived.get("crash_detected_by") != "reader":
        end = {"status": derived["status"], "error": derived.get("error")}  # the worker's own result
    elif stopped and info.state == "CANCELLED":
        end = {"status": "stopped", "error": f"stopped on request (Slurm job {info.job_id} cancelled)"}
    elif status in store.FINAL:
        end = {"status": status, "error": None if status == "completed" else _with_checkpoint(run, line)}
    else:
        end = {"status": "crashed", "error": line}
    _write(run, ended=raw.get("ended") or now, exit_code=info.exit_code, slurm_updates=updates, **end)


def _with_checkpoint(run: store.Run, line: str) -> str:
    cp = run.latest_checkpoint() if run.info().get("kind") in ("train", None) else None
    return line + (f" (newest checkpoint: {cp.name})" if cp is not None else "")


def _write(run: store.Run, slurm_updates: dict | None = None, **updates) -> None:
    """Merge into state.json, reading it again just before writing: the supervisor may be writing too
    (a status it wrote meanwhile is kept: an end it recorded wins)."""
    raw = store.read_json(run.file(store.STATE_FILE), {})
    raw = raw if isinstance(raw, dict) else {}
    if "status" in updates and raw.get("status") in store.FINAL:
        return
    if slurm_updates:
        merged = slurm_info(raw)
        merged.update(slurm_updates)
        updates[EXECUTOR] = merged
    run.update_state(**updates)


def describe_line(state: dict) -> str | None:
    """`job 123 PENDING on node7: reason` for the CLI's text outputs (None for a local run)."""
    info = slurm_info(state)
    if state.get("executor") != EXECUTOR or not info:
        return None
    parts = [f"job {info.get('job_id') or '?'}"]
    if info.get("state"):
        parts.append(str(info["state"]))
    if info.get("node"):
        parts.append(f"on {info['node']}")
    text = " ".join(parts)
    if info.get("reason"):
        text += f": {info['reason']}"
    return text


__all__ = ["EXECUTOR", "POLLER", "active_runs", "batch_command", "describe_line", "executor_of", "is_slurm",
           "job_id", "slurm_info", "stop", "submit", "submit_chain", "submit_eval", "sync"]
