"""The supervisor: `python -m labtui.engine.runtime.supervisor RUN_DIR -- COMMAND...`.

Started detached by the launcher (own session, stdin closed), it runs the worker (or any command)
as its child in the child's own process group, and is the only writer of state.json while the run
lives: pids and start times, host, a heartbeat every few seconds, machine samples into
system.jsonl, and at the end the exit code or the signal that killed the worker. It is light: no
torch. It ignores SIGHUP and SIGINT (a closed terminal is no reason to stop) and survives the
worker's death, so a run killed by the OOM killer still gets its cause written down.

A multi-process run's child is the distributed shim (torchrun's agent, engine/training/distributed.py):
when a rank fails, the shim leaves `ranks/failure.json`, and the run's error names the rank that failed
first, its host and how (`rank_failure`); `error_rank` is that rank, `error_where` its traceback. Ranks
left running after the agent is gone (it was killed) are killed with it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from labtui.engine.rundir import alerts, ranks, store
from labtui.engine.runtime import notify
from labtui.engine.runtime.launcher import FAILURE_FILE, STOP_FILE
from labtui.engine.runtime.slurm_job import EXECUTOR as SLURM_KEY
from labtui.engine.runtime.slurm_job import SlurmJob
from labtui.engine.runtime.sysmon import Sampler


def signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


def describe_signal(num: int) -> str:
    name = signal_name(num)
    if num == signal.SIGKILL:
        return f"killed by {name} (often the kernel's out-of-memory killer: check `dmesg` or `journalctl -k`)"
    if num == signal.SIGSEGV:
        return f"killed by {name} (a crash in native code: CUDA driver, a C extension)"
    if num == signal.SIGBUS:
        return f"killed by {name} (often /dev/shm too small for data loader workers)"
    return f"killed by {name}"


def rank_failure(failure: dict | None, result: dict | None = None) -> dict | None:
    """The run's end from the shim's failure.json (its `failures`, root cause first): status crashed for a
    rank killed by a signal, else failed; `error` one line naming the rank and host ("rank 1 (local rank 1)
    on host h died: killed by SIGKILL (...)", "rank 1 (local rank 1) on host h failed: ValueError: ..."),
    `error_rank`, and `error_where` the rank's traceback from its error.json. For rank 0, the result it
    wrote (the worker's explained message) is preferred to the bare exception."""
    failures = (failure or {}).get("failures")
    if not (isinstance(failures, list) and failures and isinstance(failures[0], dict)):
        return None
    root = failures[0]
    rank, local = store.as_whole(root.get("rank")), store.as_whole(root.get("local_rank"))
    host = root.get("host") or (failure or {}).get("host") or "?"
    who = f"rank {rank}" + (f" (local rank {local})" if local is not None else "") + f" on host {host}"
    code = store.as_whole(root.get("exitcode"))
    where = root.get("traceback") if isinstance(root.get("traceback"), str) else None
    if code is not None and code < 0:
        return {"status": "crashed", "error": f"{who} died: {describe_signal(-code)}", "error_rank": rank,
                "error_where": where}
    message = root.get("error") if isinstance(root.get("error"), str) else None
    if rank == 0 and result and result.get("error"):
        message, where = result["error"], result.get("error_where") or where
    if not message or message.startswith("To enable traceback"):
        message = f"exited with status {code}"
    return {"status": "failed", "error": f"{who} failed: {message.strip().splitlines()[-1][:300]}",
            "error_rank": rank, "error_where": where}


def final_state(rc: int, result: dict | None, stop_requested: bool, log_tail: list[str],
                failure: dict | None = None) -> dict:
    """What state.json says after the child exits, from its exit status, the result it wrote and, for a
    multi-process run, the shim's record of the ranks that failed."""
    now = time.time()
    base = {"ended": now, "exit_code": rc if rc >= 0 else None, "exit_signal": signal_name(-rc) if rc < 0 else None}
    failed_rank = rank_failure(failure, result) if rc != 0 else None
    if failed_rank is not None:
        if stop_requested and failed_rank["status"] == "crashed":  # a rank killed by the stop itself
            return {**base, "status": "stopped", "error": f"stopped on request ({failed_rank['error']})"}
        return {**base, **failed_rank}
    if result and result.get("status") in store.FINAL:
        return {**base, "status": result["status"], "error": result.get("error"), "error_where": result.get("error_where")}
    if rc < 0:
        if stop_requested:
            return {**base, "status": "stopped", "error": f"stopped on request ({signal_name(-rc)})"}
        return {**base, "status": "crashed", "error": describe_signal(-rc)}
    if rc == 0:
        return {**base, "status": "completed", "error": None}
    last = next((ln for ln in reversed(log_tail) if ln.strip()), "")
    msg = f"exited with status {rc}" + (f": {last.strip()[:200]}" if last else "")
    return {**base, "status": "stopped" if stop_requested else "failed", "error": msg}


def supervise(run: store.Run, command: list[str]) -> int:
    cfg = run.config()
    info = run.info()
    workspace = Path(info.get("workspace") or os.getcwd())
    interval = float((cfg.get("engine") or {}).get("heartbeat_interval") or os.environ.get("LABTUI_HEARTBEAT", 5.0))
    stop = {"requested": False}
    job = SlurmJob.here(run)  # the batch step of the run's Slurm job (slurm_job.py), else None
    if job is not None:
        job.install()
        command = job.command(command)

    def on_term(signum, frame):
        stop["requested"] = True
        if job is not None:
            job.on_term()

    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, on_term)
    env = dict(os.environ, LABTUI_RUN_DIR=str(run.path), LABTUI_WORKSPACE=str(workspace), PYTHONUNBUFFERED="1")
    try:
        run.file(STOP_FILE).unlink()
    except FileNotFoundError:
        pass
    with open(run.file(store.LOG_FILE), "ab", buffering=0) as log:
        log.write(f"[labtui] {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(command)}\n".encode())
        try:
            child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                     env=env, cwd=info.get("cwd") or str(workspace), process_group=0)
        except OSError as e:
            run.update_state(status="failed", ended=time.time(), error=f"cannot start {command[0]}: {e.strerror}")
            return 1
    if job is not None:
        job.child_started(child.pid)
    now = time.time()
    prev = run.raw_state()
    run.update_state(
        **(job.started_state(command) if job is not None else {}),
        status="running", pid=child.pid, pgid=child.pid, pid_start=store.process_start_time(child.pid),
        supervisor_pid=os.getpid(), supervisor_start=store.process_start_time(os.getpid()),
        host=socket.gethostname(), started=prev.get("started") or now, resumed=now if prev.get("started") else None,
        heartbeat=now, command=command, ended=None, exit_code=None, exit_signal=None, error=None, error_where=None,
        error_rank=None,
    )
    sampler = Sampler(child.pid, disk_path=workspace)
    system = store.JsonlWriter(run.file(store.SYSTEM_FILE))
    watch = alerts.SupervisorWatch(run)  # stalled, gpu_memory, host_memory (never raises in tick)
    told = notify.AlertWatch(run, since=now)  # new alerts to the notify: URLs (never raises)

    def take_sample() -> dict | None:
        try:
            sample = sampler.sample()
            system.write(sample)
            return sample
        except Exception as e:  # sampling must never take the run down
            print(f"[labtui] sampling failed: {e}", file=sys.stderr)
            return None

    take_sample()  # one at once, so that even a command shorter than the interval has a record
    rc = None
    while rc is None:
        try:
            rc = child.wait(timeout=interval)
        except subprocess.TimeoutExpired:
            sample = take_sample()
            run.update_state(heartbeat=time.time())
            watch.tick(sample)
            told.tick()
    system.close()
    told.tick()
    launch = run.raw_state().get("launch")
    multi = isinstance(launch, dict) and launch.get("launcher") not in (None, "python")
    if multi:
        sampler.kill_leftovers()  # ranks whose agent was killed keep running otherwise
    requested = stop["requested"] or run.file(STOP_FILE).exists()
    result = run.progress().get("result")
    failure = store.read_json(ranks.ranks_dir(run.path) / FAILURE_FILE) if multi else None
    state = final_state(rc, result, requested, store.tail_lines(run.file(store.LOG_FILE), 5),
                        failure if isinstance(failure, dict) else None)
    requeue, ended = False, state
    if job is not None:
        state, requeue = job.final_state(ended)
    run.update_state(heartbeat=time.time(), **state)
    _log_end(run, state)
    if requeue and job is not None:
        why = job.requeue()  # returns only when the requeue failed: the job ends here instead
        state, _ = job.final_state(ended, requeue=False)
        state["error"] = f"{state.get('error')} (scontrol requeue failed: {why})"
        run.update_state(heartbeat=time.time(), **state)
        _log_end(run, state)
    after_run(run, state, advance_queue=job is None)
    return 0


