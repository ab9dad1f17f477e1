"""Per-rank heartbeats (engine/rundir/ranks.py): writing, reading tolerant of bad files, the derived
age and status, step skew, the straggler and the stalled rank."""

from __future__ import annotations

import json
import os
import socket
import time

import pytest
import yaml
from labtui.engine.cli import main as cli
from labtui.engine.rundir import alerts, ranks, store

NOW = 1_800_000_000.0
HOST = socket.gethostname()


def beat(rank: int, step: int, age: float = 1.0, step_age: float = 2.0, **kw) -> dict:
    """A heartbeat of this very process (so the pid check finds it alive), `age` seconds before NOW."""
    pid = os.getpid()
    rec = {"rank": rank, "local_rank": rank, "world_size": 2, "host": HOST, "pid": pid,
           "pid_start": store.process_start_time(pid), "step": step, "step_time": NOW - step_age,
           "time": NOW - age, "device": f"cuda:{rank}", "mem_allocated": 1_000_000 * (rank + 1),
           "mem_reserved": 2_000_000, "mem_peak": 3_000_000, "state": "running"}
    rec.update(kw)
    return rec


def test_write_then_read_sorted_by_rank_with_age_and_status(tmp_path):
    for r in (1, 0, 10):
        ranks.write_heartbeat(tmp_path, beat(r, 40 + r, age=r + 0.5))
    assert ranks.heartbeat_path(tmp_path, 10) == tmp_path / "ranks" / "10.json"
    got = ranks.read_ranks(tmp_path, now=NOW)
    assert [r["rank"] for r in got] == [0, 1, 10]  # numeric order, not "0, 1, 10" by accident of names
    assert [r["heartbeat_age"] for r in got] == [0.5, 1.5, 10.5]
    assert [r["status"] for r in got] == ["running"] * 3
    assert got[1]["step"] == 41 and got[1]["device"] == "cuda:1" and got[1]["mem_allocated"] == 2_000_000
    # written atomically: no temp file left beside the heartbeats
    assert sorted(p.name for p in (tmp_path / "ranks").iterdir()) == ["0.json", "1.json", "10.json"]


def test_write_refuses_a_record_without_a_rank(tmp_path):
    with pytest.raises(ValueError, match="world rank"):
        ranks.write_heartbeat(tmp_path, {"step": 3})


def test_bad_files_are_skipped(tmp_path):
    ranks.write_heartbeat(tmp_path, beat(0, 5))
    d = tmp_path / "ranks"
    (d / "1.json").write_text('{"rank": 1, "st')  # half a file
    (d / "2.json").write_text("[1, 2]")  # not an object
    (d / "3.json").write_text(json.dumps(beat(4, 5)))  # its rank disagrees with its name
    (d / "x.json").write_text(json.dumps(beat(5, 5)))
    (d / "01.json").write_text(json.dumps(beat(1, 5)))
    (d / "torchrun").mkdir()  # torchrun's --log-dir lives here too
    (d / "6.json").write_text(json.dumps({**beat(6, 5), "step": "seven", "host": 3}))  # wrong types: left out
    got = ranks.read_ranks(tmp_path, now=NOW)
    assert [r["rank"] for r in got] == [0, 6]
    assert "step" not in got[1] and "host" not in got[1]


def test_no_ranks_folder_reads_as_no_ranks(tmp_path):
    assert ranks.read_ranks(tmp_path / "nope") == []
    assert ranks.read_ranks(tmp_path) == []


