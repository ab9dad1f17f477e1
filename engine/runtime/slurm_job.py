"""The supervisor's side of a Slurm run: what it does differently when it is the batch step of the
run's Slurm job (engine/runtime/slurm_runs.py submits it). Light: no torch.

- At start it records the job in state.json (`slurm.state` RUNNING, the node, a job id it did not know
  when the script was submitted again by hand) and the launch plan resolved on the node; a job that
  Slurm started again (`SLURM_RESTART_COUNT` > 0: requeued) runs the worker with `--resume`.
- USR1 (`--signal=B:USR1@N`, before the time limit): the worker is asked to checkpoint and stop, as by
  `labtui stop` (the stop file, which every rank reads at each step end; an eval gets SIGTERM). Then with `slurm.requeue: true` the job
  is requeued (`scontrol requeue`) and continues from that checkpoint; without, the run ends `failed`
  saying the time limit came, which checkpoint was saved and what to do.
- SIGTERM: from `labtui stop` (the stop file is there) it is passed on to the worker, as a local stop;
  without the stop file Slurm is ending the job (scancel, preemption, the time limit): the end recorded
  is Slurm's (`slurm.describe`: "cancelled by Slurm ..."), not a stop.
- A torchrun or accelerate run (any number of nodes, one too) starts its ranks with an srun step,
  once per node (`rank_step`): `srun --nodes N --ntasks-per-node 1 --kill-on-bad-exit=1 python -m
  labtui.engine.training.distributed RUN --nnodes N --rdzv-endpoint HOST:PORT --rdzv-id JOB`, HOST
  being this node (the batch step runs on the job's first node) and PORT one free here; each node's
  launcher joins torchrun's c10d rendezvous there and the world forms across the nodes. A stop is
  the stop file alone (every rank reads it on the shared filesystem and the ranks agree on the step
  by an all-reduce): a SIGTERM to srun would have it SIGKILL every task ("forcing job termination").
- The next queued local run is not started from the compute node.
"""

from __future__ import annotations

import os
import signal
import socket
import time

from labtui.engine.rundir import store
from labtui.engine.runtime import launcher, slurm
from labtui.engine.runtime.launcher import DISTRIBUTED_MODULE, STOP_FILE

EXECUTOR = "slurm"


def rank_step(settings: slurm.SlurmSettings, shim: list[str], endpoint: str, job_id: str) -> list[str]:
    """The srun step that runs the torchrun shim (`python -m labtui.engine.training.distributed RUN
    [--resume]`) once on every node of the job, joining torchrun's c10d rendezvous at `endpoint`."""
    return slurm.srun_command(settings, [*shim, "--nnodes", str(settings.nodes), "--rdzv-endpoint", endpoint,
                                         "--rdzv-id", str(job_id)])


