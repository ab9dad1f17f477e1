"""Slurm: everything labtui says to a Slurm cluster, by running Slurm's own commands.

How it will be used (issue 14, part 2): with `launch.executor: slurm` (or `labtui run --slurm`) the
launcher writes `<run>/job.sbatch` with `render_sbatch(run.path, SlurmSettings.from_config(cfg),
[python, "-m", "labtui.engine.runtime.supervisor", RUN, "--", *worker])`, submits it with `submit()`
and keeps the job id in state.json. The job's batch script *is* labtui's supervisor (`exec`), so it
gets the time-limit warning (`--signal=B:USR1@120`) and `cancel(job, "TERM")` directly, and writes
the run directory on the shared filesystem as it does locally. Readers (the CLI, the TUI) ask
`poll(job_ids)` for all their Slurm runs at once (one `squeue` call, cached and backed off, so it
may be asked every second) and turn a job into a run status and a one-line reason with `describe()`;
what the run directory says (written by the supervisor) wins over Slurm for a run that recorded its
own end. `labtui stop` is `cancel(job, "TERM")` (checkpoint, then stop), `--now` is `cancel(job)`.

Facts about Slurm 22.05 this relies on (checked on the one-node cluster of scripts/slurm-cluster):
- `sbatch --parsable` prints `jobid` or `jobid;cluster`; the script needs a `#!` first line.
- `squeue --me -t all` lists pending and running jobs and finished ones for MinJobAge seconds (plus
  up to a minute until slurmctld's purge); `squeue -j ID` fails ("Invalid job id") once every job
  asked for is gone, so it is not used. `scontrol show job -o ID` knows the same jobs (with the
  exit code: `ExitCode=3:0`) and fails the same way after the purge.
- `sacct` exits 1 with "Slurm accounting storage is disabled" where accounting is off: then a job
  that left the controller is `UNKNOWN` here, and the run directory has the last word.
- A time limit is enforced on slurmctld's periodic check, so TIMEOUT comes up to ~30 s after the
  limit; `--signal=B:USR1@N` arrives early by up to the same. `scancel --signal=TERM --batch`
  signals the batch shell only and leaves the job running if it handles the signal.
- `scontrol requeue ID` (the job needs `--requeue`) keeps the job id, ends the running job at once
  ("CANCELLED ... DUE TO JOB REQUEUE" in its output) and leaves it PENDING with reason BeginTime
  for two minutes; `SLURM_RESTART_COUNT` counts the restarts, and `--open-mode=append` keeps
  every attempt's output in one slurm-ID.out.
- srun given SIGTERM (or SIGHUP, SIGQUIT) SIGKILLs every task of its step ("forcing job termination",
  src/srun/libsrun/srun_job.c), so a multi-process run's ranks, started by `srun_command`, are asked
  to stop by the stop file alone. srun 22.05 no longer reads --cpus-per-task from sbatch's
  environment (SLURM_CPUS_PER_TASK): it is given again on srun's command line.
"""

from __future__ import annotations

import shlex
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SBATCH_FILE = "job.sbatch"
OUTPUT_PATTERN = "slurm-%j.out"  # in the run directory; %j is the job id
WARN_SIGNAL = "USR1"  # sent to the batch shell (the supervisor) before the time limit
WARN_BEFORE_S = 120
COMMAND_TIMEOUT_S = 30.0

# Slurm job states (squeue %T / scontrol JobState / sacct State), grouped by what they mean for a run
PENDING_STATES = ("PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD")
ACTIVE_STATES = ("CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "SIGNALING", "STAGE_OUT",
                 "RESIZING", "STOPPED")
FINAL_STATES = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL",
                "PREEMPTED", "BOOT_FAIL", "DEADLINE", "SPECIAL_EXIT", "REVOKED")
UNKNOWN = "UNKNOWN"  # not in squeue, scontrol or sacct (gone after MinJobAge, accounting off)


class SlurmError(RuntimeError):
    """A Slurm command failed or could not be run; the message says which and what it printed."""


class SlurmUnavailable(SlurmError):
    """A Slurm command is not installed (not on PATH) on this machine."""


