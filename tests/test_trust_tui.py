"""Issue 11, the TUI's core: the screen never dies, the dashboard shows the truth, the keyboard is honest.

Pilot tests against run stores in temporary folders (fixtures and helpers of test_tui_app.py /
test_tui_data.py), and unit tests of the pure parts (engine.alerts.superseded_by, the panels' text).
"""

from __future__ import annotations

import dataclasses
import os
import time

import pytest
from labtui.engine.rundir import alerts, store
from labtui.engine.rundir.fmt import last_cr_segment
from labtui.tui import messages
from labtui.tui.scan import RunRow
from labtui.tui.screens.log import LogScreen
from labtui.tui.tail import TailSnapshot
from labtui.tui.widgets.loss_chart import LossChart
from labtui.tui.widgets.run_panels import StatusPanel, SystemPanel, ThroughputPanel, system_text, throughput_text
from test_tui_app import app_for, until
from test_tui_data import T0, make_eval, make_run
from textual.content import Content
from textual.widgets import Log, Static

pytestmark = pytest.mark.anyio

NASTY = "x [/] y [b] z [unclosed \x1b]0;pwned\x07 \x1b[2J end [/"


def screen_lines(app) -> list[str]:
    """The text of every line of the screen as drawn."""
    return [strip.text for strip in app.screen._compositor.render_strips()]


def text_of(widget) -> str:
    rendered = widget.render()
    return getattr(rendered, "plain", None) or str(rendered)


async def loaded(pilot, app, run_id: str | None = None) -> None:
    await until(pilot, lambda: app.snapshot is not None and app.snapshot.caught_up
                and (run_id is None or app.snapshot.run_id == run_id), what="the run's data")
    await pilot.pause(0.1)


# --- 1. `g` (log scale) -----------------------------------------------------------------------


@pytest.mark.parametrize("live", [False, True])
async def test_log_scale_toggles_and_redraws_without_killing_the_app(ws, live):
    make_run(ws, "20261122-010000-done-a001", "done", status="running" if live else "completed", steps=100,
             live=live)
    app = app_for(ws)
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot, app)
        chart = app.screen.query_one(LossChart)
        await pilot.press("g")
        await pilot.pause(0.1)
        for size in ((110, 32), (100, 30)):  # redraws of the same figure, twice
            await pilot.resize_terminal(*size)
            await pilot.pause(0.1)
        chart.refresh()
        await pilot.pause(0.1)
        assert chart.log_y and "g log" in Content.from_markup(chart.border_title).plain
        drawn = "\n".join(screen_lines(app))
        assert "could not draw" not in drawn and "no loss logged yet" not in drawn
        assert any(ch in drawn for ch in "⠁⠂⠄⡀⢀⠈⠐⠠⣀⠉"), "the log-scale chart shows its line"
        await pilot.press("g")
        await pilot.pause(0.1)
        assert not chart.log_y and "g lin" in Content.from_markup(chart.border_title).plain
        assert app.is_running and not app.errors


# --- 2 and 4. markup and control characters in run data ---------------------------------------


def nasty_run(ws: store.Workspace) -> store.Run:
    run = make_run(ws, "20261122-010000-nasty-a001", "nasty", status="failed", steps=40, description=NASTY,
                   error=NASTY, changed={"training.learning_rate": [NASTY, 1e-3]}, notes=NASTY)
    store.append_jsonl(run.file(store.ALERTS_FILE), {
        "kind": "loss_spike", "severity": "warning", "step": 20, "t": T0 + 50, "message": NASTY, "hint": NASTY})
    store.append_jsonl(run.file(store.ALERTS_FILE), {
        "kind": "[/]", "severity": "[/]", "step": "[", "t": "[/", "message": NASTY, "hint": "[/]"})
    with open(run.file(store.LOG_FILE), "a") as f:
        f.write("Saving model checkpoint to [/\n" + NASTY + "\n" + "Saving model checkpoint to [/")
    cfg = run.file(store.CONFIG_FILE)
    cfg.write_text(cfg.read_text() + "weird: '[/] [unclosed'\n")
    return run