def free_port() -> int:
    """A TCP port free on this node now (the rendezvous' host binds it moments later: torchrun's agent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return s.getsockname()[1]


class SlurmJob:
    """Made by `here(run)` in the supervisor when it runs as the batch step of the run's Slurm job."""

    def __init__(self, run: store.Run, job_id: str, restarts: int = 0):
        self.run, self.job_id, self.restarts = run, job_id, restarts
        self.settings = slurm.SlurmSettings.from_config(run.config())
        self.child_pgid: int | None = None
        self.warned = False  # USR1: the time limit is near
        self.ended_by_slurm = False  # SIGTERM without labtui's stop file
        self.rendezvous: dict | None = None  # the ranks' srun step's (rank_step), once the command is built

    @classmethod
    def here(cls, run: store.Run) -> SlurmJob | None:
        job = os.environ.get("SLURM_JOB_ID")
        if not job or run.raw_state().get("executor") != EXECUTOR:
            return None  # a local run (even one started inside somebody's salloc)
        try:
            restarts = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
        except ValueError:
            restarts = 0
        return cls(run, job, restarts)

    def install(self) -> None:
        signal.signal(signal.SIGUSR1, self._on_usr1)

    def command(self, command: list[str]) -> list[str]:
        """A job Slurm started again (requeued) continues a training run from its newest checkpoint; the
        torchrun shim runs on every node through srun (`rank_step`)."""
        if (self.restarts and self.run.info().get("kind") == "train" and "--resume" not in command
                and self.run.latest_checkpoint() is not None):
            command = [*command, "--resume"]
        if self.run.info().get("kind") == "train" and command[1:3] == ["-m", DISTRIBUTED_MODULE]:
            endpoint = f"{socket.gethostname()}:{free_port()}"
            self.rendezvous = {"nnodes": self.settings.nodes, "endpoint": endpoint, "id": self.job_id, "node_rank": 0}
            return rank_step(self.settings, command, endpoint, self.job_id)
        return command

    def started_state(self, command: list[str]) -> dict:
        """state.json's updates when the worker has started on the node."""
        raw = self.run.raw_state()
        info = raw.get(EXECUTOR) if isinstance(raw.get(EXECUTOR), dict) else {}
        ids = [str(j) for j in info.get("job_ids") or [] if isinstance(j, (str, int))]
        node = os.environ.get("SLURMD_NODENAME") or socket.gethostname()
        now = time.time()
        info = {**info, "job_id": self.job_id, "state": "RUNNING", "node": node, "checked": now,
                "reason": f"Slurm job {self.job_id} running on {node}",
                "job_ids": ids if self.job_id in ids else [*ids, self.job_id]}
        out: dict = {EXECUTOR: info}
        if self.run.info().get("kind") == "train":
            try:  # the plan as resolved on the node (its GPUs), not on the machine that submitted it
                out["launch"] = launcher.plan_for(self.run, resume="--resume" in command, rendezvous=self.rendezvous)
            except launcher.LaunchError:
                out["launch"] = None
        return out

    def child_started(self, pgid: int) -> None:
        self.child_pgid = pgid
        if self.warned:  # the warning came while the worker was being started
            self._ask_to_stop()

    def on_term(self) -> None:
        if self.run.file(STOP_FILE).exists():  # `labtui stop`: TERM to the batch step only; pass it on
            if self.rendezvous is None:  # the ranks' srun step reads the stop file (srun would SIGKILL them)
                self._signal_child(signal.SIGTERM)
        else:
            self.ended_by_slurm = True

    def _on_usr1(self, signum, frame) -> None:
        self.warned = True
        if self.child_pgid is not None:
            self._ask_to_stop()

    def _ask_to_stop(self) -> None:
        try:
            store.atomic_write_json(self.run.file(STOP_FILE), {"t": time.time(), "signal": "USR1",
                                                               "reason": "Slurm time limit near", "slurm_job": self.job_id})
        except OSError:
            pass
        if self.run.info().get("kind") != "train":  # a training worker (every rank) reads the stop file at each
            self._signal_child(signal.SIGTERM)  # step end, even while it still loads; a SIGTERM then would kill it

    def _signal_child(self, sig: int) -> None:
        if self.child_pgid is None:
            return
        try:
            os.killpg(self.child_pgid, sig)
        except OSError:
            pass

    def final_state(self, state: dict, requeue: bool = True) -> tuple[dict, bool]:
        """(the run's end as this job sees it, whether to requeue the job after writing it). `requeue`
        False: as without `slurm.requeue` (the requeue failed)."""
        node = os.environ.get("SLURMD_NODENAME") or socket.gethostname()
        if state.get("status") == "completed":  # the batch step exits 0 after writing the end: COMPLETED
            return {**state, EXECUTOR: self._slurm(state="COMPLETED", reason=f"Slurm job {self.job_id} completed on {node}")}, False
        kind = self.run.info().get("kind")
        cp = self.run.latest_checkpoint() if kind == "train" else None
        job = f"Slurm job {self.job_id}"
        if self.warned:
            limit = self.settings.time or "?"
            if cp is not None and self.settings.requeue and requeue:
                return {**state, "status": "queued", "error": None, "ended": None, "queued": False,
                        EXECUTOR: self._slurm(state="REQUEUED", reason=(
                            f"{job} requeued before its time limit (slurm.time {limit}): it continues from "
                            f"{cp.name} when Slurm starts it again"))}, True
            if cp is not None:
                step = cp.name.split("-")[-1]
                error = (f"{job} reached its time limit (TIMEOUT, slurm.time {limit}): stopped with {cp.name} saved at "
                         f"step {step}; `labtui resume {self.run.id}` continues from it, or raise slurm.time")
            else:
                error = (f"{job} reached its time limit (TIMEOUT, slurm.time {limit}) before any checkpoint was saved: "
                         f"raise slurm.time (or lower training.save_steps) and start it again")
            return {**state, "status": "failed", "error": error,
                    EXECUTOR: self._slurm(state="TIMEOUT", reason=error)}, False
        if self.ended_by_slurm:
            try:
                info = slurm.job_state(self.job_id, timeout=5)
            except slurm.SlurmError:
                info = None
            status, line = slurm.describe(info) if info is not None and info.final else (None, "")
            if status not in ("crashed", "failed"):
                # a job being ended is COMPLETING until this process exits: CANCELLED, PREEMPTED or TIMEOUT
                # cannot be told apart from here
                status, line = "crashed", (f"{job} cancelled by Slurm (a SIGTERM without a labtui stop: scancel, an "
                                           f"administrator, a preemption or the time limit): resume from the last "
                                           f"checkpoint")
            if cp is not None:
                line += f" (newest checkpoint: {cp.name})"
            return {**state, "status": status, "error": line,
                    EXECUTOR: self._slurm(state=info.state if info is not None else None, reason=line)}, False
        return {**state, EXECUTOR: self._slurm(state="COMPLETED", reason=(
            f"Slurm job {self.job_id} ended on {node}: the run is {state.get('status')} (its error says why)"))}, False

    def _slurm(self, **updates) -> dict:
        raw = self.run.raw_state()
        info = dict(raw[EXECUTOR]) if isinstance(raw.get(EXECUTOR), dict) else {}
        info.update({k: v for k, v in updates.items() if v is not None}, checked=time.time())
        return info

    def requeue(self) -> str | None:
        """Requeue the job (this process ends with it); the reason it could not be, else None."""
        try:
            slurm.requeue(self.job_id)
        except slurm.SlurmError as e:
            return str(e)
        time.sleep(60)  # Slurm ends this job now; never fall through to writing anything else
        return None
