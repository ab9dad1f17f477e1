"""`labtui runs --watch`: the run table kept up to date without a full-screen app.

On a terminal the table is redrawn in place every `--interval` seconds (cursor home, the table, clear
to the end of the screen: ANSI only, so it works over SSH, in tmux and in a plain log); otherwise one
line per change ("12:03:41 RUN-ID running 40/200 loss 1.234"), for a pipe or a file. Ctrl-C ends it
(exit 0). Each round does what `labtui runs` does (advances the queue, notices crashed runs).
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import Callable, TextIO

from labtui.engine.rundir import fmt

HOME_CLEAR = "\x1b[H\x1b[2J"  # the first frame: cursor home, clear the screen
HOME = "\x1b[H"  # later frames: cursor home, draw over the last one ...
CLEAR_BELOW = "\x1b[J"  # ... and clear what it left below


def _key(row: dict) -> tuple:
    return row.get("status"), row.get("step"), row.get("max_steps"), row.get("warning")


def change_line(row: dict, now: float | None = None) -> str:
    """One line of the non-terminal mode: time id status step/total loss (eval loss) ! warning."""
    t = time.strftime("%H:%M:%S", time.localtime(now or time.time()))
    parts = [t, str(row.get("id")), str(row.get("status")), f"{row.get('step') or 0}/{row.get('max_steps') or '?'}"]
    if row.get("train_loss") is not None:
        parts.append(f"loss {fmt.num(row.get('train_loss'))}")
    if row.get("eval_loss") is not None:
        parts.append(f"eval {fmt.num(row.get('eval_loss'))}")
    if row.get("error") and row.get("status") in ("failed", "crashed", "stopped"):
        parts.append(f"- {str(row['error']).splitlines()[0][:120]}")
    if row.get("warning"):
        parts.append(f"! {row['warning']}")
    return fmt.printable(" ".join(parts))


def fit(lines: list[str], columns: int, rows: int) -> list[str]:
    """The table for a terminal of `columns` x `rows` (2 rows kept for the footer): each line clipped
    (a wrapped line would break the redraw in place), and when it is too tall its header and its last
    lines (the newest runs) with a line saying how many earlier ones are not shown."""
    lines = [fmt.clip(ln, max(columns - 1, 10)) for ln in lines]
    room = max(rows - 2, 3)
    if len(lines) <= room:
        return lines
    keep = room - 2  # the header, the note
    return [lines[0], f"... {len(lines) - 1 - keep} earlier line(s) not shown: widen the window or `labtui runs`",
            *lines[len(lines) - keep:]]


def watch(rows_now: Callable[[], tuple[list[dict], int]], table: Callable[[list[dict], int], list[str]],
          interval: float, out: TextIO | None = None, tty: bool | None = None) -> int:
    """Redraw `table(rows, total)` (a terminal) or print a line per changed row until Ctrl-C."""
    out = out or sys.stdout
    tty = out.isatty() if tty is None else tty
    seen: dict[str, tuple] = {}
    first = True
    try:
        while True:
            rows, total = rows_now()
            if tty:
                stamp = time.strftime("%H:%M:%S")
                lines = [*fit(table(rows, total), *shutil.get_terminal_size()), "",
                         f"{stamp} - every {interval:g} s - Ctrl-C to quit"]
                out.write((HOME_CLEAR if first else HOME) + "\n".join(ln + "\x1b[K" for ln in lines) + "\n" + CLEAR_BELOW)
            else:
                now = time.time()
                ids = set()
                for row in rows:
                    rid = str(row.get("id"))
                    ids.add(rid)
                    if seen.get(rid) != _key(row):
                        seen[rid] = _key(row)
                        out.write(change_line(row, now) + "\n")
                for gone in set(seen) - ids:
                    del seen[gone]
                    out.write(f"{time.strftime('%H:%M:%S', time.localtime(now))} {fmt.printable(gone)} no longer listed\n")
            out.flush()
            first = False
            time.sleep(interval)
    except KeyboardInterrupt:
        if tty:
            out.write("\n")
            out.flush()
        return 0
