"""`labtui`: the control room App. Screens live in tui/screens/, widgets in tui/widgets/.

The App owns the shared state every screen reads: the run list (`runs`), the selected run and
its latest data (`selected_id`, `snapshot`) and the baseline mark. A background `Monitor`
thread reads the run store by offset and posts messages; the handlers here update those
reactives, and screens watch them. Nothing here imports torch or any training library.
"""

from __future__ import annotations

import os
import time
from collections import deque
from typing import Callable

from labtui.engine.rundir import store
from labtui.engine.rundir.fmt import printable
from textual import work
from textual.app import App
from textual.binding import Binding
from textual.reactive import reactive
from textual.worker import get_current_worker

from . import baseline, messages
from .commands import LabCommands
from .guard import describe, guarded, log_exception
from .monitor import EvalInfo, Monitor
from .scan import RunRow
from .screens.dashboard import DashboardScreen
from .screens.help import HelpScreen
from .tail import TailSnapshot
from .widgets.run_list import default_selection

SEVERITY = {"critical": "error", "error": "error", "warning": "warning", "warn": "warning"}


class LabApp(App[None]):
    TITLE = "labtui"
    CSS_PATH = "labtui.tcss"
    COMMANDS = App.COMMANDS | {LabCommands}
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (100, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (32, "-tall")]
    BINDINGS = [
        Binding("question_mark", "help", "Help", id="help", tooltip="Keys, symbols and where things are"),
        Binding("q", "quit", "Quit", id="quit", tooltip="Leave labtui; runs keep going"),
    ]

    # bindings=True: the keys of the screen on top depend on these (a run's status, the selected
    # run, the baseline), so the footer and the palette follow them without a manual refresh.
    runs: reactive[tuple[RunRow, ...]] = reactive((), bindings=True)
    selected_id: reactive[str | None] = reactive(None, bindings=True)
    snapshot: reactive[TailSnapshot | None] = reactive(None)
    baseline_id: reactive[str | None] = reactive(None, bindings=True)
    evals: reactive[dict[str, EvalInfo]] = reactive(dict, always_update=True)  # run id -> its evaluations
    monitor_error: reactive[str | None] = reactive(None)  # the monitor's last failure, in the title bar
    display_errors: reactive[int] = reactive(0)  # drawing/handler errors caught so far

    def __init__(self, workspace: store.Workspace | str | os.PathLike = ".", poll_interval: float = 1.0,
                 clock: Callable[[], float] | None = None, theme: str | None = None):
        super().__init__()
        self.workspace = workspace if isinstance(workspace, store.Workspace) else store.Workspace(workspace)
        self.poll_interval = poll_interval
        self.clock = clock or time.time
        self.monitor = Monitor(self.workspace, self.post_message, poll_interval, clock=clock)
        self._theme_choice = theme or os.environ.get("LABTUI_THEME")
        self.errors: deque[tuple[float, str, str]] = deque(maxlen=50)  # (time, where, what)
        self._told: dict[str, float] = {}

    def get_default_screen(self) -> DashboardScreen:
        return DashboardScreen()

    def on_mount(self) -> None:
        if self._theme_choice:
            self.theme = self._theme_choice
        elif self.console.color_system in ("standard", "windows"):
            self.theme = "ansi-dark"  # the terminal's own 16 colours
        self.baseline_id = baseline.get(self.workspace)
        try:  # the first scan here, not in the thread: the first frame lists the runs
            rows = self.monitor.prime()
        except Exception:  # a damaged workspace must not stop the TUI: the thread retries
            rows = ()
        if rows:
            self.on_runs_scanned(messages.RunsScanned(rows))
        if self.monitor.evals:
            self.evals = dict(self.monitor.evals)
        self.start_monitor()

    # --- the background monitor ---------------------------------------------------------------

    @work(thread=True, group="monitor", exclusive=True, exit_on_error=False,
          description="monitor: reads the run store by offset")
    def start_monitor(self) -> None:
        worker = get_current_worker()
        self.monitor.run(lambda: worker.is_cancelled)

    def on_unmount(self) -> None:
        self.monitor.stop()

    @guarded("run list")
    def on_runs_scanned(self, message: messages.RunsScanned) -> None:
        with self.batch_update():
            self.runs = message.rows
            ids = {r.id for r in message.rows}
            if self.selected_id not in ids and message.rows:
                self.select_run(default_selection(message.rows))

    @guarded("run data")
    def on_run_data(self, message: messages.RunData) -> None:
        if message.snapshot.run_id == self.selected_id:
            self.snapshot = message.snapshot

    @guarded("evaluations")
    def on_evals_scanned(self, message: messages.EvalsScanned) -> None:
        self.evals = message.evals

    def on_monitor_status(self, message: messages.MonitorStatus) -> None:
        self.monitor_error = message.error
        if message.error:
            log_exception("monitor", RuntimeError(message.error))

    @guarded("run end notice")
    def on_run_ended(self, message: messages.RunEnded) -> None:
        row = message.row
        severity = "information" if row.status == "completed" else "warning" if row.status == "stopped" else "error"
        detail = f"\n{row.error}" if row.error else ""
        self.notify(printable(f"{row.id}: {row.status}{detail}"), title=f"Run {row.status}", severity=severity,
                    timeout=10 if row.status == "completed" else 30, markup=False)
        self.bell()

    @guarded("alert notice")
    def on_alert_fired(self, message: messages.AlertFired) -> None:
        alert = message.alert
        step = f" at step {alert['step']}" if alert.get("step") is not None else ""
        hint = f"\n{alert['hint']}" if alert.get("hint") else ""
        self.notify(printable(f"{message.row.experiment}{step}: {alert.get('message', '')}{hint}"),
                    title=printable(f"Alert ({alert.get('severity') or 'warning'})"),
                    severity=SEVERITY.get(str(alert.get("severity")), "warning"), timeout=20, markup=False)
        self.bell()

    # --- errors: shown where they happen, logged, and the app goes on ---------------------------

    def report_error(self, where: str, exc: BaseException) -> str:
        """A widget's drawing or a handler failed: keep it, log its traceback, and say so once a
        minute per place (the widget itself shows the error where it can). Returns the line shown."""
        what = describe(exc)
        self.errors.append((self.now(), where, what))
        path = log_exception(where, exc)
        self.display_errors += 1
        last = self._told.get(where)
        if last is None or time.monotonic() - last > 60:
            self._told[where] = time.monotonic()
            self.notify(printable(f"{where}: {what}" + (f"\n(traceback in {path})" if path else "")),
                        title="Display error", severity="error", timeout=15, markup=False)
        return f"{where}: could not draw: {what}"

    # --- shared state -------------------------------------------------------------------------

    def now(self) -> float:
        return self.clock()

    def select_run(self, run_id: str | None) -> None:
        if run_id == self.selected_id:
            return
        self.selected_id = run_id
        self.snapshot = None
        self.monitor.select(run_id)

    def row(self, run_id: str | None) -> RunRow | None:
        return next((r for r in self.runs if r.id == run_id), None)

    @property
    def selected_row(self) -> RunRow | None:
        return self.row(self.selected_id)

    def run_for(self, run_id: str) -> store.Run:
        return store.Run(self.workspace.logs / run_id)

    def set_baseline(self, run_id: str | None) -> None:
        baseline.set(self.workspace, run_id)
        self.baseline_id = run_id

    def refresh_now(self) -> None:
        """Look at the store again without waiting for the next poll (after an action)."""
        self.monitor.wake()

    # --- actions ------------------------------------------------------------------------------

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.screen))

    async def action_quit(self) -> None:
        self.monitor.stop()
        self.exit()


def main(workspace: store.Workspace | str | os.PathLike = ".", note: str | None = None, **kwargs) -> int:
    """Run the dashboard until the user quits; the exit status: 0, or non-zero when the app had to
    stop on an error (Textual prints the traceback). `labtui` with no command calls this (labtui.main);
    `note`, if given, is shown on the dashboard once it opens."""
    app = LabApp(workspace=workspace, **kwargs)
    if note:
        app.call_later(lambda: app.notify(note, title="labtui", timeout=15, markup=False))
    app.run()
    return app.return_code or 0
