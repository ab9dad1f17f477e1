"""End to end: the real CLI starts a real detached worker on the tiny local model (CPU)."""

from __future__ import annotations

import json
import math
import shutil

import pytest
from conftest import SHARED_PUBMEDQA, fast_overrides, labtui, wait_for
from labtui.engine.rundir import store

TRAIN_KEYS = {"step", "max_steps", "epoch", "loss", "grad_norm", "learning_rate", "tokens", "tokens_per_s",
              "tokens_per_s_avg", "samples_per_s", "t", "elapsed"}


@pytest.mark.e2e
@pytest.mark.parametrize("experiment", ["demo-baseline", "demo-tuned", "demo-sft"])
def test_demo_experiment_trains_end_to_end(workspace, experiment):
    proc = labtui(workspace, "run", f"experiments/{experiment}.yaml", "--set", "training.max_steps=40",
                  "--set", "training.save_steps=20", "--set", "training.eval_steps=20", check=True)
    run_id = proc.stdout.strip()
    run = workspace.run(run_id)
    assert run_id.split("-", 2)[2].startswith(experiment)
    state = wait_for(run)
    assert state["status"] == "completed", store.tail_lines(run.file(store.LOG_FILE), 30)
    assert state["exit_code"] == 0

    records = store.read_jsonl(run.file(store.METRICS_FILE))
    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    assert TRAIN_KEYS <= set(train[0])
    assert [r["step"] for r in train] == sorted({r["step"] for r in train})  # each step once, in order
    assert train[-1]["step"] == 40 and train[-1]["max_steps"] == 40
    assert all(r["tokens"] > 0 and r["tokens_per_s"] > 0 for r in train)
    assert train[-1]["tokens"] > train[0]["tokens"]
    assert sum(r["loss"] for r in train[-3:]) < sum(r["loss"] for r in train[:3])  # loss falls
    assert [e["step"] for e in evals] == [20, 40] and all(math.isfinite(e["eval_loss"]) for e in evals)

    cps = run.checkpoints()
    assert [p.name for p in cps] == ["checkpoint-20", "checkpoint-40"]
    assert (cps[-1] / "adapter_model.safetensors").exists()
    assert (run.file("adapter") / "adapter_config.json").exists()

    env = json.loads(run.file(store.ENV_FILE).read_text())
    for key in ("python", "torch", "transformers", "peft", "trl", "device", "host"):
        assert env.get(key), key
    assert env["device"] == "cpu"

    rows = json.loads(labtui(workspace, "runs", "--json", check=True).stdout)
    row = next(r for r in rows if r["id"] == run_id)
    for key in ("id", "experiment", "status", "step", "max_steps", "created", "ended", "train_loss", "eval_loss"):
        assert key in row
    assert (row["status"], row["step"], row["max_steps"], row["experiment"]) == ("completed", 40, 40, experiment)
    assert row["train_loss"] == pytest.approx(train[-1]["loss"])
    assert row["eval_loss"] == pytest.approx(min(e["eval_loss"] for e in evals))

    detail = json.loads(labtui(workspace, "show", run_id[:-3], "--json", check=True).stdout)
    assert detail["run_dir"] == str(run.path)
    assert detail["config"]["training"]["max_steps"] == 40
    assert detail["changed"]["training.max_steps"] == [120, 40]
    assert detail["checkpoint"].endswith("checkpoint-40")
    if experiment == "demo-sft":
        assert detail["changed"]["trainer"] == ["trainer", "sft"]
        assert detail["parent_experiment"] == "demo-tuned"

    log = labtui(workspace, "logs", run_id, check=True).stdout
    assert "completed" in log


@pytest.mark.e2e
@pytest.mark.skipif(not SHARED_PUBMEDQA.is_dir(), reason="../shared/data/pubmedqa is not beside this checkout")
def test_real_pubmedqa_file_trains(workspace):
    exp = workspace.root / "pqal.yaml"
    exp.write_text(f"""
extends: experiments/demo-sft.yaml
description: the real PQA-L expert set with the official split, on the tiny model
dataset:
  format: pubmedqa
  path: {SHARED_PUBMEDQA / 'ori_pqal.json'}
  test_split: {SHARED_PUBMEDQA / 'test_ground_truth.json'}
  eval_size: 16
task: {{max_length: 256, max_context_chars: 600}}
training: {{max_steps: 6, logging_steps: 2, save_steps: 6, eval_steps: 6, per_device_train_batch_size: 4}}
""")
    run_id = labtui(workspace, "run", str(exp), check=True).stdout.strip()
    run = workspace.run(run_id)
    assert wait_for(run)["status"] == "completed", store.tail_lines(run.file(store.LOG_FILE), 30)
    log = run.file(store.LOG_FILE).read_text()
    assert "data: 484 train, 16 eval, 500 test" in log  # the official split: 500 test PMIDs
    train = [r for r in store.read_jsonl(run.file(store.METRICS_FILE)) if r["kind"] == "train"]
    assert train[-1]["step"] == 6 and all(math.isfinite(r["loss"]) for r in train)


@pytest.mark.e2e
def test_foreground_shows_progress_and_waits(workspace):
    proc = labtui(workspace, "run", "experiments/demo-sft.yaml", "--foreground", *fast_overrides(10))
    assert proc.returncode == 0, proc.stderr
    run_id = proc.stdout.strip()
    assert workspace.run(run_id).raw_state()["status"] == "completed"  # finished before the command returned
    assert "10/10" in proc.stderr and f"{run_id}: completed" in proc.stderr


@pytest.mark.e2e
def test_worker_failure_is_recorded_with_message_and_traceback(workspace):
    broken = workspace.root / "broken-model"
    shutil.copytree(workspace.root / "demo" / "tiny-llama", broken)
    (broken / "config.json").write_text('{"model_type": "llama", "hidden_size": "wide"')  # truncated JSON
    proc = labtui(workspace, "run", "experiments/demo-sft.yaml", "--set", "model.model_name_or_path=broken-model")
    assert proc.returncode == 0, proc.stderr  # files exist; the failure happens in the worker
    run = workspace.run(proc.stdout.strip())
    state = wait_for(run)
    assert state["status"] == "failed"
    assert state["exit_code"] == 1
    assert state["error"] and "\n" not in state["error"]
    assert state["error_where"]
    log = run.file(store.LOG_FILE).read_text()
    assert "Traceback (most recent call last)" in log
    detail = json.loads(labtui(workspace, "show", run.id, "--json", check=True).stdout)
    assert detail["status"] == "failed" and detail["error"] == state["error"]


def test_unknown_run_id_is_a_clear_error(workspace):
    for args in (["show", "nope"], ["logs", "nope"], ["stop", "nope"], ["resume", "nope"]):
        proc = labtui(workspace, *args)
        assert proc.returncode == 2
        assert "no run matches 'nope'" in proc.stderr
