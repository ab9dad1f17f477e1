"""Issue 14 in the TUI: a Slurm run looks and behaves like a local one, plus its job id, node and Slurm state.

Fabricated run directories written as the engine writes them (test_tui_data.make_run, then state.json's
`executor` and `slurm` through `Run.update_state`, as the launcher and runtime.slurm_runs write them), a
fixed clock. The monitor's Slurm sync is driven for real: with Slurm's commands off the PATH it must say
nothing; with the one-node cluster of scripts/slurm-cluster up, a run submitted with `labtui run --slurm`
goes queued/running -> completed on the dashboard.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from labtui.engine.rundir import store
from labtui.engine.runtime import slurm
from labtui.tui import monitor as monitor_mod
from labtui.tui.scan import Scanner
from labtui.tui.screens.run_actions import why_disabled
from test_ranks_tui import panel_lines, screen_text
from test_tui_app import app_for, until
from test_tui_data import T0, clock, make_run

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[1]
QUEUED, RUNNING, TIMED_OUT = "20261122-010000-wait-q001", "20261122-020000-busy-r002", "20261122-000000-slow-t003"


def slurm_job(job_id: str, state: str, reason: str | None = None, node: str | None = None) -> dict:
    """state.json's `slurm` as runtime.slurm_runs writes it: `reason` is slurm.describe's line."""
    info = slurm.JobInfo(job_id, state, reason=reason, node=node, time_limit="00:10:00")
    return {"job_id": job_id, "cluster": None, "state": state, "reason": slurm.describe(info)[1], "node": node,
            "submitted": T0, "checked": clock() - 1, "job_ids": [job_id]}


TIMEOUT_ERROR = slurm.describe(slurm.JobInfo("103", "TIMEOUT", node="gpu-node-7", time_limit="00:10:00"))[1]


def slurm_runs(ws: store.Workspace) -> dict[str, store.Run]:
    """A queued Slurm run waiting for Resources, one running on node gpu-node-7 (no pid on this host:
    alive by its heartbeat), one that Slurm ended at its time limit."""
    queued = make_run(ws, QUEUED, "wait", status="queued", created=T0 + 3000)
    queued.update_state(executor="slurm", slurm=slurm_job("101", "PENDING", "Resources"))
    running = make_run(ws, RUNNING, "busy", status="running", steps=60, max_steps=200, live="remote", created=T0 + 2000)
    running.update_state(executor="slurm", slurm=slurm_job("102", "RUNNING", node="gpu-node-7"))
    timed_out = make_run(ws, TIMED_OUT, "slow", status="crashed", steps=80, max_steps=200, error=TIMEOUT_ERROR,
                         created=T0 + 1000)
    timed_out.update_state(executor="slurm", slurm=slurm_job("103", "TIMEOUT", node="gpu-node-7"))
    return {"queued": queued, "running": running, "timed_out": timed_out}


@pytest.fixture
def ws(tmp_path) -> store.Workspace:
    w = store.Workspace(tmp_path / "ws")
    w.logs.mkdir(parents=True)
    return w


@pytest.fixture
def no_slurm(tmp_path, monkeypatch) -> None:
    """A machine without Slurm's commands: PATH holds only this Python."""
    bare = tmp_path / "bin"
    bare.mkdir()
    (bare / "python").symlink_to(sys.executable)
    monkeypatch.setenv("PATH", str(bare))


def list_row(app, run_id: str) -> str:
    """The run list's line for `run_id` as drawn."""
    short = run_id.split("-")[2]
    lines = [ln for ln in panel_lines(app, "#runs") if short in ln]
    assert len(lines) == 1, panel_lines(app, "#runs")
    return lines[0]


async def test_run_list_shows_the_queued_reason_and_job_ids(ws, no_slurm):
    slurm_runs(ws)
    app = app_for(ws)
    async with app.run_test(size=(120, 30)) as pilot:
        await until(pilot, lambda: len(app.runs) == 3, what="the three runs")
        await pilot.pause(0.2)
        row = list_row(app, QUEUED)
        assert "queued (Resources)" in row and "job 101" in row
        assert "▶ running" not in row
        assert "running" in list_row(app, RUNNING) and "60/200" in list_row(app, RUNNING)
        assert "crashed" in list_row(app, TIMED_OUT)