async def test_markup_and_escape_sequences_in_run_data_are_shown_not_obeyed(ws):
    run = nasty_run(ws)
    app = app_for(ws)
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot, app, run.id)
        status = text_of(app.screen.query_one(StatusPanel))
        assert "[/]" in status and "[unclosed" in status  # shown literally
        assert "Saving model checkpoint to [/" in status
        everything = "\n".join(screen_lines(app))
        assert "\x1b" not in status and "\x07" not in status and "\x1b" not in everything
        await pilot.press("enter")  # detail
        await until(pilot, lambda: type(app.screen).__name__ == "RunDetailScreen")
        await pilot.pause(0.2)
        info = text_of(app.screen.query_one("#detail-info", Static))
        assert NASTY.replace("\x1b]0;pwned\x07", "]0;pwned").replace("\x1b", "") in info
        assert "weird: \"[/] [unclosed\"" in info
        await pilot.press("l")  # the log screen
        await until(pilot, lambda: isinstance(app.screen, LogScreen))
        log = app.screen.query_one(Log)
        await until(pilot, lambda: any("Saving model checkpoint to [/" in ln for ln in log.lines), what="the log")
        assert not any("\x1b" in ln for ln in log.lines)
        await pilot.press("question_mark")
        await pilot.pause(0.2)
        await pilot.press("escape", "escape", "escape")
        await pilot.pause(0.2)
        assert app.is_running and not app.errors, app.errors


async def test_an_alert_toast_with_markup_does_not_kill_the_app(ws):
    run = make_run(ws, "20261122-010000-live-a001", "live", status="running", steps=20, live=True)
    app = app_for(ws)
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot, app)
        app.post_message(messages.AlertFired(app.row(run.id), {"kind": "x", "severity": "warning", "step": 3,
                                                               "message": NASTY, "hint": "[/]"}))
        await until(pilot, lambda: any("pwned" in str(n.message) for n in app._notifications), what="the toast")
        note = next(n for n in app._notifications if "pwned" in str(n.message))
        assert "\x1b" not in str(note.message) and "[/]" in str(note.message)
        await pilot.pause(0.2)
        assert app.is_running


# --- 3. errors are caught where they happen --------------------------------------------------------


async def test_a_panel_that_cannot_draw_says_so_and_the_app_goes_on(ws):
    make_run(ws, "20261122-010000-done-a001", "done")
    app = app_for(ws)
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot, app)
        # a record no reader foresaw reaches the panel (the readers check types; this one slipped by)
        odd = dict(app.snapshot.last_system, disk_free="lots")
        app.post_message(messages.RunData(dataclasses.replace(app.snapshot, last_system=odd,
                                                              version=app.snapshot.version + 1)))
        await until(pilot, lambda: "could not draw" in text_of(app.screen.query_one(SystemPanel)), what="the error")
        assert "system: could not draw: ValueError" in text_of(app.screen.query_one(SystemPanel))
        assert "tok/s" in text_of(app.screen.query_one(ThroughputPanel))  # the others still draw
        assert app.errors and app.errors[-1][1] == "system"
        assert "display error" in text_of(app.screen.query_one("#title", Static))
        await pilot.pause(0.2)
        assert app.is_running


async def test_the_monitors_failure_is_shown_in_the_title_bar_and_cleared_when_it_recovers(ws, monkeypatch):
    from labtui.tui.scan import Scanner

    make_run(ws, "20261122-010000-done-a001", "done")
    app = app_for(ws)
    real = Scanner.scan
    broken = {"on": False}

    def scan(self):
        if broken["on"]:
            raise OSError("runs.cache: Input/output error")
        return real(self)

    monkeypatch.setattr(Scanner, "scan", scan)
    async with app.run_test(size=(120, 30)) as pilot:
        await loaded(pilot, app)
        title = app.screen.query_one("#title", Static)
        assert "monitor" not in text_of(title)
        broken["on"] = True
        await until(pilot, lambda: "monitor: scan: OSError: runs.cache: Input/output error" in text_of(title),
                    what="the monitor's error in the title")
        broken["on"] = False
        await until(pilot, lambda: "monitor" not in text_of(title), what="the title cleared")
        assert app.is_running


