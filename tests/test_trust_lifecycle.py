"""Issue 11, "nothing is lost or stranded" and "safe with other people's run folders": incomplete
checkpoints, a damaged queue.json, the TUI advancing the queue, the concurrency limit on every path,
suspended workers and killed supervisors, read-only workspaces, unproven process identities, and
retries of folders copied from elsewhere.

Most tests use `labtui run -- COMMAND` runs (a supervisor and a tiny Python command, no model) and a
fake live run (this test process, proven by pid and start time) to fill the concurrency slot, so no
training starts; the one that trains is marked e2e.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import fast_overrides, labtui, wait_for
from labtui.engine.rundir import store
from labtui.engine.runtime import launcher, queue

SLEEP = [sys.executable, "-c", "import time\nfor _ in range(1200): time.sleep(0.1)"]
QUICK = [sys.executable, "-c", "print('hello from the command')"]


def _ws(tmp_path: Path, concurrency: int = 1) -> store.Workspace:
    (tmp_path / "logs").mkdir(parents=True, exist_ok=True)
    (tmp_path / queue.SETTINGS_FILE).write_text(f"concurrency: {concurrency}\n")
    return store.Workspace(tmp_path)


def _occupy_slot(ws: store.Workspace) -> store.Run:
    """A run that is live for every reader: its supervisor and worker are this test process (never stop it)."""
    me = os.getpid()
    run = ws.create_run("holder", {"experiment": "holder", "kind": "script", "workspace": str(ws.root)})
    run.update_state(status="running", pid=me, pid_start=store.process_start_time(me), pgid=os.getpgid(me),
                     supervisor_pid=me, supervisor_start=store.process_start_time(me), host=socket.gethostname(),
                     heartbeat=time.time(), started=time.time())
    return run


def _free_slot(run: store.Run) -> None:
    run.update_state(status="completed", ended=time.time(), exit_code=0)


def _script_run(ws: store.Workspace, command=QUICK) -> store.Run:
    return launcher.create_script_run(ws, list(command), ["test"])


def _wait_pid(run: store.Run, timeout: float = 30) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline:
        raw = run.raw_state()
        if raw.get("pid") and raw.get("pid_start"):
            return raw["pid"]
        time.sleep(0.05)
    raise AssertionError(f"{run.id} never started: {run.raw_state()}")


def _kill_group(run: store.Run) -> None:
    raw = run.raw_state()
    if raw.get("pid") and store.process_alive(raw["pid"], raw.get("pid_start")):
        os.killpg(raw.get("pgid") or raw["pid"], signal.SIGKILL)


def _fake_checkpoint(run: store.Run, step: int, complete: bool = True) -> Path:
    d = run.file(store.CHECKPOINTS_DIR) / f"checkpoint-{step}"
    d.mkdir(parents=True)
    if complete:
        (d / "trainer_state.json").write_text(json.dumps({"global_step": step}))
        (d / "adapter_model.safetensors").write_bytes(b"weights")
        (d / "adapter_config.json").write_text("{}")
    return d


def _stopped_train_run(ws: store.Workspace, root: str | None = None) -> store.Run:
    cfg = "model:\n  model_name_or_path: demo/tiny-llama\ntraining:\n  max_steps: 8\n"
    run = ws.create_run("demo-sft", {"experiment": "demo-sft", "kind": "train", "workspace": root or str(ws.root)}, cfg)
    run.update_state(status="stopped", ended=time.time(), error="stopped on request (SIGTERM)")
    run.write_progress({"step": 4, "max_steps": 8})
    return run


# --- 1. the newest *complete* checkpoint --------------------------------------------------------


def test_resume_and_eval_use_the_newest_complete_checkpoint_and_say_why(tmp_path, capsys):
    from labtui.engine.runtime.evaluate_launch import resolve_checkpoint

    ws = _ws(tmp_path)
    run = _stopped_train_run(ws)
    _fake_checkpoint(run, 40)
    _fake_checkpoint(run, 80, complete=False)  # a kill during the save of step 80
    assert [p.name for p in run.checkpoints()] == ["checkpoint-40", "checkpoint-80"]
    assert run.latest_checkpoint().name == "checkpoint-40"
    assert run.checkpoint_note() == "checkpoint-40: checkpoint-80 is incomplete (no trainer_state.json)"

    notes = []
    assert resolve_checkpoint(run, "latest", note=notes.append) == (str(run.file("checkpoints/checkpoint-40")), 40)
    assert notes == ["evaluating checkpoint-40: checkpoint-80 is incomplete (no trainer_state.json)"]
    with pytest.raises(Exception, match="checkpoint-80 is incomplete"):
        resolve_checkpoint(run, "80")
    (run.file("checkpoints/checkpoint-80") / "trainer_state.json").write_text("{}")  # weights still missing
    assert store.checkpoint_problem(run.file("checkpoints/checkpoint-80")) == "no model or adapter weights"

    only_broken = _stopped_train_run(ws)
    _fake_checkpoint(only_broken, 20, complete=False)
    out = labtui(ws.root, "resume", only_broken.id)
    assert out.returncode == 2 and not out.stdout
    assert "no complete checkpoint to resume from (checkpoint-20 is incomplete (no trainer_state.json))" in out.stderr
    assert only_broken.raw_state()["status"] == "stopped"


@pytest.mark.e2e
def test_a_resume_after_a_save_cut_short_continues_from_the_checkpoint_before(workspace):
    run = workspace.run(labtui(workspace, "run", "experiments/demo-baseline.yaml", *fast_overrides(8), check=True).stdout.strip())
    assert wait_for(run)["status"] == "completed"
    assert [p.name for p in run.checkpoints()] == ["checkpoint-4", "checkpoint-8"]
    cut = run.file("checkpoints/checkpoint-8")
    for f in cut.iterdir():  # what a kill in the middle of writing checkpoint-8 leaves
        if f.is_file():
            f.unlink()
    run.update_state(status="crashed", error="killed by SIGKILL")
    out = labtui(workspace, "resume", run.id, check=True)
    assert "resuming from checkpoint-4: checkpoint-8 is incomplete (no trainer_state.json)" in out.stderr
    assert wait_for(run)["status"] == "completed", store.tail_lines(run.file(store.LOG_FILE), 20)
    assert "resuming from checkpoint-4" in run.file(store.LOG_FILE).read_text()
    assert [r["step"] for r in store.metrics_history(run) if r["kind"] == "train"] == [2, 4, 6, 8]


# --- 2. a damaged queue.json strands nothing; a failed cancel is an error -------------------------


def test_a_deleted_or_corrupt_queue_file_is_rebuilt_from_the_queued_runs(tmp_path):
    ws = _ws(tmp_path)
    holder = _occupy_slot(ws)
    runs = [_script_run(ws) for _ in range(3)]
    for r in runs:
        queue.enqueue(ws, r)
    (ws.logs / queue.QUEUE_FILE).write_text("{not json")
    assert [r.id for r in queue.queued(ws)] == [r.id for r in runs]  # by creation time
    listed = json.loads(labtui(ws.root, "queue", "--json", check=True).stdout)
    assert [q["id"] for q in listed["queued"]] == [r.id for r in runs]

    (ws.logs / queue.QUEUE_FILE).unlink()
    out = labtui(ws.root, "stop", runs[1].id)
    assert out.returncode == 0 and "removed from the queue" in out.stdout
    assert runs[1].raw_state()["status"] == "stopped"

    queue._save(ws, [runs[2].id])  # a file that misses a queued run
    assert [r.id for r in queue.queued(ws)] == [runs[2].id, runs[0].id]

    out = labtui(ws.root, "queue", "--cancel", runs[1].id)  # no longer queued: nothing to cancel
    assert out.returncode == 2 and "not in the queue" in out.stderr

    stray = _script_run(ws)  # says `queued` (just created) but was never put in the queue
    out = labtui(ws.root, "stop", stray.id)
    assert out.returncode == 2 and out.stderr.startswith("labtui: error:") and "nothing changed" in out.stderr
    assert "removed" not in out.stdout + out.stderr

    _free_slot(holder)  # the slot frees: the rebuilt queue goes on, in its order
    (ws.logs / queue.QUEUE_FILE).write_text('{"order": "garbage"}')
    started = queue.advance(ws)
    assert started == [runs[0].id]
    assert wait_for(runs[0], timeout=60)["status"] == "completed"
    assert stray.raw_state()["status"] == "queued"  # never queued, never started by the queue


# --- 3. the TUI's monitor advances the queue ----------------------------------------------------


def test_the_tui_monitor_starts_the_next_queued_run_when_nobody_else_does(tmp_path):
    from labtui.tui.monitor import Monitor

    ws = _ws(tmp_path)
    holder = _occupy_slot(ws)
    waiting = _script_run(ws)
    queue.enqueue(ws, waiting)
    posted = []
    monitor = Monitor(ws, posted.append)
    monitor.prime()
    monitor.tick()
    assert waiting.raw_state()["status"] == "queued"  # the slot is taken
    _free_slot(holder)  # the supervisor that would have advanced the queue is gone
    monitor._advanced = float("-inf")  # do not wait out the rate limit
    monitor.tick()
    assert waiting.raw_state()["status"] != "queued"
    assert wait_for(waiting, timeout=60)["status"] == "completed"
    assert monitor.last_error is None


# --- 4. the concurrency limit on every path -----------------------------------------------------


def test_run_resume_and_retry_queue_when_the_slots_are_full_and_start_only_with_now(tmp_path):
    ws = _ws(tmp_path)
    holder = _occupy_slot(ws)

    out = labtui(ws.root, "run", "--", *QUICK, check=True)
    queued_run = ws.run(out.stdout.strip())
    assert "queued: 1 run already running, concurrency 1; use --now to start anyway" in out.stderr
    assert queued_run.raw_state()["status"] == "queued"

    stopped = _stopped_train_run(ws)
    _fake_checkpoint(stopped, 4)
    out = labtui(ws.root, "resume", stopped.id, check=True)
    assert "queued: 1 run already running, concurrency 1, 1 queued ahead; use --now to start anyway" in out.stderr
    raw = stopped.raw_state()
    assert raw["status"] == "queued" and raw["queued_resume"] is True  # resumes (not restarts) when its turn comes

    done = ws.run(labtui(ws.root, "run", "--now", "--", *QUICK, check=True).stdout.strip())
    assert wait_for(done, timeout=60)["status"] == "completed"  # explicitly: started anyway
    out = labtui(ws.root, "retry", done.id, "--yes", check=True)
    again = ws.run(out.stdout.strip())
    assert again.raw_state()["status"] == "queued" and "use --now to start anyway" in out.stderr

    assert [r.id for r in queue.queued(ws)] == [queued_run.id, stopped.id, again.id]
    for r in (stopped, again):
        assert labtui(ws.root, "queue", "--cancel", r.id).returncode == 0
    _free_slot(holder)
    assert queue.advance(ws) == [queued_run.id]
    assert wait_for(queued_run, timeout=60)["status"] == "completed"


def test_one_function_decides_start_or_queue(tmp_path):
    ws = _ws(tmp_path)
    holder = _occupy_slot(ws)
    a = _script_run(ws)
    assert queue.start_or_queue(ws, a) == (False, "1 run already running, concurrency 1")
    assert not queue.slot_free(ws)
    assert queue.full_message(ws) == "1 run already running, concurrency 1, 1 queued ahead"
    _free_slot(holder)
    b = _script_run(ws)
    started, why = queue.start_or_queue(ws, b)  # a slot is free, but `a` waits for it first
    assert not started and why.endswith("1 queued ahead") and [r.id for r in queue.queued(ws)] == [a.id, b.id]
    assert queue.advance(ws) == [a.id]
    for r in (a, b):
        wait_for(r, timeout=60)  # `a` ends, its supervisor starts `b`
    assert b.state()["status"] == "completed"


# --- 5. a suspended worker; a killed supervisor ---------------------------------------------------


def test_stop_continues_a_suspended_worker_so_it_can_stop(tmp_path):
    ws = _ws(tmp_path, concurrency=2)
    run = ws.run(labtui(ws.root, "run", "--", *SLEEP, check=True).stdout.strip())
    try:
        pid = _wait_pid(run)
        os.kill(pid, signal.SIGSTOP)
        deadline = time.time() + 10
        while psutil.Process(pid).status() != psutil.STATUS_STOPPED:
            assert time.time() < deadline
            time.sleep(0.05)
        out = labtui(ws.root, "stop", run.id, check=True)
        assert "was suspended" in out.stdout and "SIGCONT" in out.stdout
        assert wait_for(run, timeout=20)["status"] == "stopped"
    finally:
        _kill_group(run)


def test_a_killed_supervisor_with_a_live_worker_is_shown_as_such(tmp_path):
    ws = _ws(tmp_path, concurrency=2)
    run = ws.run(labtui(ws.root, "run", "--", *SLEEP, check=True).stdout.strip())
    try:
        _wait_pid(run)
        sup = run.raw_state()["supervisor_pid"]
        os.kill(sup, signal.SIGKILL)
        deadline = time.time() + 10
        while store.process_alive(sup, run.raw_state().get("supervisor_start")):
            assert time.time() < deadline
            time.sleep(0.05)
        state = run.state()
        assert state["status"] == "running"
        assert state["warning"] == store.SUPERVISOR_GONE == "supervisor gone, worker alive: no heartbeat, no queue advance"
        summary = run.summary()
        assert summary["status"] == "running" and summary.get("warning") == store.SUPERVISOR_GONE
        shown = labtui(ws.root, "show", run.id, check=True).stdout
        assert store.SUPERVISOR_GONE in shown
    finally:
        _kill_group(run)
    deadline = time.time() + 10
    while run.state()["status"] == "running":
        assert time.time() < deadline
        time.sleep(0.05)
    assert run.state()["status"] == "crashed"  # gone without a supervisor to record how: a reader says so


# --- 6. a read-only workspace -------------------------------------------------------------------


def _drop_root_file_powers() -> None:
    """In the child, before exec: drop CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH and CAP_FOWNER from the
    bounding set, so the exec'd CLI runs as root *without* the right to ignore file permissions."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2, 3):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            os._exit(97)


