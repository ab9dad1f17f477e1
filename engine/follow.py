"""Following a run or an evaluation in the terminal until it ends: `labtui run -f`, `labtui resume -f`,
`labtui eval` and `labtui parity` draw their progress line with this."""

from __future__ import annotations

import shutil
import signal
import sys
import time
from typing import Callable

from . import store


def follow_progress(run: store.Run, line: Callable[[dict, dict], str], stop: Callable[[store.Run], object], *,
                    worth_a_line: Callable[[dict, dict], bool], stopping: str, poll_s: float = 0.5,
                    out=sys.stderr) -> dict | None:
    """Draw `line(state, progress)` until `run` ends and return its final state. On a terminal the
    line is redrawn in place; elsewhere (a log file, CI) a line is written when
    `worth_a_line(previous progress, progress)` says so, and at the end. The first Ctrl-C calls
    `stop(run)` (said as "stopping <id><stopping>"); the second leaves the run going and returns None."""
    pressed = 0

    def on_int(signum, frame):
        nonlocal pressed
        pressed += 1
        if pressed > 1:
            raise KeyboardInterrupt
        out.write(f"\nstopping {run.id}{stopping} (Ctrl-C again to leave it running)\n")
        stop(run)

    old = signal.signal(signal.SIGINT, on_int)
    tty = out.isatty()
    last, last_prog = "", {}
    try:
        while True:
            state, prog = run.state(), run.progress()
            text = line(state, prog)
            final = state.get("status") in store.FINAL
            if tty:
                out.write("\r" + text[: shutil.get_terminal_size().columns - 1].ljust(min(len(last), 200)))
            elif text != last and (final or worth_a_line(last_prog, prog)):
                out.write(text + "\n")
            out.flush()
            last, last_prog = text, prog
            if final:
                break
            time.sleep(poll_s)
    except KeyboardInterrupt:
        out.write(f"\nleft {run.id} running in the background\n")
        return None
    finally:
        signal.signal(signal.SIGINT, old)
    if tty:
        out.write("\n")
    return state