# --- 5. alerts that a later state superseded ----------------------------------------------------


def test_a_degenerate_eval_alert_is_superseded_by_a_later_fine_eval():
    alert = {"kind": "degenerate_eval", "step": 40, "t": T0 + 100, "message": "degenerate output",
             "data": {"eval_id": "ev40"}}
    bad = {"id": "ev40", "status": "completed", "degenerate": True, "accuracy": 0.33, "checkpoint_step": 40,
           "created": T0 + 90}
    fine = {"id": "ev120", "status": "completed", "degenerate": False, "accuracy": 0.74, "checkpoint_step": 120,
            "created": T0 + 500}
    assert alerts.superseded_by(alert, evals=[bad]) is None
    assert alerts.superseded_by(alert, evals=[bad, fine]) == "a later eval (checkpoint 120) is not degenerate: accuracy 0.740"
    running = dict(fine, status="running", accuracy=None)
    assert alerts.superseded_by(alert, evals=[bad, running]) is None


def test_stalled_and_memory_alerts_are_superseded_by_later_steps_and_samples():
    stalled = {"kind": "stalled", "step": 50, "t": T0}
    assert alerts.superseded_by(stalled, status="running", step=50, progress_t=T0 - 10) is None
    assert alerts.superseded_by(stalled, status="running", step=60) == "training moved on: step 60"
    assert alerts.superseded_by(stalled, status="stopped", step=50) == "the run ended (stopped)"
    gpu = {"kind": "gpu_memory", "t": T0, "data": {"threshold": 95.0}}
    hot = {"t": T0 + 5, "gpus": [{"index": 0, "mem_used": 96, "mem_total": 100}]}
    cool = {"t": T0 + 5, "gpus": [{"index": 0, "mem_used": 80, "mem_total": 100}]}
    assert alerts.superseded_by(gpu, system=hot) is None
    assert alerts.superseded_by(gpu, system=cool) == "memory back under 90%"
    assert alerts.superseded_by(gpu, system=dict(cool, t=T0 - 5)) is None  # an older sample says nothing
    host = {"kind": "host_memory", "t": T0, "data": {"threshold": 95.0}}
    assert alerts.superseded_by(host, system={"t": T0 + 1, "ram_percent": 60.0}) == "memory back under 90%"
    assert alerts.superseded_by({"kind": "nan_loss", "step": 3}, step=100) is None  # it happened


async def test_status_panel_shows_alert_step_age_and_superseded(ws):
    run = make_run(ws, "20261122-010000-done-a001", "done", steps=120, max_steps=120)
    store.append_jsonl(run.file(store.ALERTS_FILE), {
        "kind": "degenerate_eval", "severity": "warning", "step": 40, "t": T0 + 100,
        "message": "evaluation ev40: degenerate output", "hint": "check the checkpoint",
        "data": {"eval_id": "ev40"}})
    make_eval(run, "20261122-030000-ev120", [True] * 20 + [False] * 10)
    app = app_for(ws)
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot, app)
        panel = app.screen.query_one(StatusPanel)
        await until(pilot, lambda: "superseded" in text_of(panel), what="the superseded alert")
        text = text_of(panel)
        assert "step 40 · " in text and " ago" in text  # its step and age
        assert "superseded: a later eval (checkpoint 200) is not degenerate: accuracy 0.667" in text


# --- 6. the System panel of a finished run, step before the first log, epochs, ETA -------------


def test_a_finished_runs_system_sample_is_shown_at_end():
    snap = TailSnapshot("r", last_system={"kind": "system", "t": T0, "cpu": 40.0, "cpu_count": 16,
                                           "ram_used": 2**30, "ram_total": 2**34})
    end = time.strftime("%H:%M", time.localtime(T0))
    assert system_text(snap, 40, final=True).plain.startswith(f"at end ({end})")
    assert "at end" not in system_text(snap, 40, final=False).plain