@dataclass(frozen=True)
class SlurmSettings:
    """The experiment's `slurm:` section (engine/config/experiment.py validates the keys)."""

    partition: str | None = None
    time: str | None = "24:00:00"
    gpus_per_node: int | None = None
    nodes: int = 1
    cpus_per_task: int | None = None
    mem: str | None = None
    account: str | None = None
    qos: str | None = None
    sbatch_args: tuple[str, ...] = ()
    requeue: bool = False

    @classmethod
    def from_config(cls, cfg: dict | None) -> SlurmSettings:
        """From a resolved experiment config; a missing or null key is the default."""
        given = dict((cfg or {}).get("slurm") or {})
        kw: dict[str, Any] = {}
        for name in cls.__dataclass_fields__:
            value = given.get(name)
            if value is None:
                continue
            if name == "sbatch_args":
                value = tuple(str(a) for a in value)
            elif name in ("mem", "time", "partition", "account", "qos"):
                value = str(value)
            kw[name] = value
        return cls(**kw)


def _sbatch_value(name: str, value: Any) -> str:
    text = str(value)
    if not text or any(c in text for c in "\n\r") or (text != text.strip()):
        raise SlurmError(f"slurm.{name}: {text!r} cannot go on an #SBATCH line (empty, spaces around it, or a newline)")
    return text


def srun_command(settings: SlurmSettings, command: list[str]) -> list[str]:
    """The job step that starts `command` once on every node of the job (a multi-process run's launcher,
    which then forms the world with torchrun's c10d rendezvous): `--kill-on-bad-exit=1` ends every node's
    task when one fails (as torchrun ends the other ranks), `--cpus-per-task` is given again because
    srun 22.05 no longer takes it from sbatch's environment."""
    args = ["srun", "--nodes", str(settings.nodes), "--ntasks-per-node", "1", "--kill-on-bad-exit=1"]
    if settings.cpus_per_task is not None:
        args += ["--cpus-per-task", str(settings.cpus_per_task)]
    return [*args, *command]


def render_sbatch(run_dir: str | Path, settings: SlurmSettings, command: list[str],
                  dependency: str | None = None, job_name: str | None = None,
                  workdir: str | Path | None = None, warn_before_s: int = WARN_BEFORE_S,
                  notes: list[str] | None = None) -> str:
    """The text of `<run>/job.sbatch`: readable, and reusable by hand with `sbatch job.sbatch`.

    `command` runs on the node as the batch step itself (`exec`), so Slurm's signals reach it;
    `dependency` is sbatch's (e.g. `afterany:123`, to chain runs); `warn_before_s`: the batch shell
    gets USR1 this long before the time limit (to checkpoint). The job's output goes to
    `<run>/slurm-%j.out` (appended to, so a requeued job keeps its earlier output). `notes`: comment
    lines saying what the command goes on to run (a multi-process run's srun step)."""
    if not command:
        raise SlurmError("render_sbatch: no command to run")
    run_dir = Path(run_dir)
    name = job_name or f"labtui-{run_dir.name}"
    opts: list[tuple[str, Any]] = [
        ("job-name", name),
        ("output", run_dir / OUTPUT_PATTERN),
        ("open-mode", "append"),
        ("chdir", Path(workdir) if workdir is not None else run_dir),
        ("nodes", settings.nodes),
        ("ntasks-per-node", 1),
    ]
    if settings.time is not None:
        opts.append(("time", settings.time))
    opts.append(("signal", f"B:{WARN_SIGNAL}@{warn_before_s}"))
    for key, value in (("partition", settings.partition), ("gpus-per-node", settings.gpus_per_node),
                       ("cpus-per-task", settings.cpus_per_task), ("mem", settings.mem),
                       ("account", settings.account), ("qos", settings.qos), ("dependency", dependency)):
        if value is not None:
            opts.append((key, value))
    lines = [
        "#!/bin/bash",
        f"# Written by labtui for the run in {run_dir}.",
        "# Submit it again by hand with: sbatch job.sbatch (its output goes to slurm-<jobid>.out).",
    ]
    lines += [f"#SBATCH --{key}={_sbatch_value(key, value)}" for key, value in opts]
    lines.append("#SBATCH --requeue" if settings.requeue else "#SBATCH --no-requeue")
    for arg in settings.sbatch_args:  # slurm.sbatch_args, passed as they are
        lines.append(f"#SBATCH {_sbatch_value('sbatch_args', arg)}")
    lines += [""] + [f"# {note}" for note in notes or []]
    lines += [
        'echo "labtui: Slurm job ${SLURM_JOB_ID} on $(hostname) at $(date -Is)"',
        "exec " + shlex.join(str(c) for c in command),
        "",
    ]
    return "\n".join(lines)


