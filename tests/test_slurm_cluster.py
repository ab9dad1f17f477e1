"""labtui's Slurm module against a real one-node Slurm cluster (scripts/slurm-cluster), plus the
parsing and wording it rests on. The cluster tests skip, with the script's reason, only where Slurm's
packages cannot be installed (not root, no apt-get, no network)."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
from labtui.engine.runtime import slurm

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "slurm-cluster"
CANNOT_INSTALL = 3  # the script's exit code when the packages cannot be installed or started


@pytest.fixture(scope="session")
def slurm_cluster():
    """The one-node cluster, started by the project's script (left running if it was already up)."""
    was_up = shutil.which("sinfo") is not None and subprocess.run(
        [str(SCRIPT), "status"], capture_output=True, stdin=subprocess.DEVNULL).returncode == 0
    proc = subprocess.run([str(SCRIPT), "start"], capture_output=True, text=True, timeout=900,
                          stdin=subprocess.DEVNULL)
    if proc.returncode == CANNOT_INSTALL:
        pytest.skip(f"no Slurm cluster: {proc.stderr.strip()}")
    assert proc.returncode == 0, f"scripts/slurm-cluster start exited {proc.returncode}:\n{proc.stderr}"
    yield
    if not was_up:
        subprocess.run([str(SCRIPT), "stop"], capture_output=True, timeout=120, stdin=subprocess.DEVNULL)