def test_status_from_state_age_and_process(tmp_path):
    ranks.write_heartbeat(tmp_path, beat(0, 9, state="done", age=3600))  # final states are final, however old
    ranks.write_heartbeat(tmp_path, beat(1, 9, age=ranks.RANK_STALE_S + 1))
    ranks.write_heartbeat(tmp_path, beat(2, 9, state="stopping"))
    ranks.write_heartbeat(tmp_path, beat(3, 9, pid_start=1.0))  # our pid, another start time: a reused pid
    ranks.write_heartbeat(tmp_path, beat(4, 9, host="elsewhere", pid=1, pid_start=1.0))  # not checked remotely
    ranks.write_heartbeat(tmp_path, beat(5, 9, state="failed"))
    got = {r["rank"]: r["status"] for r in ranks.read_ranks(tmp_path, now=NOW)}
    assert got == {0: "done", 1: "stale", 2: "stopping", 3: "gone", 4: "running", 5: "failed"}
    assert ranks.read_ranks(tmp_path, now=NOW, check_pids=False)[3]["status"] == "running"


def test_skew_and_straggler(tmp_path):
    ranks.write_heartbeat(tmp_path, beat(0, 40, step_age=1))
    ranks.write_heartbeat(tmp_path, beat(1, 37, step_age=30))
    ranks.write_heartbeat(tmp_path, beat(2, 37, step_age=50))  # at the same step as 1, for longer
    ranks.write_heartbeat(tmp_path, beat(3, 12, state="done"))  # finished ranks do not count
    got = ranks.read_ranks(tmp_path, now=NOW)
    assert ranks.step_skew(got) == 3
    s = ranks.straggler(got)
    assert (s.rank, s.step, s.behind, s.lead_step) == (2, 37, 3, 40)
    assert s.text() == "rank 2 slow: 3 steps behind"
    assert ranks.straggler(got, min_behind=4) is None


def test_one_step_apart_is_a_straggler_only_once_the_others_have_waited(tmp_path):
    # lockstep DDP: a rank that finished its step a moment before the other is not waiting for a straggler
    ranks.write_heartbeat(tmp_path, beat(0, 41, step_age=1))
    ranks.write_heartbeat(tmp_path, beat(1, 40, step_age=2))
    got = ranks.read_ranks(tmp_path, now=NOW)
    assert ranks.step_skew(got) == 1 and ranks.straggler(got) is None
    ranks.write_heartbeat(tmp_path, beat(0, 41, step_age=ranks.STRAGGLER_WAIT_S + 5))  # rank 0 has waited
    ranks.write_heartbeat(tmp_path, beat(1, 40, step_age=ranks.STRAGGLER_WAIT_S + 8))
    s = ranks.straggler(ranks.read_ranks(tmp_path, now=NOW))
    assert (s.rank, s.behind) == (1, 1)
    assert s.text() == "rank 1 slow: 1 step behind"


def test_no_straggler_when_level_or_alone(tmp_path):
    ranks.write_heartbeat(tmp_path, beat(0, 40))
    assert ranks.step_skew(ranks.read_ranks(tmp_path, now=NOW)) is None
    ranks.write_heartbeat(tmp_path, beat(1, 40))
    got = ranks.read_ranks(tmp_path, now=NOW)
    assert ranks.step_skew(got) == 0 and ranks.straggler(got) is None
    assert ranks.stalled_rank(got, NOW, 60) is None


def test_stalled_rank_behind_the_others(tmp_path):
    ranks.write_heartbeat(tmp_path, beat(0, 40, step_age=5, host="h"))
    ranks.write_heartbeat(tmp_path, beat(1, 39, step_age=720, host="h"))
    got = ranks.read_ranks(tmp_path, now=NOW)
    s = ranks.stalled_rank(got, NOW, after_s=600)
    assert (s.rank, s.step, s.others_step, s.frozen) == (1, 39, 40, False)
    assert s.message() == "rank 1 on host h has not finished a step for 12 min (others at step 40 wait)"
    assert ranks.stalled_rank(got, NOW, after_s=900) is None  # not idle long enough yet


