"""The dashboard (opens first): the run list and, for the selected run, loss, GPU, throughput,
system and status panels. It watches the App's `runs`, `snapshot` and `baseline_id`.

`space` marks runs: the chart overlays the marked runs (their snapshots come from the monitor as
`MarkedData`), the throughput panel lists their tokens/s, and `d` with two marked shows their
configs' differences."""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import DataTable, Input, Static

from .. import engine_api, messages
from .. import format as fmt
from ..commands import HonestKeys
from ..guard import guarded
from ..series import SMOOTHING
from ..text import markup, plain
from ..widgets.footer import LabFooter
from ..widgets.loss_chart import AXES, PALETTE, LossChart
from ..widgets.run_list import RunList, matches, order
from ..widgets.run_panels import GpuPanel, StatusPanel, SystemPanel, ThroughputPanel
from . import run_actions
from .confirm import Choose
from .run_actions import call_engine, why_disabled

WIDE_ONLY = ("filter", "axis", "smoothing", "log-y", "mark", "diff")  # in the footer as room allows, in this order


class DashboardScreen(HonestKeys, Screen):
    HELP_TITLE = "Dashboard"
    BINDINGS = [
        Binding("n", "new_run", "New", id="new-run", tooltip="Launch a run from experiments/"),
        Binding("e", "evaluate", "Eval", id="evaluate", tooltip="Evaluate the selected run"),
        Binding("s", "stop", "Stop", id="stop", tooltip="Stop the selected run (checkpoint first)"),
        Binding("r", "resume", "Resume", id="resume", tooltip="Resume the selected run from its last checkpoint"),
        Binding("l", "log", "Log", id="log", tooltip="The selected run's full log, following"),
        Binding("h", "history", "History", id="history", tooltip="All runs and evals, against the baseline"),
        Binding("b", "baseline", "Baseline", id="baseline", tooltip="Mark (or unmark) the selected run as baseline"),
        Binding("c", "compare", "Compare", id="compare", tooltip="Compare the selected run with the baseline"),
        # Shown in the footer when it is wide enough (LabFooter); always in the chart's title.
        Binding("space", "mark", "Mark", id="mark",
                tooltip="Mark (or unmark) the selected run: the chart overlays the marked runs"),
        Binding("d", "diff", "Diff", id="diff", tooltip="The two marked runs' configs: the keys that differ"),
        Binding("t", "axis", "Axis", id="axis", tooltip="The chart's x axis: step, wall time or tokens seen"),
        Binding("m", "smoothing", "Smooth", id="smoothing", tooltip="The chart's smoothing: off, light, strong"),
        Binding("g", "log_y", "Log y", id="log-y", tooltip="The chart's y axis: linear or log scale"),
        Binding("slash", "filter", "Filter", id="filter", tooltip="Filter the run list by words"),
        Binding("enter", "detail", "Run detail", id="detail", show=False,
                tooltip="Config, diff against the parent, checkpoints, evals, notes"),
        Binding("R", "retry", "Retry as a new run", id="retry", show=False),
        Binding("x", "cancel_queued", "Cancel queued run", id="cancel-queued", show=False),
        Binding("left_square_bracket", "move_queued(-1)", "Move up in the queue", id="queue-up", show=False),
        Binding("right_square_bracket", "move_queued(1)", "Move down in the queue", id="queue-down", show=False),
        Binding("escape", "clear_filter", "Clear filter", id="clear-filter", show=False),
    ]

    filter_words: reactive[str] = reactive("", bindings=True)  # the filter box's words: esc clears them
    marks: reactive[dict[str, int]] = reactive(dict, bindings=True)  # marked run id -> its PALETTE slot, in order

    def compose(self) -> ComposeResult:
        yield Static(id="title")
        yield Input(placeholder="filter: words in id, experiment, status, notes (enter: keep, esc: clear)",
                    id="run-filter")
        yield RunList(id="runs")
        with Horizontal(id="middle"):
            yield LossChart(id="chart")
            with Vertical(id="side"):
                yield ThroughputPanel(id="throughput")
                yield GpuPanel(id="gpu")
                yield SystemPanel(id="system")
        yield StatusPanel(id="status")
        yield LabFooter(WIDE_ONLY)

    def on_mount(self) -> None:
        self.query_one("#throughput").border_title = "Throughput"
        self.query_one("#gpu").border_title = "GPU"
        self.query_one("#system").border_title = "System"
        self.query_one("#status").border_title = "Status"
        self.query_one("#run-filter").display = False
        self.watch(self.app, "runs", self._runs_changed, init=True)
        self.watch(self.app, "baseline_id", self._runs_changed, init=False)
        self.watch(self.app, "snapshot", self._snapshot_changed, init=True)
        self.watch(self.app, "evals", self._runs_changed, init=False)
        self.watch(self.app, "monitor_error", self._title_again, init=False)
        self.watch(self.app, "display_errors", self._title_again, init=False)
        self.set_interval(5.0, self._runs_changed)  # ages move on
        self.query_one(RunList).focus()

    # --- data in ------------------------------------------------------------------------------

    @property
    def filter_text(self) -> str:
        return self.query_one("#run-filter", Input).value.strip()

    @guarded("run list")
    def _runs_changed(self, *_) -> None:
        app = self.app
        rows = [r for r in order(app.runs) if matches(r, self.filter_text)]
        self._shown = len(rows)
        gone = [run_id for run_id in self.marks if app.row(run_id) is None]
        if gone:  # a marked run's folder was removed
            self._set_marks({k: v for k, v in self.marks.items() if k not in gone})
        self.query_one(RunList).show(rows, app.now(), app.selected_id, app.baseline_id, app.evals, self.marks)
        self._title()
        self._snapshot_changed()

    def _title_again(self, *_) -> None:
        self._title()

    @guarded("title")
    def _title(self) -> None:
        """`labtui ws · 12 runs · ▶ 1 running · ... `; the monitor's failure, when it fails, first."""
        runs = self.app.runs
        counts = {}
        for r in runs:
            counts[r.status] = counts.get(r.status, 0) + 1
        parts = [markup("[b]labtui[/b] $ws", ws=self.app.workspace.root.name), plain(f"{len(runs)} runs")]
        if self.app.monitor_error:
            parts.insert(1, markup("[$error]⚠ monitor: $error[/]", error=fmt.clip(self.app.monitor_error, 90)))
        for status in ("running", "queued", "failed", "crashed"):
            if counts.get(status):
                parts.append(plain(f"{fmt.STATUS_ICONS[status]} {counts[status]} {status}", fmt.STATUS_STYLES[status]))
        if self.filter_text:
            parts.append(markup("filter '$text': $n shown", text=self.filter_text, n=getattr(self, "_shown", 0)))
        base = self.app.row(self.app.baseline_id)
        if base:
            parts.append(plain(f"baseline ★ {fmt.run_label(base.id, base.experiment, base.group)}"))
        if self.app.display_errors:
            parts.append(plain(f"⚠ {self.app.display_errors} display error(s)", "$warning"))
        self.query_one("#title", Static).update(Content(" · ").join(parts), layout=False)  # one line, always

    def _snapshot_changed(self, *_) -> None:
        chart = self.query_one(LossChart)
        chart.placeholder = "loading…" if self.app.selected_id else "no runs yet: n starts one"
        chart.snapshot = self.app.snapshot
        self._panels()

    def _panels(self) -> None:
        app = self.app
        snap = app.snapshot
        row = app.selected_row
        now = app.now()
        with app.batch_update():
            chart = self.query_one(LossChart)
            marked = tuple((label, slot, chart.overlay.get(run_id)) for run_id, label, slot in chart.marked)
            self.query_one(ThroughputPanel).show(snap, row, now, marked)
            self.query_one(GpuPanel).show(snap, row)
            self.query_one(SystemPanel).show(snap, row)
            self.query_one(StatusPanel).show(snap, row, now, app.evals.get(row.id) if row else None)

    @on(DataTable.RowHighlighted, "#runs")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key is not None and event.row_key.value != self.app.selected_id:
            self.app.select_run(event.row_key.value)  # the App's selected_id: the keys follow it
            self._panels()

    @on(DataTable.RowSelected, "#runs")
    def _selected(self, event: DataTable.RowSelected) -> None:
        self.action_detail()

    # --- keys ---------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action == "clear_filter":
            return bool(self.filter_words) or self.query_one("#run-filter").display
        return super().check_action(action, parameters)

    def why_disabled(self, action: str, parameters: tuple) -> str | None:
        if action == "diff" and len(self.marks) != 2:
            return f"mark two runs with space to compare their configs ({len(self.marks)} marked)"
        if action == "mark" and self.app.selected_row is None:
            return "no run selected"
        return why_disabled(action, self.app.selected_row, self.app.baseline_id)

    # --- marked runs: the chart overlays them --------------------------------------------------

    def action_mark(self) -> None:
        row = self.app.selected_row
        if row is None:
            return
        marks = dict(self.marks)
        if row.id in marks:
            del marks[row.id]
        elif len(marks) >= len(PALETTE):
            self.notify(f"at most {len(PALETTE)} runs on the chart: space on a marked run unmarks it",
                        severity="warning", timeout=6)
            return
        else:
            marks[row.id] = min(set(range(len(PALETTE))) - set(marks.values()))  # a colour no marked run has
        self._set_marks(marks)
        self._runs_changed()

    def _set_marks(self, marks: dict[str, int]) -> None:
        """Mark `marks` (run id -> colour slot): the monitor reads them, the chart draws them."""
        self.marks = marks
        app = self.app
        chart = self.query_one(LossChart)
        with app.batch_update():
            chart.marked = tuple((run_id, self._label(run_id), slot) for run_id, slot in marks.items())
            chart.overlay = {k: v for k, v in chart.overlay.items() if k in marks}
        app.monitor.mark(tuple(marks), target=self)

    def _label(self, run_id: str) -> str:
        row = self.app.row(run_id)
        return fmt.run_label(run_id, row.experiment, row.group) if row else fmt.short_id(run_id)

    @guarded("marked runs")
    def on_marked_data(self, message: messages.MarkedData) -> None:
        chart = self.query_one(LossChart)
        chart.overlay = {s.run_id: s for s in message.snapshots if s.run_id in self.marks}
        self._panels()

    def on_unmount(self) -> None:
        self.app.monitor.mark(())

    def action_diff(self) -> None:
        from .diff import ConfigDiffScreen

        if len(self.marks) == 2:
            a, b = self.marks
            self.app.push_screen(ConfigDiffScreen(self.app.run_for(a), self.app.run_for(b)))

    def action_new_run(self) -> None:
        from .launch import LaunchScreen

        self.app.push_screen(LaunchScreen())

    def action_evaluate(self) -> None:
        from .evaluate import EvalScreen

        if self.app.selected_id:
            self.app.push_screen(EvalScreen(self.app.selected_id))

    def action_history(self) -> None:
        from .history import HistoryScreen

        self.app.push_screen(HistoryScreen())

    def action_log(self) -> None:
        from .log import LogScreen

        if self.app.selected_id:
            self.app.push_screen(LogScreen(self.app.selected_id))

    def action_detail(self) -> None:
        from .detail import RunDetailScreen

        if self.app.selected_id:
            self.app.push_screen(RunDetailScreen(self.app.selected_id))

    def action_compare(self) -> None:
        from .compare import CompareScreen

        app = self.app
        if app.baseline_id and app.selected_id and app.baseline_id != app.selected_id:
            app.push_screen(CompareScreen(app.run_for(app.baseline_id), app.run_for(app.selected_id)))

    def action_baseline(self) -> None:
        run_id = self.app.selected_id
        if not run_id:
            return
        if self.app.baseline_id == run_id:
            self.app.set_baseline(None)
            self.notify("baseline cleared")
        else:
            self.app.set_baseline(run_id)
            self.notify(fmt.printable(f"baseline: {run_id}"), markup=False)

    def action_axis(self) -> None:
        chart = self.query_one(LossChart)
        chart.axis = AXES[(AXES.index(chart.axis) + 1) % len(AXES)]

    def action_smoothing(self) -> None:
        chart = self.query_one(LossChart)
        chart.smoothing = (chart.smoothing + 1) % len(SMOOTHING)

    def action_log_y(self) -> None:
        chart = self.query_one(LossChart)
        chart.log_y = not chart.log_y

    def action_filter(self) -> None:
        box = self.query_one("#run-filter", Input)
        box.display = True
        box.focus()

    def action_clear_filter(self) -> None:
        box = self.query_one("#run-filter", Input)
        box.value = ""
        box.display = False
        self.filter_words = ""
        self.query_one(RunList).focus()
        self._runs_changed()

    @on(Input.Changed, "#run-filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.filter_words = event.value.strip()
        self._runs_changed()

    @on(Input.Submitted, "#run-filter")
    def _filter_done(self) -> None:
        box = self.query_one("#run-filter", Input)
        box.display = bool(box.value.strip())
        self.query_one(RunList).focus()

    # --- lifecycle actions (engine.lifecycle / engine.queue, in a thread) ---------------------

    def action_stop(self) -> None:
        row = self.app.selected_row
        if not row:
            return

        def chosen(how) -> None:
            if how is not None:
                self.engine_call(f"stop {row.id}", engine_api.stop, self.app.run_for(row.id), now=(how == "now"))

        detail = "It saves a checkpoint, then ends as `stopped`; r resumes it."
        if row.on_slurm and row.status == "queued":  # a pending job: nothing to checkpoint yet
            detail = "Its Slurm job has not started: it is cancelled (scancel) and the run ends as `stopped`."
        self.app.push_screen(Choose(f"Stop {row.id}?", [("y", "stop after a checkpoint", "graceful"),
                                                          ("k", "kill now", "now")], detail), chosen)

    def action_resume(self) -> None:
        row = self.app.selected_row
        if row:
            run_actions.resume(self, self.app.run_for(row.id))  # asks first when the concurrency limit is reached

    def action_retry(self) -> None:
        row = self.app.selected_row
        if row:
            run_actions.retry(self, self.app.run_for(row.id))  # a command run's command is shown first

    def action_cancel_queued(self) -> None:
        row = self.app.selected_row
        if row and row.on_slurm:  # a pending Slurm job: the one stop cancels it
            self.engine_call(f"cancel {row.id}", engine_api.stop, self.app.run_for(row.id))
        elif row:
            self.engine_call(f"cancel {row.id}", engine_api.cancel, self.app.workspace, self.app.run_for(row.id))

    def action_move_queued(self, delta: int) -> None:
        row = self.app.selected_row
        if row:
            self.engine_call(f"move {row.id}", engine_api.move, self.app.workspace, self.app.run_for(row.id), delta)

    @work(thread=True, group="engine-action", exclusive=True, exit_on_error=False, description="lifecycle action")
    def engine_call(self, what: str, fn, *args, **kwargs) -> None:
        call_engine(self.app, what, fn, *args, **kwargs)
