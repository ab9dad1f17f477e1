"""Pilot tests: the app driven by keys against run stores in temporary folders.

Live data is written into the store while the app runs; launching and evaluating go through
the real CLI in a subprocess. Only NVML is faked, at the `pynvml` boundary.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
from labtui.engine.analysis import stats
from labtui.engine.rundir import store
from labtui.tui import baseline
from labtui.tui import format as fmt
from labtui.tui.app import LabApp
from labtui.tui.widgets.loss_chart import LossChart
from labtui.tui.widgets.run_list import RunList, order
from labtui.tui.widgets.run_panels import StatusPanel, gpu_text
from test_tui_data import T0, clock, make_eval, make_run, paired_sets
from textual.content import Content

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.anyio  # anyio's pytest plugin runs the async tests (no pytest-asyncio needed)
HEAVY = ("torch", "transformers", "peft", "trl", "datasets")


async def until(pilot, cond, timeout: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or cond}")
        await pilot.pause(0.05)


def kill_started(ws: store.Workspace) -> None:
    """End what a test started through the real CLI (supervisors, workers, eval workers)."""
    for state_file in list(ws.logs.glob("*/state.json")) + list(ws.logs.glob("*/evals/*/state.json")):
        state = store.read_json(state_file, {}) or {}
        for pid, start in ((state.get("supervisor_pid"), state.get("supervisor_start")),
                           (state.get("pid"), state.get("pid_start"))):
            if pid and pid != os.getpid() and store.process_alive(pid, start):
                try:
                    os.killpg(pid, signal.SIGKILL)
                except OSError:
                    pass


def app_for(ws: store.Workspace, **kw) -> LabApp:
    return LabApp(workspace=ws, poll_interval=kw.pop("poll_interval", 0.05), clock=kw.pop("clock", clock), **kw)



@pytest.fixture
def ws(tmp_path) -> store.Workspace:
    w = store.Workspace(tmp_path / "ws")
    w.logs.mkdir(parents=True)
    return w


# --- the process stays light ----------------------------------------------------------------


def test_tui_imports_no_heavy_library():
    code = f"import labtui.tui.app, sys; print([m for m in {HEAVY!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


def test_every_screen_imports_no_heavy_library():
    mods = ", ".join(f"labtui.tui.screens.{m}" for m in ("dashboard", "launch", "evaluate", "history", "compare", "detail",
                                                   "log", "help"))
    code = f"import {mods}, labtui.tui.history_data, sys; print([m for m in {HEAVY!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


# --- the dashboard follows a live run -------------------------------------------------------


def train_record(step: int, loss: float) -> dict:
    return {"kind": "train", "t": T0 + 5 + step * 2.0, "step": step, "max_steps": 100, "epoch": step / 100,
            "loss": loss, "tokens_per_s": 2000.0, "tokens_per_s_avg": 2000.0, "samples_per_s": 16.0,
            "steps_per_s": 0.5, "elapsed": step * 2.0}


async def test_live_metrics_are_read_incrementally(ws):
    run = make_run(ws, "20261122-010000-live-a001", "live", status="running", steps=50, max_steps=100, live=True,
                   eval_every=25)
    metrics = run.file(store.METRICS_FILE)
    app = app_for(ws)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: app.snapshot is not None and app.snapshot.train_count == 10, what="first load")
        tail = app.monitor.tail(run.id)
        offset0 = tail.metrics.offset
        assert offset0 == metrics.stat().st_size
        chart = app.screen.query_one(LossChart)
        assert chart.snapshot.train_count == 10

        new = [train_record(step, 0.5) for step in range(55, 80, 5)]
        for rec in new:
            store.append_jsonl(metrics, rec)
        partial = store.dumps(train_record(80, 0.4)) + "\n"
        with open(metrics, "a") as f:
            f.write(partial[:20])  # the worker is mid-write
        appended = sum(len((store.dumps(r) + "\n").encode()) for r in new)
        await until(pilot, lambda: app.snapshot.train_count == 15, what="the new records")
        # only the new complete lines were read: a re-read from 0 would have doubled the count
        assert tail.metrics.offset == offset0 + appended
        assert chart.snapshot.train_count == 15
        assert max(p.x for p in chart.snapshot.train["step"]) == 75
        assert app.snapshot.last_train["step"] == 75

        with open(metrics, "a") as f:
            f.write(partial[20:])
        await until(pilot, lambda: app.snapshot.train_count == 16, what="the completed line")
        assert tail.metrics.offset == metrics.stat().st_size
        assert max(p.x for p in chart.snapshot.train["step"]) == 80


async def test_a_long_run_list_lists_every_run_and_updates_a_changed_row_in_place(ws):
    runs = [make_run(ws, f"20261122-{i:06d}-r{i:03d}", f"exp{i:03d}", created=T0 + i * 60, steps=10, max_steps=10)
            for i in range(90)]
    app = app_for(ws)
    async with app.run_test(size=(100, 30)) as pilot:
        table = app.screen.query_one(RunList)
        await until(pilot, lambda: table.row_count == 90, what="all 90 rows")
        assert [k.value for k in table.rows] == [r.id for r in order(app.runs)]
        assert [k.value for k in table.rows][0] == runs[-1].id  # newest first
        await pilot.press("down", "down", "down")
        chosen = app.selected_id
        assert chosen == runs[-4].id and table.cursor_row == 3

        # the oldest run (the list's last row) gets a new loss: its cell changes, the cursor stays
        oldest = runs[0]
        progress = store.read_json(oldest.file(store.PROGRESS_FILE))
        store.atomic_write_json(oldest.file(store.PROGRESS_FILE), {**progress, "train_loss": 0.123})
        await until(pilot, lambda: table.get_cell(oldest.id, "loss").plain == fmt.num(0.123), what="the new loss")
        assert table.cursor_row == 3 and app.selected_id == chosen and table.row_count == 90

        # a new run goes to the top; the cursor follows the selected run down one row
        make_run(ws, "20261122-999999-new", "new", created=T0 + 10_000, steps=10, max_steps=10)
        await until(pilot, lambda: table.row_count == 91, what="the new run")
        assert [k.value for k in table.rows][0] == "20261122-999999-new"
        assert table.cursor_row == 4 and app.selected_id == chosen


async def test_chart_keys_switch_axis_smoothing_and_scale(ws):
    make_run(ws, "20261122-010000-done-a001", "done", nan_steps=(100,))
    app = app_for(ws)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: app.snapshot is not None and app.snapshot.caught_up)
        chart = app.screen.query_one(LossChart)
        assert (chart.axis, chart.smoothing, chart.log_y) == ("step", 1, False)
        await pilot.press("t", "m", "g")
        assert (chart.axis, chart.smoothing, chart.log_y) == ("time", 2, True)
        assert "time (min)" in chart.border_title and "EMA 0.95" in chart.border_title
        assert "1 NaN" in chart.border_title  # the NaN step is counted and marked, not dropped
        await pilot.press("m")
        assert chart.smoothing == 0 and "raw" in chart.border_title


async def test_a_crashed_run_shows_as_crashed_with_its_reason(ws):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run = make_run(ws, "20261122-010000-gone-a001", "gone", status="running", steps=20)
    run.update_state(status="running", pid=dead.pid, pid_start=time.time() - 60, supervisor_pid=None,
                     heartbeat=T0 + 100, error=None)
    app = app_for(ws)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: app.row(run.id) is not None and app.selected_id == run.id)
        row = app.row(run.id)
        assert row.status == "crashed"
        assert "process gone" in row.error and "no heartbeat since" in row.error
        await until(pilot, lambda: app.snapshot is not None)
        text = str(app.screen.query_one(StatusPanel).render())
        assert "crashed" in text and "process gone" in text


async def test_notifies_when_a_run_started_before_the_tui_ends_and_when_an_alert_fires(ws):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run = make_run(ws, "20261122-010000-night-a001", "night", status="running", steps=20)
        run.update_state(pid=sleeper.pid, pid_start=store.process_start_time(sleeper.pid), supervisor_pid=None)
        app = app_for(ws)
        async with app.run_test(size=(100, 30)) as pilot:
            await until(pilot, lambda: app.row(run.id) is not None and app.row(run.id).status == "running")
            store.append_jsonl(run.file(store.ALERTS_FILE), {
                "kind": "loss_spike", "severity": "warning", "step": 20, "t": T0, "message": "loss jumped x4",
                "hint": "lower the learning rate", "data": {}})
            await until(pilot, lambda: any("loss jumped" in n.message for n in app._notifications), what="alert")
            sleeper.kill()
            sleeper.wait()
            await until(pilot, lambda: any("crashed" in n.message for n in app._notifications), what="run end")
            note = next(n for n in app._notifications if "crashed" in n.message)
            assert run.id in note.message and note.severity == "error"
    finally:
        sleeper.kill()


# --- machine panels: NVML faked at the pynvml boundary ----------------------------------------


def fake_pynvml(working: bool = True) -> types.ModuleType:
    m = types.ModuleType("pynvml")
    m.NVML_TEMPERATURE_GPU = 0

    def init():
        if not working:
            raise RuntimeError("NVML Shared Library Not Found")

    m.nvmlInit = init
    m.nvmlDeviceGetCount = lambda: 1
    m.nvmlDeviceGetHandleByIndex = lambda i: i
    m.nvmlDeviceGetName = lambda h: b"NVIDIA H100 80GB HBM3"
    m.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(used=60 * 2**30, total=80 * 2**30)
    m.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=97)
    m.nvmlDeviceGetTemperature = lambda h, kind: 71
    m.nvmlDeviceGetPowerUsage = lambda h: 290_000
    m.nvmlDeviceGetEnforcedPowerLimit = lambda h: 700_000
    return m


def fake_gpu(monkeypatch, working: bool = True) -> None:
    from labtui.engine.runtime import sysmon

    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(working))
    monkeypatch.setattr(sysmon, "_nvml_state", {"ok": None, "error": None})


@pytest.mark.parametrize("working", [True, False])
def test_gpu_panel_from_the_supervisors_samples(ws, monkeypatch, working):
    from labtui.engine.runtime import sysmon
    from labtui.tui.tail import RunTail

    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(working))
    monkeypatch.setattr(sysmon, "_nvml_state", {"ok": None, "error": None})
    run = make_run(ws, "20261122-010000-gpu-a001", "gpu", steps=20, memory=True)
    run.file(store.SYSTEM_FILE).unlink()
    store.append_jsonl(run.file(store.SYSTEM_FILE), sysmon.Sampler(os.getpid(), disk_path=ws.root).sample())
    tail = RunTail(run.path)
    tail.poll()
    text = Content.from_markup(gpu_text(tail.snapshot(), width=60)).plain
    if working:
        assert "GPU0 97% 71°C 290/700W" in text and "H100" in text and "60.0/80.0G" in text
        assert "torch (this run) alloc 30.0 resv 36.0 peak 41.0G" in text  # the run's own numbers, labelled
    else:
        assert "no NVIDIA GPU" in text and "RAM" in text


# --- launching, evaluating -------------------------------------------------------------------


def experiments(ws: store.Workspace) -> None:
    """A parent and a child experiment over a local model folder and data file (nothing is trained)."""
    (ws.root / "model").mkdir()
    (ws.root / "model" / "config.json").write_text("{}")
    from labtui.engine.training.demo import synth_pubmedqa

    (ws.root / "data.json").write_text(json.dumps(synth_pubmedqa(20)))  # `labtui run` checks the data's labels
    (ws.root / "experiments").mkdir()
    (ws.root / "experiments" / "base.yaml").write_text(
        "description: the parent\nmodel:\n  model_name_or_path: ./model\ntrainer: trainer\nlora:\n  r: 4\n"
        "training:\n  max_steps: 100\n  learning_rate: 5e-4\ndataset:\n  path: data.json\n")
    (ws.root / "experiments" / "tuned.yaml").write_text(
        "extends: base.yaml\ndescription: rank 16\nlora:\n  r: 16\n")


@pytest.mark.e2e  # the queued run starts: a training worker (torch, in a subprocess)
async def test_launch_screen_creates_a_run_through_the_cli(ws):
    experiments(ws)
    app = app_for(ws, clock=None)
    try:
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.press("n")
            screen = app.screen
            assert type(screen).__name__ == "LaunchScreen"
            await until(pilot, lambda: screen.experiment is not None, what="the experiment files")  # read in a worker
            assert screen.experiment.name == "base.yaml"
            await pilot.press("down")
            assert screen.experiment.name == "tuned.yaml"
            await until(pilot, lambda: "tuned.yaml" in str(screen.query_one("#exp-info").render()), what="the preview")
            info = str(screen.query_one("#exp-info").render())
            assert "tuned.yaml → base.yaml" in info and "1 change vs base" in info
            changes = str(screen.query_one("#resolved").render())  # one `key: old → new` per line, first
            assert "lora.r: 4 → 16" in changes
            screen.query_one("#f-training-max_steps").focus()
            await pilot.press("7")
            assert "training.max_steps=7" in screen.argv(queue=True)
            await until(pilot, lambda: "max_steps: 7" in str(screen.query_one("#resolved").render()), what="the preview")
            await pilot.press("ctrl+t")
            await until(pilot, lambda: screen.last_result is not None, timeout=180, what="labtui run")
            assert screen.last_result.ok, screen.last_result.stderr
            assert screen.last_result.argv[-1] == "--queue"
            (run_id,) = screen.last_result.ids
            run = ws.run(run_id)
            assert run.info()["experiment"] == "tuned"
            assert run.config()["training"]["max_steps"] == 7 and run.config()["lora"]["r"] == 16
            await until(pilot, lambda: app.row(run_id) is not None, what="the new run in the list")
            assert app.selected_id == run_id and type(app.screen).__name__ == "DashboardScreen"
    finally:
        kill_started(ws)


async def test_launch_shows_config_errors_and_the_clis_message(ws):
    experiments(ws)
    app = app_for(ws, clock=None)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("n")
        screen = app.screen
        await until(pilot, lambda: screen.experiment is not None, what="the experiment files")  # read in a worker
        screen.query_one("#more").value = "dataset.formatt=jsonl_qa"
        await pilot.pause()
        # the preview already says what is wrong, and ctrl+s is disabled
        assert not screen.preview_ok and screen.check_action("start", (False,)) is None
        assert "did you mean 'format'" in str(screen.query_one("#launch-status").render())
        screen.query_one("#more").value = "model.model_name_or_path=./missing"  # only the CLI checks files
        await until(pilot, lambda: screen.preview_ok, what="the preview")  # resolved in a worker
        await pilot.press("ctrl+s")
        await until(pilot, lambda: screen.last_result is not None, timeout=120, what="labtui run")
        assert screen.last_result.rc == 2
        status = str(screen.query_one("#launch-status").render()).replace("\n", "")
        assert "could not start" in status and "missing does not exist" in status
        assert ws.runs() == []


@pytest.mark.e2e  # starts an eval worker (torch, in a subprocess)
async def test_eval_form_device_toggle_reaches_the_evals_settings(ws, monkeypatch):
    fake_gpu(monkeypatch)  # `d` refuses the GPU where NVML sees none
    run = make_run(ws, "20261122-010000-evalme-a001", "evalme", checkpoints=(100, 200))
    app = app_for(ws)
    try:
        async with app.run_test(size=(100, 30)) as pilot:
            await until(pilot, lambda: app.selected_id == run.id)
            await pilot.press("e")
            screen = app.screen
            assert type(screen).__name__ == "EvalScreen"
            assert screen.device == "cpu"  # the run has no CUDA in its environment
            assert screen.focused is not None and screen.focused.id == "n"  # typing N, yet d still toggles
            await pilot.press("5", "d")
            assert screen.query_one("#n").value == "5"
            assert screen.device == "cuda"
            argv = screen.argv()
            assert argv[argv.index("--device") + 1] == "cuda" and argv[argv.index("--n") + 1] == "5"
            assert "--device cuda" in str(screen.query_one("#eval-command").render())
            await pilot.press("d")
            assert screen.device == "cpu"
            await pilot.press("ctrl+s")
            await until(pilot, lambda: screen.last_result is not None, timeout=120, what="labtui eval")
            assert screen.last_result.ok, screen.last_result.stderr
            (eval_id,) = screen.last_result.ids
            settings = json.loads((run.file("evals") / eval_id / "eval.json").read_text())
            assert settings["device"] == "cpu" and settings["n"] == 5 and settings["checkpoint_step"] == 200
    finally:
        kill_started(ws)


@pytest.mark.e2e  # the CPU re-run starts an eval worker (torch, in a subprocess)
async def test_a_degenerate_gpu_eval_offers_the_cpu_rerun(ws, monkeypatch):
    from labtui.tui.cli_runner import CliResult

    fake_gpu(monkeypatch)

    run = make_run(ws, "20261122-010000-gpu-a001", "gpu", checkpoints=(200,))
    make_eval(run, "20261122-020000-score-cuda-e001", [False] * 30, device="cuda", preds=["no"] * 30)
    app = app_for(ws)
    try:
        async with app.run_test(size=(100, 30)) as pilot:
            await until(pilot, lambda: app.selected_id == run.id)
            await pilot.press("e")
            screen = app.screen
            assert screen.check_action("cpu_rerun", ()) is False  # hidden until a GPU eval is degenerate
            await pilot.press("d", "3", "0")
            # as if `labtui eval` had just printed this eval's id: the screen follows it to the end
            screen.busy = True
            screen._launched(CliResult(tuple(screen.argv()), 0, "20261122-020000-score-cuda-e001\n", ""))
            await until(pilot, lambda: screen.degenerate_gpu is not None, what="the degenerate result")
            status = str(screen.query_one("#eval-status").render())
            assert "degenerate" in status and "re-run it on the CPU" in status
            assert screen.check_action("cpu_rerun", ()) is True
            await pilot.press("u")
            argv = screen.last_argv
            assert argv[argv.index("--device") + 1] == "cpu" and argv[argv.index("--n") + 1] == "30"
            assert screen.device == "cpu"
            await until(pilot, lambda: screen.last_result.argv == tuple(argv), timeout=120, what="the CPU re-run")
            assert screen.last_result.ok, screen.last_result.stderr
            settings = json.loads((run.file("evals") / screen.last_result.ids[0] / "eval.json").read_text())
            assert settings["device"] == "cpu"
    finally:
        kill_started(ws)


# --- history, baseline, compare ---------------------------------------------------------------


async def test_baseline_and_compare_show_the_mcnemar_p_of_the_stats_module(ws):
    a, b = paired_sets(n=300, b=12, c=36)
    base = make_run(ws, "20261122-010000-demo-baseline-a001", "demo-baseline", created=T0)
    tuned = make_run(ws, "20261122-013000-demo-tuned-b002", "demo-tuned", created=T0 + 1800, notes="r=16 helps")
    make_eval(base, "20261122-030000-eval-c001", a)
    make_eval(tuned, "20261122-031000-eval-d002", b)
    expected = stats.mcnemar(a, b).p
    app = app_for(ws)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: len(app.runs) == 2)
        await pilot.press("h")
        screen = app.screen
        await until(pilot, lambda: screen.loaded and len(screen.rows) == 2, what="history")
        await pilot.press("down")  # the baseline run (newest first)
        assert screen.cursor_row.run_id == base.id
        await pilot.press("b")
        assert baseline.get(ws) == base.id and app.baseline_id == base.id
        await until(pilot, lambda: any(r.p is not None for r in screen.rows), what="comparisons")
        row = next(r for r in screen.rows if r.run_id == tuned.id)
        assert row.p == pytest.approx(expected) and row.diff == pytest.approx(24 / 300)
        assert row.notes == "r=16 helps"
        await pilot.press("up")
        assert screen.cursor_row.run_id == tuned.id
        await pilot.press("c")
        compare = app.screen
        assert type(compare).__name__ == "CompareScreen"
        await until(pilot, lambda: compare.result is not None or compare.error, what="compare")
        assert compare.error is None
        assert compare.result["mcnemar_p"] == pytest.approx(expected)
        assert (compare.result["b"], compare.result["c"]) == (12, 36)
        body = str(compare.query_one("#compare-body").render())
        assert f"p {fmt.p_value(expected)}" in body or f"p = {fmt.p_value(expected)}" in body
        assert "too small to detect" in body and "hedged maybe" in body
        await pilot.press("escape", "slash")
        await pilot.press(*"baseline")
        assert [r.run_id for r in screen.visible()] == [base.id]


async def test_history_fills_in_many_new_comparisons_in_the_rows_it_shows(ws):
    from labtui.tui import history_data

    a, b = paired_sets(n=300, b=12, c=36)
    runs = []
    for i in range(history_data.PARTIAL_AFTER + 5):
        run = make_run(ws, f"20261122-01{i:04d}-demo-{i:04x}", "demo", created=T0 + i * 60)
        make_eval(run, f"20261122-03{i:04d}-eval-{i:04x}", a if i == 0 or i % 2 else b)
        runs.append(run)
    baseline.set(ws, runs[0].id)
    expected = stats.mcnemar(a, b).p
    app = app_for(ws)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: len(app.runs) == len(runs))
        await pilot.press("h")
        screen = app.screen
        table = screen.query_one("#history")
        await until(pilot, lambda: screen.loaded and not screen.comparing
                    and not any(r.pending for r in screen.rows), what="every comparison")
        newest = runs[-1]  # an even index: evaluated as B
        row = next(r for r in screen.rows if r.run_id == newest.id)
        assert row.p == pytest.approx(expected)
        await until(pilot, lambda: table.get_cell(row.key, "McNemar p").plain == fmt.p_value(row.p).rstrip(" *"),
                    what="the p cell")  # the raw p; the stars are the Holm-adjusted p's (its own column)
        assert table.get_cell(row.key, "Δ base").plain == fmt.signed_points(row.diff)
        assert table.row_count == len(screen.rows)
        await pilot.press("space")  # the cursor row (the newest run) is selected: its mark cell shows it
        await until(pilot, lambda: "●" in table.get_cell(row.key, "mark").plain, what="the mark")


async def test_detail_screen_saves_notes_into_the_run_directory(ws):
    run = make_run(ws, "20261122-010000-notes-a001", "notes", changed={"lora.r": [4, 16]},
                   parent_experiment="demo-baseline")
    app = app_for(ws)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: app.selected_id == run.id)
        await pilot.press("enter")
        screen = app.screen
        assert type(screen).__name__ == "RunDetailScreen"
        info = str(screen.query_one("#detail-info").render())
        assert "lora.r: 4 → 16" in info and "changed vs parent" in info
        await pilot.press("n", *"lr too high", "ctrl+s")
        assert run.notes() == "lr too high"
        await pilot.press("escape", "escape")
        await until(pilot, lambda: app.row(run.id).notes == "lr too high", what="notes in the run list")


async def test_log_screen_follows_the_log(ws):
    run = make_run(ws, "20261122-010000-logs-a001", "logs", status="running", live=True)
    app = app_for(ws)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: app.selected_id == run.id)
        await pilot.press("l")
        from textual.widgets import Log

        log = app.screen.query_one(Log)
        await until(pilot, lambda: any("starting logs" in ln for ln in log.lines), what="the log's tail")
        with open(run.file(store.LOG_FILE), "a") as f:
            f.write("step 99: hello from the worker\n")
        await until(pilot, lambda: any("hello from the worker" in ln for ln in log.lines), what="the new line")
        await pilot.press("escape")
        assert app.monitor._followed_log is None


async def test_palette_lists_the_actions_that_make_sense_now(ws):
    from labtui.tui.commands import LabCommands

    make_run(ws, "20261122-010000-done-a001", "done")
    app = app_for(ws)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: app.selected_id is not None)
        commands = LabCommands(app.screen)._commands()
        titles = {c[0] for c in commands if c[4] is None}
        assert {"New", "Eval", "History", "Baseline", "Log", "Quit", "Help"} <= titles
        assert "Stop" not in titles and "Resume" not in titles  # a completed run: nothing to stop or resume
        why = {c[0]: c[4] for c in commands if c[4] is not None}
        assert "completed" in why["Stop"] and "completed" in why["Resume"]  # listed greyed, with the reason
