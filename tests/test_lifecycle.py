"""Overnight-proof runs: detached, crash detection, stop/resume, retry, the queue, bring-your-own scripts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT, fast_overrides, labtui, wait_for
from labtui.engine.rundir import store

pytestmark = pytest.mark.e2e

# Slow enough steps (big batch) that a test can act while the run is mid-way.
SLOW = ["--set", "training.per_device_train_batch_size=48", "--set", "training.logging_steps=1",
        "--set", "training.eval_steps=1000", "--set", "training.save_steps=1000"]


def wait_step(run: store.Run, step: int, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (run.progress().get("step") or 0) >= step:
            return
        assert run.state().get("status") not in store.FINAL, run.state()
        time.sleep(0.2)
    raise AssertionError(f"{run.id} did not reach step {step}")


def test_run_survives_its_launching_shell_being_killed(workspace):
    env = dict(os.environ, LABTUI_WORKSPACE=str(workspace.root))
    shell = subprocess.Popen(
        ["bash", "-c", f"{sys.executable} -m labtui run experiments/demo-sft.yaml {' '.join(fast_overrides(30))} > id.txt; sleep 600"],
        cwd=workspace.root, env=env, start_new_session=True, stdin=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (workspace.root / "id.txt").read_text().strip() if (workspace.root / "id.txt").exists() else True:
        assert time.time() < deadline
        time.sleep(0.2)
    run = workspace.run((workspace.root / "id.txt").read_text().strip())
    os.killpg(shell.pid, signal.SIGHUP)  # the SSH connection drops
    os.killpg(shell.pid, signal.SIGKILL)
    shell.wait()
    state = wait_for(run)
    assert state["status"] == "completed"
    raw = run.raw_state()
    assert raw["pid"] and raw["pgid"] and raw["host"] and raw["heartbeat"] >= raw["started"]


def test_sigkill_of_the_worker_is_a_crash_with_the_signal_named(workspace):
    run = workspace.run(labtui(workspace, "run", "experiments/demo-sft.yaml", "--set", "training.max_steps=400", *SLOW, check=True).stdout.strip())
    wait_step(run, 2)
    os.kill(run.raw_state()["pid"], signal.SIGKILL)  # what the OOM killer does
    t0 = time.time()
    state = wait_for(run, timeout=30)
    assert time.time() - t0 < 30
    assert state["status"] == "crashed"
    assert state["exit_signal"] == "SIGKILL"
    assert "killed by SIGKILL" in state["error"] and "out-of-memory" in state["error"]
    shown = json.loads(labtui(workspace, "show", run.id, "--json", check=True).stdout)
    assert shown["status"] == "crashed" and shown["exit_signal"] == "SIGKILL"


def test_vanished_supervisor_and_worker_is_a_crash_by_heartbeat(workspace):
    run = workspace.run(labtui(workspace, "run", "experiments/demo-sft.yaml", "--set", "training.max_steps=400", *SLOW, check=True).stdout.strip())
    wait_step(run, 2)
    raw = run.raw_state()
    os.kill(raw["supervisor_pid"], signal.SIGKILL)  # power loss: nobody writes anything
    os.kill(raw["pid"], signal.SIGKILL)
    state = wait_for(run, timeout=30)
    assert state["status"] == "crashed"
    assert "process gone" in state["error"] and "no heartbeat since" in state["error"]
    assert run.raw_state()["status"] == "running"  # decided by the reader; nothing was rewritten


def test_stop_checkpoints_and_resume_continues_without_a_loss_jump(workspace):
    common = ["--set", "training.max_steps=24", *SLOW, "--set", "training.lr_scheduler_type=linear"]
    ref = workspace.run(labtui(workspace, "run", "experiments/demo-sft.yaml", *common, check=True).stdout.strip())
    assert wait_for(ref)["status"] == "completed"

    run = workspace.run(labtui(workspace, "run", "experiments/demo-sft.yaml", *common, check=True).stdout.strip())
    wait_step(run, 6)
    out = labtui(workspace, "stop", run.id, check=True)
    assert "stopping" in out.stdout
    state = wait_for(run)
    assert state["status"] == "stopped"
    stopped_at = run.progress()["step"]
    assert 6 <= stopped_at < 24
    assert run.latest_checkpoint().name == f"checkpoint-{stopped_at}"

    assert labtui(workspace, "resume", run.id, check=True).stdout.strip() == run.id
    state = wait_for(run)
    assert state["status"] == "completed", store.tail_lines(run.file(store.LOG_FILE), 30)

    history = [r for r in store.metrics_history(run) if r["kind"] == "train"]
    raw_train = [r for r in store.read_jsonl(run.file(store.METRICS_FILE)) if r["kind"] == "train"]
    assert [r["step"] for r in history] == list(range(1, 25))  # continuous, each step once
    assert [r["step"] for r in raw_train] == list(range(1, 25))  # a clean stop needs no rewind
    ref_loss = {r["step"]: r["loss"] for r in store.read_jsonl(ref.file(store.METRICS_FILE)) if r["kind"] == "train"}
    ref_lr = {r["step"]: r["learning_rate"] for r in store.read_jsonl(ref.file(store.METRICS_FILE)) if r["kind"] == "train"}
    for r in history:
        if r["step"] > stopped_at:
            assert r["loss"] == pytest.approx(ref_loss[r["step"]], rel=0.02, abs=0.02), r["step"]
            assert r["learning_rate"] == pytest.approx(ref_lr[r["step"]], rel=1e-6)  # the schedule continues


def test_resume_after_a_crash_rewinds_to_the_checkpoint(workspace):
    run = workspace.run(labtui(workspace, "run", "experiments/demo-sft.yaml", "--set", "training.max_steps=16", *SLOW,
                               "--set", "training.save_steps=4", check=True).stdout.strip())
    wait_step(run, 6)
    os.kill(run.raw_state()["pid"], signal.SIGKILL)
    assert wait_for(run)["status"] == "crashed"
    crashed_at = max(r["step"] for r in store.read_jsonl(run.file(store.METRICS_FILE)) if r["kind"] == "train")
    cp_step = int(run.latest_checkpoint().name.split("-")[1])
    labtui(workspace, "resume", run.id, check=True)
    assert wait_for(run)["status"] == "completed"
    steps = [r["step"] for r in store.metrics_history(run) if r["kind"] == "train"]
    assert steps == list(range(1, 17))
    if crashed_at > cp_step:  # steps past the checkpoint were done twice on disk, once in the history
        raw = [r["step"] for r in store.read_jsonl(run.file(store.METRICS_FILE)) if r["kind"] == "train"]
        assert len(raw) > len(steps)


def test_retry_links_to_the_parent_with_the_same_config(workspace):
    first = workspace.run(labtui(workspace, "run", "experiments/demo-baseline.yaml", *fast_overrides(4), check=True).stdout.strip())
    wait_for(first)
    second = workspace.run(labtui(workspace, "retry", first.id, check=True).stdout.strip())
    assert second.id != first.id
    assert second.info()["parent"] == first.id
    assert second.config() == first.config()
    assert wait_for(second)["status"] == "completed"


def test_a_queue_of_three_finishes_in_order_with_nobody_watching(workspace):
    proc = labtui(workspace, "run", "experiments/demo-baseline.yaml", "experiments/demo-tuned.yaml",
                  "experiments/demo-sft.yaml", *fast_overrides(6), check=True)
    ids = proc.stdout.split()
    assert len(ids) == 3
    runs = [workspace.run(i) for i in ids]
    assert [r.raw_state()["status"] for r in runs[1:]] == ["queued", "queued"]
    # Only read state files from here on: no CLI, no TUI, nothing of the test advances the queue.
    deadline = time.time() + 300
    while not all(r.raw_state().get("status") == "completed" for r in runs):
        assert time.time() < deadline, [r.raw_state().get("status") for r in runs]
        assert not any(r.raw_state().get("status") in ("failed", "crashed") for r in runs)
        time.sleep(0.5)
    states = [r.raw_state() for r in runs]
    for a, b in zip(states, states[1:]):
        assert a["ended"] <= b["started"]  # one after another, in order
    assert json.loads((workspace.logs / "queue.json").read_text())["order"] == []


def test_queue_cancel_and_move(workspace):
    # concurrency 1 and a long first run, so the others wait
    first = workspace.run(labtui(workspace, "run", "experiments/demo-sft.yaml", "--set", "training.max_steps=400", *SLOW, check=True).stdout.strip())
    ids = labtui(workspace, "run", "--queue", "experiments/demo-baseline.yaml", "experiments/demo-tuned.yaml", check=True).stdout.split()
    q = json.loads(labtui(workspace, "queue", "--json", check=True).stdout)
    assert [x["id"] for x in q["queued"]] == ids and q["running"] == [first.id]
    labtui(workspace, "queue", "--first", ids[1], check=True)
    assert [x["id"] for x in json.loads(labtui(workspace, "queue", "--json", check=True).stdout)["queued"]] == ids[::-1]
    labtui(workspace, "queue", "--cancel", ids[0], check=True)
    assert workspace.run(ids[0]).state()["status"] == "stopped"
    labtui(workspace, "stop", ids[1], check=True)  # stopping a queued run cancels it
    labtui(workspace, "stop", first.id, "--now", check=True)
    assert wait_for(first)["status"] == "stopped"
    assert json.loads(labtui(workspace, "queue", "--json", check=True).stdout)["queued"] == []


BYO = """
import sys
import datasets, torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForLanguageModeling, Trainer, TrainingArguments
sys.path.insert(0, {root!r})
from labtui.engine.training.callback import LabtuiCallback

