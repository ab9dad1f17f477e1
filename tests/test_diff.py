"""Two configs side by side (issue 17): `labtui diff A B [--json]` and the TUI's `d` (dashboard with
two runs marked, History with two rows selected) list only the resolved config keys that differ."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import labtui
from labtui.engine.config.diff import config_diff
from labtui.engine.rundir import store
from labtui.tui.screens.diff import ConfigDiffScreen
from labtui.tui.screens.history import HistoryScreen
from test_tui_app import app_for, until
from test_tui_data import T0, make_run
from textual.widgets import DataTable

A_ID, B_ID, C_ID = "20261122-010000-alpha-a001", "20261122-020000-beta-b002", "20261122-030000-alpha-c003"


def edit_config(run: store.Run, change) -> None:
    cfg = run.config()
    change(cfg)
    run.file(store.CONFIG_FILE).write_text(yaml.safe_dump(cfg, sort_keys=False))


@pytest.fixture
def runs(ws) -> store.Workspace:
    """alpha (the base config), beta (lora.r 8, a lower learning rate, eval.n gone, an extra key), and
    a second alpha with alpha's config."""
    make_run(ws, A_ID, "alpha", created=T0)
    beta = make_run(ws, B_ID, "beta", created=T0 + 60)
    make_run(ws, C_ID, "alpha", created=T0 + 120)

    def change(cfg: dict) -> None:
        cfg["lora"]["r"] = 8
        cfg["training"]["learning_rate"] = 5e-4
        del cfg["eval"]["n"]
        cfg["extra"] = {"tags": ["a", "b"]}

    edit_config(beta, change)
    return ws


EXPECTED = [  # key, A, B, missing
    ("eval.n", 300, None, "b"),
    ("extra.tags", None, ["a", "b"], "a"),
    ("lora.r", 16, 8, None),
    ("name", "alpha", "beta", None),
    ("training.learning_rate", 2e-3, 5e-4, None),
]


def test_config_diff_lists_only_the_keys_that_differ():
    a = {"lora": {"r": 16, "alpha": 32}, "lr": 1, "flag": True, "empty": {}, "mods": ["q", "v"], "x": None}
    b = {"lora": {"r": 16, "alpha": 16}, "lr": 1.0, "flag": 1, "empty": {}, "mods": ["q", "k"], "y": 0}
    got = [(d["key"], d["a"], d["b"], d["missing"]) for d in config_diff(a, b)]
    assert got == [
        ("flag", True, 1, None),  # a YAML bool is not the number 1
        ("lora.alpha", 32, 16, None),
        ("mods", ["q", "v"], ["q", "k"], None),
        ("x", None, None, "b"),  # a null value is still a key: missing on B
        ("y", None, 0, "a"),
    ]  # lr 1 == 1.0, the same lora.r and the empty section are not differences
    assert config_diff(a, a) == []


def test_labtui_diff_prints_the_differences(runs):
    out = labtui(runs, "diff", "alpha-a001", "beta", check=True).stdout
    lines = out.splitlines()
    assert lines[:3] == [f"A  {A_ID}", f"B  {B_ID}", "5 keys differ"]
    rows = [ln.split() for ln in lines[4:]]
    assert rows == [["eval.n", "300", "(missing)"], ["extra.tags", "(missing)", "[a,", "b]"], ["lora.r", "16", "8"],
                    ["name", "alpha", "beta"], ["training.learning_rate", "0.002", "0.0005"]]


def test_labtui_diff_json(runs):
    got = json.loads(labtui(runs, "diff", A_ID, B_ID, "--json", check=True).stdout)
    assert got["a"] == A_ID and got["b"] == B_ID
    assert [(d["key"], d["a"], d["b"], d["missing"]) for d in got["differences"]] == EXPECTED


def test_identical_configs_have_no_differences(runs):
    proc = labtui(runs, "diff", A_ID, C_ID)
    assert proc.returncode == 0 and proc.stdout.splitlines()[-1] == "no differences"
    assert json.loads(labtui(runs, "diff", A_ID, C_ID, "--json", check=True).stdout)["differences"] == []


def test_an_unknown_run_is_one_message_and_exit_2(runs):
    proc = labtui(runs, "diff", A_ID, "nosuchrun")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "no run matches 'nosuchrun'" in proc.stderr
    runs.logs.joinpath(C_ID, store.CONFIG_FILE).unlink()
    proc = labtui(runs, "diff", A_ID, C_ID)
    assert proc.returncode == 2 and f"run {C_ID} has no resolved config" in proc.stderr


# --- the TUI: d --------------------------------------------------------------------------------

