"""The chart's pure logic: debiased EMA (worked by hand), bounded downsampling, formatting."""

from __future__ import annotations

import math
import random

import pytest
from labtui.tui import format as fmt
from labtui.tui.series import Ema, Series, downsample, ema


def test_ema_is_tensorboards_debiased_ema_worked_by_hand():
    # w = 0.5: last = 0.5, 1.25, 2.125; debias 1 - 0.5^n = 0.5, 0.75, 0.875
    assert ema([1.0, 2.0, 3.0], 0.5) == pytest.approx([1.0, 1.25 / 0.75, 2.125 / 0.875])
    assert ema([4.0, 1.0], 0.0) == [4.0, 1.0]  # weight 0 is the raw series


def test_ema_starts_at_the_first_value_not_at_zero():
    # undebiased, 0.9-weight EMA would start at 0.1 * 10 = 1.0
    assert ema([10.0], 0.9) == pytest.approx([10.0])
    assert ema([3.0] * 50, 0.95) == pytest.approx([3.0] * 50)


def test_ema_passes_non_finite_values_through_and_skips_them():
    out = ema([1.0, math.nan, 3.0], 0.5)
    assert out[0] == 1.0 and math.isnan(out[1])
    assert out[2] == pytest.approx(ema([1.0, 3.0], 0.5)[1])  # as if the NaN was not there
    assert ema([math.inf], 0.5) == [math.inf]


def test_ema_rejects_weight_one():
    with pytest.raises(ValueError):
        Ema(1.0)


def test_series_keeps_every_point_while_it_fits():
    s = Series(capacity=8, weights=(0.0, 0.5))
    for step, y in [(0, 1.0), (1, 2.0), (2, 3.0)]:
        s.add(step, y)
    pts = s.points()
    assert [p.x for p in pts] == [0, 1, 2]
    assert [p.mean for p in pts] == [1.0, 2.0, 3.0]
    assert [p.smooth[1] for p in pts] == pytest.approx(ema([1.0, 2.0, 3.0], 0.5))


def test_series_merges_pairs_and_keeps_the_envelope():
    s = Series(capacity=4)
    for step, y in enumerate([5.0, 1.0, 2.0, 8.0, 3.0]):  # step 4 overflows 4 buckets of width 1
        s.add(step, y)
    assert s.width == 2 and len(s) == 3
    a, b, c = s.points()
    assert (a.lo, a.hi, a.mean, a.n) == (1.0, 5.0, 3.0, 2)
    assert (b.lo, b.hi, b.mean, b.last) == (2.0, 8.0, 5.0, 8.0)
    assert (c.lo, c.hi, c.x) == (3.0, 3.0, 4.0)


def test_series_memory_is_bounded_for_a_million_points_and_spikes_survive():
    s = Series(capacity=512)
    rng = random.Random(0)
    for step in range(1_000_000):
        y = 2.0 / (1 + step / 1e4) + rng.random() * 0.01
        if step == 777_777:
            y = 50.0  # one spike
        if step == 123_456:
            y = math.nan
        s.add(step, y)
    assert len(s) <= 512  # the whole state: a few hundred buckets, not a million points
    pts = s.points()
    assert max(p.hi for p in pts) == 50.0
    assert sum(p.bad for p in pts) == 1 and s.bad == 1 and s.count == 1_000_000
    nan_bucket = next(p for p in pts if p.bad)
    assert nan_bucket.bad_x == 123_456
    # re-bucketing to a 60-column chart keeps the spike and the NaN
    view = downsample(pts, 60)
    assert len(view) <= 60
    assert max(p.hi for p in view) == 50.0 and sum(p.bad for p in view) == 1