def test_step_before_the_first_log_epoch_and_eta_clock():
    queued = RunRow(id="r", experiment="e", status="running", max_steps=120)
    assert "step   0/120" in throughput_text(TailSnapshot("r"), queued, 40).plain
    last = {"kind": "train", "t": T0 + 100, "step": 60, "max_steps": 120, "epoch": 1.23456, "elapsed": 100.0,
            "steps_per_s": 0.6}
    snap = TailSnapshot("r", last_train=last, start={"kind": "start", "t": T0, "step": 0})
    text = throughput_text(snap, queued, 40, now=T0 + 100).plain
    done = time.strftime("%H:%M", time.localtime(T0 + 200))
    assert "epoch 1.23" in text and "1.235" not in text
    assert f"ETA 1:40 (done ~{done})" in text


async def test_run_list_shows_max_steps_from_the_config_before_the_first_log(ws):
    make_run(ws, "20261122-010000-new-a001", "new", status="running", steps=0, max_steps=120, live=True)
    progress = ws.logs / "20261122-010000-new-a001" / store.PROGRESS_FILE
    progress.unlink(missing_ok=True)
    app = app_for(ws)
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot, app)
        assert "0/120" in "\n".join(screen_lines(app))
        assert "0/?" not in "\n".join(screen_lines(app))


# --- 7. the headline eval and running evaluations ------------------------------------------------


async def test_dashboard_shows_headline_accuracy_and_running_evals(ws):
    run = make_run(ws, "20261122-010000-done-a001", "done")
    make_eval(run, "20261122-030000-ev-a", [True] * 20 + [False] * 10)
    going = make_eval(run, "20261122-040000-ev-b", [True] * 30)
    store.atomic_write_json(going / store.STATE_FILE, {  # this process stands in for the eval worker
        "status": "running", "created": T0 + 9000, "pid": os.getpid(), "pid_start": store.process_start_time(os.getpid()),
        "heartbeat": time.time()})
    store.atomic_write_json(going / store.PROGRESS_FILE, {"done": 100, "total": 300, "examples_per_s": 2.0})
    (going / "summary.json").unlink()
    app = app_for(ws)
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot, app)
        await until(pilot, lambda: run.id in app.evals, what="the evals")
        lines = "\n".join(screen_lines(app))
        assert "eval loss" in lines and "acc" in lines
        assert "0.667" in lines  # the headline eval's accuracy in the run list
        status = text_of(app.screen.query_one(StatusPanel))
        assert "eval running 20261122-040000-ev-b · 100/300 · ETA 1:40" in status
        assert "eval accuracy 0.667" in status
        # the finished eval: its folder changes, the monitor reads it again
        store.atomic_write_json(going / store.PROGRESS_FILE, {"done": 200, "total": 300, "examples_per_s": 2.0})
        await until(pilot, lambda: "200/300" in text_of(app.screen.query_one(StatusPanel)), what="the progress")


# --- 8. honest keys -----------------------------------------------------------------------------


async def test_a_dimmed_key_says_why_and_the_palette_lists_it_greyed(ws):
    from labtui.tui.commands import LabCommands

    make_run(ws, "20261122-010000-done-a001", "done")
    app = app_for(ws)
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot, app)
        await pilot.press("c")
        await until(pilot, lambda: any("no baseline" in str(n.message) for n in app._notifications), what="c")
        await pilot.press("s")
        await until(pilot, lambda: any("completed: only a starting or running run can be stopped" in str(n.message)
                                       for n in app._notifications), what="s")
        await pilot.press("r")
        await until(pilot, lambda: any("resume continues" in str(n.message) for n in app._notifications), what="r")
        assert type(app.screen).__name__ == "DashboardScreen"  # nothing opened
        hits = [h async for h in LabCommands(app.screen).search("stop")]
        assert hits and "completed" in hits[0].help and "only a starting or running" in hits[0].match_display.plain
        await pilot.press("enter")  # the detail screen has the same keys, the same reasons
        await until(pilot, lambda: type(app.screen).__name__ == "RunDetailScreen")
        app._notifications.clear()
        await pilot.press("s")
        await until(pilot, lambda: any("can be stopped" in str(n.message) for n in app._notifications), what="s")


