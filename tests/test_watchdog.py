"""Watchdogs and alerts (engine/training/watchdog.py, engine/rundir/alerts.py).

Unit tests for the pure parts (spike rule, overfitting rule, de-duplication, memory and stall
checks, settings), then end-to-end runs that plant each failure for real in a tiny demo run
started through the real CLI. The planted runs are started together by one module fixture (they
share the machine's cores) and each test reads the run directory its run leaves.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import ROOT, labtui, wait_for
from labtui.engine.rundir import alerts, store
from labtui.engine.training.watchdog import loss_spike, overfitting

GiB = 2**30


# --- unit: the rules ----------------------------------------------------------------------------


def test_loss_spike_rule_by_hand():
    hist = [1.0, 1.1, 0.9, 1.0, 1.2]  # median 1.0, |deviations| 0 .1 .1 0 .2 -> MAD 0.1
    s = loss_spike(hist, 2.5, mads=10, ratio=2.0)
    assert s == pytest.approx({"median": 1.0, "mad": 0.1, "limit": 2.0})
    assert loss_spike(hist, 2.0, mads=10, ratio=2.0) is None  # at the limit is not above it
    assert loss_spike(hist, 1.9, mads=10, ratio=2.0) is None
    # the MAD rule binds when the range is wide: limit = 1.0 + 30 * 0.1 = 4.0 > 2 * median
    assert loss_spike(hist, 3.5, mads=30, ratio=2.0) is None
    assert loss_spike(hist, 4.1, mads=30, ratio=2.0)["limit"] == pytest.approx(4.0)
    # a flat range (MAD 0): only the ratio guards
    assert loss_spike([1.0] * 5, 2.01, mads=10, ratio=2.0)["limit"] == pytest.approx(2.0)
    assert loss_spike([1.0] * 5, 1.5, mads=10, ratio=2.0) is None
    # too little history, NaN values are no evidence either way
    assert loss_spike([1.0] * 4, 100.0) is None
    assert loss_spike([1.0, float("nan"), 1.0, 1.0, 1.0], 100.0) is None
    assert loss_spike([1.0] * 5, float("nan")) is None


def test_overfitting_rule():
    rising = [(10, 1.0, 0.9), (20, 1.1, 0.8), (30, 1.2, 0.7), (40, 1.3, 0.6)]
    assert overfitting(rising, 3)
    assert not overfitting(rising[:3], 3)  # only two rises
    assert overfitting(rising[1:], 2)
    assert not overfitting([*rising[:2], (30, 1.05, 0.7), (40, 1.3, 0.6)], 3)  # a dip breaks the run
    assert not overfitting([(10, 1.0, 0.6), (20, 1.1, 0.7), (30, 1.2, 0.8), (40, 1.3, 0.9)], 3)  # train rises too
    assert not overfitting([(10, 1.0, None), (20, 1.1, 0.8), (30, 1.2, 0.7), (40, 1.3, 0.6)], 3)


def _bare_run(ws: store.Workspace, config: dict | None = None) -> store.Run:
    import yaml

    return ws.create_run("unit", {"experiment": "unit", "kind": "train", "workspace": str(ws.root)},
                         yaml.safe_dump(config or {}))


def test_alert_log_fires_once_until_cleared(tmp_path):
    run = _bare_run(store.Workspace(tmp_path))
    log = alerts.AlertLog(run, disabled=["loss_spike"])

    def nan(step):
        return alerts.make_alert("nan_loss", f"loss is nan at step {step}", "lower lr", step=step,
                                 data={"loss": float("nan")})

    assert log.fire(nan(4))["step"] == 4
    assert log.fire(nan(6)) is None and log.fire(nan(8)) is None  # still the same episode
    log.clear("nan_loss")
    assert log.fire(nan(20))["step"] == 20  # a new episode after the condition cleared
    assert log.fire(alerts.make_alert("loss_spike", "spike", step=3)) is None  # disabled
    got = alerts.read_alerts(run)
    assert [(a["kind"], a["step"]) for a in got] == [("nan_loss", 4), ("nan_loss", 20)]
    assert got[0]["severity"] == "critical" and got[0]["data"] == {"loss": "nan"}  # valid JSON for every reader
    json.loads(run.file(store.ALERTS_FILE).read_text().splitlines()[0])
    # a new process (a resumed run) does not repeat an alert that is still active
    again = alerts.AlertLog(run)
    assert again.fire(nan(30)) is None
    again.clear("nan_loss")
    assert again.fire(nan(31)) is not None
    # evaluations are de-duplicated one by one
    deg = lambda ev: alerts.make_alert("degenerate_eval", "x", data={"eval_id": ev})  # noqa: E731
    assert again.fire(deg("e1")) and again.fire(deg("e2")) and again.fire(deg("e1")) is None


def test_memory_check_thresholds():
    rec = {"t": 1.0, "ram_used": 60 * GiB, "ram_total": 64 * GiB, "ram_percent": 93.75,
           "gpus": [{"index": 0, "name": "H100", "mem_used": int(77.6 * GiB), "mem_total": 80 * GiB},
                    {"index": 1, "name": "H100", "mem_used": 40 * GiB, "mem_total": 80 * GiB},
                    {"index": 2, "name": "odd", "mem_used": None, "mem_total": None}]}
    out = alerts.memory_check(rec, alerts.ALERT_DEFAULTS)
    assert [a["kind"] for a in out] == ["gpu_memory"]
    gpu = out[0]
    assert gpu["severity"] == "warning" and [g["index"] for g in gpu["data"]["gpus"]] == [0]
    assert gpu["data"]["gpus"][0]["percent"] == 97.0 and "GPU 0 (H100) 97%" in gpu["message"]
    out = alerts.memory_check(rec, {"host_memory_percent": 90, "gpu_memory_percent": 98})
    assert [a["kind"] for a in out] == ["host_memory"] and out[0]["severity"] == "critical"
    assert alerts.memory_check({"ram_percent": 10, "gpus": []}, {}) == []


def test_supervisor_watch_memory_hysteresis(tmp_path):
    run = _bare_run(store.Workspace(tmp_path))
    watch = alerts.SupervisorWatch(run)

    def tick(pct):
        watch.tick({"t": time.time(), "ram_percent": 10, "gpus": [
            {"index": 0, "name": "g", "mem_used": pct, "mem_total": 100}]})
        return len(alerts.read_alerts(run))

    assert tick(97) == 1
    assert tick(93) == 1  # under 95 but not 5 points under: still the same episode
    assert tick(97) == 1
    assert tick(80) == 1  # cleared
    assert tick(96) == 2  # fires again


def test_stall_check_on_a_live_process(tmp_path):
    run = _bare_run(store.Workspace(tmp_path), {"engine": {"alerts": {"stall_minutes": 1}}})
    now = time.time()
    me = os.getpid()
    run.update_state(status="running", pid=me, pid_start=store.process_start_time(me))
    assert alerts.stall_check(run, now) is None  # training has not started
    run.write_progress({"started": now - 500, "updated": now - 100, "step": 7, "steps_per_s": 2.0})
    a = alerts.stall_check(run, now)
    assert a["kind"] == "stalled" and a["step"] == 7 and a["data"]["idle_s"] == pytest.approx(100, abs=0.1)
    assert a["data"]["threshold_s"] == 60 and a["data"]["pid"] == me
    assert alerts.stall_check(run, now - 50) is None  # 50 s idle < 1 min
    run.write_progress({"started": now - 500, "updated": now - 100, "step": 7, "steps_per_s": 0.05})
    assert alerts.stall_check(run, now) is None  # 20 s per step: ten steps' time is not over yet
    run.write_progress({"started": now - 500, "updated": now - 100, "step": 7, "result": {"status": "completed"}})
    assert alerts.stall_check(run, now) is None


def test_alert_settings_read_an_old_config():
    """The experiment schema validates engine.alerts (tests/test_config_schema.py); reading a run's
    config.yaml, a missing key or section is the default and an unknown key is ignored."""
    assert alerts.alert_settings({"engine": {"alerts": {"frozen_steps": 5}}})["frozen_steps"] == 5
    assert alerts.alert_settings({"engine": {"alerts": {"gone_key": 1, "spike_window": None}}})["spike_window"] == 20
    assert alerts.alert_settings({})["stall_minutes"] == alerts.ALERT_DEFAULTS["stall_minutes"]


def test_degenerate_eval_reaches_the_training_run_through_the_supervisor(tmp_path):
    """A real supervisor runs a stand-in eval command that writes a degenerate summary.json; when
    it ends, the training run the eval belongs to gets one degenerate_eval alert."""
    ws = store.Workspace(tmp_path)
    run = _bare_run(ws)
    ev_dir = run.file(store.EVALS_DIR) / "20261122-031500-eval-ab12"
    ev_dir.mkdir(parents=True)
    store.atomic_write_json(ev_dir / store.RUN_FILE, {"id": ev_dir.name, "kind": "eval", "run": run.id,
                                                      "workspace": str(ws.root)})
    store.atomic_write_json(ev_dir / store.STATE_FILE, {"status": "starting"})
    summary = {"degenerate": True, "checkpoint_step": 40, "device": "cuda", "accuracy": 0.31,
               "pred_counts": {"maybe": 40}, "suggest_cpu_rerun": True,
               "cpu_rerun_command": f"labtui eval {run.id} --device cpu",
               "warnings": ["degenerate output: 'maybe' is 100% of the 40 predictions (gold has 10% 'maybe')"]}
    writer = f"import json; json.dump({summary!r}, open('summary.json', 'w'))"
    env = dict(os.environ)
    for _ in range(2):  # the same eval ending twice raises it once
        subprocess.run([sys.executable, "-m", "labtui.engine.runtime.supervisor", str(ev_dir), "--", sys.executable, "-c",
                        f"import os; os.chdir({str(ev_dir)!r}); {writer}"], env=env, timeout=60, check=True)
    got = alerts.read_alerts(run)
    assert [a["kind"] for a in got] == ["degenerate_eval"]
    a = got[0]
    assert a["step"] == 40 and a["data"]["eval_id"] == ev_dir.name and "'maybe' is 100%" in a["message"]
    assert "--device cpu" in a["hint"]
    assert not (ev_dir / store.ALERTS_FILE).exists()  # the eval's own supervisor checks nothing else


# --- unit: the worker-side watchdog, fed records and a small torch module -----------------------


def _watchdog(tmp_path, **settings):
    from labtui.engine.training.watchdog import Watchdog

    run = _bare_run(store.Workspace(tmp_path))
    return run, Watchdog(run, {"engine": {"alerts": settings}})


def test_watchdog_train_records(tmp_path):
    run, wd = _watchdog(tmp_path, grad_zero_logs=3)

    def rec(step, loss=1.0, grad=0.5):
        wd.on_train_record({"kind": "train", "step": step, "loss": loss, "grad_norm": grad, "learning_rate": 1e-4})

    for step in range(1, 8):
        rec(step, loss=1.0 + 0.01 * step)
    rec(8, loss=5.0)  # a spike
    rec(9, loss=5.1)  # still far above the range: the same episode
    rec(10), rec(11, grad=0.0), rec(12, grad=0.0), rec(13, grad=0.0), rec(14, grad=0.0)
    rec(15, loss=0.0, grad=0.0)
    rec(16, loss=float("nan"), grad=float("nan")), rec(17, loss=float("nan"))
    rec(18), rec(19, loss=float("inf"))
    got = [(a["kind"], a["step"]) for a in alerts.read_alerts(run)]
    assert got == [("loss_spike", 8), ("grad_norm_zero", 13), ("nothing_to_learn", 15), ("nan_loss", 16),
                   ("nan_loss", 19)]
    zero = alerts.read_alerts(run)[1]
    assert zero["data"] == {"since_step": 11, "logged_steps": 3}


def test_watchdog_fingerprint_sees_frozen_weights(tmp_path):
    import torch
    from labtui.engine.training.watchdog import WatchdogStop

    run, wd = _watchdog(tmp_path, frozen_steps=2)
    model = torch.nn.Sequential(torch.nn.Linear(300, 3), torch.nn.Linear(3, 3))
    model[1].requires_grad_(False)  # not trainable: not watched
    args = SimpleNamespace(fp16=False, output_dir=str(tmp_path), metric_for_best_model=None)
    state = SimpleNamespace(global_step=0, is_world_process_zero=True, log_history=[], best_model_checkpoint=None)
    ctl = SimpleNamespace(should_save=False, should_training_stop=False)
    wd.on_train_begin(args, state, ctl, model=model)

    def step(n, change):
        if change:
            with torch.no_grad():
                model[0].weight.add_(1e-3)
        state.global_step = n
        wd.on_step_end(args, state, ctl, model=model)

    step(1, True), step(2, True)  # changed: nothing
    step(3, False), step(4, False)  # unchanged from step 2 to 4
    step(5, False), step(6, False)  # still frozen: no second alert
    step(7, True), step(8, False)  # moved again: cleared
    step(9, False), step(10, False)  # frozen again: a new episode
    with torch.no_grad():
        model[1].weight.add_(1.0)  # a frozen tensor that changes does not count
    step(11, False), step(12, False)
    got = alerts.read_alerts(run)
    assert [(a["kind"], a["step"], a["data"]["since_step"]) for a in got] == [
        ("weights_frozen", 4, 2), ("weights_frozen", 10, 8)]
    assert got[0]["data"]["tensors"] == 2 and got[0]["data"]["parameters"] == 903
    # no trainable parameter at all: an alert, and the run cannot go on
    model.requires_grad_(False)
    with pytest.raises(WatchdogStop, match="no_trainable_params"):
        wd.on_train_begin(args, state, ctl, model=model)
    assert alerts.read_alerts(run)[-1]["kind"] == "no_trainable_params"


def test_watchdog_stop_on(tmp_path):
    """stop_on asks the Trainer to save and stop at once; the run ends with WatchdogStop at train end."""
    from labtui.engine.training.watchdog import WatchdogStop

    run, wd = _watchdog(tmp_path, stop_on=["loss_spike", "nan_loss"])
    args = SimpleNamespace(fp16=False, output_dir=str(tmp_path), metric_for_best_model=None)
    state = SimpleNamespace(global_step=3, is_world_process_zero=True)
    ctl = SimpleNamespace(should_save=False, should_training_stop=False)
    wd._events = True  # the trainer's events reach it (on_trainer registers them)
    wd.on_step_end(args, state, ctl)
    wd.on_train_record({"step": 3, "loss": float("nan"), "grad_norm": 1.0})
    assert ctl.should_training_stop and not ctl.should_save  # NaN weights are not worth a checkpoint
    with pytest.raises(WatchdogStop, match=r"nan_loss at step 3 \(engine.alerts.stop_on\)"):
        wd.on_train_end(args, state, ctl)


# --- end to end: planted failures ----------------------------------------------------------------

FAKE_NVML = '''
"""A stand-in for NVML: one 80 GiB GPU with 97% of its memory used (this machine has no GPU)."""
NVML_TEMPERATURE_GPU = 0
class _Mem:
    total = 80 * 2**30
    used = int(0.97 * total)
def nvmlInit(): pass
def nvmlDeviceGetCount(): return 1
def nvmlDeviceGetHandleByIndex(i): return i
def nvmlDeviceGetName(h): return "Fake GPU"
def nvmlDeviceGetMemoryInfo(h): return _Mem()
def nvmlDeviceGetUtilizationRates(h): raise RuntimeError("not faked")
'''


def fast(steps: int, **training) -> dict:
    return {"training": {"max_steps": steps, "logging_steps": 2, "save_steps": steps // 2, "eval_steps": steps // 2,
                         **training}}


# name: (parent experiment, what the planted experiment file changes)
PLANTS = {
    "healthy": ("demo-baseline.yaml", fast(20)),
    "healthy_sft": ("demo-sft.yaml", fast(20)),
    "nan": ("demo-baseline.yaml", fast(30, learning_rate=1e4)),
    # a learning rate of 0: the weights never move while the loss curve wobbles as if alive
    "frozen": ("demo-baseline.yaml", {**fast(30, learning_rate=0.0),
                                      "engine": {"alerts": {"frozen_steps": 10, "stop_on": ["weights_frozen"]}}}),
    # PEFT creates the adapters with requires_grad False
    "no_grad": ("demo-baseline.yaml", {**fast(20), "lora": {"inference_mode": True}}),
    # completion-only loss: a 16-token window never reaches the answer
    "masked": ("demo-sft.yaml", {**fast(20), "task": {"max_length": 16}}),
    "partly_masked": ("demo-sft.yaml", {**fast(10), "task": {"max_length": 64}}),
    # 8 training examples whose answers are noise (see NOISY), a big adapter, a high constant lr and
    # an evaluation every 4 steps: it can only memorise, so the eval loss must rise
    "overfit": ("demo-baseline.yaml", {
        "training": {"max_steps": 40, "logging_steps": 2, "eval_steps": 4, "save_steps": 4, "warmup_steps": 0,
                     "lr_scheduler_type": "constant", "learning_rate": 3e-3},
        "dataset": {"format": "jsonl_qa", "path": "noisy.jsonl", "test_split": None, "eval_size": 48,
                    "max_train_samples": 8},
        "lora": {"r": 64, "lora_alpha": 128}}),
}
# runs until the test stops it; SIGSTOP makes it stall; a fake NVML and a 1% RAM limit plant memory
STALL = ("demo-baseline.yaml", {
    "training": {"max_steps": 5000, "logging_steps": 5, "save_steps": 100000, "eval_steps": 100000},
    "engine": {"heartbeat_interval": 0.5, "alerts": {"stall_minutes": 0.1, "host_memory_percent": 1}}})


def _plant(root: Path, name: str, parent: str, changes: dict) -> str:
    import yaml

    path = root / "experiments" / f"wd-{name.replace('_', '-')}.yaml"
    path.write_text(yaml.safe_dump({"extends": parent, "description": f"planted: {name}", **changes}, sort_keys=False))
    return str(path.relative_to(root))


def _write_noisy(path: Path, source: Path, n: int = 80) -> None:
    """Demo questions with answers drawn at random: nothing to generalise, only to memorise."""
    import random

    data = json.loads(source.read_text())
    rng = random.Random(1)
    with open(path, "w") as f:
        for pmid in list(data)[:n]:
            rec = data[pmid]
            f.write(json.dumps({"id": pmid, "question": rec["QUESTION"], "context": " ".join(rec["CONTEXTS"]),
                                "answer": rng.choice(["yes", "no", "maybe"])}) + "\n")


@pytest.fixture(scope="module")
def planted(tmp_path_factory, demo_assets):
    """Every planted run, started at once: one `labtui run` with all the experiment files (the
    workspace's queue lets them all run together), and one for the stall run, which alone sees
    the fake NVML. Returns (workspace, {name: Run})."""
    root = tmp_path_factory.mktemp("watchdog-ws")
    (root / "demo").symlink_to(demo_assets)
    shutil.copytree(ROOT / "experiments", root / "experiments")
    (root / "labtui.yaml").write_text(f"concurrency: {len(PLANTS) + 1}\n")
    fake = tmp_path_factory.mktemp("fake-nvml")
    (fake / "pynvml.py").write_text(textwrap.dedent(FAKE_NVML))
    _write_noisy(root / "noisy.jsonl", demo_assets / "ori_pqal.json")
    ws = store.Workspace(root)
    files = [_plant(root, name, *plant) for name, plant in PLANTS.items()]
    env = dict(os.environ, LABTUI_WORKSPACE=str(root))
    cmd = [sys.executable, "-m", "labtui", "run"]
    stall = subprocess.Popen([*cmd, _plant(root, "stall", *STALL)], cwd=root, text=True, stdin=subprocess.DEVNULL,
                             env={**env, "PYTHONPATH": str(fake)},  # NVML faked at the library boundary
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    rest = subprocess.run([*cmd, *files], cwd=root, text=True, stdin=subprocess.DEVNULL, capture_output=True,
                          env=env, timeout=300)
    assert rest.returncode == 0, rest.stderr
    out, err = stall.communicate(timeout=300)
    assert stall.returncode == 0, err
    ids = rest.stdout.split()
    assert len(ids) == len(PLANTS), rest.stdout
    runs = {name: ws.run(run_id) for name, run_id in zip(PLANTS, ids)}
    runs["stall"] = ws.run(out.split()[0])
    yield ws, runs
    for run in runs.values():  # never leave a worker behind
        raw = run.raw_state()
        if raw.get("pid") and store.process_alive(raw["pid"], raw.get("pid_start")):
            for sig in (signal.SIGCONT, signal.SIGKILL):
                try:
                    os.kill(raw["pid"], sig)
                except ProcessLookupError:
                    pass


def shown_alerts(ws: store.Workspace, run: store.Run) -> list[dict]:
    proc = labtui(ws, "show", run.id, "--json", check=True)
    return json.loads(proc.stdout)["alerts"]


def train_records(run: store.Run) -> list[dict]:
    return [r for r in store.read_jsonl(run.file(store.METRICS_FILE)) if r.get("kind") == "train"]


def finished(run: store.Run) -> tuple[dict, list[dict]]:
    state = wait_for(run, timeout=300)
    return state, alerts.read_alerts(run)


def kinds(items: list[dict]) -> list[str]:
    return [a["kind"] for a in items]


def wait_until(pred, timeout: float, what: str, poll: float = 0.2):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_stall_by_sigstop_and_memory_alerts(planted):
    """First of the end-to-end tests: its run trains until it is stopped here."""
    ws, runs = planted
    run = runs["stall"]
    wait_until(lambda: (run.progress().get("step") or 0) >= 10, 240, "the stall run to reach step 10")
    pid = run.raw_state()["pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(0.3)
        frozen_step = run.progress()["step"]
        stalled = wait_until(lambda: [a for a in alerts.read_alerts(run) if a["kind"] == "stalled"], 60, "a stall alert")
        time.sleep(1.5)  # more supervisor ticks while it stays stopped: still one alert
    finally:
        os.kill(pid, signal.SIGCONT)
    a = stalled[0]
    assert a["step"] == frozen_step and a["severity"] == "critical"
    assert a["data"]["process_status"] == "stopped" and f"kill -CONT {pid}" in a["hint"]
    assert a["data"]["idle_s"] >= 6.0
    wait_until(lambda: run.progress()["step"] > frozen_step + 5, 60, "training to go on after SIGCONT")
    os.kill(pid, signal.SIGTERM)  # checkpoint, then stopped
    state, got = finished(run)
    assert state["status"] == "stopped", state
    assert sorted(kinds(got)) == ["gpu_memory", "host_memory", "stalled"]
    gpu = next(a for a in got if a["kind"] == "gpu_memory")
    assert gpu["data"]["gpus"][0]["percent"] == 97.0 and "Fake GPU" in gpu["message"]
    host = next(a for a in got if a["kind"] == "host_memory")
    assert host["severity"] == "critical" and host["data"]["threshold"] == 1
    assert shown_alerts(ws, run) == got


def test_healthy_runs_raise_no_alert(planted):
    ws, runs = planted
    for name in ("healthy", "healthy_sft"):
        state, got = finished(runs[name])
        assert state["status"] == "completed", (name, state)
        assert got == [] and shown_alerts(ws, runs[name]) == [], (name, got)


def test_nan_loss_fires_once_at_the_first_nan(planted):
    ws, runs = planted
    run = runs["nan"]
    state, got = finished(run)
    assert state["status"] == "completed"  # no stop_on: the run goes on, the alert says what happened
    recs = train_records(run)
    bad = [r for r in recs if not (math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"]))]
    assert len(bad) >= 5 and math.isnan(recs[-1]["loss"]), "the planted lr no longer makes the loss NaN"
    assert kinds(got) == ["nan_loss"]
    a = got[0]
    assert a["step"] == bad[0]["step"] and a["severity"] == "critical" and "learning_rate" in a["hint"]
    assert shown_alerts(ws, run) == got


def test_weights_that_never_move_fire_once_and_stop_the_run(planted):
    ws, runs = planted
    run = runs["frozen"]
    state, got = finished(run)
    recs = train_records(run)
    assert recs and all(r["learning_rate"] == 0.0 and r["grad_norm"] > 0 for r in recs)
    assert len({round(r["loss"], 6) for r in recs}) > 1  # the loss curve looks alive
    assert kinds(got) == ["weights_frozen"]
    a = got[0]
    assert a["step"] == 10 and a["data"]["since_step"] == 0 and "learning rate is 0" in a["hint"]
    # stop_on: [weights_frozen] -> a checkpoint at that step (saves are every 15), then failed with the reason
    assert state["status"] == "failed" and "weights_frozen" in state["error"] and "stop_on" in state["error"]
    assert run.progress()["step"] == 10 and [p.name for p in run.checkpoints()] == ["checkpoint-10"]
    assert shown_alerts(ws, run) == got


def test_adapters_without_requires_grad_stop_before_training(planted):
    ws, runs = planted
    run = runs["no_grad"]
    state, got = finished(run)
    assert kinds(got) == ["no_trainable_params"] and got[0]["step"] == 0
    assert state["status"] == "failed" and "no_trainable_params" in state["error"]
    assert "inference_mode" in state["error"]  # says what to change
    assert train_records(run) == []
    assert shown_alerts(ws, run) == got


def test_max_length_that_masks_every_label(planted):
    ws, runs = planted
    run = runs["masked"]
    state, got = finished(run)
    assert kinds(got) == ["nothing_to_learn"]
    a = got[0]
    assert a["step"] == 0 and a["data"]["kept"] == 0 and a["data"]["before"] > 0 and a["data"]["max_length"] == 16
    assert state["status"] == "failed" and "max_length" in state["error"]
    assert train_records(run) == []
    assert shown_alerts(ws, run) == got


def test_max_length_that_masks_some_labels_warns(planted):
    ws, runs = planted
    run = runs["partly_masked"]
    state, got = finished(run)
    assert state["status"] == "completed"
    assert kinds(got) == ["examples_dropped"]
    d = got[0]["data"]["train"]
    assert got[0]["severity"] == "warning" and 0 < d["kept"] < d["before"]
    assert shown_alerts(ws, run) == got


def test_overfitting_fires_once_and_keeps_the_best_checkpoint(planted):
    ws, runs = planted
    run = runs["overfit"]
    state, got = finished(run)
    assert state["status"] == "completed"
    assert kinds(got) == ["overfitting"]
    a = got[0]
    evals = [(r["step"], r["eval_loss"]) for r in store.read_jsonl(run.file(store.METRICS_FILE)) if r["kind"] == "eval"]
    losses = [e for _, e in evals]
    first = next(i for i in range(3, len(losses)) if losses[i - 3] < losses[i - 2] < losses[i - 1] < losses[i])
    assert a["step"] == evals[first][0], (a, evals)
    best_step = min(evals, key=lambda e: e[1])[0]
    assert a["data"]["best_step"] == best_step and f"checkpoint-{best_step}" in a["hint"]
    # save_total_limit 3 keeps the best checkpoint besides the newest ones
    kept = [p.name for p in run.checkpoints()]
    assert f"checkpoint-{best_step}" in kept and len(kept) == 3 and kept[-1] == "checkpoint-40", kept
    assert run.progress()["best_checkpoint"].endswith(f"checkpoint-{best_step}")
    assert shown_alerts(ws, run) == got