def test_downsample_merges_counts_and_takes_the_rightmost_smooth():
    s = Series(capacity=64, weights=(0.0, 0.9))
    values = [float(i % 7) for i in range(40)]
    for i, y in enumerate(values):
        s.add(i, y)
    view = downsample(s.points(), 4)
    assert len(view) == 4
    assert sum(p.n for p in view) == 40
    assert view[-1].smooth[1] == pytest.approx(ema(values, 0.9)[-1])
    assert view[0].lo == 0.0 and view[0].hi == 6.0
    assert sum(p.mean * p.n for p in view) == pytest.approx(sum(values))


def test_a_bucket_with_only_nan_is_kept_as_a_mark():
    s = Series(capacity=8)
    s.add(0, 1.0)
    s.add(1, math.inf)
    pts = s.points()
    assert pts[1].n == 0 and pts[1].bad == 1 and math.isnan(pts[1].mean)


def test_series_is_pure_python():
    import labtui.engine.analysis.smoothing
    import labtui.tui.series

    def imports(module) -> list[str]:
        src = open(module.__file__).read()
        return [ln.split("  #")[0] for ln in src.splitlines() if ln.startswith(("import ", "from "))]

    assert imports(labtui.tui.series) == ["from __future__ import annotations", "import math",
                                          "from dataclasses import dataclass", "from typing import Iterable, Sequence",
                                          "from labtui.engine.analysis.smoothing import Ema, ema"]
    assert imports(labtui.engine.analysis.smoothing) == ["from __future__ import annotations", "import math",
                                                         "from typing import Iterable"]


def test_format_helpers():
    assert fmt.age(100.0, 100.0 + 3 * 3600 + 5) == "3h"
    assert fmt.duration(3725) == "1:02:05"
    assert fmt.duration(65) == "1:05"
    assert fmt.num(math.nan) == "NaN" and fmt.num(math.inf) == "Inf" and fmt.num(0.123456) == "0.1235"
    assert fmt.bar(0.5, 4) == "██░░"
    assert fmt.sparkline([0, 1, 2, None], 4) == "▁▅█ "  # 1 of 0..2 -> level 3.5 of 0..7 -> 4
    assert fmt.p_value(0.0004) == "<0.001 ***" and fmt.p_value(0.0312) == "0.0312 *" and fmt.p_value(0.5) == "0.500"
    assert fmt.short_id("20261122-030311-demo-baseline-37df", "demo-baseline") == "demo-baseline·37df"
    assert fmt.changed_summary({"lora.r": [4, 16], "training.learning_rate": [5e-4, 2e-3]}) == \
        "lora.r 4→16, learning_rate 0.0005→0.002"


def test_truncate_forgets_the_steps_a_resumed_run_redoes():
    s = Series(capacity=8)
    for step, y in [(0, 1.0), (1, 2.0), (2, 9.0), (3, 9.0)]:
        s.add(step, y)
    s.truncate(1)  # resumed from the checkpoint at step 1
    assert [p.x for p in s.points()] == [0, 1] and s.count == 2 and s.y_hi == 2.0
    s.add(2, 3.0)
    assert [p.mean for p in s.points()] == [1.0, 2.0, 3.0]


def test_run_tail_applies_resumes(tmp_path):
    from labtui.engine.rundir import store
    from labtui.tui.tail import RunTail

    path = tmp_path / "run"
    path.mkdir()
    metrics = path / store.METRICS_FILE
    for rec in ([{"kind": "start", "step": 0, "t": 0.0}]
                + [{"kind": "train", "step": s, "t": float(s), "loss": 1.0} for s in (1, 2, 3, 4)]):
        store.append_jsonl(metrics, rec)
    tail = RunTail(path)
    tail.poll()
    store.append_jsonl(metrics, {"kind": "start", "step": 2, "t": 10.0, "resumed": True})
    store.append_jsonl(metrics, {"kind": "train", "step": 3, "t": 11.0, "loss": 0.5})
    tail.poll()
    pts = tail.snapshot().train["step"]
    assert [(p.x, p.mean) for p in pts] == [(1, 1.0), (2, 1.0), (3, 0.5)]  # step 4 of the crashed segment is gone