# --- 9. help and footer -------------------------------------------------------------------------


async def test_help_shows_bracket_keys_and_the_wide_footer_reads_right(ws):
    make_run(ws, "20261122-010000-done-a001", "done")
    app = app_for(ws)
    async with app.run_test(size=(120, 30)) as pilot:
        await loaded(pilot, app)
        await until(pilot, lambda: "q Quit" in screen_lines(app)[-1], what="the footer")
        footer = screen_lines(app)[-1]
        assert "t Axis" in footer and "m Smooth" in footer and "g Log y" in footer and "/ Filter" in footer
        assert "? Help" in footer and "q Quit" in footer
        assert "tmg" not in footer and "Chart/" not in footer
        await pilot.press("question_mark")
        await pilot.pause(0.2)
        shown = "\n".join(screen_lines(app))
        assert "[[/]" not in shown and "]]/]" not in shown
        assert any(ln.strip().startswith("[  Move up in the queue") for ln in shown.splitlines()
                   if "Move up" in ln) or "[  Move up in the queue" in shown
        assert "]  Move down in the queue" in shown


# --- 10. carriage returns in the log ------------------------------------------------------------


def test_last_cr_segment():
    assert last_cr_segment("10%|█\r50%|███\r100%|█████") == "100%|█████"
    assert last_cr_segment("done\r") == "done"
    assert last_cr_segment("plain") == "plain"
    assert last_cr_segment("\r\r") == ""


async def test_log_screen_draws_a_progress_bar_as_one_updating_line(ws):
    run = make_run(ws, "20261122-010000-done-a001", "done")
    run.file(store.LOG_FILE).write_text("start\n")
    app = app_for(ws)
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot, app)
        await pilot.press("l")
        await until(pilot, lambda: isinstance(app.screen, LogScreen))
        screen = app.screen
        log = screen.query_one(Log)
        await until(pilot, lambda: any("start" in ln for ln in log.lines), what="the first line")
        for chunk in ("\r 10%|█", "\r 20%|██", "\r 30%|███"):  # tqdm: one write per update
            with open(run.file(store.LOG_FILE), "a") as f:
                f.write(chunk)
            await pilot.pause(0.15)
        progress = screen.query_one("#log-progress", Static)
        await until(pilot, lambda: "30%|███" in text_of(progress), what="the progress line")
        assert not any("%|" in ln for ln in log.lines)  # not one line per update
        with open(run.file(store.LOG_FILE), "a") as f:
            f.write("\r100%|█████\nnext line\n")
        await until(pilot, lambda: any("next line" in ln for ln in log.lines), what="the next line")
        assert [ln for ln in log.lines if "%|" in ln] == ["100%|█████"]
        assert not progress.display


# --- 11. a killed supervisor with a live worker -------------------------------------------------


async def test_a_killed_supervisor_with_a_live_worker_is_shown_as_such(ws):
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run = make_run(ws, "20261122-010000-orphan-a001", "orphan", status="running", steps=20, live=True)
    # this test process stands in for the worker; the supervisor's pid is gone
    run.update_state(status="running", pid=os.getpid(), pid_start=store.process_start_time(os.getpid()),
                     supervisor_pid=dead.pid, supervisor_start=time.time() - 60)
    app = app_for(ws)
    async with app.run_test(size=(120, 30)) as pilot:
        await loaded(pilot, app)
        text = text_of(app.screen.query_one(StatusPanel))
        assert "running" in text
        assert "supervisor gone, worker alive: no heartbeat, no queue advance" in text


# --- 12. one name in the CLI and the TUI --------------------------------------------------------


async def test_the_tui_names_a_run_as_the_cli_does(ws):
    make_run(ws, "20261122-010000-byo-train-a001", "byo_train")  # run.json from before the name was fixed
    app = app_for(ws)
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot, app)
        shown = "\n".join(screen_lines(app))
        assert "byo-train·a001" in shown and "byo_train" not in shown
