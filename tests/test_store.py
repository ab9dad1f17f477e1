"""The run store: incremental tolerant reads, atomic state, id resolution, crash detection."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from labtui.engine.rundir import store


def test_reader_is_incremental_and_leaves_a_partial_last_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n{"st')
    r = store.JsonlReader(path)
    assert [x["step"] for x in r.read_new()] == [1, 2]
    offset = r.offset
    assert r.read_new() == []  # the half-written line is not consumed
    with open(path, "a") as f:
        f.write('ep": 3}\n{"step": 4}\n')
    assert [x["step"] for x in r.read_new()] == [3, 4]
    assert r.offset > offset
    assert r.corrupt == 0


def test_reader_skips_and_counts_corrupt_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"step": 1}\nnot json\n\x00\xff garbage\n[1, 2]\n{"step": 2, "loss": NaN}\n')
    r = store.JsonlReader(path)
    recs = r.read_new()
    assert [x["step"] for x in recs] == [1, 2]
    assert recs[1]["loss"] != recs[1]["loss"]  # NaN survives
    assert r.corrupt == 3


def test_reader_on_missing_file(tmp_path):
    assert store.JsonlReader(tmp_path / "nope.jsonl").read_new() == []


def test_nan_and_inf_round_trip_in_records(tmp_path):
    w = store.JsonlWriter(tmp_path / "m.jsonl")
    w.write({"loss": float("nan"), "grad_norm": float("inf")})
    w.close()
    rec = store.read_jsonl(tmp_path / "m.jsonl")[0]
    assert rec["loss"] != rec["loss"] and rec["grad_norm"] == float("inf")


def test_atomic_write_leaves_no_temp_files(tmp_path):
    store.atomic_write_json(tmp_path / "state.json", {"status": "running"})
    store.atomic_write_json(tmp_path / "state.json", {"status": "completed"})
    assert json.loads((tmp_path / "state.json").read_text()) == {"status": "completed"}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_run_ids_sort_by_creation_and_resolve_by_prefix(tmp_path):
    ws = store.Workspace(tmp_path)
    a = ws.create_run("demo baseline", {"experiment": "demo-baseline"})
    time.sleep(1.1)
    b = ws.create_run("demo tuned", {"experiment": "demo-tuned"})
    assert [r.id for r in ws.runs()] == sorted([a.id, b.id]) == [a.id, b.id]
    assert "-demo-baseline-" in a.id
    assert ws.run(a.id).id == a.id
    assert ws.run(b.id[:-2]).id == b.id
    assert ws.run("last").id == b.id
    assert ws.run("tuned").id == b.id  # a unique part of the id
    with pytest.raises(store.RunNotFound, match="matches 2 runs"):
        ws.run(a.id[:4])
    with pytest.raises(store.RunNotFound, match="no run matches 'zzz'"):
        ws.run("zzz")


def test_summary_reads_no_metrics(tmp_path):
    ws = store.Workspace(tmp_path)
    run = ws.create_run("x", {"experiment": "x"})
    run.file(store.METRICS_FILE).write_text("this would not parse\n")
    run.write_progress({"step": 5, "max_steps": 10, "train_loss": 1.5, "best_eval_loss": float("nan")})
    s = run.summary()
    assert (s["step"], s["max_steps"], s["train_loss"], s["eval_loss"]) == (5, 10, 1.5, "nan")
    json.dumps(s, allow_nan=False)  # valid strict JSON


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_live_status_with_dead_process_is_crashed(tmp_path):
    ws = store.Workspace(tmp_path)
    run = ws.create_run("x", {"experiment": "x"})
    hb = time.time() - 120
    run.update_state(status="running", pid=_dead_pid(), pid_start=time.time() - 100, heartbeat=hb, host=os.uname().nodename)
    state = run.state()
    assert state["status"] == "crashed"
    assert state["error"] == f"no heartbeat since {time.strftime('%H:%M', time.localtime(hb))}, process gone"


def test_reused_pid_is_not_taken_for_a_live_run(tmp_path):
    """A live process with the recorded pid but another start time is someone else's."""
    ws = store.Workspace(tmp_path)
    run = ws.create_run("x", {"experiment": "x"})
    me = os.getpid()
    run.update_state(status="running", pid=me, pid_start=store.process_start_time(me) - 3600,
                     supervisor_pid=me, supervisor_start=store.process_start_time(me) - 3600,
                     heartbeat=time.time(), host=os.uname().nodename)
    assert run.state()["status"] == "crashed"
    run.update_state(pid_start=store.process_start_time(me))
    assert run.state()["status"] == "running"


def test_rewinder_drops_the_abandoned_segment():
    recs = [{"kind": "start", "step": 0}] + [{"kind": "train", "step": s} for s in (10, 20, 30, 40, 50)]
    recs += [{"kind": "start", "step": 40, "resumed": True}, {"kind": "train", "step": 50}, {"kind": "train", "step": 60}]
    kept, rewind = store.Rewinder().feed(recs)
    assert rewind == 40
    assert [r["step"] for r in kept if r["kind"] == "train"] == [10, 20, 30, 40, 50, 60]
    # incrementally: the rewind arrives in a later batch
    rw = store.Rewinder()
    first, _ = rw.feed(recs[:6])
    later, rewind = rw.feed(recs[6:])
    assert rewind == 40 and [r["step"] for r in later if r["kind"] == "train"] == [50, 60]


def test_runs_made_in_the_same_second_list_and_resolve_by_creation_time(tmp_path):
    from conftest import labtui

    ws = store.Workspace(tmp_path)
    first = ws.create_run("zeta", {"experiment": "zeta"})
    second = ws.create_run("alpha", {"experiment": "alpha"})  # the same second: its id sorts first
    if first.id[:15] != second.id[:15]:
        pytest.skip("the two runs straddled a second")
    assert second.id < first.id
    assert ws.run("last").id == second.id
    proc = labtui(ws, "runs", "--json")
    assert proc.returncode == 0, proc.stderr
    assert [r["id"] for r in json.loads(proc.stdout)] == [first.id, second.id]