def _as_reader(ws_root: Path):
    """Make the workspace read-only (chmod a-w) and run the CLI so that the kernel enforces it. As root,
    chmod alone blocks nothing, so the CLI subprocess runs as root minus the capabilities that override
    file permissions (real EACCES from the OS, no monkeypatching); as another user chmod is enough."""
    for p in [ws_root, *ws_root.rglob("*")]:
        if not p.is_symlink():
            p.chmod(p.stat().st_mode & ~0o222)
    return {"preexec_fn": _drop_root_file_powers} if os.geteuid() == 0 else {}


def test_a_read_only_workspace_reads_and_refuses_writes_with_one_line(tmp_path):
    root = tmp_path / "ro"
    root.mkdir()
    try:
        ws = _ws(root)
        holder = _occupy_slot(ws)
        done = _script_run(ws)
        done.update_state(status="completed", started=time.time(), ended=time.time(), exit_code=0)
        done.file(store.LOG_FILE).write_text("hello\n")
        waiting = _script_run(ws)
        queue.enqueue(ws, waiting)
        _free_slot(holder)  # a slot is free: a reader that could write would start `waiting`
        kw = _as_reader(root)
        for args in (["runs"], ["runs", "--json"], ["queue"], ["queue", "--json"], ["show", done.id],
                     ["show", done.id, "--json"], ["logs", done.id]):
            out = labtui(root, *args, **kw)
            assert out.returncode == 0, (args, out.stderr)
            assert "Traceback" not in out.stderr
        assert waiting.id in labtui(root, "queue", **kw).stdout
        for args in (["run", "--", *QUICK], ["queue", "--concurrency", "2"], ["stop", waiting.id],
                     ["retry", done.id, "--yes"]):
            out = labtui(root, *args, **kw)
            lines = out.stderr.strip().splitlines()
            assert out.returncode == 2, (args, out.stderr)
            assert len(lines) == 1 and lines[0].startswith("labtui: error:") and "not writable" in lines[0], (args, out.stderr)
        assert waiting.raw_state()["status"] == "queued"
        assert sorted(p.name for p in ws.logs.iterdir() if not p.name.startswith(".")) == sorted(
            [holder.id, done.id, waiting.id, queue.QUEUE_FILE])
    finally:
        for p in [root, *root.rglob("*")]:
            if not p.is_symlink():
                p.chmod(p.stat().st_mode | 0o200)