def test_stalled_rank_whose_heartbeat_ages_while_the_others_are_fresh(tmp_path):
    ranks.write_heartbeat(tmp_path, beat(0, 40, age=1, host="h"))
    ranks.write_heartbeat(tmp_path, beat(1, 40, age=400, host="h"))
    ranks.write_heartbeat(tmp_path, beat(2, 40, age=2, host="h"))
    got = ranks.read_ranks(tmp_path, now=NOW)
    s = ranks.stalled_rank(got, NOW, after_s=300)
    assert (s.rank, s.frozen) == (1, True)
    assert s.message() == "rank 1 on host h has not written a heartbeat for 7 min (others at step 40 wait)"
    # every heartbeat old: nothing names one rank
    ranks.write_heartbeat(tmp_path, beat(0, 40, age=500))
    ranks.write_heartbeat(tmp_path, beat(2, 40, age=500))
    assert ranks.stalled_rank(ranks.read_ranks(tmp_path, now=NOW), NOW, after_s=300) is None


def test_memory_text():
    assert ranks.mem_text({"mem_allocated": 3 * 2**29, "mem_peak": 950 * 2**20}) == "1.5G/950M"
    assert ranks.mem_text({"device": "cpu", "mem_allocated": None}) == "-"


def test_device_index():
    assert [ranks.device_index(d) for d in ("cuda:1", "cuda", "cpu", None, "cuda:x")] == [1, 0, None, None, None]


def test_summary_fields(tmp_path):
    ranks.write_heartbeat(tmp_path, beat(0, 7, age=4))
    (s,) = [ranks.summary(r) for r in ranks.read_ranks(tmp_path, now=NOW)]
    assert s == {"rank": 0, "host": HOST, "pid": os.getpid(), "step": 7, "heartbeat": NOW - 4, "heartbeat_age": 4.0,
                 "status": "running", "device": "cuda:0", "mem_allocated": 1_000_000, "mem_reserved": 2_000_000,
                 "mem_peak": 3_000_000}


def _live_run(tmp_path, stall_minutes: float = 10) -> store.Run:
    """A training run whose state is live (this process as its worker) and whose training started."""
    ws = store.Workspace(tmp_path)
    run = ws.create_run("ddp", {"experiment": "ddp", "kind": "train", "workspace": str(ws.root)},
                        yaml.safe_dump({"engine": {"alerts": {"stall_minutes": stall_minutes}}}))
    me = os.getpid()
    run.update_state(status="running", pid=me, pid_start=store.process_start_time(me), host=HOST, heartbeat=NOW,
                     launch={"launcher": "torchrun", "nproc": 2})
    run.write_progress({"started": NOW - 3600, "updated": NOW - 5, "step": 40, "steps_per_s": 1.0})
    return run


def test_supervisor_watch_names_the_stalled_rank(tmp_path):
    run = _live_run(tmp_path)
    watch = alerts.SupervisorWatch(run)
    ranks.write_heartbeat(run.path, beat(0, 40, step_age=5, host="h"))
    ranks.write_heartbeat(run.path, beat(1, 39, step_age=300, host="h"))
    watch.tick(now=NOW)
    assert alerts.read_alerts(run) == []  # 5 min behind: under the 10 min limit
    ranks.write_heartbeat(run.path, beat(1, 39, step_age=720, host="h"))
    watch.tick(now=NOW)
    watch.tick(now=NOW + 5)  # once per episode
    (a,) = alerts.read_alerts(run)
    assert a["kind"] == "stalled" and a["severity"] == "critical"
    assert a["message"] == "rank 1 on host h has not finished a step for 12 min (others at step 40 wait)"
    assert a["data"]["rank"] == 1 and a["data"]["rank_step"] == 39 and a["data"]["others_step"] == 40
    assert "py-spy dump --pid" in a["hint"] and "rank 1" in a["hint"]
    # rank 1 catches up: the episode ends, a later stall of rank 0 is a new alert
    ranks.write_heartbeat(run.path, beat(1, 40, step_age=1, host="h"))
    watch.tick(now=NOW)
    ranks.write_heartbeat(run.path, beat(0, 40, age=900, host="h"))
    watch.tick(now=NOW)
    last = alerts.read_alerts(run)[-1]
    assert len(alerts.read_alerts(run)) == 2 and last["data"]["rank"] == 0 and last["data"]["frozen"] is True
    assert last["message"].startswith("rank 0 on host h has not written a heartbeat for 15 min")