def _run(args: list[str], timeout: float = COMMAND_TIMEOUT_S) -> subprocess.CompletedProcess:
    """Run one Slurm command; a missing command or one that hangs is a SlurmError that says so."""
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise SlurmUnavailable(f"{args[0]} not found: Slurm's commands are not installed on this machine "
                               f"(or not on PATH); run without --slurm to train here") from None
    except subprocess.TimeoutExpired:
        raise SlurmError(f"{shlex.join(args)} did not answer within {timeout:.0f}s (is slurmctld up?)") from None


def _failed(proc: subprocess.CompletedProcess, args: list[str]) -> SlurmError:
    said = (proc.stderr or proc.stdout or "").strip().splitlines()
    return SlurmError(f"{shlex.join(args)} exited {proc.returncode}: {said[-1] if said else 'no message'}")


def parse_parsable_full(text: str) -> tuple[str, str | None]:
    """(job id, cluster or None) from `sbatch --parsable`'s output: `123` or `123;cluster`."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    job_id, _, cluster = (lines[-1] if lines else "").partition(";")
    if not job_id.strip().isdigit():
        raise SlurmError(f"sbatch --parsable printed no job id: {text.strip()!r}")
    return job_id.strip(), cluster.strip() or None


def parse_parsable(text: str) -> str:
    """The job id in `sbatch --parsable`'s output: `123` or `123;cluster` (on a multi-cluster setup)."""
    return parse_parsable_full(text)[0]


def submit_job(path: str | Path, extra_args: list[str] | None = None) -> tuple[str, str | None]:
    """Submit a batch script with `sbatch --parsable`; returns (job id, cluster or None)."""
    args = ["sbatch", "--parsable", *(extra_args or []), str(path)]
    proc = _run(args)
    if proc.returncode != 0:
        raise _failed(proc, args)
    return parse_parsable_full(proc.stdout)


def submit(path: str | Path, extra_args: list[str] | None = None) -> str:
    """Submit a batch script with `sbatch --parsable`; returns the job id."""
    return submit_job(path, extra_args)[0]


def cancel(job_id: str, signal: str | None = None, batch_only: bool = True) -> None:
    """Without a signal: end the job now (`scancel ID`, Slurm sends TERM then KILL). With one (e.g.
    "TERM", "USR1"): only signal it and let it finish on its own terms: `--batch` signals the batch
    shell (labtui's supervisor) alone, `--full` every process of the batch step."""
    args = ["scancel"]
    if signal is not None:
        args += [f"--signal={signal}", "--batch" if batch_only else "--full"]
    args.append(str(job_id))
    proc = _run(args)
    if proc.returncode != 0:
        raise _failed(proc, args)


@dataclass(frozen=True)
class JobInfo:
    """What Slurm says about one job. `state` is the bare state (`CANCELLED`, not `CANCELLED by 0`)."""

    job_id: str
    state: str
    reason: str | None = None
    node: str | None = None
    exit_code: int | None = None  # the batch script's exit status
    signal: int | None = None  # the signal that ended it, if one did
    time_limit: str | None = None
    source: str | None = None  # squeue | scontrol | sacct | None (Slurm no longer knows the job)

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES


def _bare_state(text: str) -> str:
    return (text.split() or [UNKNOWN])[0].rstrip("+").upper()


def _none(text: str | None) -> str | None:
    text = (text or "").strip()
    return None if text in ("", "None", "(null)", "N/A", "n/a", "None assigned") else text


