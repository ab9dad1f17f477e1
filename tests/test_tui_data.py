"""Fixed run stores for the TUI tests and snapshots: runs, metrics, machine samples, evaluations.

Everything is written the way the engine writes it (engine.store helpers; summaries by
engine.evalstore.summarize), with fixed times, so a fixed clock gives the same screen every time.
The live run's supervisor pid is this test process, so `Run.state()` really sees it alive.
"""

from __future__ import annotations

import math
import os
import random
import socket
from pathlib import Path

import yaml
from labtui.engine.config.experiment import resolve
from labtui.engine.rundir import store

T0 = 1_800_000_000.0  # fixed "created" base; the tests' clock is T0 + NOW_OFFSET
NOW_OFFSET = 3 * 3600.0
GIB = 2**30


def clock() -> float:
    return T0 + NOW_OFFSET


def make_run(ws: store.Workspace, run_id: str, experiment: str, *, status: str = "completed", created: float = T0,
             steps: int = 200, max_steps: int = 200, log_every: int = 5, eval_every: int = 50, loss0: float = 2.0,
             loss_end: float = 0.6, seed: int = 0, nan_steps: tuple = (), spike_steps: tuple = (),
             error: str | None = None, changed: dict | None = None, parent_experiment: str | None = None,
             description: str = "", live: bool | str = False, gpus: list[dict] | None = None, memory: bool = False,
             checkpoints: tuple = (), notes: str = "") -> store.Run:
    path = ws.logs / run_id
    path.mkdir(parents=True)
    run = store.Run(path)
    store.atomic_write_json(path / store.RUN_FILE, {
        "id": run_id, "created": created, "experiment": experiment, "kind": "train", "description": description,
        "parent": None, "parent_experiment": parent_experiment, "changed": changed or {}, "overrides": {},
        "command": ["labtui", "run"], "workspace": str(ws.root), "experiment_file": f"experiments/{experiment}.yaml",
    })
    cfg = resolve({"model": {"model_name_or_path": "demo/tiny-llama", "dtype": "float32"}, "trainer": "sft",
                   "lora": {"r": 16, "lora_alpha": 32}, "training": {"max_steps": max_steps, "learning_rate": 2e-3},
                   "dataset": {"path": "demo/ori_pqal.json", "test_split": "demo/test_ground_truth.json"},
                   "eval": {"n": 300}})
    cfg["name"] = experiment
    (path / store.CONFIG_FILE).write_text(yaml.safe_dump(cfg, sort_keys=False))
    started = created + 5
    rng = random.Random(seed)
    metrics = [{"kind": "start", "t": started, "step": 0, "max_steps": max_steps, "resumed": False}]
    if status == "queued":
        metrics, steps = [], 0
    best = None
    tokens = 0
    last_loss = None
    for step in range(log_every, steps + 1, log_every):
        t = started + step * 2.0
        frac = step / max_steps
        loss = loss_end + (loss0 - loss_end) * math.exp(-4 * frac) + rng.uniform(-0.05, 0.05)
        if step in spike_steps:
            loss *= 4
        if step in nan_steps:
            loss = math.nan
        tokens += 4000 * log_every
        metrics.append({"kind": "train", "t": t, "step": step, "max_steps": max_steps, "epoch": step / 100,
                        "loss": loss, "grad_norm": 0.5, "learning_rate": 2e-3, "tokens": tokens,
                        "tokens_per_s": 2000 + rng.uniform(-100, 100), "tokens_per_s_avg": 2000.0,
                        "samples_per_s": 16.0, "steps_per_s": 0.5, "elapsed": t - started})
        last_loss = loss
        if eval_every and step % eval_every == 0:
            ev = loss_end + (loss0 - loss_end) * math.exp(-3.5 * frac) + 0.05
            metrics.append({"kind": "eval", "t": t + 1, "step": step, "eval_loss": ev})
            best = ev if best is None or ev < best else best
        if memory and step % 20 == 0:
            metrics.append({"kind": "memory", "t": t, "devices": [
                {"index": 0, "allocated": 30 * GIB, "reserved": 36 * GIB, "peak": 41 * GIB}]})
    end_t = started + steps * 2.0 + 3
    if status in store.FINAL:
        metrics.append({"kind": "end", "t": end_t, "step": steps, "status": status, "error": error})
    with open(path / store.METRICS_FILE, "w") as f:
        for rec in metrics:
            f.write(store.dumps(rec) + "\n")
    with open(path / store.SYSTEM_FILE, "w") as f:
        for i in range(12 if status != "queued" else 0):
            f.write(store.dumps({
                "kind": "system", "t": started + i * 20, "cpu": 40.0 + i * 3, "cpu_count": 16,
                "ram_used": 20 * GIB + i * GIB // 4, "ram_total": 128 * GIB, "ram_percent": 16.0 + i * 0.2,
                "proc_rss": 6 * GIB, "proc_cpu": 98.0, "proc_count": 3, "disk_free": 400 * GIB,
                "disk_total": 1000 * GIB,
                "gpus": [dict(g, mem_used=g["mem_used"] - (11 - i) * GIB // 2, util=60 + i * 3) for g in (gpus or [])],
            }) + "\n")
    progress = {"step": steps, "max_steps": max_steps, "epoch": steps / 100, "train_loss": last_loss,
                "best_eval_loss": best, "best_step": (steps // eval_every) * eval_every if best else None,
                "started": started, "updated": end_t}
    state = {"status": status, "created": created, "started": started, "updated": end_t, "heartbeat": end_t,
             "host": socket.gethostname(), "error": error}
    if status in store.FINAL:
        state.update(ended=end_t, exit_code=0 if status == "completed" else 1)
        progress["result"] = {"status": status, "error": error, "ended": end_t}
    if live == "remote":  # on another host: live while its heartbeat is fresh at the fixed clock
        state.update(host="gpu-node-7", heartbeat=clock() - 2, pid=4242, supervisor_pid=4241)
    elif live:
        me = os.getpid()
        state.update(supervisor_pid=me, supervisor_start=store.process_start_time(me), pid=me,
                     pid_start=store.process_start_time(me))
    store.atomic_write_json(path / store.STATE_FILE, state)
    store.atomic_write_json(path / store.PROGRESS_FILE, progress)
    with open(path / store.LOG_FILE, "w") as f:
        f.write(f"[labtui] starting {experiment}\n")
        for step in range(log_every, steps + 1, log_every * 8):
            f.write(f"{{'loss': '{loss0:.3f}', 'step': {step}}}\n")
        if error:
            f.write(f"[labtui] {status}: {error}\n")
    for step in checkpoints:  # complete as a save leaves them (engine.store.checkpoint_problem)
        cp = path / store.CHECKPOINTS_DIR / f"checkpoint-{step}"
        cp.mkdir(parents=True)
        (cp / store.CHECKPOINT_STATE_FILE).write_text(store.dumps({"global_step": step}) + "\n")
        (cp / "adapter_model.safetensors").write_bytes(b"\0" * 8)
    if notes:
        run.write_notes(notes)
    return run


def make_eval(run: store.Run, eval_id: str, correct: list[bool], *, device: str = "cpu", mode: str = "score",
              created: float = T0 + 7200, preds: list[str] | None = None) -> Path:
    """An eval dir as engine.evaluate leaves it, for examples e0..eN with gold cycling yes/no/maybe."""
    from labtui.engine.analysis import evalstore

    path = run.file(store.EVALS_DIR) / eval_id
    path.mkdir(parents=True)
    labels = ("yes", "no", "maybe")
    records = []
    for i, ok in enumerate(correct):
        gold = labels[i % 3]
        pred = preds[i] if preds else (gold if ok else labels[(i + 1) % 3])
        records.append({"id": f"e{i:04d}", "gold": gold, "pred": pred, "raw": pred, "correct": pred == gold,
                        "temperature": 0.0})
    with open(path / evalstore.PREDICTIONS_FILE, "w") as f:
        for r in records:
            f.write(store.dumps(r) + "\n")
    summary = evalstore.summarize(records, labels, mode=mode, device=device, checkpoint_step=200, created=created)
    store.atomic_write_json(path / evalstore.SUMMARY_FILE, summary)
    store.atomic_write_json(path / evalstore.EVAL_FILE, {"mode": mode, "device": device, "n": len(records),
                                                          "checkpoint": "latest", "checkpoint_step": 200,
                                                          "split": "test", "purpose": "eval"})
    store.atomic_write_json(path / store.RUN_FILE, {"id": eval_id, "kind": "eval", "run": run.id, "created": created})
    store.atomic_write_json(path / store.STATE_FILE, {"status": "completed", "created": created, "ended": created + 60})
    store.atomic_write_json(path / store.PROGRESS_FILE, {"done": len(records), "total": len(records)})
    return path


def paired_sets(n: int = 300, b: int = 12, c: int = 36, both_right: int = 150) -> tuple[list[bool], list[bool]]:
    """Correctness of A and B on n examples with b (A right, B wrong) and c (A wrong, B right) discordant pairs."""
    a, bb = [], []
    for i in range(n):
        if i < b:
            a.append(True), bb.append(False)
        elif i < b + c:
            a.append(False), bb.append(True)
        elif i < b + c + both_right:
            a.append(True), bb.append(True)
        else:
            a.append(False), bb.append(False)
    return a, bb


A100 = {"index": 0, "name": "NVIDIA A100-SXM4-80GB", "mem_used": 60 * GIB, "mem_total": 80 * GIB, "util": 97,
        "temp": 71, "power": 290.0, "power_limit": 400.0}


def build_night(ws: store.Workspace) -> dict[str, store.Run]:
    """A night of runs: a baseline and a tuned run (both evaluated), a failed one, a crashed one with
    a NaN, a queued one, and a live one on another host with an A100 (a loss spike and a NaN)."""
    ws.logs.mkdir(parents=True, exist_ok=True)
    a, b = paired_sets()
    runs = {}
    runs["base"] = make_run(ws, "20261122-010000-demo-baseline-a001", "demo-baseline", created=T0,
                            description="Baseline: plain Trainer, LoRA r=4", notes="the reference run\nmore")
    runs["tuned"] = make_run(ws, "20261122-013000-demo-tuned-b002", "demo-tuned", created=T0 + 1800, seed=1,
                             loss_end=0.45, parent_experiment="demo-baseline",
                             changed={"lora.r": [4, 16], "training.learning_rate": [5e-4, 2e-3]},
                             notes="r=16 helps")
    make_eval(runs["base"], "20261122-030000-eval-c001", a)
    make_eval(runs["tuned"], "20261122-031000-eval-d002", bb := b)
    runs["failed"] = make_run(ws, "20261122-020000-demo-sft-e003", "demo-sft", status="failed", created=T0 + 3600,
                              steps=40, seed=2, error="CUDA out of memory. Tried to allocate 2.00 GiB",
                              parent_experiment="demo-tuned", changed={"trainer": ["trainer", "sft"]})
    runs["crashed"] = make_run(ws, "20261122-021000-demo-sft-f004", "demo-sft", status="crashed",
                               created=T0 + 4200, steps=60, seed=3, nan_steps=(45,),
                               error="killed by SIGKILL (often the kernel's out-of-memory killer: check `dmesg`)")
    runs["live"] = make_run(ws, "20261122-030000-demo-tuned-g005", "demo-tuned", status="running",
                            created=T0 + 7000, steps=300, max_steps=1000, seed=4, live="remote", gpus=[A100],
                            memory=True, spike_steps=(150,), nan_steps=(220,))
    runs["queued"] = make_run(ws, "20261122-031500-demo-sft-h006", "demo-sft", status="queued", created=T0 + 7500,
                              steps=0, log_every=5)
    del bb
    return runs