def table_rows(screen: ConfigDiffScreen) -> list[tuple[str, ...]]:
    table = screen.query_one(DataTable)
    return [tuple(cell.plain for cell in table.get_row(key)) for key in table.rows]


@pytest.mark.anyio
async def test_d_on_the_dashboard_shows_the_two_marked_runs_differences(runs):
    app = app_for(runs)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.snapshot is not None, what="the dashboard")
        dashboard = app.screen
        await pilot.press("d")  # nothing marked: it says what to do, no screen
        await pilot.pause(0.05)
        assert app.screen is dashboard
        assert any("mark two runs with space" in n.message for n in app._notifications)

        # the list is newest first: alpha-c003, beta, alpha-a001; mark beta, then alpha-a001 (A is beta)
        await pilot.press("down", "space", "down", "space", "d")
        await until(pilot, lambda: isinstance(app.screen, ConfigDiffScreen) and app.screen.result is not None,
                    what="the diff screen")
        screen = app.screen
        assert (screen.a.id, screen.b.id) == (B_ID, A_ID)
        assert table_rows(screen) == [("eval.n", "(missing)", "300"), ("extra.tags", "[a, b]", "(missing)"),
                                      ("lora.r", "8", "16"), ("name", "beta", "alpha"),
                                      ("training.learning_rate", "0.0005", "0.002")]
        await pilot.press("x")  # swap: A is alpha
        await until(pilot, lambda: screen.result["a"] == A_ID, what="swapped")
        assert table_rows(screen)[2] == ("lora.r", "16", "8")
        await pilot.press("escape")
        assert app.screen is dashboard


@pytest.mark.anyio
async def test_d_in_history_diffs_the_two_selected_rows_runs(runs):
    app = app_for(runs)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.snapshot is not None, what="the dashboard")
        app.push_screen(HistoryScreen())
        await until(pilot, lambda: isinstance(app.screen, HistoryScreen) and app.screen.loaded
                    and app.screen.query_one("#history", DataTable).row_count == 3, what="History")
        history = app.screen
        await pilot.press("space", "d")  # one selected: not yet
        await pilot.pause(0.05)
        assert app.screen is history
        assert any("select two rows with space" in n.message for n in app._notifications)
        assert history.cursor_row.run_id == C_ID  # newest first
        await pilot.press("down", "space", "d")
        await until(pilot, lambda: isinstance(app.screen, ConfigDiffScreen) and app.screen.result is not None,
                    what="the diff screen")
        assert (app.screen.result["a"], app.screen.result["b"]) == (C_ID, B_ID)  # in the order selected
        assert table_rows(app.screen) == [("eval.n", "300", "(missing)"), ("extra.tags", "(missing)", "[a, b]"),
                                          ("lora.r", "16", "8"), ("name", "alpha", "beta"),
                                          ("training.learning_rate", "0.002", "0.0005")]


@pytest.mark.anyio
async def test_d_fits_80_columns_and_shows_a_long_value_whole_under_the_table(runs):
    long_text = "a hypothesis long enough to fill the screen twice over: " * 3

    def describe(cfg: dict) -> None:
        cfg["description"] = long_text

    edit_config(store.Run(runs.logs / B_ID), describe)
    app = app_for(runs)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.snapshot is not None, what="the dashboard")
        app.push_screen(ConfigDiffScreen(store.Run(runs.logs / B_ID), store.Run(runs.logs / A_ID)))
        await until(pilot, lambda: isinstance(app.screen, ConfigDiffScreen) and app.screen.result is not None,
                    what="the diff screen")
        screen = app.screen
        table = screen.query_one(DataTable)
        assert sum(c.get_render_width(table) for c in table.columns.values()) <= 80  # B's column is on screen
        assert table_rows(screen)[0][0] == "description" and table_rows(screen)[0][1].endswith("…")
        detail = " ".join(str(screen.query_one("#diff-detail").render()).split())
        assert " ".join(long_text.split()) in detail  # the highlighted key's values whole

        # a wider window fits the table again; the highlighted key stays highlighted, its values below
        await pilot.press("down", "down")
        key = table_rows(screen)[2][0]
        await pilot.resize_terminal(120, 30)
        await until(pilot, lambda: table.columns[table.coordinate_to_cell_key((0, 1)).column_key].width > 40,
                    what="the table fitted to 120 columns")
        assert table.cursor_row == 2 and table_rows(screen)[2][0] == key
        assert str(screen.query_one("#diff-detail").render()).startswith(key)
        await pilot.press("x")  # A and B swapped: the same key still highlighted
        await until(pilot, lambda: screen.result["a"] == A_ID, what="swapped")
        assert table.cursor_row == 2 and str(screen.query_one("#diff-detail").render()).startswith(key)