def _exit(text: str | None) -> tuple[int | None, int | None]:
    """`3:0` (exit code : signal) as scontrol and sacct write it."""
    try:
        code, sig = (text or "").split(":", 1)
        return int(code), int(sig)
    except ValueError:
        return None, None


SQUEUE_FORMAT = "%i|%T|%r|%N|%l"


def parse_squeue(text: str) -> dict[str, JobInfo]:
    out = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 5 or not parts[0]:
            continue
        job_id, state, reason, node, limit = parts[:5]
        out[job_id] = JobInfo(job_id, _bare_state(state), _none(reason), _none(node),
                              time_limit=_none(limit), source="squeue")
    return out


def parse_scontrol(text: str) -> dict[str, JobInfo]:
    """`scontrol show job -o` output: one line per job of Key=Value pairs."""
    out = {}
    for line in text.splitlines():
        pairs = dict(tok.split("=", 1) for tok in line.split() if "=" in tok)
        job_id = pairs.get("JobId")
        if not job_id:
            continue
        code, sig = _exit(pairs.get("ExitCode"))
        out[job_id] = JobInfo(job_id, _bare_state(pairs.get("JobState", "")), _none(pairs.get("Reason")),
                              _none(pairs.get("NodeList")), code, sig or None, _none(pairs.get("TimeLimit")),
                              source="scontrol")
    return out


SACCT_FIELDS = "JobID,State,Reason,NodeList,ExitCode,Timelimit"


def parse_sacct(text: str) -> dict[str, JobInfo]:
    out = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 6 or not parts[0] or "." in parts[0]:  # steps (123.batch) are not the job
            continue
        job_id, state, reason, node, exit_code, limit = parts[:6]
        code, sig = _exit(exit_code)
        out[job_id] = JobInfo(job_id, _bare_state(state), _none(reason), _none(node), code, sig or None,
                              _none(limit), source="sacct")
    return out


def job_state(job_id: str, timeout: float = COMMAND_TIMEOUT_S) -> JobInfo | None:
    """What the controller says about one job right now (`scontrol show job`: a cancelled job is
    CANCELLED there while squeue still shows it COMPLETING); None when it does not know the job."""
    proc = _run(["scontrol", "show", "job", "-o", str(job_id)], timeout)
    return parse_scontrol(proc.stdout).get(str(job_id)) if proc.returncode == 0 else None


def requeue(job_id: str) -> None:
    """`scontrol requeue ID`: the job (submitted with --requeue) ends now and waits to start again with
    the same id (SLURM_RESTART_COUNT counts the restarts)."""
    args = ["scontrol", "requeue", str(job_id)]
    proc = _run(args)
    if proc.returncode != 0:
        raise _failed(proc, args)