def submit(run_dir: Path, script: str, **kw) -> str:
    """A job whose batch step is `bash -c SCRIPT`, written and submitted as labtui will do it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    settings = slurm.SlurmSettings.from_config({"slurm": kw.pop("slurm", {"time": "1"})})
    path = run_dir / slurm.SBATCH_FILE
    path.write_text(slurm.render_sbatch(run_dir, settings, ["bash", "-c", script], **kw))
    return slurm.submit(path)


def watch(poller: slurm.Poller, job_id: str, until, timeout: float = 180) -> list[slurm.JobInfo]:
    """Poll until `until(info)`; returns every answer seen (the last one matching)."""
    seen: list[slurm.JobInfo] = []
    deadline = time.time() + timeout
    while time.time() < deadline:
        info = poller.poll([job_id])[job_id]
        seen.append(info)
        if until(info):
            return seen
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} never got there; Slurm said: {[i.state for i in seen][-10:]}")


def final(info: slurm.JobInfo) -> bool:
    return info.final


@pytest.fixture
def poller() -> slurm.Poller:
    return slurm.Poller(min_interval=0.2, max_interval=1.0)


# --- the parsing and wording, without a cluster -------------------------------------------------------

def test_parsable_job_id_with_and_without_cluster():
    assert slurm.parse_parsable("4242\n") == "4242"
    assert slurm.parse_parsable("4242;gpucluster\n") == "4242"
    assert slurm.parse_parsable("sbatch: warning: something\n17;c2\n") == "17"
    with pytest.raises(slurm.SlurmError, match="no job id"):
        slurm.parse_parsable("sbatch: error: Batch job submission failed\n")


def test_settings_from_config_and_the_sbatch_it_renders(tmp_path):
    cfg = {"slurm": {"partition": "gpu", "time": "02:00:00", "gpus_per_node": 4, "nodes": 1, "cpus_per_task": 16,
                     "mem": "64G", "account": "lab", "qos": None, "sbatch_args": ["--exclusive"], "requeue": True}}
    settings = slurm.SlurmSettings.from_config(cfg)
    assert settings == slurm.SlurmSettings(partition="gpu", time="02:00:00", gpus_per_node=4, cpus_per_task=16,
                                           mem="64G", account="lab", sbatch_args=("--exclusive",), requeue=True)
    assert slurm.SlurmSettings.from_config({}) == slurm.SlurmSettings()
    text = slurm.render_sbatch(tmp_path / "run1", settings, ["python", "-m", "x", "a b"], dependency="afterany:7")
    lines = text.splitlines()
    assert lines[0] == "#!/bin/bash"
    sbatch = [line for line in lines if line.startswith("#SBATCH ")]
    assert sbatch == [
        "#SBATCH --job-name=labtui-run1", f"#SBATCH --output={tmp_path}/run1/slurm-%j.out",
        "#SBATCH --open-mode=append", f"#SBATCH --chdir={tmp_path}/run1", "#SBATCH --nodes=1",
        "#SBATCH --ntasks-per-node=1", "#SBATCH --time=02:00:00", "#SBATCH --signal=B:USR1@120",
        "#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=4", "#SBATCH --cpus-per-task=16", "#SBATCH --mem=64G",
        "#SBATCH --account=lab", "#SBATCH --dependency=afterany:7", "#SBATCH --requeue", "#SBATCH --exclusive"]
    assert lines[-1] == "exec python -m x 'a b'"
    with pytest.raises(slurm.SlurmError, match="newline"):
        slurm.render_sbatch(tmp_path, slurm.SlurmSettings(partition="a\nb"), ["true"])


def test_scontrol_line_parsed():
    line = ("JobId=12 JobName=labtui-r UserId=root(0) JobState=TIMEOUT Reason=TimeLimit Dependency=(null) "
            "ExitCode=0:15 RunTime=00:01:17 TimeLimit=00:01:00 NodeList=vm BatchHost=vm")
    info = slurm.parse_scontrol(line)["12"]
    assert info == slurm.JobInfo("12", "TIMEOUT", "TimeLimit", "vm", 0, 15, "00:01:00", "scontrol")
    sacct = "12|CANCELLED by 0|None|vm|0:15|00:01:00\n12.batch|CANCELLED|||0:15|\n"
    assert slurm.parse_sacct(sacct) == {"12": slurm.JobInfo("12", "CANCELLED", None, "vm", 0, 15, "00:01:00", "sacct")}


@pytest.mark.parametrize(("state", "status", "words"), [
    ("TIMEOUT", "crashed", "hit its time limit (24:00:00): raise slurm.time or resume from the last checkpoint"),
    ("OUT_OF_MEMORY", "crashed", "ran out of memory on gpu7: raise slurm.mem"),
    ("NODE_FAIL", "crashed", "lost its node gpu7 (NODE_FAIL): resume from the last checkpoint"),
    ("PREEMPTED", "crashed", "preempted by a higher-priority job: resume from the last checkpoint"),
    ("CANCELLED", "crashed", "cancelled by Slurm (scancel"),
    ("FAILED", "failed", "failed with exit code 1 on gpu7: see slurm-5.out"),
    ("COMPLETED", "completed", "completed on gpu7"),
])
def test_each_end_of_a_job_says_what_happened_and_what_to_change(state, status, words):
    info = slurm.JobInfo("5", state, None, "gpu7", 1 if state == "FAILED" else 0, None, "24:00:00", "scontrol")
    got_status, reason = slurm.describe(info)
    assert got_status == status
    assert words in reason and reason.startswith("Slurm job 5 ")


def test_a_missing_slurm_command_says_so(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(slurm.SlurmUnavailable, match="sbatch not found"):
        slurm.submit(tmp_path / "job.sbatch")
    with pytest.raises(slurm.SlurmUnavailable, match="squeue not found"):
        slurm.Poller().poll(["1"])


# --- against the real cluster ----------------------------------------------------------------------------

@pytest.mark.e2e
def test_a_job_goes_queued_running_completed_and_a_failing_one_keeps_its_exit_code(slurm_cluster, tmp_path, poller):
    ok = submit(tmp_path / "ok", "echo hello; sleep 3")
    bad = submit(tmp_path / "bad", "sleep 1; exit 3")
    seen = watch(poller, ok, final)
    assert {i.state for i in seen[:-1]} <= {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING"}
    assert "RUNNING" in {i.state for i in seen}
    running = next(i for i in seen if i.state == "RUNNING")
    assert slurm.describe(running) == ("running", f"Slurm job {ok} running on {running.node}")
    done = seen[-1]
    assert (done.state, done.exit_code) == ("COMPLETED", 0)
    assert slurm.describe(done)[0] == "completed"
    assert "hello" in (tmp_path / "ok" / f"slurm-{ok}.out").read_text()

    failed = watch(poller, bad, final)[-1]
    assert (failed.state, failed.exit_code) == ("FAILED", 3)
    assert slurm.describe(failed) == ("failed", f"Slurm job {bad} failed with exit code 3 on {failed.node}: "
                                                f"see slurm-{bad}.out in the run directory")


@pytest.mark.e2e
def test_a_job_slurm_refuses_says_why(slurm_cluster, tmp_path):
    with pytest.raises(slurm.SlurmError, match="sbatch --parsable .* exited 1: .*Invalid partition name specified"):
        submit(tmp_path / "nope", "true", slurm={"time": "1", "partition": "no-such-partition"})


@pytest.mark.e2e
def test_a_held_job_and_one_waiting_on_it_show_queued_with_slurms_reason(slurm_cluster, tmp_path, poller):
    held = submit(tmp_path / "held", "true", slurm={"time": "1", "sbatch_args": ["--hold"]})
    after = submit(tmp_path / "after", "true", dependency=f"afterany:{held}")
    try:
        jobs = poller.poll([held, after], fresh=True)
        assert (jobs[held].state, jobs[held].reason) == ("PENDING", "JobHeldUser")
        assert slurm.describe(jobs[held]) == (
            "queued", f"Slurm job {held} held (scontrol release {held} lets it start)")
        assert (jobs[after].state, jobs[after].reason) == ("PENDING", "Dependency")
        assert slurm.describe(jobs[after]) == ("queued", f"Slurm job {after} waiting for the job it depends on to end")
    finally:
        for job in (held, after):
            slurm.cancel(job)


@pytest.mark.e2e
def test_a_stop_signal_reaches_the_batch_step_and_scancel_is_cancelled_by_slurm(slurm_cluster, tmp_path, poller):
    # labtui stop: TERM to the batch step (the supervisor), which checkpoints and ends on its own terms
    stopping = submit(tmp_path / "stop", "trap 'echo got TERM > stopped; exit 0' TERM; "
                                         "for i in $(seq 120); do sleep 0.2; done; exit 9")
    watch(poller, stopping, lambda i: i.state == "RUNNING")
    slurm.cancel(stopping, signal="TERM", batch_only=True)
    done = watch(poller, stopping, final)[-1]
    assert (done.state, done.exit_code) == ("COMPLETED", 0)
    assert (tmp_path / "stop" / "stopped").read_text() == "got TERM\n"

    # an external scancel (or labtui stop --now)
    killed = submit(tmp_path / "kill", "sleep 120")
    watch(poller, killed, lambda i: i.state == "RUNNING")
    slurm.cancel(killed)
    gone = watch(poller, killed, final)[-1]
    assert gone.state == "CANCELLED"
    assert slurm.describe(gone) == ("crashed", f"Slurm job {killed} cancelled by Slurm (scancel, or an "
                                               f"administrator): resume from the last checkpoint")


@pytest.mark.e2e
def test_a_job_slurm_no_longer_knows_is_unknown_and_sacct_failing_is_handled(slurm_cluster):
    # A finished job leaves squeue and scontrol after MinJobAge (plus up to a minute until slurmctld's
    # purge), and sacct fails where accounting is off: labtui is told Slurm does not know, not an error.
    # A job id the controller never had takes the same path through all three commands without the wait.
    # (The time limit, its USR1 warning and TIMEOUT are tested end to end on a real run in
    # tests/test_slurm_runs.py.)
    gone_id = "987654"
    listed = subprocess.run(["squeue", "--me", "--states=all", "--noheader", "--format=%i"], capture_output=True,
                            text=True).stdout.split()
    assert gone_id not in listed
    fresh = slurm.Poller()
    gone = fresh.poll([gone_id])[gone_id]
    assert gone.state == slurm.UNKNOWN
    assert gone.source is None
    status, reason = slurm.describe(gone)
    assert status is None
    assert fresh.sacct_error is not None and "Slurm accounting storage is disabled" in fresh.sacct_error
    assert reason == f"Slurm job {gone_id}: {fresh.sacct_error}"


def test_the_slurm_section_of_an_experiment(tmp_path):
    from labtui.engine.config import experiment as config

    path = tmp_path / "exp.yaml"
    path.write_text("extends: " + str(ROOT / "experiments" / "demo-baseline.yaml") + "\n"
                    "launch: {executor: slurm}\n"
                    "slurm:\n  partition: gpu\n  time: 2:00:00\n  gpus_per_node: 2\n  mem: 64G\n"
                    "  sbatch_args: [--exclusive]\n")
    exp = config.load_experiment(path, ["slurm.requeue=true", "slurm.account=lab"])
    assert exp.config["launch"]["executor"] == "slurm"
    # an unquoted 2:00:00 is a time, not YAML 1.1's base-60 integer 7200
    assert slurm.SlurmSettings.from_config(exp.config) == slurm.SlurmSettings(
        partition="gpu", time="2:00:00", gpus_per_node=2, mem="64G", account="lab", sbatch_args=("--exclusive",),
        requeue=True)
    assert config.load_experiment(path, ["slurm.time=1-12:00:00"]).config["slurm"]["time"] == "1-12:00:00"
    # without a slurm: section the defaults hold: one node, 24 hours, no requeue
    plain = config.load_experiment(ROOT / "experiments" / "demo-baseline.yaml").config
    assert plain["launch"]["executor"] == "local"
    assert slurm.SlurmSettings.from_config(plain) == slurm.SlurmSettings()
    for bad, words in [("slurm.time=soon", "slurm.time must be a time limit as sbatch --time takes it"),
                       ("slurm.mem=64 GB", "slurm.mem must be memory per node"),
                       ("slurm.nodes=0", "slurm.nodes must be a positive integer"),
                       ("launch.executor=k8s", "launch.executor must be one of local, slurm"),
                       ("slurm.sbatch_args=[exclusive]", "slurm.sbatch_args must be a list of sbatch options"),
                       ("slurm.parition=gpu", "did you mean 'partition'")]:
        with pytest.raises(config.ConfigError, match=words):
            config.load_experiment(path, [bad])


@pytest.mark.e2e
def test_polling_every_second_asks_slurm_once_per_interval(slurm_cluster, tmp_path, monkeypatch):
    # a squeue that counts its calls, in front of the real one
    real = shutil.which("squeue")
    shim = tmp_path / "bin" / "squeue"
    shim.parent.mkdir()
    shim.write_text(f"#!/bin/sh\necho x >> {tmp_path}/calls\nexec {real} \"$@\"\n")
    shim.chmod(0o755)
    monkeypatch.setenv("PATH", f"{shim.parent}:{Path(real).parent}")
    held = submit(tmp_path / "held", "true", slurm={"time": "1", "sbatch_args": ["--hold"]})
    try:
        poller = slurm.Poller(min_interval=30, max_interval=60)
        for _ in range(5):
            assert poller.poll([held])[held].state == "PENDING"
        assert len((tmp_path / "calls").read_text().split()) == 1
        poller.poll([held, "1"])  # a job it has not seen yet: asked at once
        assert len((tmp_path / "calls").read_text().split()) == 2
        poller.poll([held], fresh=True)
        assert len((tmp_path / "calls").read_text().split()) == 3
    finally:
        slurm.cancel(held)
