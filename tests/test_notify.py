"""Notifications (engine/runtime/notify.py) end to end: real apprise `json://127.0.0.1:PORT/` URLs against a
small HTTP server started here. Each event kind arrives (a run completed, failed, crashed, stopped; an alert
at or above the severity asked for; an evaluation completed, with its baseline comparison), once per event
even when two readers find the same crash; `labtui notify --test` names the URL that failed; a dead server
neither fails nor holds up a run. Runs are short `labtui run -- python -c ...` commands, except the one
trained run that an evaluation needs."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
from conftest import fast_overrides, labtui, wait_for
from labtui.engine.rundir import store
from labtui.engine.runtime import notify
from test_tui_data import T0

FAST = {"LABTUI_HEARTBEAT": "0.3"}  # a script run's supervisor looks at alerts.jsonl every 0.3 s


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def settings(ws: store.Workspace, urls: list[str], events: list[str]) -> None:
    (ws.root / "labtui.yaml").write_text(json.dumps({"notify": {"urls": urls, "events": events}}))


def script_run(ws: store.Workspace, code: str) -> store.Run:
    proc = labtui(ws, "run", "--now", "--", sys.executable, "-c", code, env=FAST, check=True)
    return ws.run(proc.stdout.split()[0])


SLEEP = "import time; print('working', flush=True); time.sleep(60)"


def running(run: store.Run) -> dict:
    state = wait_for(run, ("running",), timeout=30)
    assert state.get("pid"), state
    return state


def test_a_completed_and_a_failed_run_each_send_one_message(ws, server):
    settings(ws, [server.url], ["completed", "failed", "crashed", "stopped"])
    ok = script_run(ws, "print('done')")
    bad = script_run(ws, "import sys; print('boom: no data', flush=True); sys.exit(3)")
    assert wait_for(ok)["status"] == "completed" and wait_for(bad)["status"] == "failed"
    server.wait(2)
    time.sleep(1.5)
    assert labtui(ws, "runs").returncode == 0  # a reader after the ends sends nothing more
    time.sleep(1.0)
    assert len(server.got) == 2, server.got
    done, = server.titled(f"{ok.id} completed")
    assert f"`labtui show {ok.id}`" in done["message"]
    failed, = server.titled(f"{bad.id} failed")
    assert "exited with status 3: boom: no data" in failed["message"]
    assert f"`labtui retry {bad.id}`" in failed["message"]
    record = json.loads(bad.file(notify.NOTIFIED_FILE).read_text())
    (key, entry), = record.items()
    assert key.startswith("failed:") and entry["status"] == "sent" and entry["failed"] == {}
    assert entry["ok"] == [server.url]


def test_events_not_asked_for_are_not_sent(ws, server):
    settings(ws, [server.url], ["failed"])
    run = script_run(ws, "print('done')")
    assert wait_for(run)["status"] == "completed"
    time.sleep(2.0)
    assert server.got == [] and not run.file(notify.NOTIFIED_FILE).exists()


def test_a_stopped_run_says_how_to_continue(ws, server):
    settings(ws, [server.url], ["stopped"])
    run = script_run(ws, SLEEP)
    running(run)
    assert labtui(ws, "stop", run.id).returncode == 0
    assert wait_for(run)["status"] == "stopped"
    msg, = server.wait(1)
    assert f"{run.id} stopped" in msg["title"]
    assert "stopped on request" in msg["message"] and f"`labtui retry {run.id}`" in msg["message"]


def test_a_worker_killed_by_sigkill_is_a_crash_message(ws, server):
    settings(ws, [server.url], ["crashed"])
    run = script_run(ws, SLEEP)
    os.kill(running(run)["pid"], signal.SIGKILL)  # what the OOM killer does
    assert wait_for(run)["status"] == "crashed"
    msg, = server.wait(1)
    assert f"{run.id} crashed" in msg["title"]
    assert "crashed: killed by SIGKILL, likely out of memory" in msg["message"]
    assert f"`labtui retry {run.id}`" in msg["message"]


def test_a_crash_two_readers_find_is_sent_once(ws, server):
    """Supervisor and worker both gone (a power loss): nobody records the crash; the readers that find it
    notify, and only one of them sends."""
    settings(ws, [server.url], ["crashed"])
    run = script_run(ws, SLEEP)
    raw = running(run)
    os.kill(raw["supervisor_pid"], signal.SIGKILL)
    os.kill(raw["pid"], signal.SIGKILL)
    env = dict(os.environ, LABTUI_WORKSPACE=str(ws.root))
    readers = [subprocess.Popen([sys.executable, "-m", "labtui", *args], env=env, stdout=subprocess.DEVNULL)
               for args in (["runs"], ["show", run.id])]
    assert [p.wait(timeout=60) for p in readers] == [0, 0]
    msg, = server.wait(1)
    assert f"{run.id} crashed" in msg["title"] and "no heartbeat since" in msg["message"]
    assert labtui(ws, "runs").returncode == 0
    time.sleep(2.0)
    assert len(server.got) == 1, server.got
    assert run.raw_state()["status"] == "running"  # readers derive the crash; they do not write it


def test_alerts_at_or_above_the_severity_asked_for(ws, server):
    settings(ws, [server.url], ["alert:warning"])
    lines = [{"kind": kind, "severity": sev, "step": 3, "message": f"{kind} here", "hint": "look at it"}
             for kind, sev in (("nan_loss", "critical"), ("loss_spike", "warning"), ("custom_note", "info"))]
    code = ("import json, os, time\n"
            "path = os.path.join(os.environ['LABTUI_RUN_DIR'], 'alerts.jsonl')\n"
            f"for a in {lines!r}:\n"
            "    a['t'] = time.time()\n"
            "    open(path, 'a').write(json.dumps(a) + '\\n')\n"
            "    time.sleep(0.5)\n"
            "time.sleep(1)\n")
    run = script_run(ws, code)
    assert wait_for(run)["status"] == "completed"
    server.wait(2)
    time.sleep(2.0)
    assert sorted(m["title"].split("[")[1] for m in server.got) == ["critical]", "warning]"], server.got
    spike, = server.titled("[warning]")
    assert spike["message"].startswith("loss_spike at step 3: loss_spike here; look at it")
    assert not server.titled("[info]")


def test_a_dead_notification_server_neither_fails_nor_holds_up_a_run(ws):
    port = closed_port()
    settings(ws, [f"json://127.0.0.1:{port}/"], ["completed"])
    t0 = time.time()
    run = script_run(ws, "print('done')")
    assert wait_for(run, timeout=30)["status"] == "completed"
    deadline = time.time() + 10
    while store.process_alive(run.raw_state().get("supervisor_pid"), run.raw_state().get("supervisor_start")):
        assert time.time() < deadline, "the supervisor waits for the notification"
        time.sleep(0.1)
    assert time.time() - t0 < 10
    deadline = time.time() + 40  # three tries with pauses of 2 and 8 s
    line = ""
    while not line and time.time() < deadline:
        line = next((ln for ln in store.tail_lines(run.file(store.LOG_FILE), 20) if "notify:" in ln), "")
        time.sleep(0.3)
    assert f"notify: completed to json://127.0.0.1:{port}/ failed:" in line, line
    assert run.state()["status"] == "completed"
    entry, = json.loads(run.file(notify.NOTIFIED_FILE).read_text()).values()
    assert entry["status"] == "failed" and list(entry["failed"]) == [f"json://127.0.0.1:{port}/"]


def test_notify_test_names_the_url_that_failed(ws, server):
    dead = f"json://127.0.0.1:{closed_port()}/"
    proc = labtui(ws, "notify", "--test", "--url", server.url, "--url", dead)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"ok      {server.url}" in proc.stdout
    assert f"FAILED  {dead}: " in proc.stdout and "1 of 2 failed" in proc.stdout
    msg, = server.wait(1)
    assert msg["title"] == "labtui: test notification"
    settings(ws, [server.url], ["failed"])  # labtui.yaml's URLs
    proc = labtui(ws, "notify", "--test")
    assert proc.returncode == 0 and proc.stdout.startswith("ok "), proc.stdout + proc.stderr
    assert len(server.wait(2)) == 2


def test_bad_notify_settings_are_one_clear_message(ws, tmp_path):
    (ws.root / "labtui.yaml").write_text("notify:\n  urls: [ntfy://ntfy.sh/t]\n  on: [failed]\n")
    proc = labtui(ws, "notify", "--test")
    assert proc.returncode == 2
    assert "labtui.yaml: notify: write `events:`, not `on:`" in proc.stderr
    (tmp_path / "on.yaml").write_text("notify:\n  urls: [ntfy://ntfy.sh/t]\n  on: [failed]\n")
    proc = labtui(ws, "run", str(tmp_path / "on.yaml"))
    assert proc.returncode == 2 and "notify: write `events:`, not `on:`" in proc.stderr
    (ws.root / "labtui.yaml").write_text("notify:\n  urls: [ntfy://ntfy.sh/t]\n  events: [crash]\n")
    proc = labtui(ws, "notify")
    assert proc.returncode == 2 and "notify.events: unknown event 'crash' (did you mean 'crashed'?)" in proc.stderr
    exp = tmp_path / "exp.yaml"
    exp.write_text("notify:\n  urls: [my-topic]\n")
    proc = labtui(ws, "run", str(exp))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "notify.urls must be a list of apprise URLs" in proc.stderr


# --- an evaluation: the one trained run -------------------------------------------------------------------

N = 20


def test_a_trained_run_sends_completed_then_its_evaluation_against_the_baseline(workspace, server):
    """The experiment's own notify: (no labtui.yaml): the run's end, then its after-training evaluation
    with accuracy [CI] and the difference to the workspace's baseline (a base-model eval) with McNemar's p."""
    ws = workspace
    base = labtui(ws, "eval", "experiments/demo-baseline.yaml", "--base", "--n", str(N), "-f", "--json")
    assert base.returncode == 0, base.stderr
    holder, = [r.id for r in ws.runs() if r.info().get("kind") == "base"]
    (ws.logs / notify.BASELINE_FILE).write_text(holder + "\n")
    proc = labtui(ws, "run", "experiments/demo-baseline.yaml", *fast_overrides(6), "--set", "eval.after_training=true",
                  "--set", f"eval.n={N}", "--set", f"notify.urls=[{server.url}]",
                  "--set", "notify.events=[completed, eval_completed]", check=True)
    run = ws.run(proc.stdout.split()[0])
    assert wait_for(run, timeout=240)["status"] == "completed"
    server.wait(2, timeout=180)
    done, = server.titled(f"{run.id} completed")
    assert "completed at step 6/6, train loss" in done["message"]
    ev, = server.titled("eval ")
    assert re.match(rf"accuracy \d\.\d{{3}} \[\d\.\d{{3}}, \d\.\d{{3}}\] \(checkpoint 6, N {N}, score, ", ev["message"]), ev["message"]
    assert f"points vs baseline {holder} (McNemar p " in ev["message"], ev["message"]
    assert f"`labtui evals {run.id}`" in ev["message"]


def test_a_training_run_killed_by_sigkill_says_resume_from_its_checkpoint(workspace, server):
    ws = workspace
    settings(ws, [server.url], ["crashed"])
    proc = labtui(ws, "run", "experiments/demo-baseline.yaml", "--set", "training.max_steps=400", "--set",
                  "training.save_steps=2", "--set", "training.logging_steps=2", "--set", "training.eval_steps=1000",
                  check=True)
    run = ws.run(proc.stdout.split()[0])
    deadline = time.time() + 180
    while run.latest_checkpoint() is None and time.time() < deadline:
        assert run.state()["status"] in store.LIVE, run.state()
        time.sleep(0.2)
    os.kill(run.raw_state()["pid"], signal.SIGKILL)  # what the OOM killer does
    assert wait_for(run)["status"] == "crashed"
    msg, = server.wait(1)
    assert re.fullmatch(rf"crashed at step \d+/400: killed by SIGKILL, likely out of memory \(check `dmesg`\); "
                        rf"`labtui resume {run.id}` continues from checkpoint-\d+", msg["message"]), msg["message"]


def test_the_rate_limit_is_per_workspace_and_per_minute(tmp_path):
    """The sender takes a slot of logs/.notify-rate.json before it sends: PER_MINUTE a minute, then a wait
    until the oldest of them is a minute old."""
    t0 = 1_800_000_000.0
    assert [notify._rate_slot(tmp_path, t0 + i) for i in range(notify.PER_MINUTE)] == [0.0] * notify.PER_MINUTE
    wait = notify._rate_slot(tmp_path, t0 + 30)
    assert 29.9 < wait <= 30.1  # the first slot frees at t0 + 60
    assert notify._rate_slot(tmp_path, t0 + 60.5) == 0.0  # ... and then one is free again
    assert notify._rate_slot(tmp_path, t0 + 60.6) > 0


# --- crashes found by the TUI and by `labtui queue`; a sender killed mid-send ---------------------------


def dead_worker_run(ws: store.Workspace, name: str = "gone") -> store.Run:
    """A run folder whose state.json says running, with a worker pid that has exited and no supervisor:
    what a power loss or a killed tmux session leaves; every reader derives `crashed`."""
    from test_tui_data import make_run

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run = make_run(ws, f"20261122-010000-{name}-a001", name, status="running", steps=20)
    run.update_state(status="running", pid=dead.pid, pid_start=time.time() - 60, supervisor_pid=None, error=None)
    return run


def test_labtui_queue_notifies_a_crash_nobody_recorded_once(ws, server):
    settings(ws, [server.url], ["crashed"])
    run = dead_worker_run(ws)
    assert labtui(ws, "queue").returncode == 0
    msg, = server.wait(1)
    assert f"{run.id} crashed" in msg["title"] and "no heartbeat since" in msg["message"]
    assert labtui(ws, "queue", "--json").returncode == 0
    time.sleep(2.0)
    assert len(server.got) == 1, server.got
    assert run.raw_state()["status"] == "running"  # derived, not written


@pytest.mark.anyio
async def test_an_open_tui_notifies_a_crash_nobody_recorded_once(ws, server):
    """The dashboard's monitor finds the dead worker: one `crashed` message, however many ticks it takes
    and however often the TUI is opened again (notified.json is shared with every other reader)."""
    from test_tui_app import app_for, until

    settings(ws, [server.url], ["crashed"])
    run = dead_worker_run(ws)
    for _ in range(2):
        app = app_for(ws)
        async with app.run_test(size=(100, 30)) as pilot:
            await until(pilot, lambda: app.row(run.id) is not None and app.row(run.id).status == "crashed")
            await until(pilot, lambda: len(server.got) >= 1, timeout=30, what="the crash notification")
            ticks = app.monitor.ticks
            await until(pilot, lambda: app.monitor.ticks >= ticks + 10, what="ten more monitor ticks")
    time.sleep(2.0)
    msg, = server.got
    assert f"{run.id} crashed" in msg["title"] and f"`labtui retry {run.id}`" in msg["message"]
    entry, = notify.notified(run).values()
    assert entry["status"] == "sent" and entry["event"] == "crashed"



def test_a_sender_killed_mid_send_is_sent_again_once_never_while_it_lives(ws, server):
    """notified.json entries left `sending`: by a sender that is dead (its pid recorded), by a claimer that
    died before starting one (no pid, claimed long ago), by a sender still alive, and by one on another
    host, claimed a moment ago. A reader sends the first two again, once, with the words they were
    claimed with; the others it leaves to their senders."""
    from test_tui_data import make_run

    settings(ws, [server.url], ["completed"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        now = time.time()
        senders = {"killed": {"pid": dead.pid, "pid_start": now - 5, "t": now - 5},
                   "unstarted": {"t": now - notify.SENDING_TIMEOUT_S - 1},
                   "sending": {"pid": alive.pid, "pid_start": store.process_start_time(alive.pid), "t": now - 5},
                   "elsewhere": {"pid": dead.pid, "pid_start": now - 5, "host": "gpu-node-7", "t": now - 5}}
        runs = {}
        for i, (name, sender) in enumerate(senders.items()):
            run = runs[name] = make_run(ws, f"20261122-0{i}0000-{name}-a00{i}", name, created=T0 + i)
            store.atomic_write_json(run.file(notify.NOTIFIED_FILE), {"completed:1": {
                "event": "completed", "title": f"labtui: {run.id} completed", "body": "completed at step 200/200",
                "to": 1, "status": "sending", **sender}})
        assert labtui(ws, "runs").returncode == 0
        server.wait(2)
        assert labtui(ws, "runs").returncode == 0
        time.sleep(2.0)
        assert sorted(m["title"] for m in server.got) == [f"labtui: {runs[n].id} completed" for n in ("killed", "unstarted")]
        for name in ("killed", "unstarted"):
            entry = notify.notified(runs[name])["completed:1"]
            assert entry["status"] == "sent" and entry["resent"] == 1, entry
        for name in ("sending", "elsewhere"):  # alive, or on another host and not yet past its deadline
            assert notify.notified(runs[name])["completed:1"]["status"] == "sending"
        assert "its sender died mid-send; sending it again" in runs["killed"].file(store.LOG_FILE).read_text()
    finally:
        alive.kill()
        alive.wait()


def test_a_notification_whose_senders_keep_dying_is_given_up(ws, server):
    """After MAX_RESENDS re-sends, a sender killed again marks the notification failed (it says why),
    instead of a new sender at every look."""
    from test_tui_data import make_run

    settings(ws, [server.url], ["completed"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run = make_run(ws, "20261122-010000-done-a001", "done")
    store.atomic_write_json(run.file(notify.NOTIFIED_FILE), {"completed:1": {
        "event": "completed", "title": "t", "body": "b", "to": 1, "status": "sending", "t": time.time(),
        "pid": dead.pid, "pid_start": time.time() - 5, "resent": notify.MAX_RESENDS}})
    assert notify.resend_orphans(run) == 0
    entry = notify.notified(run)["completed:1"]
    assert entry["status"] == "failed" and f"killed {notify.MAX_RESENDS + 1} times" in entry["error"], entry
    assert notify.resend_orphans(run) == 0
    time.sleep(1.0)
    assert server.got == []