class Poller:
    """Asks Slurm about many jobs at once, gently: one `squeue --me` for all of them, then
    `scontrol show job` for each job squeue no longer lists (or lists as finished, for its exit
    code), then one `sacct` for what is left. Answers from a cache younger than the current
    interval, which starts at `min_interval` and doubles up to `max_interval` while nothing changes
    (new job ids or a change of state go back to `min_interval`). A failing sacct (accounting off)
    is not asked again for `sacct_retry` seconds."""

    def __init__(self, min_interval: float = 2.0, max_interval: float = 30.0, sacct_retry: float = 600.0,
                 timeout: float = COMMAND_TIMEOUT_S):
        self.min_interval, self.max_interval, self.sacct_retry = min_interval, max_interval, sacct_retry
        self.timeout = timeout
        self.interval = min_interval
        self.sacct_error: str | None = None  # why sacct could not be used, when it could not
        self._sacct_failed_at: float | None = None
        self._asked_at: float | None = None
        self._jobs: dict[str, JobInfo] = {}
        self._final: dict[str, JobInfo] = {}  # finished jobs, once their exit code is known
        self._lock = threading.Lock()

    def poll(self, job_ids, fresh: bool = False) -> dict[str, JobInfo]:
        ids = [str(j) for j in job_ids]
        with self._lock:
            now = time.monotonic()
            new = [j for j in ids if j not in self._jobs]
            if fresh or new or self._asked_at is None or now - self._asked_at >= self.interval:
                known = dict(self._jobs)
                self._jobs = self._ask(ids)
                self._asked_at = time.monotonic()
                changed = bool(new) or any(known.get(j) != self._jobs.get(j) for j in ids)
                self.interval = self.min_interval if changed else min(self.interval * 2, self.max_interval)
            return {j: self._jobs[j] for j in ids if j in self._jobs}

    def _ask(self, ids: list[str]) -> dict[str, JobInfo]:
        if not ids:
            return {}
        args = ["squeue", "--me", "--states=all", "--noheader", f"--format={SQUEUE_FORMAT}"]
        proc = _run(args, self.timeout)
        if proc.returncode != 0:
            raise _failed(proc, args)
        listed = parse_squeue(proc.stdout)
        out: dict[str, JobInfo] = {}
        missing = []
        for j in ids:
            info = listed.get(j)
            if info is not None and not info.final:
                out[j] = info
            elif j in self._final:
                out[j] = self._final[j]
            else:
                missing.append(j)
        for j in missing:  # finished (for the exit code) or gone from squeue: the controller may still know
            proc = _run(["scontrol", "show", "job", "-o", j], self.timeout)
            found = parse_scontrol(proc.stdout).get(j) if proc.returncode == 0 else None
            if found is None and listed.get(j) is not None:
                found = listed[j]
            if found is not None:
                out[j] = found
        missing = [j for j in missing if j not in out]
        if missing:
            out.update(self._sacct(missing))
        for j, info in out.items():
            if info.final and info.source != "squeue":
                self._final[j] = info
        for j in ids:
            out.setdefault(j, JobInfo(j, UNKNOWN, self.sacct_error or "not in squeue, scontrol or sacct", source=None))
        return out

    def _sacct(self, ids: list[str]) -> dict[str, JobInfo]:
        if self._sacct_failed_at is not None and time.monotonic() - self._sacct_failed_at < self.sacct_retry:
            return {}
        args = ["sacct", "--noheader", "--parsable2", "--allocations", f"--format={SACCT_FIELDS}",
                "--jobs", ",".join(ids)]
        try:
            proc = _run(args, self.timeout)
            said = None if proc.returncode == 0 else str(_failed(proc, args)).rsplit(": ", 1)[-1]
        except SlurmUnavailable:
            said = "not installed"
        if said is not None:  # accounting off, most often ("Slurm accounting storage is disabled")
            self._sacct_failed_at = time.monotonic()
            self.sacct_error = f"Slurm no longer lists it and sacct cannot tell ({said}): the run directory has the last word"
            return {}
        self._sacct_failed_at, self.sacct_error = None, None
        return parse_sacct(proc.stdout)


_POLLER = Poller()


def poll(job_ids, fresh: bool = False) -> dict[str, JobInfo]:
    """Slurm's view of these jobs (see Poller; this process shares one)."""
    return _POLLER.poll(job_ids, fresh=fresh)


# Why a job waits, in words (squeue's %r for a PENDING job); anything else is shown as Slurm says it.
PENDING_REASONS = {
    "Resources": "waiting for resources (the nodes or GPUs it asks for are busy)",
    "Priority": "waiting: jobs with a higher priority go first",
    "Dependency": "waiting for the job it depends on to end",
    "DependencyNeverSatisfied": "will never start: the job it depends on did not end as required; cancel it and resubmit",
    "JobHeldUser": "held (scontrol release JOBID lets it start)",
    "JobHeldAdmin": "held by an administrator",
    "BeginTime": "waiting for its start time (a requeued job waits 2 minutes)",
    "PartitionTimeLimit": "asks for more time than the partition allows: lower slurm.time",
    "PartitionNodeLimit": "asks for more nodes than the partition allows: lower slurm.nodes",
    "PartitionDown": "its partition is down",
    "PartitionInactive": "its partition is inactive",
    "ReqNodeNotAvail": "the nodes it needs are not available (down, drained or reserved)",
    "Reservation": "waiting for its reservation",
    "QOSMaxJobsPerUserLimit": "waiting: you have as many jobs running as your QOS allows",
    "AssocMaxJobsLimit": "waiting: your account has as many jobs running as it may",
    "InvalidAccount": "will never start: slurm.account is not valid on this cluster",
    "InvalidQOS": "will never start: slurm.qos is not valid on this cluster",
    "BadConstraints": "will never start: no node has what it asks for (slurm.gpus_per_node, mem, cpus?)",
    "launch failed requeued held": "its launch failed and Slurm held it: scontrol release JOBID to retry",
}


