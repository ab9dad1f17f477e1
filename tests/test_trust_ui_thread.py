"""No file read on the UI thread in the run detail's notes, the Evaluate form's defaults and the Launch
screen's preview: each is read in a worker and posted back, and what the user typed or switched
before it came in (a slow disk, a network file system) is kept."""

from __future__ import annotations

import threading

import pytest
from labtui.engine.rundir import store
from labtui.tui.screens import launch
from test_tui_app import app_for, until
from test_tui_data import make_run

pytestmark = pytest.mark.anyio


def _spy(monkeypatch, owner, name: str, reads: list, gate: threading.Event | None = None) -> None:
    """Record on which thread `owner.name` is called; with `gate`, it waits for it first (a slow disk)."""
    real = getattr(owner, name)

    def spy(*args, **kwargs):
        reads.append((name, threading.current_thread() is threading.main_thread()))
        if gate is not None:
            assert gate.wait(30), "the test never opened the gate"
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, spy)


async def test_notes_are_read_off_the_ui_thread_and_what_was_typed_first_is_kept(ws, monkeypatch):
    run = make_run(ws, "20261122-010000-notes-a001", "notes", notes="lr 1e-3 diverged")
    reads: list = []
    gate = threading.Event()
    app = app_for(ws)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: app.selected_id == run.id)
        _spy(monkeypatch, store.Run, "notes", reads, gate)
        await pilot.press("enter")
        await until(pilot, lambda: type(app.screen).__name__ == "RunDetailScreen", what="the detail screen")
        screen = app.screen
        await until(pilot, lambda: reads, what="the notes read")
        assert not screen.notes_loaded  # the read waits: the screen does not
        await pilot.press("n", *"typed first")
        gate.set()
        await until(pilot, lambda: screen.notes_loaded, what="the notes")
        assert screen.query_one("#notes").text == "lr 1e-3 diverged\ntyped first"
        assert "unsaved" in str(screen.query_one("#notes-state").render())
        await pilot.press("ctrl+s")
        assert reads and not any(main for _, main in reads), reads
        assert run.notes() == "lr 1e-3 diverged\ntyped first"


async def test_the_evaluate_forms_defaults_are_read_off_the_ui_thread_and_a_switch_made_first_stays(ws, monkeypatch):
    run = make_run(ws, "20261122-010000-evalme-a001", "evalme", checkpoints=(100, 200))
    reads: list = []
    gate = threading.Event()
    app = app_for(ws)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: app.selected_id == run.id)
        for name in ("config", "env", "progress", "checkpoints"):
            _spy(monkeypatch, store.Run, name, reads, gate if name == "config" else None)
        _spy(monkeypatch, store, "checkpoint_problem", reads)
        await pilot.press("e")
        await until(pilot, lambda: type(app.screen).__name__ == "EvalScreen", what="the Evaluate screen")
        screen = app.screen
        await until(pilot, lambda: reads, what="the defaults read")
        assert screen.defaults is None and screen.mode == "score"
        await pilot.press("m")  # switched before the run's defaults came in
        assert screen.mode == "generate"
        gate.set()
        await until(pilot, lambda: screen.defaults is not None, what="the defaults")
        assert screen.mode == "generate"  # kept
        assert screen.query_one("#n").placeholder == "300"  # the run's config: eval.n
        values = [value for _, value in screen.query_one("#checkpoint")._options]
        assert values == ["latest", "best", "200", "100"]
        assert "2 checkpoint(s)" in str(screen.query_one("#eval-title").render())
    names = {name for name, _ in reads}
    assert {"config", "env", "progress", "checkpoints", "checkpoint_problem"} <= names
    assert not any(main for _, main in reads), reads


async def test_the_launch_screen_lists_and_resolves_experiments_off_the_ui_thread(ws, monkeypatch):
    (ws.root / "experiments").mkdir()
    (ws.root / "experiments" / "base.yaml").write_text(
        "description: the parent\nmodel:\n  model_name_or_path: ./model\ntrainer: trainer\nlora:\n  r: 4\n"
        "training:\n  max_steps: 100\n  learning_rate: 5e-4\ndataset:\n  path: data.json\n")
    reads: list = []
    _spy(monkeypatch, launch, "experiment_files", reads)
    _spy(monkeypatch, launch, "load_experiment", reads)
    app = app_for(ws, clock=None)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("n")
        await until(pilot, lambda: type(app.screen).__name__ == "LaunchScreen", what="the Launch screen")
        screen = app.screen
        await until(pilot, lambda: screen.preview_ok, what="the preview")
        assert "max_steps: 100" in str(screen.query_one("#resolved").render())
        screen.query_one("#f-training-max_steps").focus()
        await pilot.press("7")
        await until(pilot, lambda: "max_steps: 7" in str(screen.query_one("#resolved").render()), what="the preview")
    assert {name for name, _ in reads} == {"experiment_files", "load_experiment"}
    assert not any(main for _, main in reads), reads

