"""Issue 13 in the TUI: a multi-process run's ranks in the dashboard's GPU panel and the run detail.

Fabricated run directories written as the engine writes them (test_tui_data.make_run, ranks.write_heartbeat,
store's writers), a fixed clock; only the GPU data (system.jsonl's NVML samples) is made up.
"""

from __future__ import annotations

import os
import re

import pytest
from labtui.engine.rundir import ranks, store
from labtui.tui.tail import RunTail
from test_tui_app import app_for, until
from test_tui_data import A100, GIB, clock, make_run

pytestmark = pytest.mark.anyio

TRACEBACK = """Traceback (most recent call last):
  File "/w/worker.py", line 88, in train
    trainer.train()
ValueError: bad batch at step 40"""
ROW = re.compile(r"^\s+(\d+)\s+(\d+|-)\s+(\S+)\s+(\S+)\s+(\S+)")  # rank step beat util mem/peak


def ddp_run(ws: store.Workspace, n: int, slow: int | None = None, status: str = "running") -> store.Run:
    """A torchrun run with `n` ranks on GPUs 0..n-1 at step 40 (rank `slow` at 37), each heartbeat
    written `rank + 1` seconds before the fixed clock; the last machine sample gives GPU i a util of 10 + i."""
    run = make_run(ws, "20261122-030000-ddp-g005", "ddp", status=status, steps=40, max_steps=100,
                   live=status == "running", gpus=[dict(A100, index=i) for i in range(n)])
    run.update_state(launch={"launcher": "torchrun", "nproc": n, "accelerate_config": None,
                             "command": ["torchrun", "--nproc-per-node", str(n)]})
    store.append_jsonl(run.file(store.SYSTEM_FILE), {
        "kind": "system", "t": clock() - 1, "cpu": 50.0, "cpu_count": 16, "ram_used": 20 * GIB, "ram_total": 128 * GIB,
        "ram_percent": 16.0, "gpus": [dict(A100, index=i, util=10 + i) for i in range(n)]})
    me = os.getpid()
    for r in range(n):
        ranks.write_heartbeat(run.path, {
            "rank": r, "local_rank": r, "world_size": n, "host": "node-a", "pid": me,
            "pid_start": store.process_start_time(me), "step": 37 if r == slow else 40, "step_time": clock() - 3,
            "time": clock() - 1 - r, "device": f"cuda:{r}", "mem_allocated": (20 + r) * GIB, "mem_reserved": 36 * GIB,
            "mem_peak": 41 * GIB, "state": "running"})
    return run


def panel_lines(app, selector: str) -> list[str]:
    widget = app.screen.query_one(selector)
    region = widget.content_region
    lines = [strip.text for strip in app.screen._compositor.render_strips()]
    return [ln[region.x:region.right].rstrip() for ln in lines[region.y:region.bottom]]


def rank_rows(lines: list[str]) -> dict[int, tuple]:
    return {int(m[1]): m.groups()[1:] + (ln,) for ln in lines if (m := ROW.match(ln))}


def screen_text(app) -> str:
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


def more_count(lines: list[str]) -> int:
    """N of a `+N more` line (0 without one)."""
    return sum(int(m[1]) for ln in lines if (m := re.match(r"^\+(\d+) more$", ln.strip())))


async def ranks_shown(pilot, app, n: int, rows: int | None = None) -> None:
    """Until the GPU panel accounts for all `n` ranks (shown, or counted in `+N more`), `rows` of
    them shown when given, and the panel stays the same over a few polls (a first layout may give
    the panel less room than the settled one)."""
    await until(pilot, lambda: app.snapshot is not None and app.snapshot.caught_up and len(app.snapshot.ranks) > 1,
                what="the ranks' heartbeats")
    last: list[str] = []
    steady = 0

    def settled() -> bool:
        nonlocal last, steady
        gpu = panel_lines(app, "#gpu")
        shown = len(rank_rows(gpu))
        ok = shown + more_count(gpu) == n and (rows is None or shown == rows)
        steady = steady + 1 if ok and gpu == last else 0
        last = gpu
        return steady >= 4

    await until(pilot, settled, what=f"{n} ranks in the GPU panel")


