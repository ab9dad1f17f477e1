"""Issue 12, item 6: the TUI on Textual's public API, pinned to the range it is tested on.

The dependency pin, no private Textual attribute in the product code, the keys' state in reactives
(`bindings=True`) that refresh the footer by themselves, dataclass messages, and no read of a run's
files on the UI thread while the detail screen follows a training run.
"""

from __future__ import annotations

import ast
import dataclasses
import threading
import tomllib
from pathlib import Path

import pytest
from labtui.engine.rundir import store
from labtui.tui import messages
from packaging.requirements import Requirement
from packaging.version import Version
from test_tui_app import app_for, until
from test_tui_data import make_eval, make_run, paired_sets

ROOT = Path(__file__).resolve().parent.parent
TUI = ROOT / "tui"
pytestmark = pytest.mark.anyio


# --- the pin ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["textual", "textual-plotext", "plotext"])
def test_the_ui_libraries_are_pinned_to_a_range_that_holds_the_tested_version(name):
    from importlib.metadata import version

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    req = next(Requirement(d) for d in deps if Requirement(d).name == name)
    assert any(s.operator in ("<", "<=", "~=", "==") for s in req.specifier), f"{req}: no upper bound"
    assert Version(version(name)) in req.specifier, f"{name} {version(name)} is not in {req}"


# --- public API only ----------------------------------------------------------------------------


def textual_private_names() -> set[str]:
    """The `_names` Textual's classes have, on the class or set on an instance."""
    from textual.app import App
    from textual.screen import ModalScreen, Screen
    from textual.widgets import DataTable, Footer, Input, OptionList, Static, TextArea

    names: set[str] = set()
    for cls in (App, Screen, ModalScreen, Footer, Input, DataTable, Static, TextArea, OptionList):
        obj = cls()
        names |= {n for n in [*dir(cls), *vars(obj)] if n.startswith("_") and not n.startswith("__")}
    return names


