"""Snapshots (pytest-textual-snapshot) of the dashboard, history and compare views at 80x24 and
120x40, on a fixed night of runs (tests/test_tui_data.py) with a fixed clock.

Review a changed snapshot (`pytest --snapshot-report`) before `--snapshot-update`.
"""

from __future__ import annotations

import time

import pytest
from labtui.engine.rundir import store
from labtui.tui import baseline
from labtui.tui.app import LabApp
from test_tui_data import build_night, clock

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((120, 40), id="120x40")]


@pytest.fixture
def night(tmp_path) -> store.Workspace:
    ws = store.Workspace(tmp_path / "night")
    runs = build_night(ws)
    baseline.set(ws, runs["base"].id)
    return ws


def app_for(ws: store.Workspace) -> LabApp:
    return LabApp(workspace=ws, poll_interval=0.05, clock=clock, theme="textual-dark")


async def until(pilot, cond, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "the app did not settle"
        await pilot.pause(0.05)


async def dashboard_ready(pilot) -> None:
    app = pilot.app
    await until(pilot, lambda: len(app.runs) == 6 and app.snapshot is not None and app.snapshot.caught_up
                and app.snapshot.run_id == app.selected_id
                and not getattr(app.screen.query_one("#runs"), "_require_update_dimensions", False))
    await pilot.pause(0.2)


async def history_ready(pilot) -> None:
    await dashboard_ready(pilot)
    await pilot.press("h")
    screen = pilot.app.screen
    await until(pilot, lambda: getattr(screen, "loaded", False) and any(r.p is not None for r in screen.rows))

    def settled() -> bool:
        # the table has measured its rows (a busy machine shows a frame with header-wide columns
        # first), and the footer has caught up with them: select and baseline are usable
        table = screen.query_one("#history")
        keys = {k.action: k for k in screen.query("FooterKey")}
        return (not getattr(table, "_require_update_dimensions", False)
                and all(a in keys and not keys[a].disabled for a in ("toggle_select", "baseline")))

    await until(pilot, settled)
    await pilot.pause(0.1)


async def compare_ready(pilot) -> None:
    await history_ready(pilot)
    screen = pilot.app.screen
    await pilot.press(*["down"] * 4)  # newest first: the tuned run is the fifth row
    assert screen.cursor_row.experiment == "demo-tuned"
    await pilot.press("c")
    compare = pilot.app.screen
    await until(pilot, lambda: getattr(compare, "result", None) is not None or getattr(compare, "error", None))
    await pilot.pause(0.1)


@pytest.mark.parametrize("size", SIZES)
def test_dashboard(snap_compare, night, size):
    assert snap_compare(app_for(night), terminal_size=size, run_before=dashboard_ready)


@pytest.mark.parametrize("size", SIZES)
def test_history(snap_compare, night, size):
    assert snap_compare(app_for(night), terminal_size=size, run_before=history_ready)


@pytest.mark.parametrize("size", SIZES)
def test_compare(snap_compare, night, size):
    assert snap_compare(app_for(night), terminal_size=size, run_before=compare_ready)