def test_supervisor_watch_single_process_stall_is_unchanged(tmp_path):
    run = _live_run(tmp_path, stall_minutes=1)
    run.write_progress({"started": NOW - 3600, "updated": NOW - 100, "step": 7, "steps_per_s": 1.0})
    alerts.SupervisorWatch(run).tick(now=NOW)
    (a,) = alerts.read_alerts(run)
    assert a["kind"] == "stalled" and a["message"].startswith("no new step for 1.7 min (step 7")
    assert "rank" not in a["data"]


def test_every_rank_equally_stuck_falls_back_to_the_run_wide_stall(tmp_path):
    run = _live_run(tmp_path, stall_minutes=1)
    run.write_progress({"started": NOW - 3600, "updated": NOW - 100, "step": 7, "steps_per_s": 1.0})
    ranks.write_heartbeat(run.path, beat(0, 7, age=90, step_age=100))
    ranks.write_heartbeat(run.path, beat(1, 7, age=90, step_age=100))
    alerts.SupervisorWatch(run).tick(now=NOW)
    (a,) = alerts.read_alerts(run)
    assert a["message"].startswith("no new step for") and "rank" not in a["data"]


# --- labtui show -----------------------------------------------------------------------------------

TRACEBACK = """Traceback (most recent call last):
  File "/w/worker.py", line 88, in train
    trainer.train()
ValueError: bad batch at step 40"""


def _two_rank_run(tmp_path, **state) -> store.Run:
    """A torchrun run with two ranks' heartbeats written now, as the workers write them."""
    ws = store.Workspace(tmp_path / "ws")
    run = ws.create_run("ddp", {"experiment": "ddp", "kind": "train", "workspace": str(ws.root)},
                        yaml.safe_dump({"launch": {"launcher": "torchrun", "nproc_per_node": "auto",
                                                   "accelerate_config": None, "extra_args": []}}))
    me, now = os.getpid(), time.time()
    run.update_state(status="running", pid=me, pid_start=store.process_start_time(me), host=HOST, heartbeat=now,
                     started=now - 60, launch={"launcher": "torchrun", "nproc": 2, "accelerate_config": None,
                                               "command": ["torchrun", "--nproc-per-node", "2", "-m", "w"]},
                     **state)
    run.write_progress({"started": now - 60, "updated": now, "step": 40, "max_steps": 100})
    for rank, step in ((0, 40), (1, 37)):
        ranks.write_heartbeat(run.path, {**beat(rank, step), "time": now - 1, "step_time": now - 2})
    return run


def show(run: store.Run, capsys, *flags: str) -> str:
    assert cli.main(["--workspace", str(run.path.parent.parent), "show", run.id, *flags]) == 0
    return capsys.readouterr().out


def test_show_json_lists_launch_and_ranks(tmp_path, capsys):
    run = _two_rank_run(tmp_path)
    d = json.loads(show(run, capsys, "--json"))
    assert d["launch"] == {"launcher": "torchrun", "nproc": 2, "accelerate_config": None,
                           "command": ["torchrun", "--nproc-per-node", "2", "-m", "w"]}
    assert [(r["rank"], r["step"], r["status"], r["device"], r["pid"], r["host"]) for r in d["ranks"]] == [
        (0, 40, "running", "cuda:0", os.getpid(), HOST), (1, 37, "running", "cuda:1", os.getpid(), HOST)]
    r1 = d["ranks"][1]
    assert set(r1) == {"rank", "host", "pid", "step", "heartbeat", "heartbeat_age", "status", "device", "mem_allocated",
                       "mem_reserved", "mem_peak"}
    assert r1["mem_allocated"] == 2_000_000 and r1["mem_peak"] == 3_000_000 and 0 < r1["heartbeat_age"] < 60
    assert d["error_rank"] is None


