"""Several runs on one chart (issue 17): `space` marks runs on the dashboard, the loss chart overlays
them with a legend, the throughput panel lists their tokens/s, and `t` also puts tokens seen on x.

Runs are written synthetically (test_tui_data.make_run); the chart is inspected through what it
plotted (`LossChart.drawn`, its legend), not through pixels.
"""

from __future__ import annotations

import math
import random

import pytest
from labtui.engine.rundir import store
from labtui.tui import tail as tail_mod
from labtui.tui.series import Point, Series, remap
from labtui.tui.tail import RunTail
from labtui.tui.widgets.loss_chart import LossChart, short_label
from labtui.tui.widgets.run_list import RunList
from labtui.tui.widgets.run_panels import ThroughputPanel
from test_tui_app import app_for, until
from test_tui_data import T0, make_run

pytestmark = pytest.mark.anyio

LABELS = ("alpha·a000", "beta·a001", "gamma·a002")


def three_runs(ws: store.Workspace) -> list[store.Run]:
    """Three finished runs, alpha oldest; beta has a NaN loss at step 100."""
    return [make_run(ws, f"20261122-0{i}0000-{name}-a00{i}", name, created=T0 + i * 60, seed=i,
                     loss0=2.0 + i, nan_steps=(100,) if name == "beta" else ())
            for i, name in enumerate(("alpha", "beta", "gamma"))]


async def mark_all(pilot, app, n: int) -> LossChart:
    """Mark the first `n` rows of the run list (newest first), one after another."""
    for _ in range(n):
        await pilot.press("space", "down")
    chart = app.screen.query_one(LossChart)
    await until(pilot, lambda: len(chart.overlay) == n and len(chart.drawn) == n, what=f"{n} runs on the chart")
    return chart


async def test_three_marked_runs_are_three_series_with_a_legend(ws):
    three_runs(ws)
    app = app_for(ws)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.snapshot is not None and app.snapshot.caught_up, what="the selected run")
        chart = app.screen.query_one(LossChart)
        await until(pilot, lambda: len(chart.drawn) == 1, what="the selected run drawn")
        assert chart.drawn[0]["label"] == ""  # nothing marked: the selected run alone
        assert not chart.border_subtitle

        chart = await mark_all(pilot, app, 3)
        await pilot.pause(0.1)
        drawn = {d["label"]: d for d in chart.drawn}
        assert set(drawn) == set(LABELS)
        assert len({d["color"] for d in chart.drawn}) == 3  # a colour each
        for d in chart.drawn:
            assert d["train"] > 10 and d["eval"] == 4  # 200 steps logged every 5, an eval every 50
        legend = chart.border_subtitle
        assert all(label in legend for label in LABELS)
        assert chart.styles.border_bottom[0] == "solid"  # the bottom border that shows the legend is drawn
        assert "3 marked" in chart.border_title and "1 NaN" in chart.border_title  # beta's NaN is still marked

        # the run list shows the marks; the throughput panel lists the three runs' tokens/s
        table = app.screen.query_one(RunList)
        names = [table.get_cell(row.value, "run").plain for row in table.rows]
        assert all(name.endswith(" ●") for name in names)
        panel = app.screen.query_one(ThroughputPanel)._text.plain
        lines = [ln for ln in panel.splitlines() if ln.startswith("━")]
        assert [ln.split()[1] for ln in lines] == ["gamma·a002", "beta·a001", "alpha·a000"]  # in the order marked
        assert all(ln.split()[-1] == "2000" for ln in lines)  # tokens_per_s_avg of each run

        # space on a marked run unmarks it: two series, its colour free for the next mark
        assert app.selected_id.endswith("alpha-a000")  # the last row: down went no further
        await pilot.press("space")
        await until(pilot, lambda: len(chart.drawn) == 2, what="two runs on the chart")
        assert {d["label"] for d in chart.drawn} == {"gamma·a002", "beta·a001"}
        assert "alpha·a000" not in chart.border_subtitle
        await pilot.press("up", "space", "up", "space")  # none marked: no legend, and no border for it
        await until(pilot, lambda: chart.border_subtitle is None, what="no legend")
        await pilot.pause(0.05)
        assert chart.styles.border_bottom[0] in ("", "none")


async def test_the_overlay_keeps_its_runs_on_every_axis_and_in_log_scale(ws):
    three_runs(ws)
    app = app_for(ws)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.snapshot is not None and app.snapshot.caught_up, what="the selected run")
        chart = await mark_all(pilot, app, 3)
        for axis in ("time", "tokens"):
            await pilot.press("t")
            await pilot.pause(0.1)
            assert chart.axis == axis
            chart.render()
            assert len(chart.drawn) == 3 and all(d["train"] > 10 and d["eval"] == 4 for d in chart.drawn), axis
        assert "tokens (k)" in chart.border_title  # make_run counts 4,000 tokens a step: 800k at the end
        await pilot.press("g", "m")
        chart.render()
        assert chart.log_y and len(chart.drawn) == 3
        await pilot.press("t")
        assert chart.axis == "step"