async def test_80x24_reads_well(ws, no_slurm):
    """80 columns: the queued run says `queued` and its job id, no reason (no room), and every row fits."""
    slurm_runs(ws)
    app = app_for(ws)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: len(app.runs) == 3, what="the three runs")
        await pilot.pause(0.2)
        row = list_row(app, QUEUED)
        assert "queued" in row and "job 101" in row and "Resources" not in row
        table = app.screen.query_one("#runs")
        assert table.virtual_size.width <= table.size.width, "the run list scrolls sideways at 80 columns"
        app.select_run(RUNNING)
        await until(pilot, lambda: "slurm job 102" in "\n".join(panel_lines(app, "#status")), what="the status panel")
        status = "\n".join(panel_lines(app, "#status"))
        assert "slurm job 102 on node gpu-node-7 · RUNNING" in status


async def test_status_panel_says_job_node_state_script_and_end_reason(ws, no_slurm):
    runs = slurm_runs(ws)
    app = app_for(ws)
    async with app.run_test(size=(140, 36)) as pilot:
        await until(pilot, lambda: len(app.runs) == 3, what="the three runs")

        async def status_of(run_id: str, expect: str) -> str:
            app.select_run(run_id)
            await until(pilot, lambda: expect in "\n".join(panel_lines(app, "#status")), what=expect)
            return "\n".join(panel_lines(app, "#status"))

        text = await status_of(QUEUED, "slurm job 101 · PENDING: Resources")
        assert f"logs/{QUEUED}/job.sbatch" in text
        text = await status_of(RUNNING, "slurm job 102 on node gpu-node-7 · RUNNING")
        assert "pid 4242 on gpu-node-7" in text  # the pid on the node, as state.json says it
        text = await status_of(TIMED_OUT, "slurm job 103 on node gpu-node-7 · TIMEOUT")
        assert "Slurm job 103 hit its time limit (00:10:00)" in text
        assert runs["timed_out"].state()["status"] == "crashed"


async def test_run_detail_shows_the_job_and_its_files(ws, no_slurm):
    runs = slurm_runs(ws)
    app = app_for(ws)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: len(app.runs) == 3, what="the three runs")
        app.select_run(TIMED_OUT)
        await pilot.pause(0.1)
        from labtui.tui.screens.detail import RunDetailScreen

        app.push_screen(RunDetailScreen(TIMED_OUT))
        await until(pilot, lambda: "slurm job 103" in screen_text(app), what="the detail screen's Slurm lines")
        text = str(app.screen.query_one("#detail-info").render())
        assert "slurm job 103 on node gpu-node-7 · TIMEOUT" in text
        assert f"sbatch script {runs['timed_out'].path / 'job.sbatch'}" in text
        assert f"slurm output  {runs['timed_out'].path / 'slurm-103.out'}" in text
        assert "error: Slurm job 103 hit its time limit (00:10:00)" in text


async def test_keys_act_on_slurm_runs(ws, no_slurm):
    """s and r are not refused for a Slurm run without a pid here; a queued Slurm job can be stopped
    (cancelled) but not moved in labtui's queue."""
    slurm_runs(ws)
    rows = {r.id: r for r in Scanner(ws, clock, persist=False).scan()}
    running, queued, timed_out = rows[RUNNING], rows[QUEUED], rows[TIMED_OUT]
    assert running.on_slurm and running.live
    assert why_disabled("stop", running) is None
    assert why_disabled("resume", timed_out) is None
    assert why_disabled("stop", queued) is None
    assert "Slurm orders it" in why_disabled("move_queued", queued)
    assert why_disabled("resume", running) is not None  # as for a local run: nothing to resume yet

    app = app_for(ws)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: len(app.runs) == 3, what="the three runs")
        app.select_run(RUNNING)
        await pilot.pause(0.1)
        await pilot.press("s")
        await until(pilot, lambda: "Stop " + RUNNING in screen_text(app), what="the stop question")
        await pilot.press("escape")
        await until(pilot, lambda: "Stop " + RUNNING not in screen_text(app), what="the question gone")
        app.select_run(QUEUED)
        await pilot.pause(0.1)
        await pilot.press("s")
        await until(pilot, lambda: "Its Slurm job has not started" in screen_text(app), what="the pending job's question")
        await pilot.press("escape")


def test_monitor_without_slurm_says_nothing(ws, no_slurm):
    """Slurm runs not ended, Slurm's commands absent: the monitor's ticks report no error."""
    slurm_runs(ws)
    posted = []
    mon = monitor_mod.Monitor(ws, posted.append, clock=clock)
    mon.prime()
    assert shutil.which("squeue") is None
    for _ in range(3):
        mon.tick()
    assert mon.last_error is None
    assert {r.id: r.status for r in mon.rows}[QUEUED] == "queued"


