"""The TUI's fast paths give what the plain paths give: Series.extend_arrays vs add, RunTail from
metrics.idx vs from JSONL, the scanner's and History's caches vs reading the files."""

from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path

import numpy as np
import pytest
from labtui.engine.analysis import evalstore
from labtui.engine.rundir import cache, store
from labtui.tui import history_data, scan
from labtui.tui import tail as tail_mod
from labtui.tui.history_data import HistoryData
from labtui.tui.series import Series
from labtui.tui.tail import RunTail
from test_tui_data import T0, make_eval, make_run, paired_sets


def close(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def same_series(a: Series, b: Series) -> None:
    assert (a.width, a.count, a.bad, len(a)) == (b.width, b.count, b.bad, len(b))
    assert close(a.y_lo, b.y_lo) and close(a.y_hi, b.y_hi)
    for p, q in zip(a.points(), b.points()):
        for u, v in zip((p.x, p.lo, p.hi, p.mean, p.last, p.n, p.bad, p.x_last, p.bad_x, *p.smooth),
                        (q.x, q.lo, q.hi, q.mean, q.last, q.n, q.bad, q.x_last, q.bad_x, *q.smooth)):
            assert close(u, v), (p, q)
    for e, f in zip(a._emas, b._emas):
        assert e.count == f.count and close(e.last, f.last)


@pytest.mark.parametrize("seed", range(6))
def test_extend_arrays_is_add_in_a_loop(seed):
    rng = random.Random(seed)
    n = rng.randint(300, 20_000)
    xs = np.cumsum([rng.choice([0, 0.5, 1, 1, 3]) for _ in range(n)])
    ys = [rng.gauss(2, 1) if rng.random() > 0.02 else rng.choice([math.nan, math.inf, -math.inf]) for _ in range(n)]
    capacity = rng.choice([2, 7, 64, 512])
    loop, bulk = Series(capacity), Series(capacity)
    cut = rng.randint(0, n)
    for part in (slice(0, cut), slice(cut, n)):  # into an empty series, then appended to it
        for x, y in zip(xs[part], ys[part]):
            loop.add(x, y)
        bulk.extend_arrays(xs[part], ys[part])
        same_series(loop, bulk)
    for x, y in ((xs[-1] + 1, 0.5), (xs[-1] + 2, math.nan)):  # and on, point by point
        loop.add(x, y)
        bulk.add(x, y)
    same_series(loop, bulk)


def test_extend_arrays_takes_the_loop_for_x_that_goes_back():
    loop, bulk = Series(16), Series(16)
    xs = list(range(1000)) + list(range(500, 1500))
    ys = [math.sin(i) for i in range(len(xs))]
    for x, y in zip(xs, ys):
        loop.add(x, y)
    bulk.extend_arrays(xs, ys)
    same_series(loop, bulk)


def write_metrics(run_dir: Path, rng: random.Random, n: int, step: int = 0, t: float = 1000.0) -> tuple[int, float]:
    w = store.IndexedJsonlWriter(run_dir / store.METRICS_FILE)
    if step == 0:
        w.write({"kind": "start", "t": t, "step": 0, "resumed": False})
    for _ in range(n):
        step += 1
        t += 0.5
        loss = rng.random() if rng.random() > 0.01 else math.nan
        w.write({"kind": "train", "t": t, "step": step, "loss": loss, "tokens_per_s": rng.random() * 1000})
        if step % 100 == 0:
            w.write({"kind": "eval", "t": t, "step": step, "eval_loss": rng.random()})
        if step % 50 == 0:
            w.write({"kind": "memory", "t": t, "devices": []})
        if rng.random() < 0.001:  # resumed from an earlier checkpoint
            step = max(0, step - rng.randint(1, 400))
            w.write({"kind": "start", "t": t, "step": step, "resumed": True})
    w.close()
    return step, t


def same_snapshot(a, b) -> None:
    for f in ("train_count", "eval_count", "bad_count", "last_train", "last_eval", "last_memory", "start", "end",
              "t0", "tokens_per_s", "metrics_offset", "caught_up", "corrupt"):
        assert json.dumps(getattr(a, f)) == json.dumps(getattr(b, f)), f
    for name in ("train", "eval"):
        for axis in ("step", "time"):
            pa, pb = getattr(a, name)[axis], getattr(b, name)[axis]
            assert len(pa) == len(pb)
            for p, q in zip(pa, pb):
                assert all(close(u, v) for u, v in zip((p.x, p.lo, p.hi, p.mean, p.last, p.n, p.bad, *p.smooth),
                                                       (q.x, q.lo, q.hi, q.mean, q.last, q.n, q.bad, *q.smooth)))


@pytest.mark.parametrize("seed", range(3))
def test_a_tail_from_the_index_sees_what_a_tail_from_jsonl_sees(tmp_path, monkeypatch, seed):
    rng = random.Random(seed)
    step, t = write_metrics(tmp_path, rng, 5000)
    with open(tmp_path / store.METRICS_FILE, "ab") as f:
        f.write(b"not json\n")  # counted as corrupt by both
    step, t = write_metrics(tmp_path, rng, 100, step, t)
    fast, plain = RunTail(tmp_path), RunTail(tmp_path, chunk_bytes=1 << 30)
    for _ in range(4):  # the first load, then batches, polled at the same moments
        monkeypatch.setattr(tail_mod, "INDEX_MIN_BYTES", 0)
        monkeypatch.setattr(tail_mod, "INDEX_BATCH_BYTES", 0)
        fast.poll()
        monkeypatch.setattr(tail_mod, "INDEX_MIN_BYTES", 1 << 60)
        monkeypatch.setattr(tail_mod, "INDEX_BATCH_BYTES", 1 << 60)
        plain.poll()
        same_snapshot(fast.snapshot(), plain.snapshot())
        step, t = write_metrics(tmp_path, rng, rng.randint(0, 3000), step, t)
    assert fast.indexed_records > 0 and plain.indexed_records == 0
    assert fast.snapshot().corrupt == 1


def test_a_tail_reads_jsonl_the_index_does_not_cover(tmp_path, monkeypatch):
    monkeypatch.setattr(tail_mod, "INDEX_MIN_BYTES", 0)
    monkeypatch.setattr(tail_mod, "INDEX_BATCH_BYTES", 0)
    rng = random.Random(1)
    step, t = write_metrics(tmp_path, rng, 500)
    tail = RunTail(tmp_path)
    tail.poll()
    store.append_jsonl(tmp_path / store.METRICS_FILE, {"kind": "train", "t": t + 1, "step": step + 1, "loss": 0.25})
    tail.poll()
    snap = tail.snapshot()
    assert snap.last_train["step"] == step + 1 and snap.metrics_offset == (tmp_path / store.METRICS_FILE).stat().st_size


def test_a_long_system_log_is_read_from_its_tail(tmp_path, monkeypatch):
    monkeypatch.setattr(tail_mod, "SYSTEM_TAIL_BYTES", 2000)
    with open(tmp_path / store.SYSTEM_FILE, "w") as f:
        for i in range(500):
            f.write(store.dumps({"kind": "system", "t": i, "cpu": float(i)}) + "\n")
    tail = RunTail(tmp_path)
    tail.poll()
    snap = tail.snapshot()
    assert snap.last_system["cpu"] == 499.0 and snap.cpu[-1] == 499.0 and 10 < len(snap.cpu) < 100
    assert tail.system.corrupt == 0


def test_the_scanner_starts_from_its_rows_file(tmp_path, monkeypatch):
    ws = store.Workspace(tmp_path)
    for i, status in enumerate(("completed", "failed", "queued")):
        make_run(ws, f"20260101-00000{i}-demo-{i:04x}", "demo", status=status, created=T0 + i)
    first = scan.Scanner(ws).scan()
    assert cache.path_for(ws.logs, scan.CACHE_NAME).exists()
    calls = []
    real = scan.row_for
    monkeypatch.setattr(scan, "row_for", lambda run, now=None: calls.append(run.id) or real(run, now))
    again = scan.Scanner(ws).scan()
    assert again == first and calls == [first[2].id]  # only the queued run is read again
    store.atomic_write_json(ws.logs / first[0].id / store.PROGRESS_FILE, {"step": 7})
    calls.clear()
    rows = scan.Scanner(ws).scan()
    assert rows[0].step == 7 and first[0].id in calls
    cache.path_for(ws.logs, scan.CACHE_NAME).write_text("{not json")
    assert scan.Scanner(ws).scan() == rows  # a damaged file is ignored


def test_history_comparisons_from_the_cache_equal_compare_sources(tmp_path, monkeypatch):
    ws = store.Workspace(tmp_path)
    a, b = paired_sets()
    runs = []
    for i, correct in enumerate((a, b, b[::-1])):
        run = make_run(ws, f"20260101-00000{i}-demo-{i:04x}", "demo", created=T0 + i)
        make_eval(run, f"20260101-01000{i}-cpu-score-{i:04x}", correct)
        runs.append(run)
    rows = scan.Scanner(ws).scan()
    built = HistoryData(ws).build(rows, runs[0].id, T0)
    base = runs[0].evals()[0]
    for r in built:
        if r.eval_path and Path(r.eval_path) != base:
            ref = evalstore.compare_sources(base, Path(r.eval_path))
            assert (r.diff, r.p, r.h, r.verdict) == (ref["diff"], ref["mcnemar_p"], ref["cohens_h"], ref["verdict"])
    assert cache.path_for(ws.logs, history_data.CACHE_NAME).exists()
    history_data._CACHES.clear()  # a new session: everything from the file, nothing recomputed

    def boom(*a, **k):
        raise AssertionError("read again")

    monkeypatch.setattr(evalstore, "load_predictions", boom)
    monkeypatch.setattr(evalstore, "columns", boom)
    monkeypatch.setattr(evalstore, "eval_row", boom)
    assert HistoryData(ws).build(rows, runs[0].id, T0) == built
    monkeypatch.undo()
    pred = runs[2].evals()[0] / evalstore.PREDICTIONS_FILE
    lines = pred.read_text().splitlines()
    pred.write_text("\n".join(lines[:-1]) + "\n")  # B has one example fewer: not paired any more
    os.utime(pred, ns=(1, 1))
    again = HistoryData(ws).build(rows, runs[0].id, T0)
    assert [r.compare_error for r in again if r.run_id == runs[2].id][0].startswith("the two runs were not evaluated")


def test_history_shows_its_rows_before_many_new_comparisons_then_fills_them_in(tmp_path):
    ws = store.Workspace(tmp_path)
    a, b = paired_sets()
    runs = []
    for i in range(history_data.PARTIAL_AFTER + 3):
        run = make_run(ws, f"20260101-{i:06d}-demo-{i:04x}", "demo", created=T0 + i)
        make_eval(run, f"20260101-01{i:04d}-cpu-score-{i:04x}", a if i % 2 else b)
        runs.append(run)
    rows = scan.Scanner(ws).scan()
    shown = []
    built = HistoryData(ws).build(rows, runs[0].id, T0, partial=shown.append)
    assert len(shown) == 1
    first = {r.run_id: r for r in shown[0]}
    assert len(first) == len(runs) and all(r.accuracy is not None for r in first.values())
    assert all(r.pending and r.p is None for rid, r in first.items() if rid != runs[0].id)
    final = {r.run_id: r for r in built}
    assert not any(r.pending for r in final.values())
    base = runs[0].evals()[0]
    ref = evalstore.compare_sources(base, runs[1].evals()[0])
    assert (final[runs[1].id].p, final[runs[1].id].diff) == (ref["mcnemar_p"], ref["diff"])
    later = []  # the comparisons are cached: the next History is whole at once
    assert HistoryData(ws).build(rows, runs[0].id, T0, partial=later.append) == built and later == []