def describe(info: JobInfo) -> tuple[str | None, str]:
    """A job's run status (one of the store's STATUSES) and a one-line reason saying what happened
    and what to change. The status is None when Slurm no longer knows the job: then the run
    directory decides."""
    node = f" on {info.node}" if info.node else ""
    state = info.state
    if state in PENDING_STATES:
        if state != "PENDING":
            return "queued", f"requeued by Slurm ({state}): it will continue from its last checkpoint"
        reason = info.reason or "None"
        words = PENDING_REASONS.get(reason, f"waiting ({reason})" if reason != "None" else "waiting to be scheduled")
        return "queued", f"Slurm job {info.job_id} {words.replace('JOBID', info.job_id)}"
    if state == "CONFIGURING":
        return "starting", f"Slurm job {info.job_id} is starting{node} (the node is being set up)"
    if state == "SUSPENDED":
        return "running", f"Slurm job {info.job_id} is suspended{node} (by an administrator or a preemption)"
    if state in ACTIVE_STATES:
        what = "finishing" if state == "COMPLETING" else "running"
        return "running", f"Slurm job {info.job_id} {what}{node}"
    out = f"see slurm-{info.job_id}.out in the run directory"
    limit = f" ({info.time_limit})" if info.time_limit else ""
    if state == "COMPLETED":
        return "completed", f"Slurm job {info.job_id} completed{node}"
    if state == "FAILED":
        code = f" with exit code {info.exit_code}" if info.exit_code else ""
        if info.signal:
            code = f" killed by signal {info.signal}"
        return "failed", f"Slurm job {info.job_id} failed{code}{node}: {out}"
    reasons = {
        "TIMEOUT": f"hit its time limit{limit}: raise slurm.time or resume from the last checkpoint",
        "OUT_OF_MEMORY": (f"ran out of memory{node}: raise slurm.mem, or lower the batch size or "
                          f"task.max_length, then resume from the last checkpoint"),
        "NODE_FAIL": (f"lost its node{node.replace(' on', '')} (NODE_FAIL): resume from the last checkpoint "
                      f"(slurm.requeue: true resubmits it by itself)"),
        "PREEMPTED": ("was preempted by a higher-priority job: resume from the last checkpoint "
                      "(slurm.requeue: true resubmits it by itself)"),
        "CANCELLED": "cancelled by Slurm (scancel, or an administrator): resume from the last checkpoint",
        "BOOT_FAIL": f"could not start: its node failed to boot{node}: resume it to try again",
        "DEADLINE": "passed its deadline (sbatch --deadline) before it could finish",
        "REVOKED": "was revoked (it ran on another cluster of the federation)",
        "SPECIAL_EXIT": f"ended in SPECIAL_EXIT and is held: {out}",
    }
    if state in reasons:
        return "crashed", f"Slurm job {info.job_id} {reasons[state]}"
    if state == UNKNOWN:
        return None, f"Slurm job {info.job_id}: {info.reason or 'Slurm no longer knows it'}"
    return "crashed", f"Slurm job {info.job_id} ended as {state}{node}: {out}"


__all__ = [
    "SBATCH_FILE", "OUTPUT_PATTERN", "SlurmError", "SlurmUnavailable", "SlurmSettings", "JobInfo", "Poller",
    "render_sbatch", "srun_command", "submit", "submit_job", "cancel", "job_state", "requeue", "poll", "describe", "parse_parsable", "parse_parsable_full", "parse_squeue",
    "parse_scontrol", "parse_sacct",
]