def test_finished_slurm_row_survives_the_cache(ws, no_slurm):
    """The finished row read back from logs/.labtui-cache/runs.json keeps its Slurm job."""
    slurm_runs(ws)
    first = {r.id: r for r in Scanner(ws, clock).scan()}
    again = {r.id: r for r in Scanner(ws, clock).scan()}  # a new TUI: finished rows from the cache file
    assert again[TIMED_OUT] == first[TIMED_OUT]
    assert again[TIMED_OUT].slurm["state"] == "TIMEOUT" and again[TIMED_OUT].executor == "slurm"


async def test_launch_form_submits_to_slurm(ws):
    """The Launch screen's executor field: `slurm` puts `--set launch.executor=slurm` in the command."""
    exp = ws.root / "experiments"
    exp.mkdir()
    for f in ("demo-baseline.yaml", "demo-tuned.yaml"):  # tuned extends baseline
        shutil.copy(ROOT / "experiments" / f, exp / f)
    app = app_for(ws)
    async with app.run_test(size=(100, 34)) as pilot:
        await pilot.press("n")
        from labtui.tui.screens.launch import LaunchScreen

        await until(pilot, lambda: isinstance(app.screen, LaunchScreen) and app.screen.preview_ok, what="the preview")
        screen = app.screen
        assert screen._input("launch.executor").placeholder == "local"
        screen._input("launch.executor").value = "slurm"
        await until(pilot, lambda: "launch.executor=slurm" in screen_text(app) and screen.executor == "slurm",
                    what="the command with the executor")
        screen._input("launch.executor").value = "cloud"
        await until(pilot, lambda: "must be one of local, slurm" in screen_text(app), what="the field's error")


# --- against the one-node cluster (scripts/slurm-cluster) -------------------------------------


def cluster_up() -> bool:
    try:
        return subprocess.run([str(ROOT / "scripts" / "slurm-cluster"), "status"], capture_output=True,
                              timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def test_monitor_tick_asks_slurm(ws):
    """The monitor's tick itself reconciles a Slurm run with the real Slurm: a queued run whose job
    Slurm does not know gets the engine's UNKNOWN and its line, with no other reader running."""
    if not cluster_up():
        pytest.skip("the Slurm cluster is not up (scripts/slurm-cluster start)")
    run = make_run(ws, QUEUED, "wait", status="queued", created=T0 + 3000)
    run.update_state(executor="slurm", slurm=slurm_job("999999", "PENDING", "Priority"))
    mon = monitor_mod.Monitor(ws, lambda m: None)
    mon.prime()
    mon.tick()
    assert mon.last_error is None
    job = run.raw_state()["slurm"]
    assert job["state"] == slurm.UNKNOWN and "999999" in job["reason"], job
    assert run.raw_state()["status"] == "queued"  # Slurm's silence alone ends nothing


@pytest.mark.e2e
async def test_slurm_run_goes_queued_running_completed_on_screen(workspace):
    """A demo run submitted with `labtui run --slurm`: the dashboard (its monitor syncing with the real
    Slurm) shows it queued or running with its job line, then completed."""
    if not cluster_up():
        pytest.skip("the Slurm cluster is not up (scripts/slurm-cluster start)")
    from conftest import fast_overrides, labtui

    out = labtui(workspace, "run", "experiments/demo-tuned.yaml", "--slurm", *fast_overrides(10), timeout=300)
    assert out.returncode == 0, out.stderr
    run_id = out.stdout.split()[-1]
    job = store.Run(workspace.logs / run_id).raw_state()["slurm"]["job_id"]
    app = app_for(workspace, poll_interval=0.5, clock=time.time)
    seen: list[str] = []
    job_lines: set[str] = set()
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: app.row(run_id) is not None, what="the run in the list")
        app.select_run(run_id)

        def ended() -> bool:
            row = app.row(run_id)
            if row is not None and (not seen or seen[-1] != row.status):
                seen.append(row.status)
            job_lines.update(ln.strip() for ln in panel_lines(app, "#status") if f"slurm job {job}" in ln)
            return row is not None and row.final

        await until(pilot, ended, timeout=300, what="the Slurm run's end")
        await until(pilot, lambda: any(f"slurm job {job}" in ln for ln in panel_lines(app, "#status")),
                    what="the ended run's job line")
    assert seen[-1] == "completed", (seen, store.Run(workspace.logs / run_id).raw_state())
    assert seen[:-1] and set(seen[:-1]) <= {"queued", "starting", "running"}, seen
    assert any(" · PENDING" in ln or " · RUNNING" in ln for ln in job_lines), job_lines
