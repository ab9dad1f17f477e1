"""The baseline mark: one run id in `logs/.labtui-baseline`, shared by every TUI on the workspace and
by `labtui report`.

History compares every evaluated run against it (difference, McNemar p, Cohen's h); `labtui report`
does too unless given --baseline.
"""

from __future__ import annotations

from labtui.engine.rundir import store

BASELINE_FILE = ".labtui-baseline"


def get(ws: store.Workspace) -> str | None:
    try:
        text = (ws.logs / BASELINE_FILE).read_text().strip()
    except OSError:
        return None
    return text or None


def set(ws: store.Workspace, run_id: str | None) -> None:  # noqa: A001 - baseline.set reads well
    path = ws.logs / BASELINE_FILE
    if run_id is None:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        return
    ws.logs.mkdir(parents=True, exist_ok=True)
    store.atomic_write_text(path, run_id + "\n")
