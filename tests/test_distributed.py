"""More than one process: the launcher's commands, and real two-rank runs on the CPU (torchrun and
accelerate over gloo) - one metrics stream, a heartbeat per rank, stop and resume on every rank, and a
rank's death named in the run's error."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import types
from pathlib import Path

import pytest
import yaml
from conftest import labtui, wait_for
from labtui.engine.rundir import ranks, store
from labtui.engine.runtime import launcher, supervisor, sysmon

RUN = Path("/ws/logs/20261202-101010-demo-abcd")
TWO = ["--set", "launch.nproc_per_node=2"]
# small steps, one log per step, no checkpoint or evaluation of its own before the end
STEPS = ["--set", "training.logging_steps=1", "--set", "training.save_steps=1000", "--set", "training.eval_steps=1000"]


@pytest.fixture
def nvml(monkeypatch):
    """A machine with `count` NVIDIA GPUs, faked at the library boundary (pynvml)."""
    def install(count: int) -> None:
        fake = types.SimpleNamespace(nvmlInit=lambda: None, nvmlDeviceGetCount=lambda: count)
        monkeypatch.setitem(sys.modules, "pynvml", fake)
        monkeypatch.setattr(sysmon, "_nvml_state", {"ok": None, "error": None})

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return install


# --- the command built for each launcher (no model) ----------------------------------------------


def test_each_launcher_gets_its_own_command(nvml):
    nvml(0)
    py = launcher.launch_plan({}, RUN)  # a config without `launch`: one process, as before
    assert py == {"launcher": "python", "nproc": 1, "accelerate_config": None,
                  "command": [sys.executable, "-m", "labtui.engine.training.worker", str(RUN)]}

    tr = launcher.launch_plan({"launch": {"launcher": "torchrun", "nproc_per_node": 2, "extra_args": ["--max-restarts", "0"]}},
                              RUN, resume=True)
    assert tr["nproc"] == 2 and tr["launcher"] == "torchrun"
    assert tr["command"] == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                             "--log-dir", f"{RUN}/ranks/torchrun", "--tee", "3", "--max-restarts", "0",
                             "-m", "labtui.engine.training.worker", str(RUN), "--resume"]
    assert not any("port" in a for a in tr["command"])  # --standalone picks a free port: runs can share a host

    ac = launcher.launch_plan({"launch": {"launcher": "accelerate", "nproc_per_node": 2, "accelerate_config": "multi_gpu"}}, RUN)
    preset = launcher.ACCELERATE_CONFIGS / "multi_gpu.yaml"
    assert ac["accelerate_config"] == "multi_gpu"
    assert ac["command"] == [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(preset),
                             "--num_processes", "2", "--num_machines", "1", "--log_dir", f"{RUN}/ranks/torchrun",
                             "--tee", "3", "-m", "labtui.engine.training.worker", str(RUN)]
    shipped = yaml.safe_load(preset.read_text())
    assert shipped["distributed_type"] == "MULTI_GPU" and shipped["main_process_port"] == 0
    assert launcher.launch_settings({"launch": {"launcher": "torchrun"}})["nproc_per_node"] == "auto"


def test_every_preset_is_shipped_and_zero_needs_deepspeed(nvml):
    nvml(0)
    from labtui.engine.config.experiment import ACCELERATE_PRESETS

    names = sorted(p.stem for p in launcher.ACCELERATE_CONFIGS.glob("*.yaml"))
    assert names == sorted(ACCELERATE_PRESETS) == ["fsdp", "multi_gpu", "zero2", "zero3"]
    assert yaml.safe_load((launcher.ACCELERATE_CONFIGS / "fsdp.yaml").read_text())["distributed_type"] == "FSDP"
    for zero, stage in (("zero2", 2), ("zero3", 3)):
        cfg = yaml.safe_load((launcher.ACCELERATE_CONFIGS / f"{zero}.yaml").read_text())
        assert cfg["deepspeed_config"]["zero_stage"] == stage
    with pytest.raises(launcher.LaunchError, match="no such file .*zero9.*a preset: multi_gpu"):
        launcher.launch_plan({"launch": {"launcher": "accelerate", "accelerate_config": "zero9"}}, RUN)
    try:
        import deepspeed  # noqa: F401
    except ImportError:
        with pytest.raises(launcher.LaunchError, match="pip install deepspeed"):
            launcher.launch_plan({"launch": {"launcher": "accelerate", "nproc_per_node": 2, "accelerate_config": "zero3"}}, RUN)


def test_auto_is_the_visible_gpus(nvml, monkeypatch):
    torchrun = {"launch": {"launcher": "torchrun", "nproc_per_node": "auto"}}
    nvml(0)
    assert launcher.launch_plan(torchrun, RUN)["nproc"] == 1  # no GPU: one process
    nvml(4)
    assert launcher.launch_plan(torchrun, RUN)["nproc"] == 4
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert launcher.launch_plan(torchrun, RUN)["nproc"] == 2
    with pytest.raises(launcher.LaunchError, match="nproc_per_node is 3 but this machine shows 2 GPU"):
        launcher.launch_plan({"launch": {"launcher": "torchrun", "nproc_per_node": 3}}, RUN)


def test_resume_with_another_number_of_processes_is_refused(tmp_path, nvml):
    nvml(0)
    run = store.Run(tmp_path / "run")
    cp = run.file("checkpoints") / "checkpoint-6"
    cp.mkdir(parents=True)
    for name in ("trainer_state.json", "adapter_model.safetensors", "rng_state_0.pth", "rng_state_1.pth"):
        (cp / name).write_text("x")
    assert launcher.checkpoint_nproc(cp) == 2
    launcher.check_resume(run, {"launcher": "torchrun", "nproc": 2})
    with pytest.raises(launcher.LaunchError, match="checkpoint-6 was written by 2 process.*would start 1"):
        launcher.check_resume(run, {"launcher": "python", "nproc": 1})


def test_a_failed_rank_is_named_with_its_host_and_traceback():
    failure = {"host": "node7", "failures": [
        {"rank": 1, "local_rank": 1, "exitcode": 1, "error": "ValueError: bad batch", "traceback": "Traceback...\nValueError: bad batch\n"},
        {"rank": 0, "local_rank": 0, "exitcode": 1, "error": "RuntimeError: Connection closed by peer"}]}
    state = supervisor.final_state(1, {"status": "failed", "error": "connection closed"}, False, [], failure)
    assert state["status"] == "failed" and state["error_rank"] == 1
    assert state["error"] == "rank 1 (local rank 1) on host node7 failed: ValueError: bad batch"
    assert state["error_where"].endswith("ValueError: bad batch\n")
    killed = {"host": "node7", "failures": [{"rank": 3, "local_rank": 1, "exitcode": -9}]}
    state = supervisor.final_state(1, None, False, [], killed)
    assert state["status"] == "crashed" and state["error"].startswith("rank 3 (local rank 1) on host node7 died: killed by SIGKILL")
    assert supervisor.final_state(1, None, True, [], killed)["status"] == "stopped"  # the stop's own kill


def test_the_first_failure_is_the_root_cause(tmp_path):
    from labtui.engine.training.distributed import failure_records
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    error_file = tmp_path / "error.json"
    error_file.write_text(json.dumps({"message": {"message": "RuntimeError: Connection closed by peer", "extraInfo": {
        "py_callstack": "Traceback\nRuntimeError: Connection closed by peer\n", "timestamp": str(int(time.time()))}}}))
    peer = ProcessFailure(local_rank=0, pid=10, exitcode=1, error_file=str(error_file))
    killed = ProcessFailure(local_rank=1, pid=11, exitcode=-9, error_file="/nonexistent/error.json")
    killed.timestamp = peer.timestamp + 1  # noticed later: the signal is still the cause, the peer's error its effect
    records = failure_records(ChildFailedError("worker", {0: peer, 1: killed}))
    assert [(r["rank"], r["signal"]) for r in records] == [(1, "SIGKILL"), (0, None)]
    assert records[1]["error"] == "RuntimeError: Connection closed by peer" and "Traceback" in records[1]["traceback"]
    # a rank's own exception comes before the SIGTERM torchrun then sent the others
    own = tmp_path / "own.json"
    own.write_text(json.dumps({"message": {"message": "ValueError: bad batch", "extraInfo": {
        "py_callstack": "Traceback\nValueError: bad batch\n", "timestamp": str(int(time.time()) + 5)}}}))
    raised = ProcessFailure(local_rank=1, pid=11, exitcode=1, error_file=str(own))
    termed = ProcessFailure(local_rank=0, pid=10, exitcode=-15, error_file="/nonexistent/error.json")
    records = failure_records(ChildFailedError("worker", {0: termed, 1: raised}))
    assert [r["rank"] for r in records] == [1, 0] and records[0]["error"] == "ValueError: bad batch"


# --- two ranks for real (gloo on the CPU) --------------------------------------------------------


def _train_steps(run: store.Run) -> list[int]:
    return [r["step"] for r in store.read_jsonl(run.file(store.METRICS_FILE)) if r["kind"] == "train"]


def _wait_rank_step(run: store.Run, step: int, timeout: float = 180) -> list[dict]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        beats = ranks.read_ranks(run.path)
        if len(beats) == 2 and all((b.get("step") or 0) >= step for b in beats):
            return beats
        assert run.state().get("status") not in store.FINAL, (run.state(), store.tail_lines(run.file(store.LOG_FILE), 30))
        time.sleep(0.2)
    raise AssertionError(f"{run.id}: both ranks never reached step {step}\n" + "\n".join(store.tail_lines(run.file(store.LOG_FILE), 30)))


@pytest.mark.e2e
def test_torchrun_two_ranks_stop_on_both_and_resume(workspace):
    proc = labtui(workspace, "run", "experiments/demo-baseline.yaml", "--set", "launch.launcher=torchrun", *TWO,
                  "--set", "training.max_steps=30", *STEPS, check=True)
    run = workspace.run(proc.stdout.strip().splitlines()[0])
    beats = _wait_rank_step(run, 3)
    assert [b["rank"] for b in beats] == [0, 1] and {b["world_size"] for b in beats} == {2}
    assert len({b["pid"] for b in beats}) == 2 and all(b["device"] == "cpu" for b in beats)
    launch = run.raw_state()["launch"]
    assert (launch["launcher"], launch["nproc"]) == ("torchrun", 2) and "--standalone" in launch["command"]

    assert "stopping" in labtui(workspace, "stop", run.id, check=True).stdout
    state = wait_for(run)
    assert state["status"] == "stopped", store.tail_lines(run.file(store.LOG_FILE), 30)
    stopped_at = run.progress()["step"]
    cp = run.latest_checkpoint()
    assert cp.name == f"checkpoint-{stopped_at}" and 3 <= stopped_at < 30
    assert (cp / "rng_state_0.pth").is_file() and (cp / "rng_state_1.pth").is_file()  # saved by both ranks
    assert {(b["step"], b["state"]) for b in ranks.read_ranks(run.path)} == {(stopped_at, "done")}  # the same step

    assert labtui(workspace, "resume", run.id, check=True).stdout.strip() == run.id
    state = wait_for(run)
    assert state["status"] == "completed", store.tail_lines(run.file(store.LOG_FILE), 30)
    assert state["exit_code"] == 0 and state.get("error") is None
    assert _train_steps(run) == list(range(1, 31))  # one stream: rank 0 alone writes, each step once
    assert json.loads(run.file(store.PROGRESS_FILE).read_text())["step"] == 30
    assert {(b["rank"], b["step"], b["state"]) for b in ranks.read_ranks(run.path)} == {(0, 30, "done"), (1, 30, "done")}
    assert (run.file("adapter") / "adapter_config.json").is_file()
    # an epoch holds half as many steps as on one process: the ranks share the data
    train = [r for r in store.read_jsonl(run.file(store.METRICS_FILE)) if r["kind"] == "train"]
    per_rank_batch = run.config()["training"]["per_device_train_batch_size"]
    assert train[-1]["samples_per_s"] / train[-1]["steps_per_s"] == pytest.approx(2 * per_rank_batch)
    # the per-rank logs are torchrun's own
    assert list(run.file(ranks.RANKS_DIR).glob(f"{ranks.TORCHRUN_LOG_DIR}/*/attempt_0/1/stdout.log"))


@pytest.mark.e2e
def test_sigkill_of_rank_1_ends_the_run_naming_it(workspace):
    proc = labtui(workspace, "run", "experiments/demo-baseline.yaml", "--set", "launch.launcher=torchrun", *TWO,
                  "--set", "training.max_steps=400", *STEPS, check=True)
    run = workspace.run(proc.stdout.strip().splitlines()[0])
    beats = _wait_rank_step(run, 2)
    os.kill(beats[1]["pid"], signal.SIGKILL)  # what the OOM killer does to one rank
    state = wait_for(run, timeout=90)
    assert state["status"] == "crashed", state
    assert state["error"].startswith("rank 1 (local rank 1) on host ") and "killed by SIGKILL" in state["error"]
    assert run.raw_state()["error_rank"] == 1
    deadline = time.time() + 30
    while store.process_alive(beats[0]["pid"], beats[0]["pid_start"]):  # torchrun ended rank 0 too
        assert time.time() < deadline, "rank 0 outlived the run"
        time.sleep(0.2)


@pytest.mark.e2e
def test_accelerate_two_ranks_complete(workspace):
    proc = labtui(workspace, "run", "experiments/demo-baseline.yaml", "--set", "launch.launcher=accelerate", *TWO,
                  "--set", "launch.accelerate_config=multi_gpu", "--set", "training.max_steps=6",
                  "--set", "training.logging_steps=2", "--set", "training.save_steps=6", "--set", "training.eval_steps=6",
                  check=True)
    run = workspace.run(proc.stdout.strip().splitlines()[0])
    state = wait_for(run)
    assert state["status"] == "completed", store.tail_lines(run.file(store.LOG_FILE), 30)
    assert run.raw_state()["launch"]["launcher"] == "accelerate"
    assert _train_steps(run) == [2, 4, 6]
    assert [b["rank"] for b in ranks.read_ranks(run.path)] == [0, 1]
    cp = run.latest_checkpoint()
    assert cp.name == "checkpoint-6" and (cp / "rng_state_1.pth").is_file()


# --- evaluations stay on one process, on the GPU chosen ---------------------------------------------


def test_eval_takes_a_gpu_by_its_index(monkeypatch):
    import torch
    from labtui.engine.runtime import evaluate_launch
    from labtui.engine.training.evaluate import pick_device

    assert evaluate_launch.settings_from({}, device="cuda:1")["device"] == "cuda:1"
    with pytest.raises(Exception, match="--device must be one of"):
        evaluate_launch.settings_from({}, device="cuda:one")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a two-GPU machine, at torch's boundary
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert pick_device("cuda:1") == "cuda:1" and pick_device("cuda") == "cuda"
    with pytest.raises(RuntimeError, match="sees 2 GPU"):
        pick_device("cuda:2")