def private_uses(path: Path, textual_names: set[str]) -> list[str]:
    """`line: what` for each use of Textual's private API in the file at `path`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        line = getattr(node, "lineno", "?")
        if isinstance(node, ast.Attribute) and node.attr in textual_names:
            found.append(f"{line}: .{node.attr} (Textual's private attribute)")
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in textual_names:
            found.append(f"{line}: def {node.name} (overrides Textual's private method)")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("textual") and any(
                part.startswith("_") for part in node.module.split(".")):
            found.append(f"{line}: from {node.module} import (a private module)")
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target]):
                if (isinstance(target, ast.Attribute) and target.attr.startswith("_")
                        and not (isinstance(target.value, ast.Name) and target.value.id in ("self", "cls"))):
                    found.append(f"{line}: sets .{target.attr} on another object")
    return found


def test_the_tui_uses_no_private_textual_api():
    names = textual_private_names()
    found = [f"{path.relative_to(ROOT)}:{use}" for path in sorted(TUI.rglob("*.py")) for use in private_uses(path, names)]
    assert found == []


def test_the_private_api_check_finds_what_it_looks_for(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("class K:\n    async def _on_key(self, e):\n        self.screen._bindings.bind('a', 'b')\n"
                      "        return self.app.screen._compositor\n"
                      "def f(table):\n    table._labtui_fill = 1\n"
                      "from textual.widgets._footer import FooterKey\n")
    assert sorted(private_uses(sample, textual_private_names())) == [
        "2: def _on_key (overrides Textual's private method)", "3: ._bindings (Textual's private attribute)",
        "4: ._compositor (Textual's private attribute)", "6: sets ._labtui_fill on another object",
        "7: from textual.widgets._footer import (a private module)"]


def test_bindings_are_refreshed_by_reactives_not_by_hand():
    """Every remaining manual `refresh_bindings()` in tui/ says on its line why no reactive fits."""
    bare = []
    for path in sorted(TUI.rglob("*.py")):
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "refresh_bindings" and "#" not in lines[node.lineno - 1]):
                bare.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert bare == []


# --- messages -----------------------------------------------------------------------------------


def test_messages_are_dataclasses_with_their_fields():
    expected = {
        "RunsScanned": ["rows"], "EvalsScanned": ["evals"], "MonitorStatus": ["error"], "RunData": ["snapshot"],
        "RunEnded": ["row", "previous"], "AlertFired": ["row", "alert"], "LogLines": ["run_id", "text", "reset"],
        "EvalProgress": ["eval_dir", "progress"],
    }
    for name, fields in expected.items():
        cls = getattr(messages, name)
        assert dataclasses.is_dataclass(cls), name
        assert [f.name for f in dataclasses.fields(cls)] == fields, name
    m = messages.LogLines("r1", "text")
    assert (m.run_id, m.text, m.reset, m.handler_name) == ("r1", "text", False, "on_log_lines")


# --- the footer follows the keys' state ---------------------------------------------------------


def footer_keys(screen) -> dict[str, bool]:
    """{key: enabled} as the footer draws them."""
    from textual.widgets._footer import FooterKey  # the test may look inside; the product may not

    return {k.key: "-disabled" not in k.classes for k in screen.query(FooterKey)}


async def test_history_footer_enables_compare_when_two_rows_are_marked(ws):
    a, b = paired_sets(40, 3, 6, 20)
    for i, correct in enumerate((a, b)):
        run = make_run(ws, f"20261122-01000{i}-demo-a00{i}", "demo", steps=20, max_steps=20)
        make_eval(run, f"20261122-03000{i}-eval-a00{i}", correct)
    app = app_for(ws)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: len(app.runs) == 2)
        await pilot.press("h")
        screen = app.screen
        await until(pilot, lambda: screen.loaded and screen.cursor_row is not None, what="history")
        await until(pilot, lambda: footer_keys(screen).get("c") is False, what="compare dimmed: no baseline")
        await pilot.press("space", "down", "space")
        await until(pilot, lambda: footer_keys(screen).get("c") is True, what="compare enabled by two marks")
        await pilot.press("space")  # one mark again
        await until(pilot, lambda: footer_keys(screen).get("c") is False, what="compare dimmed again")


async def test_dashboard_footer_follows_the_selected_runs_status(ws):
    make_run(ws, "20261122-010000-live-a001", "live", status="running", live=True)
    make_run(ws, "20261122-020000-done-a002", "done", status="completed")
    app = app_for(ws)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: len(app.runs) == 2)
        screen = app.screen
        live = app.row("20261122-010000-live-a001")
        app.select_run(live.id)
        await until(pilot, lambda: footer_keys(screen).get("s") is (live.status in ("starting", "running")),
                    what="stop as the live run allows")
        app.select_run("20261122-020000-done-a002")
        await until(pilot, lambda: footer_keys(screen).get("s") is False, what="stop dimmed for a completed run")
        await until(pilot, lambda: footer_keys(screen).get("r") is False, what="resume dimmed for a completed run")


# --- no file I/O on the UI thread ---------------------------------------------------------------


async def test_detail_screen_reads_the_runs_files_off_the_ui_thread(ws, monkeypatch):
    run = make_run(ws, "20261122-010000-live-a001", "live", status="running", live=True)
    reads: list[tuple[str, bool]] = []
    for name in ("info", "config", "env", "checkpoints", "state"):
        real = getattr(store.Run, name)

        def spy(self, *args, _real=real, _name=name, **kwargs):
            if self.id == run.id:
                reads.append((_name, threading.current_thread() is threading.main_thread()))
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(store.Run, name, spy)
    app = app_for(ws)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: len(app.runs) == 1)
        reads.clear()  # the app's first scan (before any screen) reads on the UI thread on purpose
        app.select_run(run.id)
        await pilot.press("enter")
        await until(pilot, lambda: type(app.screen).__name__ == "RunDetailScreen")
        screen = app.screen
        await until(pilot, lambda: screen.files is not None, what="the files")
        info = str(screen.query_one("#detail-info").render())
        assert "resolved config" in info and "checkpoints" in info and "loading" not in info.split("evaluations")[0]
        before = len([r for r in reads if r[0] == "config"])
        app.runs = tuple(dataclasses.replace(r, step=r.step + 1) for r in app.runs)  # the run moved on
        await until(pilot, lambda: len([r for r in reads if r[0] == "config"]) > before, what="a second read")
        on_ui = sorted({name for name, main in reads if main})
        assert on_ui == [], f"read on the UI thread: {on_ui}"


async def test_launch_lists_the_shipped_experiments_for_a_workspace_without_any(ws):
    from labtui.tui.screens.launch import LaunchScreen

    assert not ws.experiments.exists()
    app = app_for(ws)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, LaunchScreen) and app.screen.files, what="the launch screen")
        names = [p.name for p in app.screen.files]
        assert "demo-baseline.yaml" in names


async def test_the_footer_follows_the_keys_while_the_terminal_has_no_focus(ws):
    make_run(ws, "20261122-010000-live-a001", "live", status="running", live=True)
    make_run(ws, "20261122-020000-done-a002", "done", status="completed")
    app = app_for(ws)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: len(app.runs) == 2)
        screen = app.screen
        app.select_run("20261122-010000-live-a001")
        await until(pilot, lambda: footer_keys(screen).get("s") is True, what="stop for the live run")
        app.app_focus = False  # a detached tmux, another window (Footer itself waits for focus)
        app.select_run("20261122-020000-done-a002")  # not a key: a key press gives the app its focus back
        await until(pilot, lambda: footer_keys(screen).get("s") is False, what="stop dimmed, without focus")
        assert not app.app_focus