tok = AutoTokenizer.from_pretrained("demo/tiny-llama")
model = AutoModelForCausalLM.from_pretrained("demo/tiny-llama")
texts = ["Context: aspirin significantly improved pain scores. Answer: yes"] * 64
ds = datasets.Dataset.from_dict({{"input_ids": [tok(t)["input_ids"] for t in texts]}})
args = TrainingArguments(output_dir="out", max_steps=8, logging_steps=2, per_device_train_batch_size=8, report_to="none",
                         include_num_input_tokens_seen="non_padding", use_cpu=True)
trainer = Trainer(model=model, args=args, train_dataset=ds, data_collator=DataCollatorForLanguageModeling(tok, mlm=False))
trainer.add_callback(LabtuiCallback())
trainer.train()
print("my script finished")
"""


def test_bring_your_own_script_streams_metrics(workspace):
    (workspace.root / "my_train.py").write_text(BYO.format(root=str(ROOT)))
    run_id = labtui(workspace, "run", "--", sys.executable, "my_train.py", check=True).stdout.strip()
    run = workspace.run(run_id)
    state = wait_for(run)
    assert state["status"] == "completed" and state["exit_code"] == 0
    assert run.info()["kind"] == "script" and run.info()["experiment"] == "my-train"
    train = [r for r in store.read_jsonl(run.file(store.METRICS_FILE)) if r["kind"] == "train"]
    assert [r["step"] for r in train] == [2, 4, 6, 8] and all(r["tokens"] > 0 for r in train)
    assert "my script finished" in run.file(store.LOG_FILE).read_text()
    assert store.read_jsonl(run.file(store.SYSTEM_FILE))  # system metrics sampled for any command


def test_script_started_by_hand_creates_its_own_run(workspace):
    (workspace.root / "my_train.py").write_text(BYO.format(root=str(ROOT)))
    env = dict(os.environ, LABTUI_WORKSPACE=str(workspace.root))
    env.pop("LABTUI_RUN_DIR", None)
    subprocess.run([sys.executable, "my_train.py"], cwd=workspace.root, env=env, check=True, capture_output=True, timeout=300)
    (run,) = workspace.runs()
    assert run.state()["status"] == "completed"
    assert run.info()["kind"] == "script"
    assert [r["step"] for r in store.read_jsonl(run.file(store.METRICS_FILE)) if r["kind"] == "train"] == [2, 4, 6, 8]


def test_failing_command_is_failed_with_its_last_line(workspace):
    run_id = labtui(workspace, "run", "--", sys.executable, "-c", "import sys; print('boom: no data'); sys.exit(3)", check=True).stdout.strip()
    state = wait_for(workspace.run(run_id))
    assert state["status"] == "failed" and state["exit_code"] == 3
    assert state["error"] == "exited with status 3: boom: no data"
    # a command far shorter than the sampling interval still leaves a system record to explain its run
    (sample,) = store.read_jsonl(workspace.run(run_id).file(store.SYSTEM_FILE))
    assert sample["kind"] == "system" and sample["ram_total"] > 0


def test_periodic_progress_writes_leave_the_training_thread_and_never_go_back_in_time():
    import threading

    from labtui.engine.training.callback import LatestWriter

    w = LatestWriter()
    entered, gate, out = threading.Event(), threading.Event(), []

    def slow():  # a periodic write stuck in a slow fsync
        entered.set()
        gate.wait(10)
        out.append("periodic-1")

    w.submit(slow)
    assert entered.wait(10)
    w.submit(lambda: out.append("periodic-2"))  # returns while the first is still writing
    forced = threading.Thread(target=w.run_now, args=(lambda: out.append("forced"),))
    forced.start()  # a checkpoint's write: waits for the one in progress, supersedes the one waiting
    deadline = time.monotonic() + 10
    while w._pending is not None and time.monotonic() < deadline:  # the forced write has dropped it
        time.sleep(0.01)
    gate.set()
    forced.join(10)
    w.submit(lambda: out.append("periodic-3"))
    w.close()  # the end of training: what is waiting is written, then the thread stops
    assert out == ["periodic-1", "forced", "periodic-3"]