def test_remap_carries_steps_through_the_tokens_table():
    def pt(x: float, bad_x: float = math.nan) -> Point:
        return Point(x, 1.0, 1.0, 1.0, 1.0, (1.0,), 1, 0, x, bad_x)

    table = [(10.0, 1000.0), (20.0, 3000.0)]
    got = remap([pt(5.0), pt(10.0), pt(15.0, bad_x=12.0), pt(30.0)], table)
    assert [p.x for p in got] == [500.0, 1000.0, 2000.0, 4500.0]  # (0,0) first; past the end at 3000/20 a step
    assert got[2].bad_x == 1400.0 and math.isnan(got[0].bad_x)
    assert remap([pt(5.0)], []) == []


def write_metrics(run_dir, n: int, indexed: bool) -> None:
    w = store.IndexedJsonlWriter(run_dir / store.METRICS_FILE) if indexed else store.JsonlWriter(run_dir / store.METRICS_FILE)
    rng = random.Random(0)
    tokens = 0
    w.write({"kind": "start", "t": 1000.0, "step": 0, "resumed": False})
    for step in range(1, n + 1):
        tokens += rng.randint(100, 200)
        w.write({"kind": "train", "t": 1000.0 + step, "step": step, "loss": rng.random(), "tokens": tokens})
    w.close()


@pytest.mark.parametrize("n", [300, 5000])
def test_tokens_seen_from_the_index_match_tokens_seen_from_jsonl(tmp_path, monkeypatch, n):
    for name, indexed in (("fast", True), ("plain", False)):
        (tmp_path / name).mkdir()
        write_metrics(tmp_path / name, n, indexed)
    monkeypatch.setattr(tail_mod, "INDEX_MIN_BYTES", 0)
    fast = RunTail(tmp_path / "fast")
    fast.poll()
    plain = RunTail(tmp_path / "plain")
    plain.poll()
    assert fast.indexed_records > 0 and plain.indexed_records == 0
    a, b = fast.snapshot().tokens_at, plain.snapshot().tokens_at
    truth = {float(r["step"]): float(r["tokens"]) for r in store.read_jsonl(tmp_path / "plain" / store.METRICS_FILE)
             if r.get("kind") == "train"}
    # the index's tail samples some train lines, the JSONL's keeps every one (thinned past 1024): each
    # pair is the run's own, both end at the last record, and the tokens axes they give agree within a column
    assert all(truth[s] == t for s, t in a) and all(truth[s] == t for s, t in b)
    assert a[-1] == b[-1] == (float(n), truth[float(n)])
    if n <= 2 * tail_mod.TOKENS_KEPT:
        assert len(b) == n
    else:
        assert tail_mod.TOKENS_KEPT <= len(b) <= 2 * tail_mod.TOKENS_KEPT + 1
    steps = [Point(float(s), 1.0, 1.0, 1.0, 1.0, (1.0,), 1, 0, float(s), math.nan) for s in range(1, n + 1, 7)]
    for p, q in zip(remap(steps, a), remap(steps, b)):
        assert abs(p.x - q.x) <= 0.01 * b[-1][1], (p.x, q.x)  # within 1% of the axis


def test_a_resume_forgets_the_tokens_of_the_abandoned_steps(tmp_path):
    path = tmp_path / store.METRICS_FILE
    for rec in ({"kind": "start", "t": 0, "step": 0, "resumed": False},
                *({"kind": "train", "t": s, "step": s, "loss": 1.0, "tokens": 100 * s} for s in range(1, 11)),
                {"kind": "start", "t": 11, "step": 6, "resumed": True},
                {"kind": "train", "t": 12, "step": 7, "loss": 1.0, "tokens": 777}):
        store.append_jsonl(path, rec)
    tail = RunTail(tmp_path)
    tail.poll()
    assert tail.snapshot().tokens_at[-2:] == ((6.0, 600.0), (7.0, 777.0))


def test_series_points_on_the_tokens_axis_keep_their_order():
    s = Series(64)
    for step in range(1, 200):
        s.add(step, 1.0 / step)
    got = remap(s.points(), [(float(x), float(x * x)) for x in range(1, 200, 7)])
    assert [p.x for p in got] == sorted(p.x for p in got)


def test_a_narrow_legend_keeps_each_runs_id_tail():
    assert short_label("lr-sweep-long-name·a001", 14) == "lr-sweep…·a001"
    assert short_label("demo·a001", 14) == "demo·a001"
    assert short_label("no-tail-at-all-here", 8) == "no-tail…"