async def test_two_ranks_fit_80x24_with_the_straggler_marked(ws):
    ddp_run(ws, 2, slow=1)
    app = app_for(ws)
    async with app.run_test(size=(80, 24)) as pilot:
        await ranks_shown(pilot, app, 2, rows=2)
        gpu = panel_lines(app, "#gpu")
        rows = rank_rows(gpu)
        # rank, step, heartbeat age at the fixed clock, its own GPU's util (matched by cuda:N), torch alloc/peak
        assert rows[0][:4] == ("40", "1s", "10%", "20.0G/41.0G")
        assert rows[1][:4] == ("37", "2s", "11%", "21.0G/41.0G")
        assert rows[1][-1].endswith("◀") and not rows[0][-1].endswith("◀")
        assert "rank 1 slow: 3 steps behind" in gpu
        assert gpu[0].split() == ["rank", "step", "beat", "util", "mem/peak"]
        # the panels around it are still there, on screen
        drawn = screen_text(app)
        assert "tok/s" in drawn and "CPU 50% of 16" in drawn and "could not draw" not in drawn
        assert not app.errors


async def test_ranks_in_step_show_the_skew_and_no_straggler(ws):
    ddp_run(ws, 2)
    app = app_for(ws)
    async with app.run_test(size=(80, 24)) as pilot:
        await ranks_shown(pilot, app, 2, rows=2)
        gpu = panel_lines(app, "#gpu")
        assert "2 ranks · step skew 0" in gpu and not any("slow" in ln or "◀" in ln for ln in gpu)


@pytest.mark.parametrize("size", [(120, 40), (80, 24)])
async def test_eight_ranks_show_as_many_as_fit_and_count_the_rest(ws, size):
    ddp_run(ws, 8, slow=6)
    app = app_for(ws)
    async with app.run_test(size=size) as pilot:
        await ranks_shown(pilot, app, 8, rows=8 if size == (120, 40) else None)
        gpu = panel_lines(app, "#gpu")
        rows = rank_rows(gpu)
        assert 6 in rows and rows[6][-1].endswith("◀") and "rank 6 slow: 3 steps behind" in gpu  # always shown
        if size == (120, 40):  # all fit, with the NVML memory of each rank's GPU too
            assert sorted(rows) == list(range(8)) and rows[0][-1].split()[5] == "60/80G"
        else:  # the first ranks, the straggler, and a count of the others
            assert 2 <= len(rows) < 8 and more_count(gpu) == 8 - len(rows) and sorted(rows)[:2] == [0, 1]
        drawn = screen_text(app)
        assert "50% of 16" in drawn  # the System panel below is not pushed off the screen
        assert not app.errors


async def test_detail_shows_the_failed_rank_and_its_traceback(ws):
    run = ddp_run(ws, 2, status="failed")
    run.update_state(error="rank 1 (local rank 1) on host node-a failed: ValueError: bad batch at step 40",
                     error_rank=1, error_where=TRACEBACK)
    ranks.write_heartbeat(run.path, {**ranks.read_ranks(run.path, check_pids=False)[1], "state": "failed"})
    app = app_for(ws)
    async with app.run_test(size=(100, 40)) as pilot:
        await until(pilot, lambda: app.selected_id == run.id, what="the run selected")
        await pilot.press("enter")
        await until(pilot, lambda: "traceback" in screen_text(app), what="the detail screen's files")
        await pilot.pause(0.1)
        lines = panel_lines(app, "#detail-info")
        text = "\n".join(lines)
        words = " ".join(text.split())  # the error line wraps at the column's width
        assert "error: rank 1 (local rank 1) on host node-a failed: ValueError: bad batch at step 40" in words
        i = lines.index("traceback (root cause)")
        assert [ln.strip() for ln in lines[i + 1:i + 5]] == [ln.strip() for ln in TRACEBACK.splitlines()]
        assert "launch torchrun, 2 processes" in text
        rows = rank_rows(lines)
        assert rows[1][1] == "fail" and rows[0][0] == "40"
        assert not app.errors


def test_the_tail_reads_heartbeats_again_only_when_one_changes(tmp_path, ws):
    run = ddp_run(ws, 2)
    tail = RunTail(run.path)
    tail.poll()
    assert [r["rank"] for r in tail.snapshot().ranks] == [0, 1]
    assert not tail._poll_ranks()  # nothing changed
    rec = dict(tail.ranks[1], step=41, time=clock())
    ranks.write_heartbeat(run.path, {k: v for k, v in rec.items() if k not in ("heartbeat_age", "status")})
    assert tail.poll() and tail.snapshot().ranks[1]["step"] == 41
    one = make_run(ws, "20261122-010000-one-a001", "one", steps=20)
    single = RunTail(one.path)
    single.poll()
    assert single.snapshot().ranks == ()