def _log_end(run: store.Run, state: dict) -> None:
    with open(run.file(store.LOG_FILE), "ab") as log:
        line = state.get(SLURM_KEY, {}).get("reason") if state.get("status") == "queued" else state.get("error")
        log.write(f"[labtui] {time.strftime('%Y-%m-%d %H:%M:%S')} {state['status']}"
                  f"{': ' + line if line else ''}\n".encode())


def after_run(run: store.Run, state: dict, advance_queue: bool = True) -> None:
    """What follows a run without anybody watching: the alert check of an evaluation, the run's own
    evaluation (the run keeps its queue slot meanwhile, so the next run does not compete for the
    GPU), then the next queued run (not from a Slurm job: `advance_queue` False; a requeued job's
    run has not ended)."""
    if state.get("status") not in store.FINAL:
        return
    from labtui.engine.runtime import evaluate_launch, queue

    try:
        alerts.after_run(run, state)  # an evaluation that came back degenerate
    except Exception as e:
        print(f"[labtui] alert check failed: {e}", file=sys.stderr)
    _notify_end(run, state)
    try:
        if run.info().get("kind") == "train":
            run.update_state(after_run="evaluating")
            try:
                evaluate_launch.on_run_end(run, state)
            finally:
                run.update_state(after_run=None)
        if advance_queue:
            queue.on_run_end(run, state)
    except Exception as e:
        print(f"[labtui] after-run step failed: {e}", file=sys.stderr)


def _notify_end(run: store.Run, state: dict) -> None:
    """The run's end (an evaluation's result) to the notify: URLs; sent detached, never raises."""
    try:
        if run.info().get("kind") != "eval":
            notify.run_ended(run, state)
            return
        notify.eval_ended(run, state)
        parent = store.Run(run.path.parent.parent)
        started = run.raw_state().get("started")
        if parent.file(store.RUN_FILE).exists() and isinstance(started, (int, float)):
            notify.new_alerts(parent, since=started)  # degenerate_eval, raised in the evaluated run
    except Exception as e:
        print(f"[labtui] notify failed: {e}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv or argv.index("--") != 1:
        print("usage: python -m labtui.engine.runtime.supervisor RUN_DIR -- COMMAND...", file=sys.stderr)
        return 2
    run = store.Run(Path(argv[0]))
    return supervise(run, argv[2:])


if __name__ == "__main__":
    sys.exit(main())
