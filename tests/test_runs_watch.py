"""`labtui runs --watch`: a line per change when its output is not a terminal, a table redrawn in place
on a terminal (a pty here); Ctrl-C ends it with exit status 0."""

from __future__ import annotations

import os
import pty
import queue
import select
import signal
import subprocess
import sys
import threading
import time

from conftest import labtui
from labtui.engine.rundir import store


def _watch(ws: store.Workspace, stdout, **kw) -> subprocess.Popen:
    env = dict(os.environ, LABTUI_WORKSPACE=str(ws.root))
    return subprocess.Popen([sys.executable, "-m", "labtui", "runs", "--watch", "--interval", "0.3"],
                            stdout=stdout, stderr=subprocess.PIPE, env=env, cwd=str(ws.root), **kw)


def test_not_on_a_terminal_it_prints_a_line_per_change(ws):
    watcher = _watch(ws, subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(ln) for ln in watcher.stdout], daemon=True).start()
    try:
        time.sleep(1.0)  # an empty workspace: nothing changes, nothing printed
        assert lines.empty()
        proc = labtui(ws, "run", "--", sys.executable, "-c", "import time; time.sleep(1.5)", check=True)
        run_id = proc.stdout.split()[0]
        seen: list[str] = []
        deadline = time.time() + 30
        while not any(f" {run_id} completed " in ln for ln in seen) and time.time() < deadline:
            try:
                seen.append(lines.get(timeout=0.5))
            except queue.Empty:
                pass
        mine = [ln.split() for ln in seen if f" {run_id} " in ln]
        statuses = [parts[2] for parts in mine]
        assert statuses[-1:] == ["completed"], seen
        assert "running" in statuses and statuses.index("running") < statuses.index("completed"), seen
        assert len(statuses) == len(set(statuses)), seen  # a line per change, not per look
        assert all(len(parts[0]) == 8 and parts[0].count(":") == 2 for parts in mine)  # HH:MM:SS first
        time.sleep(1.0)
        assert lines.empty()  # nothing changes any more
    finally:
        watcher.send_signal(signal.SIGINT)
        assert watcher.wait(timeout=10) == 0, watcher.stderr.read()


def test_on_a_terminal_the_table_is_redrawn_in_place(ws):
    labtui(ws, "run", "--", sys.executable, "-c", "print('hi')", check=True)
    main, secondary = pty.openpty()
    watcher = _watch(ws, secondary)
    os.close(secondary)
    out = b""
    try:
        deadline = time.time() + 20
        while out.count(b"\x1b[H") < 3 and time.time() < deadline:
            ready, _, _ = select.select([main], [], [], 0.5)
            if ready:
                out += os.read(main, 65536)
    finally:
        watcher.send_signal(signal.SIGINT)
        assert watcher.wait(timeout=10) == 0
        os.close(main)
    text = out.decode(errors="replace")
    assert text.startswith("\x1b[H\x1b[2J")  # the first frame clears the screen
    assert text.count("\x1b[H") >= 3  # later frames go back to the top and draw over it
    assert "ID" in text and "STATUS" in text and "completed" in text and "Ctrl-C to quit" in text


def test_a_table_larger_than_the_terminal_is_fitted_not_wrapped():
    from labtui.engine.cli.watch import fit

    table = ["ID      STATUS"] + [f"run-{k:02d}  completed  " + "x" * 100 for k in range(30)]
    shown = fit(table, 80, 24)
    assert len(shown) == 22 and all(len(line) <= 79 for line in shown)  # the footer's 2 lines fit below
    assert shown[0] == "ID      STATUS" and shown[-1].startswith("run-29")  # the header and the newest runs
    assert shown[1].startswith("... 10 earlier line(s) not shown")
    assert fit(table[:5], 200, 50) == table[:5]  # a table that fits is left as it is
