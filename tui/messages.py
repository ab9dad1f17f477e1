"""Messages from the background monitor (a thread) to the UI. They carry immutable data only."""

from __future__ import annotations

from textual.message import Message

from .scan import RunRow
from .tail import TailSnapshot


class RunsScanned(Message):
    """The run list changed (a run appeared, moved on, or its numbers changed)."""

    def __init__(self, rows: tuple[RunRow, ...]) -> None:
        super().__init__()
        self.rows = rows


class EvalsScanned(Message):
    """The runs' evaluations changed: {run id: monitor.EvalInfo} for the runs that have an evals/ folder."""

    def __init__(self, evals: dict) -> None:
        super().__init__()
        self.evals = evals


class MonitorStatus(Message):
    """A part of the background monitor failed (`error`, one line a part), or works again (None)."""

    def __init__(self, error: str | None) -> None:
        super().__init__()
        self.error = error


class RunData(Message):
    """New records for the selected run, folded into a snapshot."""

    def __init__(self, snapshot: TailSnapshot) -> None:
        super().__init__()
        self.snapshot = snapshot


class RunEnded(Message):
    """A run that was live (or queued) when last seen is now completed, failed, stopped or crashed."""

    def __init__(self, row: RunRow, previous: str) -> None:
        super().__init__()
        self.row = row
        self.previous = previous


class AlertFired(Message):
    """A new record in a run's alerts.jsonl."""

    def __init__(self, row: RunRow, alert: dict) -> None:
        super().__init__()
        self.row = row
        self.alert = alert


class LogLines(Message):
    """New text of the followed run's log; `reset` when it starts over (another run, or a fresh tail)."""

    def __init__(self, run_id: str, text: str, reset: bool = False) -> None:
        super().__init__()
        self.run_id = run_id
        self.text = text
        self.reset = reset


class EvalProgress(Message):
    """Progress of an evaluation started from the Evaluate screen."""

    def __init__(self, eval_dir: str, progress: dict) -> None:
        super().__init__()
        self.eval_dir = eval_dir
        self.progress = progress
