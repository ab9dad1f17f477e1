"""The supervisor: `python -m labtui.engine.runtime.supervisor RUN_DIR -- COMMAND...`.

Started detached by the launcher (own session, stdin closed), it runs the worker (or any command)
as its child in the child's own process group, and is the only writer of state.json while the run
lives: pids and start times, host, a heartbeat every few seconds, machine samples into
system.jsonl, and at the end the exit code or the signal that killed the worker. It is light: no
torch. It ignores SIGHUP and SIGINT (a closed terminal is no reason to stop) and survives the
worker's death, so a run killed by the OOM killer still gets its cause written down.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from labtui.engine.rundir import alerts, store
from labtui.engine.runtime.sysmon import Sampler

STOP_FILE = "stop.json"  # written by `labtui stop` before it signals


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


def final_state(rc: int, result: dict | None, stop_requested: bool, log_tail: list[str]) -> dict:
    """What state.json says after the child exits, from its exit status and the result it wrote."""
    now = time.time()
    base = {"ended": now, "exit_code": rc if rc >= 0 else None, "exit_signal": signal_name(-rc) if rc < 0 else None}
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

    def on_term(signum, frame):
        stop["requested"] = True

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
    now = time.time()
    prev = run.raw_state()
    run.update_state(
        status="running", pid=child.pid, pgid=child.pid, pid_start=store.process_start_time(child.pid),
        supervisor_pid=os.getpid(), supervisor_start=store.process_start_time(os.getpid()),
        host=socket.gethostname(), started=prev.get("started") or now, resumed=now if prev.get("started") else None,
        heartbeat=now, command=command, ended=None, exit_code=None, exit_signal=None, error=None, error_where=None,
    )
    sampler = Sampler(child.pid, disk_path=workspace)
    system = store.JsonlWriter(run.file(store.SYSTEM_FILE))
    watch = alerts.SupervisorWatch(run)  # stalled, gpu_memory, host_memory (never raises in tick)
    rc = None
    while rc is None:
        try:
            rc = child.wait(timeout=interval)
        except subprocess.TimeoutExpired:
            sample = None
            try:
                sample = sampler.sample()
                system.write(sample)
            except Exception as e:  # sampling must never take the run down
                print(f"[labtui] sampling failed: {e}", file=sys.stderr)
            run.update_state(heartbeat=time.time())
            watch.tick(sample)
    system.close()
    requested = stop["requested"] or run.file(STOP_FILE).exists()
    result = run.progress().get("result")
    state = final_state(rc, result, requested, store.tail_lines(run.file(store.LOG_FILE), 5))
    run.update_state(heartbeat=time.time(), **state)
    with open(run.file(store.LOG_FILE), "ab") as log:
        log.write(f"[labtui] {time.strftime('%Y-%m-%d %H:%M:%S')} {state['status']}"
                  f"{': ' + state['error'] if state.get('error') else ''}\n".encode())
    after_run(run, state)
    return 0


def after_run(run: store.Run, state: dict) -> None:
    """What follows a run without anybody watching: the alert check of an evaluation, the run's own
    evaluation (the run keeps its queue slot meanwhile, so the next run does not compete for the
    GPU), then the next queued run."""
    from labtui.engine.runtime import evaluate_launch, queue

    try:
        alerts.after_run(run, state)  # an evaluation that came back degenerate
    except Exception as e:
        print(f"[labtui] alert check failed: {e}", file=sys.stderr)
    try:
        if run.info().get("kind") == "train":
            run.update_state(after_run="evaluating")
            try:
                evaluate_launch.on_run_end(run, state)
            finally:
                run.update_state(after_run=None)
        queue.on_run_end(run, state)
    except Exception as e:
        print(f"[labtui] after-run step failed: {e}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv or argv.index("--") != 1:
        print("usage: python -m labtui.engine.runtime.supervisor RUN_DIR -- COMMAND...", file=sys.stderr)
        return 2
    run = store.Run(Path(argv[0]))
    return supervise(run, argv[2:])


if __name__ == "__main__":
    sys.exit(main())