# --- 7. never signal a process whose identity is not proven -------------------------------------


def test_stop_never_signals_a_process_without_a_recorded_start_time(tmp_path):
    ws = _ws(tmp_path)
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        run = _script_run(ws)
        run.update_state(status="running", pid=bystander.pid, pgid=bystander.pid, host=socket.gethostname(),
                         heartbeat=time.time())  # no pid_start: an old or hand-edited state.json
        assert not store.process_alive(bystander.pid, None)
        assert store.process_alive(bystander.pid, store.process_start_time(bystander.pid))
        assert not store.process_alive(bystander.pid, store.process_start_time(bystander.pid) - 3600)
        out = labtui(ws.root, "stop", run.id, "--now")
        assert out.returncode == 2 and "cannot prove" in out.stderr and "will not signal" in out.stderr
        time.sleep(0.3)
        assert bystander.poll() is None  # still running: nothing was sent
    finally:
        bystander.kill()
        bystander.wait()


# --- 8. retry: the workspace given wins; a command is shown and confirmed first ------------------


def test_retry_of_a_copied_folder_runs_in_the_workspace_given(tmp_path):
    elsewhere = str(tmp_path / "someone-elses-workspace")  # named in run.json, absent here
    ws = _ws(tmp_path / "mine")
    _occupy_slot(ws)  # keeps the retried training run queued: no worker starts
    copied = _stopped_train_run(ws, root=elsewhere)
    out = labtui(tmp_path, "--workspace", str(ws.root), "retry", copied.id, check=True)
    new = ws.run(out.stdout.strip())
    assert new.path.parent == ws.logs and new.info()["workspace"] == str(ws.root)
    assert new.info()["parent"] == copied.id and new.config() == copied.config()
    assert not Path(elsewhere).exists()


