"""Following a run or an evaluation in the terminal until it ends: `labtui run -f`, `labtui resume -f`,
`labtui eval` and `labtui parity` draw their progress line with this."""

from __future__ import annotations

import codecs
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Callable

from labtui.engine.rundir import fmt, store


def slurm_refresh(run: store.Run) -> Callable[[], None]:
    """What a follower calls before each look at a run: a Slurm run's state.json brought in step with
    Slurm (slurm_runs.sync: pending, its node, an end the supervisor could not record); for a local run
    a stat of its state.json."""
    from labtui.engine.runtime import launcher, slurm_runs

    ws = store.Workspace(launcher.home_workspace(run))
    return lambda: slurm_runs.sync(ws, [run])


def follow_progress(run: store.Run, line: Callable[[dict, dict], str], stop: Callable[[store.Run], object], *,
                    worth_a_line: Callable[[dict, dict], bool], stopping: str, poll_s: float = 0.5,
                    out=sys.stderr, refresh: Callable[[], None] | None = None) -> dict | None:
    """Draw `line(state, progress)` until `run` ends and return its final state. On a terminal the
    line is redrawn in place; elsewhere (a log file, CI) a line is written when
    `worth_a_line(previous progress, progress)` says so, and at the end. The first Ctrl-C calls
    `stop(run)` (said as "stopping <id><stopping>"); the second leaves the run going and returns None.
    `refresh()` is called before each look (`slurm_refresh`: a Slurm run's state brought in step)."""
    pressed = 0

    def on_int(signum, frame):
        nonlocal pressed
        pressed += 1
        if pressed > 1:
            raise KeyboardInterrupt
        out.write(f"\nstopping {run.id}{stopping} (Ctrl-C again to leave it running)\n")
        try:
            stop(run)
        except Exception as e:  # noqa: BLE001 - e.g. it ended meanwhile: the stop's own message
            out.write(fmt.printable(str(e)) + "\n")

    old = signal.signal(signal.SIGINT, on_int)
    tty = out.isatty()
    last, last_prog = "", {}
    try:
        while True:
            if refresh is not None:
                refresh()
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


TAIL_BYTES = 256_000  # how far back `follow_log` looks for its first lines


def progress_head(run_id: str, status, done, total, width: int = 24) -> str:
    """The start of every `-f` progress line, runs and evals alike: `ID STATUS [####----] DONE/TOTAL`
    (the run's own text made printable)."""
    done = done if isinstance(done, (int, float)) else 0
    total = total if isinstance(total, (int, float)) else 0
    filled = max(0, min(width, int(width * done / total))) if total else 0
    return (f"{fmt.printable(run_id[:40])} {fmt.printable(status or '?'):<9} "
            f"[{'#' * filled}{'-' * (width - filled)}] {done}/{total or '?'}")


def follow_log(path: Path, lines: int, finished: Callable[[], bool], *, poll_s: float = 0.5, out=None) -> None:
    """`labtui logs -f`: print the last `lines` lines of a log, then what is appended to it, until
    `finished()` says the run has ended (and what it wrote last is printed). Each line as a terminal
    shows it: a line a progress bar (tqdm) redrew with carriage returns is printed once, as its last
    state (`fmt.last_cr_segment`), with no control characters (`fmt.printable`); on a terminal the
    line being redrawn right now is shown updating in place. Only a regular file is read."""
    out = out or sys.stdout
    tty = out.isatty()
    offset = _print_tail(path, lines, out)
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    pending, drawn = "", False
    while True:
        done = finished()  # asked before reading, so what the run wrote last is read after it ended
        data = _read_from(path, offset)
        if data:
            offset += len(data)
            *complete, pending = (pending + decoder.decode(data)).replace("\r\n", "\n").split("\n")
            for line in complete:
                if drawn:
                    out.write("\r\x1b[K")
                    drawn = False
                out.write(fmt.printable(fmt.last_cr_segment(line)) + "\n")
            if tty and fmt.last_cr_segment(pending).strip():  # a bar being redrawn: show its state now
                width = shutil.get_terminal_size().columns - 1
                out.write("\r\x1b[K" + fmt.printable(fmt.last_cr_segment(pending))[:width])
                drawn = True
            out.flush()
        elif done:
            break
        else:
            time.sleep(poll_s)
    rest = fmt.last_cr_segment(pending + decoder.decode(b"", final=True))
    if drawn:
        out.write("\r\x1b[K")
    if rest.strip():
        out.write(fmt.printable(rest) + "\n")
    out.flush()


def _read_from(path: Path, offset: int) -> bytes:
    f = store.open_regular(path)
    if f is None:
        return b""
    try:
        with f:
            f.seek(offset)
            return f.read()
    except OSError:
        return b""


def _print_tail(path: Path, lines: int, out) -> int:
    """Print the last `lines` complete lines of the log; the byte offset following them is returned
    (a last line still being written is printed by the follow loop once it is whole)."""
    f = store.open_regular(path)
    if f is None:
        return 0
    try:
        with f:
            size = f.seek(0, os.SEEK_END)
            start = max(0, size - max(TAIL_BYTES, lines * 400))
            f.seek(start)
            data = f.read(size - start)
    except OSError:
        return 0
    end = data.rfind(b"\n") + 1
    text = data[:end].decode("utf-8", "replace").replace("\r\n", "\n")
    shown = [fmt.last_cr_segment(ln) for ln in text.split("\n")]
    for line in [ln for ln in shown if ln.strip()][-lines:] if lines > 0 else []:
        out.write(fmt.printable(line) + "\n")
    return start + end
