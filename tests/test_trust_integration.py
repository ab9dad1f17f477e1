"""Issue 11, the seams between the areas: a TUI that had to stop exits non-zero, the log screen reads
only the run's own log, an eval's damaged summary reads as missing, a command run has one name, and
the Evaluate screen offers only checkpoints that can be evaluated."""

from __future__ import annotations

import json
import os

import pytest
from labtui.engine.analysis import evalstore
from labtui.engine.cli import main as cli
from labtui.engine.rundir import store
from labtui.engine.runtime import launcher
from test_tui_app import app_for, until
from test_tui_data import make_eval, make_run
from textual.widgets import Log, Select

from labtui.main import main as labtui_main

pytestmark = pytest.mark.anyio


def test_the_cli_passes_on_the_tuis_exit_status(ws, monkeypatch):
    """`labtui` with no command: a dashboard that died on an error must not exit 0."""
    import labtui.tui.app

    seen = {}

    def died(workspace, **kw):
        seen["ws"] = workspace
        return 1

    monkeypatch.setattr(labtui.tui.app, "main", died)
    assert labtui_main(["--workspace", str(ws.root)]) == 1
    assert seen["ws"].root == ws.root
    # the engine's CLI alone does not open the dashboard: the engine never imports the TUI
    assert cli.main(["--workspace", str(ws.root)]) == 2


async def test_the_log_screen_does_not_follow_a_log_linked_elsewhere(ws, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret line\n")
    run = make_run(ws, "20261122-010000-logs-a001", "logs", status="running", live=True)
    log_file = run.file(store.LOG_FILE)
    log_file.unlink(missing_ok=True)
    log_file.symlink_to(secret)
    app = app_for(ws)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: app.selected_id == run.id)
        await pilot.press("l")
        await pilot.pause(1.5)  # a few monitor ticks
        log = app.screen.query_one(Log)
        assert not any("top secret" in ln for ln in log.lines)
        assert app.is_running


def test_an_evals_wrong_typed_settings_and_summary_read_as_missing(ws):
    run = make_run(ws, "20261122-010000-ev-a001", "ev")
    path = make_eval(run, "20261122-030000-eval-b001", [True, False, True])
    summary = json.loads((path / evalstore.SUMMARY_FILE).read_text())
    summary.update(device=5, accuracy="high", n="three", ci="wide")
    (path / evalstore.SUMMARY_FILE).write_text(json.dumps(summary))
    settings = json.loads((path / evalstore.EVAL_FILE).read_text())
    settings.update(mode=["score"], checkpoint_step="last")
    (path / evalstore.EVAL_FILE).write_text(json.dumps(settings))
    row = evalstore.eval_row(path)
    assert row["device"] == "cpu"  # the settings' device, the summary's being wrong-typed
    assert row["accuracy"] is None and row["ci"] is None
    assert row["mode"] is None and row["checkpoint_step"] is None
    assert row["n"] == 3  # the settings' n, the summary's being wrong-typed


def test_a_command_run_is_named_as_its_id_says(ws):
    run = launcher.create_script_run(ws, ["python", "byo_train.py", "--lr", "5e-5"], ["labtui", "run"])
    assert run.info()["experiment"] == "byo-train"
    assert "-byo-train-" in run.id


async def test_the_evaluate_screen_offers_only_complete_checkpoints(ws):
    run = make_run(ws, "20261122-010000-cp-a001", "cp")
    for step, complete in ((40, True), (80, False)):
        cp = run.file(store.CHECKPOINTS_DIR) / f"checkpoint-{step}"
        cp.mkdir(parents=True)
        if complete:
            (cp / store.CHECKPOINT_STATE_FILE).write_text("{}")
            (cp / store.CHECKPOINT_WEIGHTS[0]).write_bytes(b"w" * 8)
    app = app_for(ws)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: app.selected_id == run.id)
        await pilot.press("e")
        await until(pilot, lambda: app.screen.__class__.__name__ == "EvalScreen" and app.screen.defaults is not None,
                    what="the Evaluate screen and its defaults")
        values = [value for _, value in app.screen.query_one("#checkpoint", Select)._options]
        assert "40" in values and "80" not in values
        assert os.path.isdir(run.file(store.CHECKPOINTS_DIR) / "checkpoint-80")  # nothing removed


async def test_the_dashboard_headline_pairs_with_the_baseline_as_history_does(ws):
    """With a baseline marked, the dashboard's accuracy is the eval History shows for the run: the one
    with the baseline's N and split, not a larger newer one."""
    from labtui.tui import baseline

    base = make_run(ws, "20261122-010000-base-a001", "base")
    make_eval(base, "20261122-030000-ev-base", [True, False, True])  # N 3
    run = make_run(ws, "20261122-020000-tuned-a002", "tuned", created=base.info()["created"] + 60)
    make_eval(run, "20261122-030000-ev-same-n", [True, True, True])  # N 3: 1.000
    make_eval(run, "20261122-040000-ev-more-n", [True, False, False, False, False, False])  # N 6, newer: 0.167
    app = app_for(ws)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: run.id in app.evals, what="the evals")
        assert app.evals[run.id].headline["id"] == "20261122-040000-ev-more-n"  # no baseline: the largest N
        baseline.set(ws, base.id)
        app.monitor.wake()
        await until(pilot, lambda: app.evals[run.id].headline["id"] == "20261122-030000-ev-same-n",
                    what="the headline against the baseline")
        assert app.evals[base.id].headline["id"] == "20261122-030000-ev-base"


async def test_history_keys_can_be_asked_about_before_the_screen_is_composed(ws):
    """The footer asks each screen which keys are available as soon as it is pushed, which can be
    before the screen has its table: History must answer (dimmed, still loading), not raise."""
    from labtui.tui.screens.history import HistoryScreen

    make_run(ws, "20261122-010000-base-a001", "base")
    app = app_for(ws)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: len(app.runs) == 1)
        screen = HistoryScreen()
        assert screen.cursor_row is None
        assert screen.why_disabled("compare", ()) == "still loading"
        await app.push_screen(screen)
        await until(pilot, lambda: screen.loaded, what="History's rows")


def test_the_cli_shows_max_steps_from_the_config_before_the_first_log(ws, capsys):
    """`labtui runs` and the run list read one row (store.Run.row): a queued run is 0/120, not 0/?."""
    run = make_run(ws, "20261122-010000-waiting-a001", "waiting", status="queued", max_steps=120)
    run.file(store.PROGRESS_FILE).unlink(missing_ok=True)  # as the launcher leaves a run that never started
    assert run.row()["max_steps"] == 120 and run.summary()["max_steps"] == 120
    assert cli.main(["--workspace", str(ws.root), "runs"]) == 0
    assert "0/120" in capsys.readouterr().out