def test_retry_of_a_command_run_shows_the_command_and_needs_yes(tmp_path):
    ws = _ws(tmp_path, concurrency=2)
    old = ws.create_run("script", {"experiment": "script", "kind": "script", "script_command": QUICK, "cwd": "/elsewhere",
                                   "workspace": str(tmp_path / "someone-elses-workspace")})
    old.update_state(status="completed", ended=time.time(), exit_code=0)
    out = labtui(ws.root, "retry", old.id)  # no terminal to ask on (CI)
    assert out.returncode == 2 and "add --yes" in out.stderr and "hello from the command" in out.stderr
    assert [r.id for r in ws.runs()] == [old.id]  # nothing created
    assert not (tmp_path / "someone-elses-workspace").exists()
    out = labtui(ws.root, "retry", old.id, "--yes", check=True)
    assert "running again:" in out.stderr and "hello from the command" in out.stderr
    new = ws.run(out.stdout.strip())
    assert new.info()["workspace"] == str(ws.root) and new.info()["cwd"] == str(ws.root)
    assert wait_for(new, timeout=60)["status"] == "completed"
    assert "hello from the command" in new.file(store.LOG_FILE).read_text()


# --- 4 and 8 in the TUI: a question before the limit is exceeded or a command runs again ---------



async def _until(pilot, cond, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await pilot.pause(0.05)


def _screen_text(screen) -> str:
    return " ".join(str(w.render()) for w in screen.query("Static"))


@pytest.mark.anyio
async def test_tui_resume_and_retry_ask_before_exceeding_the_limit_or_running_a_command(tmp_path):
    from labtui.tui.app import LabApp

    ws = _ws(tmp_path)
    _occupy_slot(ws)
    stopped = _stopped_train_run(ws)
    _fake_checkpoint(stopped, 4)
    script = ws.create_run("script", {"experiment": "script", "kind": "script", "script_command": QUICK,
                                      "workspace": str(ws.root)})
    script.update_state(status="completed", ended=time.time(), exit_code=0)
    app = LabApp(workspace=ws, poll_interval=0.05)
    async with app.run_test(size=(110, 32)) as pilot:
        await _until(pilot, lambda: app.row(stopped.id) is not None and app.row(script.id) is not None, "the rows")
        app.select_run(stopped.id)
        await pilot.pause(0.1)
        await pilot.press("r")
        await _until(pilot, lambda: type(app.screen).__name__ == "Choose", "the question")
        assert "1 run already running, concurrency 1" in _screen_text(app.screen)
        await pilot.press("q")  # queue it
        await _until(pilot, lambda: stopped.raw_state().get("status") == "queued", "the resume to be queued")
        assert stopped.raw_state().get("queued_resume") is True and stopped.raw_state().get("pid") is None

        app.select_run(script.id)
        await pilot.pause(0.1)
        await pilot.press("R")
        await _until(pilot, lambda: type(app.screen).__name__ == "Choose", "the command question")
        assert "hello from the command" in _screen_text(app.screen)
        await pilot.press("escape")  # not confirmed: nothing is created
        await pilot.pause(0.3)
        assert len(ws.runs()) == 3


@pytest.mark.anyio
async def test_tui_launch_start_now_asks_when_the_slot_is_taken(tmp_path):
    from conftest import ROOT
    from labtui.tui.app import LabApp

    ws = _ws(tmp_path)
    shutil.copytree(ROOT / "experiments", ws.experiments)
    _occupy_slot(ws)
    app = LabApp(workspace=ws, poll_interval=0.05)
    async with app.run_test(size=(110, 32)) as pilot:
        await pilot.press("n")
        await _until(pilot, lambda: type(app.screen).__name__ == "LaunchScreen" and app.screen.preview_ok, "Launch")
        launch = app.screen
        await pilot.press("ctrl+s")  # start now
        await _until(pilot, lambda: type(app.screen).__name__ == "Choose", "the question")
        assert "1 run already running, concurrency 1" in _screen_text(app.screen)
        await pilot.press("escape")
        await pilot.pause(0.2)
        assert app.screen is launch and launch.last_argv is None and len(ws.runs()) == 1  # nothing started