def test_show_text_has_a_ranks_block(tmp_path, capsys):
    out = show(_two_rank_run(tmp_path), capsys)
    assert "  launch      torchrun, 2 processes" in out
    assert "  ranks       2 reporting, step skew 3; rank 1 slow: 3 steps behind" in out
    lines = [ln for ln in out.splitlines() if ln.startswith("    rank ")]
    assert len(lines) == 2 and "step 40" in lines[0] and "cuda:0" in lines[0] and "mem 1M/3M" in lines[0]
    assert "step 37" in lines[1] and lines[1].endswith("<- slow") and "heartbeat 1s ago" in lines[1]


def test_show_a_failed_rank_names_it_with_its_traceback(tmp_path, capsys):
    run = _two_rank_run(tmp_path)
    run.update_state(status="failed", ended=time.time(), error=f"rank 1 on host {HOST} failed: ValueError: bad batch",
                     error_rank=1, error_where=TRACEBACK)
    ranks.write_heartbeat(run.path, {**beat(1, 37), "state": "failed"})
    out = show(run, capsys)
    lines = out.splitlines()
    i = lines.index(f"  error       rank 1 on host {HOST} failed: ValueError: bad batch")
    assert lines[i + 1] == "  traceback"
    assert lines[i + 2:i + 6] == ["    " + ln for ln in TRACEBACK.splitlines()]
    d = json.loads(show(run, capsys, "--json"))
    assert d["error_rank"] == 1 and d["error_where"] == TRACEBACK and d["ranks"][1]["status"] == "failed"


def test_show_single_process_run_has_no_ranks(tmp_path, capsys):
    ws = store.Workspace(tmp_path / "ws")
    run = ws.create_run("one", {"experiment": "one", "kind": "train", "workspace": str(ws.root)}, yaml.safe_dump({}))
    run.update_state(status="failed", error="boom", error_where="worker.py:12 in train")
    d = json.loads(show(run, capsys, "--json"))
    assert d["launch"] == {"launcher": "python", "nproc": 1, "accelerate_config": None, "command": None}
    assert d["ranks"] == []
    out = show(run, capsys)
    assert "  error       boom  at worker.py:12 in train" in out  # as before: one line
    assert not [ln for ln in out.splitlines() if ln.startswith(("  ranks", "  launch", "    rank "))]


def test_ages_and_staleness_move_on_with_the_clock(tmp_path):
    ranks.write_heartbeat(tmp_path, beat(0, 9, age=1))
    ranks.write_heartbeat(tmp_path, beat(1, 9, age=1, pid_start=1.0))  # gone: stays gone
    ranks.write_heartbeat(tmp_path, beat(2, 9, age=1, state="done"))
    got = ranks.read_ranks(tmp_path, now=NOW)
    later = ranks.at(got, NOW + 100)
    assert [(r["heartbeat_age"], r["status"]) for r in later] == [(101.0, "stale"), (101.0, "gone"), (101.0, "done")]
    assert [r["status"] for r in ranks.at(later, NOW + 2)] == ["running", "gone", "done"]


def test_a_multi_node_launch_says_nodes_times_processes():
    state = {"launch": {"launcher": "torchrun", "nproc": 4, "nnodes": 2, "command": ["srun"]}}
    info = ranks.launch_info(state, None)
    assert ranks.launch_text(info) == "torchrun, 2 nodes x 4 processes (8 ranks)"
    one = ranks.launch_info({"launch": {"launcher": "torchrun", "nproc": 2, "nnodes": 1}}, None)
    assert ranks.launch_text(one) == "torchrun, 2 processes"
