"""Runs on Slurm (issue 14): `labtui run --slurm` on the real one-node cluster of scripts/slurm-cluster,
with the demo model. The run directory is the same as a local run's, plus job.sbatch, slurm-<job>.out
and state.json's `executor`/`slurm`. The cluster tests skip, with the script's reason, only where
Slurm's packages cannot be installed; the tests of the batch script and of the reconciliation rules
need no cluster."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time

import pytest
from conftest import fast_overrides, labtui, wait_for
from labtui.engine.config.experiment import load_experiment
from labtui.engine.rundir import ranks, store
from labtui.engine.runtime import launcher, slurm, slurm_job, slurm_runs
from test_slurm_cluster import ROOT, slurm_cluster  # noqa: F401 - the session fixture that starts the cluster

# slow enough steps (a big batch) that a test can act while the run is mid-way
SLOW = ["--set", "training.per_device_train_batch_size=48", "--set", "training.logging_steps=1",
        "--set", "training.eval_steps=1000", "--set", "training.save_steps=1000"]


def wait_until(what, check, timeout: float = 180, poll: float = 0.3):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = check()
        if got:
            return got
        time.sleep(poll)
    raise AssertionError(f"never: {what}")


def step_of(run: store.Run) -> int:
    return run.progress().get("step") or 0


def synced_status(ws: store.Workspace, run: store.Run) -> str | None:
    slurm_runs.sync(ws, [run])
    return run.state().get("status")


# --- no cluster needed ----------------------------------------------------------------------------


@pytest.fixture
def slurm_run(tmp_path) -> tuple[store.Workspace, store.Run]:
    ws = store.Workspace(tmp_path)
    exp = load_experiment(ROOT / "experiments" / "demo-baseline.yaml",
                          ["launch.executor=slurm", "slurm.time=0:30:00", "slurm.partition=gpu", "slurm.requeue=true"])
    return ws, launcher.create_training_run(ws, exp)


def test_the_batch_script_of_a_run_execs_labtuis_supervisor_on_the_worker(slurm_run):
    ws, run = slurm_run
    assert slurm_runs.is_slurm(run)
    text = slurm_runs.sbatch_text(run, dependency="afterany:41")
    lines = text.splitlines()
    assert lines[0] == "#!/bin/bash"
    for line in (f"#SBATCH --output={run.path}/slurm-%j.out", f"#SBATCH --chdir={ws.root}", "#SBATCH --time=0:30:00",
                 "#SBATCH --partition=gpu", "#SBATCH --signal=B:USR1@120", "#SBATCH --dependency=afterany:41",
                 "#SBATCH --requeue"):
        assert line in lines
    py = sys.executable
    assert lines[-1] == (f"exec {py} -m labtui.engine.runtime.supervisor {run.path} -- "
                         f"{py} -m labtui.engine.training.worker {run.path}")
    # a resubmission (labtui resume) continues from the checkpoint
    assert slurm_runs.sbatch_text(run, resume=True).splitlines()[-1].endswith(f"worker {run.path} --resume")
    # a multi-process run: the torchrun shim, as on this machine
    (run.path / store.CONFIG_FILE).write_text((run.path / store.CONFIG_FILE).read_text().replace(
        "launcher: python", "launcher: torchrun"))
    assert slurm_runs.sbatch_text(run).splitlines()[-1].endswith(f"-m labtui.engine.training.distributed {run.path}")
    # more than one node with a single Python process is refused with what to do
    (run.path / store.CONFIG_FILE).write_text((run.path / store.CONFIG_FILE).read_text().replace(
        "nodes: 1", "nodes: 2").replace("launcher: torchrun", "launcher: python"))
    with pytest.raises(slurm.SlurmError, match="slurm.nodes is 2, but launch.launcher is python: .*set launch.launcher: "
                                               "torchrun .* or slurm.nodes: 1"):
        slurm_runs.sbatch_text(run)


def test_a_multi_node_run_starts_one_launcher_per_node_with_srun_and_torchruns_c10d_rendezvous(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no GPU: nproc_per_node as written
    ws = store.Workspace(tmp_path)
    exp = load_experiment(ROOT / "experiments" / "demo-baseline.yaml",
                          ["launch.executor=slurm", "launch.launcher=torchrun", "launch.nproc_per_node=4",
                           "slurm.nodes=2", "slurm.cpus_per_task=8", "slurm.gpus_per_node=4"])
    run = launcher.create_training_run(ws, exp)
    py, path = sys.executable, str(run.path)
    lines = slurm_runs.sbatch_text(run).splitlines()
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=1", "#SBATCH --cpus-per-task=8",
                 "#SBATCH --gpus-per-node=4"):
        assert line in lines
    # the batch step is labtui's supervisor (on the first node); job.sbatch says how it starts the ranks
    assert lines[-1] == f"exec {py} -m labtui.engine.runtime.supervisor {path} -- {py} -m labtui.engine.training.distributed {path}"
    assert (f"#   srun --nodes 2 --ntasks-per-node 1 --kill-on-bad-exit=1 --cpus-per-task 8 {py} -m "
            f"labtui.engine.training.distributed {path} --nnodes 2 --rdzv-endpoint FIRST_NODE:FREE_PORT "
            f"--rdzv-id '$SLURM_JOB_ID'") in lines

    # on the node: the supervisor runs the shim once per node through srun, the rendezvous on its own host
    job = slurm_job.SlurmJob(run, "77")
    step = job.command([py, "-m", "labtui.engine.training.distributed", path])
    host, port = job.rendezvous["endpoint"].rsplit(":", 1)
    assert host == socket.gethostname() and 0 < int(port) < 65536
    assert step == ["srun", "--nodes", "2", "--ntasks-per-node", "1", "--kill-on-bad-exit=1", "--cpus-per-task", "8",
                    py, "-m", "labtui.engine.training.distributed", path, "--nnodes", "2",
                    "--rdzv-endpoint", f"{host}:{port}", "--rdzv-id", "77"]
    # what each node's shim hands torchrun: c10d on the first node, not --standalone
    rdzv = {"nnodes": 2, "endpoint": "node1:29411", "id": "77", "node_rank": 1}
    plan = launcher.plan_for(run, resume=True, rendezvous=rdzv)
    assert plan["command"] == [py, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "4",
                               "--rdzv-backend", "c10d", "--rdzv-endpoint", "node1:29411", "--rdzv-id", "77",
                               "--log-dir", f"{path}/ranks/torchrun", "--tee", "3",
                               "-m", "labtui.engine.training.worker", path, "--resume"]
    assert (plan["nproc"], plan["nnodes"], plan["rendezvous"]) == (4, 2, "c10d node1:29411")
    # accelerate: the same rendezvous through its own flags (its --num_processes counts every node's)
    acc = launcher.launch_plan({"launch": {"launcher": "accelerate", "nproc_per_node": 4}}, run.path, rendezvous=rdzv)
    assert acc["command"][3:] == ["--multi_gpu", "--num_processes", "8", "--num_machines", "2", "--machine_rank", "1",
                                  "--main_process_ip", "node1", "--main_process_port", "29411", "--rdzv_backend", "c10d",
                                  "--log_dir", f"{path}/ranks/torchrun", "--tee", "3",
                                  "-m", "labtui.engine.training.worker", path]
    # a resume needs the whole world of the checkpoint: 2 nodes x 4
    cp = run.file("checkpoints") / "checkpoint-10"
    cp.mkdir(parents=True)
    for name in ("trainer_state.json", "adapter_model.safetensors", *(f"rng_state_{rank}.pth" for rank in range(8))):
        (cp / name).write_text("x")
    launcher.check_resume(run, plan)
    with pytest.raises(launcher.LaunchError, match="written by 8 process.*would start 4 .*here"):
        launcher.check_resume(run, launcher.plan_for(run, resume=True))
    # an evaluation (labtui eval RUN --slurm, with the run's slurm: section) is one process: a one-node job
    ev_lines = slurm_runs.sbatch_text(run, command=[py, "-m", "labtui.engine.training.evaluate", path]).splitlines()
    assert "#SBATCH --nodes=1" in ev_lines and not any("srun" in line for line in ev_lines)


def test_the_root_cause_stays_first_whichever_nodes_shim_writes_last(tmp_path):
    from labtui.engine.training.distributed import write_failure
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    own = tmp_path / "own.json"
    own.write_text(json.dumps({"message": {"message": "ValueError: bad batch", "extraInfo": {
        "py_callstack": "Traceback\nValueError: bad batch\n", "timestamp": str(int(time.time()))}}}))
    path = tmp_path / "ranks" / launcher.FAILURE_FILE
    # node B's rank 3 raised; then node A's ranks 0 and 1, SIGTERMed by torchrun after losing their peer
    write_failure(path, ChildFailedError("worker", {3: ProcessFailure(local_rank=1, pid=11, exitcode=1, error_file=str(own))}))
    write_failure(path, ChildFailedError("worker", {
        0: ProcessFailure(local_rank=0, pid=20, exitcode=-15, error_file="/nonexistent/error.json"),
        1: ProcessFailure(local_rank=1, pid=21, exitcode=-15, error_file="/nonexistent/error.json")}))
    failures = json.loads(path.read_text())["failures"]
    assert [(f["rank"], f["host"]) for f in failures] == [(3, socket.gethostname()), (0, socket.gethostname()),
                                                         (1, socket.gethostname())]
    assert failures[0]["error"] == "ValueError: bad batch"


def _submitted(run: store.Run, job: str = "7", ids=("7",)) -> None:
    run.update_state(status="queued", executor="slurm", slurm={"job_id": job, "cluster": None, "state": "PENDING",
                                                               "reason": None, "node": None, "submitted": time.time(),
                                                               "checked": time.time(), "job_ids": list(ids)})


def test_what_slurm_says_becomes_the_runs_state_unless_the_supervisor_recorded_its_end(slurm_run):
    ws, run = slurm_run
    _submitted(run)
    slurm_runs._reconcile(run, slurm.JobInfo("7", "PENDING", "Resources", source="squeue"))
    raw = run.raw_state()
    assert raw["status"] == "queued"
    assert raw["slurm"]["state"] == "PENDING"
    assert raw["slurm"]["reason"] == "Slurm job 7 waiting for resources (the nodes or GPUs it asks for are busy)"
    assert raw["slurm"]["job_ids"] == ["7"]
    # the job was cancelled while the supervisor ran, and nobody recorded the end: crashed, Slurm's words
    run.update_state(status="running", host="elsewhere", heartbeat=time.time())
    slurm_runs._reconcile(run, slurm.JobInfo("7", "CANCELLED", None, "gpu3", 0, 15, source="scontrol"))
    state = run.state()
    assert state["status"] == "crashed"
    assert state["error"].startswith("Slurm job 7 cancelled by Slurm (scancel, or an administrator)")
    assert run.raw_state()["slurm"]["state"] == "CANCELLED" and run.raw_state()["slurm"]["node"] == "gpu3"
    # an end the supervisor recorded wins over what Slurm says afterwards
    run.update_state(status="completed", error=None)
    slurm_runs._reconcile(run, slurm.JobInfo("7", "TIMEOUT", None, "gpu3", source="scontrol"))
    assert run.state()["status"] == "completed"
    # a labtui stop that ended in scancel is a stop
    run.update_state(status="running")
    (run.path / launcher.STOP_FILE).write_text("{}")
    slurm_runs._reconcile(run, slurm.JobInfo("7", "CANCELLED", None, "gpu3", source="scontrol"))
    assert run.state()["status"] == "stopped"
    # a job Slurm no longer knows: the run directory decides (nothing rewritten but Slurm's state)
    run.update_state(status="running", heartbeat=time.time())
    slurm_runs._reconcile(run, slurm.JobInfo("7", slurm.UNKNOWN, "gone", source=None))
    assert run.raw_state()["status"] == "running" and run.raw_state()["slurm"]["state"] == slurm.UNKNOWN
    # Slurm requeued it (a node failure): its supervisor on the other host fell silent, the job waits again
    run.update_state(status="running", host="elsewhere", heartbeat=time.time() - 120)
    slurm_runs._reconcile(run, slurm.JobInfo("7", "PENDING", "BeginTime", source="squeue"))
    assert run.raw_state()["status"] == "queued"
    assert "waiting for its start time" in run.raw_state()["slurm"]["reason"]


def test_sync_without_slurm_changes_nothing(slurm_run, monkeypatch, tmp_path):
    ws, run = slurm_run
    _submitted(run)
    before = run.file(store.STATE_FILE).read_bytes()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(slurm_runs, "POLLER", slurm.Poller())
    slurm_runs.sync(ws)  # no squeue on this PATH: no exception, nothing written
    assert run.file(store.STATE_FILE).read_bytes() == before
    assert [r.id for r in slurm_runs.active_runs(ws)] == [run.id]


# --- on the cluster -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def time_limited(slurm_cluster, demo_assets, tmp_path_factory):  # noqa: F811
    """A run over its Slurm time limit (one minute, 400 slow steps), submitted before the chained runs so
    that it spends its minute on the node's second CPU while they take the first one in turn; the
    time-limit test reads its end."""
    root = tmp_path_factory.mktemp("time-limited")
    (root / "demo").symlink_to(demo_assets)
    shutil.copytree(ROOT / "experiments", root / "experiments")
    ws = store.Workspace(root)
    run = ws.run(labtui(ws, "run", "experiments/demo-sft.yaml", "--slurm", "--set", "slurm.time=1",
                        "--set", "training.max_steps=400", *SLOW, check=True).stdout.strip())
    return ws, run


@pytest.mark.e2e
def test_three_chained_runs_go_queued_running_completed_in_order(slurm_cluster, workspace, time_limited):  # noqa: F811
    ws = workspace
    out = labtui(ws, "run", "--queue", "--slurm", "experiments/demo-baseline.yaml", "experiments/demo-tuned.yaml",
                 "experiments/demo-sft.yaml", *fast_overrides(4), check=True)
    runs = [ws.run(i) for i in out.stdout.split()]
    assert len(runs) == 3
    jobs = [slurm_runs.job_id(r.raw_state()) for r in runs]
    assert all(jobs) and len(set(jobs)) == 3
    for run, job, before in zip(runs, jobs, [None, *jobs[:2]]):
        raw = run.raw_state()
        assert raw["executor"] == "slurm" and raw["slurm"]["job_ids"] == [job]
        assert f"submitted to Slurm as job {job}" in out.stderr
        sbatch = run.file("job.sbatch").read_text()
        assert ("#SBATCH --dependency=afterany:" + before in sbatch) if before else "--dependency" not in sbatch
    # the second waits for the first: queued, with Slurm's reason, and `labtui queue` lists all three
    second = runs[1]
    assert synced_status(ws, second) == "queued"
    assert "waiting for the job it depends on to end" in (second.raw_state()["slurm"]["reason"] or "")
    listed = json.loads(labtui(ws, "queue", "--json", check=True).stdout)["slurm"]
    assert [(r["id"], r["job_id"]) for r in listed] == list(zip([r.id for r in runs], jobs))
    assert listed[1]["state"] == "PENDING" and listed[1]["status"] == "queued"

    # the first: running with live metrics in the store (seen while Slurm says RUNNING), then completed
    first = runs[0]
    wait_until("the first run's metrics while it runs", lambda: synced_status(ws, first) == "running"
               and any(r.get("kind") == "train" for r in store.read_jsonl(first.file(store.METRICS_FILE))))
    shown = json.loads(labtui(ws, "show", first.id, "--json", check=True).stdout)
    assert shown["executor"] == "slurm" and shown["slurm"]["job_id"] == jobs[0]
    assert shown["slurm"]["state"] == "RUNNING" and shown["slurm"]["node"]
    text = labtui(ws, "show", first.id, check=True).stdout
    assert f"slurm       job {jobs[0]}  RUNNING  node {shown['slurm']['node']}" in text
    for run in runs:
        assert wait_for(run, timeout=300)["status"] == "completed", store.tail_lines(run.file(store.LOG_FILE), 20)
        assert run.file(f"slurm-{slurm_runs.job_id(run.raw_state())}.out").exists()
    states = [r.raw_state() for r in runs]
    assert states[0]["ended"] <= states[1]["started"] and states[1]["ended"] <= states[2]["started"]
    assert [s["slurm"]["state"] for s in states] == ["COMPLETED"] * 3
    assert json.loads(labtui(ws, "queue", "--json", check=True).stdout)["slurm"] == []

    # an evaluation of a Slurm run, submitted the same way (its own job.sbatch in the eval folder)
    out = labtui(ws, "eval", first.id, "--slurm", "--n", "10", "--device", "cpu", "--foreground", check=True)
    ev = store.Run(first.path / store.EVALS_DIR / out.stdout.split()[0])
    raw = ev.raw_state()
    assert raw["status"] == "completed" and raw["executor"] == "slurm"
    assert ev.file("job.sbatch").read_text().rstrip().endswith(f"-m labtui.engine.training.evaluate {ev.path}")
    assert ev.file(f"slurm-{raw['slurm']['job_id']}.out").exists()


@pytest.mark.e2e
def test_stop_checkpoints_resume_resubmits_and_an_external_scancel_is_a_crash(slurm_cluster, workspace):  # noqa: F811
    ws = workspace
    STEPS = 16
    killed = ws.run(labtui(ws, "run", "experiments/demo-sft.yaml", "--slurm", "--set", "training.max_steps=400", *SLOW,
                           check=True).stdout.strip())
    stopped = ws.run(labtui(ws, "run", "experiments/demo-sft.yaml", "--slurm", "--set", f"training.max_steps={STEPS}",
                            *SLOW, check=True).stdout.strip())
    wait_until("the run to stop at step 2", lambda: step_of(stopped) >= 2)
    first_job = slurm_runs.job_id(stopped.raw_state())
    out = labtui(ws, "stop", stopped.id, check=True)
    assert "stopping after the current step" in out.stdout and f"Slurm job {first_job}" in out.stdout
    wait_until("the run to scancel at step 2", lambda: step_of(killed) >= 2)
    subprocess.run(["scancel", slurm_runs.job_id(killed.raw_state())], check=True)

    state = wait_for(stopped, timeout=120)
    assert state["status"] == "stopped", state
    at = step_of(stopped)
    assert 2 <= at < STEPS and stopped.latest_checkpoint().name == f"checkpoint-{at}"

    crashed = wait_until("the scancelled run's end", lambda: synced_status(ws, killed) in store.FINAL and killed.state())
    assert crashed["status"] == "crashed"
    assert "cancelled by Slurm" in crashed["error"], crashed
    assert "checkpoint" not in crashed["error"] or killed.latest_checkpoint() is not None

    out = labtui(ws, "resume", stopped.id, check=True)
    assert out.stdout.strip() == stopped.id and "submitted to Slurm as job" in out.stderr
    raw = stopped.raw_state()
    second_job = slurm_runs.job_id(raw)
    assert raw["slurm"]["job_ids"] == [first_job, second_job] and second_job != first_job
    assert stopped.file("job.sbatch").read_text().rstrip().endswith("--resume")
    state = wait_for(stopped, timeout=180)
    assert state["status"] == "completed", store.tail_lines(stopped.file(store.LOG_FILE), 20)
    steps = [r["step"] for r in store.metrics_history(stopped) if r["kind"] == "train"]
    assert steps == list(range(1, STEPS + 1))  # continued from the checkpoint, each step once


@pytest.mark.e2e
def test_a_run_over_its_time_limit_saves_a_checkpoint_and_says_timeout(time_limited):
    # one minute: Slurm's warning (USR1, 120 s before the limit) comes at its first check (about every
    # 30 s); the run checkpoints and stops
    ws, run = time_limited
    state = wait_for(run, timeout=180)
    assert state["status"] == "failed", state
    cp = run.latest_checkpoint()
    assert cp is not None
    job = slurm_runs.job_id(run.raw_state())
    assert state["error"] == (f"Slurm job {job} reached its time limit (TIMEOUT, slurm.time 1): stopped with {cp.name} "
                              f"saved at step {cp.name.split('-')[1]}; `labtui resume {run.id}` continues from it, "
                              f"or raise slurm.time")
    assert run.raw_state()["slurm"]["state"] == "TIMEOUT"


@pytest.mark.e2e
def test_a_torchrun_run_on_slurm_forms_its_world_through_srun_and_c10d_and_stops_by_the_stop_file(slurm_cluster, workspace):  # noqa: F811
    # the multi-node path on this one-node cluster: srun starts the shim on each node (here one), torchrun's
    # c10d rendezvous on the first node forms the world of 2 CPU ranks; the job asks for the node's 2 CPUs
    ws, steps = workspace, 8
    run = ws.run(labtui(ws, "run", "experiments/demo-baseline.yaml", "--slurm", "--set", "launch.launcher=torchrun",
                        "--set", "launch.nproc_per_node=2", "--set", "slurm.cpus_per_task=2",
                        "--set", "training.per_device_train_batch_size=16",
                        "--set", f"training.max_steps={steps}", "--set", "training.logging_steps=1",
                        "--set", "training.save_steps=1000", "--set", "training.eval_steps=1000",
                        check=True).stdout.strip())
    assert "#   srun --nodes 1 --ntasks-per-node 1 --kill-on-bad-exit=1 --cpus-per-task 2 " in run.file("job.sbatch").read_text()
    wait_until("both ranks at step 2", lambda: len(beats := ranks.read_ranks(run.path)) == 2
               and all((b.get("step") or 0) >= 2 for b in beats), timeout=120)
    raw = run.raw_state()
    assert raw["command"][:6] == ["srun", "--nodes", "1", "--ntasks-per-node", "1", "--kill-on-bad-exit=1"]
    launch, host = raw["launch"], raw["host"]  # the supervisor's host: the job's first node
    assert (launch["launcher"], launch["nproc"], launch["nnodes"]) == ("torchrun", 2, 1)
    assert launch["rendezvous"].startswith(f"c10d {host}:") and "--standalone" not in launch["command"]
    endpoint = launch["rendezvous"].split()[1]
    assert launch["command"][launch["command"].index("--rdzv-endpoint") + 1] == endpoint
    assert raw["command"][raw["command"].index("--rdzv-endpoint") + 1] == endpoint
    assert launch["command"][launch["command"].index("--rdzv-id") + 1] == raw["slurm"]["job_id"]

    # a stop reaches both ranks by the stop file (srun is not signalled): one checkpoint, at the same step
    assert "stopping after the current step" in labtui(ws, "stop", run.id, check=True).stdout
    state = wait_for(run, timeout=120)
    assert state["status"] == "stopped", store.tail_lines(run.file(store.LOG_FILE), 30)
    at = step_of(run)
    cp = run.latest_checkpoint()
    assert cp.name == f"checkpoint-{at}" and 2 <= at < steps
    assert (cp / "rng_state_0.pth").is_file() and (cp / "rng_state_1.pth").is_file()
    assert {(b["step"], b["state"]) for b in ranks.read_ranks(run.path)} == {(at, "done")}

    assert labtui(ws, "resume", run.id, check=True).stdout.strip() == run.id
    state = wait_for(run, timeout=180)
    assert state["status"] == "completed", store.tail_lines(run.file(store.LOG_FILE), 30)
    # one metrics stream (rank 0 alone writes it), each step once; a heartbeat from each rank, with its host
    assert [r["step"] for r in store.metrics_history(run) if r["kind"] == "train"] == list(range(1, steps + 1))
    beats = ranks.read_ranks(run.path)
    assert {(b["rank"], b["world_size"], b["host"], b["step"]) for b in beats} == {(0, 2, host, steps), (1, 2, host, steps)}
    assert run.raw_state()["slurm"]["state"] == "COMPLETED" and len(run.raw_state()["slurm"]["job_ids"]) == 2
