"""The multi-process entry: `python -m labtui.engine.training.distributed RUN_DIR [--resume]`.

The supervisor runs this for a run whose `launch.launcher` is torchrun or accelerate. It builds the
launcher's own arguments (`launcher.launch_plan`: one node, N processes, a free port, per-rank logs in
ranks/torchrun/) and calls the launcher in this process - torchrun's `torch.distributed.run.run`, or
accelerate's `launch_command`, which calls the same `run` - so that when a rank fails it catches
torchrun's `ChildFailedError` and writes the failures (rank, local rank, pid, exit code, the rank's
error.json written by `@record` in the worker) to `ranks/failure.json`, which the supervisor turns into
the run's error. Rendezvous, the per-rank log files and killing the other ranks are torchrun's.

On a Slurm job (engine/runtime/slurm_job.py) srun starts this shim once per node with `--nnodes N
--rdzv-endpoint HOST:PORT --rdzv-id JOB`: the launcher then joins torchrun's c10d rendezvous on the
job's first node instead of `--standalone`, and the ranks of every node form one world. A shim whose
ranks failed merges its failures into `ranks/failure.json` (each with its host), so the root cause
stays first whichever node writes last.

Stop: this process (torchrun's agent) does not act on SIGTERM itself (its default would SIGTERM the
ranks and SIGKILL them 30 s later, before they can save): it passes the SIGTERM on to the ranks, each
of which sets its stop flag; the ranks agree on the step to stop at (engine/training/callback.py).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import time
from pathlib import Path

from labtui.engine.rundir import ranks, store
from labtui.engine.runtime import launcher

# The signals torchrun's agent handles (PET_SIGNALS_TO_HANDLE, its --signals-to-handle): SIGTERM left out.
AGENT_SIGNALS = "SIGINT,SIGQUIT"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="labtui.engine.training.distributed")
    ap.add_argument("run_dir")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--nnodes", type=int, default=None, help="nodes of a Slurm job (with --rdzv-endpoint)")
    ap.add_argument("--rdzv-endpoint", default=None, help="HOST:PORT of torchrun's c10d rendezvous (the first node)")
    ap.add_argument("--rdzv-id", default=None, help="the rendezvous id (the Slurm job id)")
    args = ap.parse_args(argv)
    run = store.Run(Path(args.run_dir))
    rendezvous = None
    if args.rdzv_endpoint:
        rendezvous = {"nnodes": args.nnodes or 1, "endpoint": args.rdzv_endpoint,
                      "id": args.rdzv_id or os.environ.get("SLURM_JOB_ID") or "labtui",
                      "node_rank": int(os.environ.get("SLURM_NODEID") or 0)}  # srun's, for accelerate's --machine_rank
    try:
        plan = launcher.plan_for(run, args.resume, rendezvous)
        if plan is None or plan["launcher"] == "python":
            raise launcher.LaunchError(f"{run.id} is not a torchrun or accelerate run")
        if args.resume:
            launcher.check_resume(run, plan)
    except launcher.LaunchError as e:
        return _refuse(run, str(e))
    failure = ranks.ranks_dir(run.path) / launcher.FAILURE_FILE
    if rendezvous is None or rendezvous["node_rank"] == 0:  # one node clears it (every node has started: srun)
        failure.unlink(missing_ok=True)
    _forward_sigterm()
    os.environ["PET_SIGNALS_TO_HANDLE"] = AGENT_SIGNALS
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # torchrun's own default for more than one process, unwarned
    if launcher.visible_gpus() == 0:
        # no GPU: the Trainer (accelerate's PartialState) makes a gloo process group of the ranks only when
        # told to use the CPU; otherwise every rank would train alone on the whole data set
        os.environ["ACCELERATE_USE_CPU"] = "true"
    where = f" on {socket.gethostname()} (node {rendezvous['node_rank']} of {rendezvous['nnodes']})" if rendezvous else ""
    print(f"[labtui] launching {plan['nproc']} processes{where}: {' '.join(plan['command'])}", flush=True)
    launcher_args = plan["command"][3:]  # after `python -m <launcher module>`
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    try:
        if plan["launcher"] == "torchrun":
            from torch.distributed.run import parse_args
            from torch.distributed.run import run as torchrun

            torchrun(parse_args(launcher_args))
        else:
            from accelerate.commands.launch import launch_command, launch_command_parser

            launch_command(launch_command_parser().parse_args(launcher_args))
    except ChildFailedError as e:
        write_failure(failure, e)
        print(e, file=sys.stderr, flush=True)  # torchrun's own summary, root cause first
        return 1
    return 0


def _refuse(run: store.Run, message: str) -> int:
    """Settings that cannot start: the result the supervisor folds into state.json, and the log line."""
    progress = run.progress()
    progress["result"] = {"status": "failed", "error": message, "error_where": None, "ended": time.time()}
    store.atomic_write_json(run.file(store.PROGRESS_FILE), progress)
    print(f"[labtui] failed: {message}", flush=True)
    return 1


def _forward_sigterm() -> None:
    """SIGTERM to this process goes to the ranks (its children) instead; each one stops at an agreed step."""
    import psutil

    me = psutil.Process()

    def forward(signum, frame) -> None:
        for child in me.children():
            try:
                child.send_signal(signal.SIGTERM)
            except psutil.Error:
                pass

    signal.signal(signal.SIGTERM, forward)


# a rank that raised one of these lost a peer: the effect of another rank's failure, not its cause
PEER_ERRORS = ("Connection closed by peer", "Connection reset by peer", "remote worker", "NCCL communicator was aborted",
               "Broken pipe")


def _cause_order(rec: dict) -> int:
    """How likely a failure is the root cause: a kill by the kernel (SIGKILL, SIGSEGV...) first, then an
    exception of the rank's own, an exit without one, an error about a lost peer, and last SIGTERM or
    SIGINT (what torchrun sends the other ranks once one has failed)."""
    code, error = rec["exitcode"], rec.get("error") or ""
    if code < 0:
        return 4 if -code in (signal.SIGTERM, signal.SIGINT) else 0
    if any(p in error for p in PEER_ERRORS):
        return 3
    return 1 if rec.get("traceback") else 2


def failure_records(e) -> list[dict]:
    """ChildFailedError's failures, root cause first (`_cause_order`, then the earliest: torchrun's own
    choice, by whole seconds, often ties a killed rank with the peer that lost it)."""
    out = []
    for rank, f in e.failures.items():
        data = f.error_file_data if isinstance(f.error_file_data, dict) else {}
        message = data.get("message") if isinstance(data.get("message"), dict) else {}
        out.append({
            "rank": int(rank), "local_rank": f.local_rank, "pid": f.pid, "exitcode": f.exitcode,
            "signal": f.signal_name() if f.exitcode < 0 else None, "timestamp": f.timestamp,
            "error": message.get("message") if message else (f.message if isinstance(f.message, str) else None),
            "traceback": (message.get("extraInfo") or {}).get("py_callstack") if message else None,
            "error_file": f.error_file if os.path.isfile(f.error_file) else None,
        })
    out.sort(key=lambda r: (_cause_order(r), r["timestamp"], r["rank"]))
    return out


def write_failure(path: Path, e) -> None:
    """The failures of this node's ranks (each with its host), merged with those another node's shim
    wrote already (a multi-node job), root cause first."""
    host = socket.gethostname()
    records = [{**r, "host": host} for r in failure_records(e)]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        before = store.read_json(path, {}) or {}
        earlier = before.get("failures") if isinstance(before, dict) else None
        if isinstance(earlier, list):
            mine = {r["rank"] for r in records}
            records += [r for r in earlier if isinstance(r, dict) and isinstance(r.get("rank"), int)
                        and isinstance(r.get("exitcode"), int) and r["rank"] not in mine]
            records.sort(key=lambda r: (_cause_order(r), r.get("timestamp") or 0, r["rank"]))
        store.atomic_write_json(path, {"t": time.time(), "host": records[0]["host"] if records else host,
                                       "failures": records})
    except OSError as err:
        print(f"[labtui] cannot write {path}: {err}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
