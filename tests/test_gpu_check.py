"""Issue 15: `make gpu-check` (bench/gpu_check.py), run here in its --cpu mode so the script cannot rot.

The same script on a GPU machine checks NVML, CUDA training in bf16 and float32, stop/resume on CUDA,
CPU-vs-GPU parity, empty_cache_every and the dashboard's GPU panel (docs/gpu-check.md); on the CPU
every step runs for real through the `labtui` command and the CUDA checks say "skipped: no GPU".
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ROOT
from labtui.engine.rundir import store

SCRIPT = ROOT / "bench" / "gpu_check.py"


@pytest.mark.slow
def test_cpu_mode_runs_every_step_and_writes_the_report(workspace, tmp_path):
    out = tmp_path / "report"
    cp = subprocess.run([sys.executable, str(SCRIPT), str(out), "--cpu", "--workspace", str(workspace.root)],
                        capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    assert cp.returncode == 0, cp.stdout[-3000:] + cp.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["ok"] is True and report["mode"] == "cpu"
    steps = {s["name"]: s for s in report["steps"]}
    assert list(steps) == ["doctor", "train", "resume", "parity", "empty_cache", "tui"]
    # every step that does not need CUDA ran and passed; the one that does says why it was skipped
    assert all(steps[n]["ok"] is True for n in ("doctor", "train", "resume", "parity", "tui"))
    assert steps["empty_cache"]["ok"] is None and "skipped: no GPU" in steps["empty_cache"]["detail"]
    assert all(s["seconds"] is not None for s in report["steps"])
    # the figures come from the run directories the real commands left
    runs = {r.info()["experiment"]: r for r in workspace.runs()}
    main, resumed, torchrun = runs["gpu-check-main"], runs["gpu-check-resume"], runs["gpu-check-torchrun"]
    assert steps["train"]["figures"]["main"]["id"] == main.id and main.state()["status"] == "completed"
    assert torchrun.state()["launch"]["launcher"] == "torchrun" and torchrun.state()["status"] == "completed"
    assert resumed.state()["status"] == "completed"
    starts = [r for r in store.read_jsonl(resumed.file(store.METRICS_FILE)) if r["kind"] == "start"]
    assert [bool(s.get("resumed")) for s in starts] == [False, True]  # stopped, then resumed from its checkpoint
    assert steps["resume"]["figures"]["stopped_at"] < steps["resume"]["figures"]["steps"]
    evals = steps["parity"]["figures"]["evals"]
    assert set(evals) == {"cpu/score", "cpu/generate"} and all(e["n"] == 16 for e in evals.values())
    assert all(e["examples_per_s"] > 0 for e in evals.values())
    text = (out / "gpu_check.txt").read_text()
    assert "all checks passed" in text and "skipped: no GPU" in text
    dashboard = (out / "dashboard.txt").read_text()
    assert main.id[-4:] in dashboard and "no NVIDIA GPU" in dashboard
    assert (out / "dashboard.svg").read_text().startswith("<svg")


def test_without_a_gpu_it_says_to_use_cpu_mode(tmp_path):
    cp = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "out")], capture_output=True, text=True,
                        timeout=120, stdin=subprocess.DEVNULL)
    assert cp.returncode == 2
    assert "no CUDA device here" in cp.stderr and "--cpu" in cp.stderr
    assert not (tmp_path / "out").exists()


def test_empty_cache_every_records_what_the_cuda_cache_released(tmp_path, monkeypatch):
    """The record gpu-check's empty_cache step reads: written at every `empty_cache_every` step with the
    reserved bytes before and after. CUDA is faked at torch.cuda (this machine has none); the callback
    is driven with the Trainer's real state objects."""
    import torch
    from labtui.engine.training.callback import LabtuiCallback
    from transformers import TrainerControl, TrainerState, TrainingArguments

    cache = {"reserved": 0, "calls": 0}

    def empty_cache():
        cache["calls"] += 1
        cache["reserved"] = 256

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: cache["reserved"])
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 128)
    monkeypatch.setattr(torch.cuda, "empty_cache", empty_cache)
    monkeypatch.setenv("LABTUI_WORKSPACE", str(tmp_path))
    monkeypatch.delenv("LABTUI_RUN_DIR", raising=False)
    cb = LabtuiCallback(handle_sigterm=False, sample_interval=0, empty_cache_every=3)
    args = TrainingArguments(output_dir=str(tmp_path / "out"), report_to="none", use_cpu=True)
    state, control = TrainerState(max_steps=7), TrainerControl()
    cb.on_train_begin(args, state, control)
    for step in range(1, 8):
        state.global_step = step
        cache["reserved"] = 1024 + step  # what a step leaves cached
        cb.on_step_end(args, state, control)
    cb.on_train_end(args, state, control)
    recs = [r for r in store.read_jsonl(cb.run.file(store.METRICS_FILE)) if r["kind"] == "empty_cache"]
    assert cache["calls"] == 2
    assert [(r["step"], r["reserved_before"], r["reserved_after"], r["allocated"]) for r in recs] == [
        (3, 1027, 256, 128), (6, 1030, 256, 128)]
