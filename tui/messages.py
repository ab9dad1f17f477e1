"""Messages from the background monitor (a thread) to the UI. They carry immutable data only.

Each is a dataclass over Textual's `Message` (Textual supports this): the fields are the message's
constructor arguments, in order."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from .scan import RunRow
from .tail import TailSnapshot


@dataclass
class RunsScanned(Message):
    """The run list changed (a run appeared, moved on, or its numbers changed)."""

    rows: tuple[RunRow, ...]


@dataclass
class EvalsScanned(Message):
    """The runs' evaluations changed: {run id: monitor.EvalInfo} for the runs that have an evals/ folder."""

    evals: dict


@dataclass
class MonitorStatus(Message):
    """A part of the background monitor failed (`error`, one line a part), or works again (None)."""

    error: str | None


@dataclass
class RunData(Message):
    """New records for the selected run, folded into a snapshot."""

    snapshot: TailSnapshot


@dataclass
class MarkedData(Message):
    """New records for the runs marked on the dashboard (its chart overlays them): a snapshot of
    each marked run read so far, in the order they were marked."""

    snapshots: tuple[TailSnapshot, ...]


@dataclass
class RunEnded(Message):
    """A run that was live (or queued) when last seen is now completed, failed, stopped or crashed."""

    row: RunRow
    previous: str


@dataclass
class AlertFired(Message):
    """A new record in a run's alerts.jsonl."""

    row: RunRow
    alert: dict


@dataclass
class LogLines(Message):
    """New text of the followed run's log; `reset` when it starts over (another run, or a fresh tail)."""

    run_id: str
    text: str
    reset: bool = False


@dataclass
class EvalProgress(Message):
    """Progress of an evaluation started from the Evaluate screen."""

    eval_dir: str
    progress: dict
