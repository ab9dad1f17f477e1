"""`h`: every run and its evaluations in one sortable, filterable table, against the baseline.

space selects rows (two at most), `c` compares the two selected (or the cursor row with the
baseline), `d` shows the two selected rows' runs' config differences, `b` marks the cursor row's run as the baseline, `f` switches each run's headline eval
between its final and its best checkpoint's (labtui.engine.analysis.evalstore.choose_headline), `o`/`O` sort, `/` filters,
`R` writes `labtui report` of the rows shown into reports/<time>/. The p-values are adjusted (Holm) over
the rows shown that have one; the stars follow the adjusted p. Loading and comparing happen in a worker thread.
"""

from __future__ import annotations

import time
from pathlib import Path

from labtui.engine.rundir import store
from labtui.engine.rundir.fmt import printable
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.content import Content
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import DataTable, Input, Static

from .. import cli_runner
from .. import format as fmt
from ..commands import HonestKeys
from ..history_data import SORTS, HistoryData, HistRow, matches, sort_rows, with_holm
from ..widgets.footer import LabFooter
from ..widgets.run_list import STATUS_RICH
from ..widgets.tables import cell_changes, fill, update_cells

RELOAD_S = 10.0
COLUMNS = ("", "run", "status", "acc [95% CI]", "Δ base", "McNemar p", "Holm p", "h", "evaluated", "changed vs parent", "dur",
           "loss", "eval loss", "notes")
SHORT_REASON = {"different examples": "other examples", "error": "error"}


class HistoryScreen(HonestKeys, Screen):
    HELP_TITLE = "History"
    BINDINGS = [
        Binding("space", "toggle_select", "Select", id="select", tooltip="Select up to two rows to compare"),
        Binding("c", "compare", "Compare", id="compare", tooltip="The two selected rows, or this row vs the baseline"),
        Binding("d", "diff", "Config diff", id="diff", show=False,
                tooltip="The two selected rows' runs: the config keys that differ"),
        Binding("b", "baseline", "Baseline", id="baseline", tooltip="Mark this row's run as the baseline"),
        Binding("f", "headline", "Final/best", id="headline",
                tooltip="Each run's headline eval: its final checkpoint's, or its best checkpoint's (lowest eval loss)"),
        Binding("o", "sort(1)", "Sort", id="sort", tooltip="Cycle the sort column"),
        Binding("O", "sort(0)", "Reverse", id="reverse"),  # wide-only: in the footer when it fits
        Binding("slash", "filter", "Filter", id="filter"),
        Binding("R", "report", "Report", id="report", show=False,
                tooltip="Write `labtui report` of the rows shown (md + figures) into reports/<time>/"),
        Binding("enter", "detail", "Detail", id="detail", show=False),
        Binding("e", "evaluate", "Evaluate", id="evaluate", show=False),
        Binding("escape", "back", "Back", id="back"),
    ]

    # The keys' state (bindings=True: the footer and the palette follow it): whether the rows are
    # in, the row under the cursor, the rows marked with space (with the App's baseline_id).
    loaded: reactive[bool] = reactive(False, bindings=True)
    cursor_key: reactive[str | None] = reactive(None, bindings=True)
    selected: reactive[list[str]] = reactive(list, bindings=True)  # row keys, in the order chosen (A first)
    reporting: reactive[bool] = reactive(False, bindings=True)  # `labtui report` (R) is running

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[HistRow] = []
        self.sort_key = "created"
        self.prefer = "final"  # the headline eval of each run: "final" or "best" checkpoint (f switches)
        self.reverse = True
        self.comparing = False  # rows shown while their comparisons with the baseline are computed
        self.family = 0  # the rows shown with a p against the baseline: the Holm family
        self.last_report = None  # the CliResult of the last R
        self._shown: list[HistRow] = []  # the rows in the table, in order, and the marks they were drawn with
        self._shown_selected: set[str] = set()
        self._column_keys = [label or "mark" for label in COLUMNS]
        self._version = 0

    def compose(self) -> ComposeResult:
        yield Static(id="history-title", classes="screen-title")
        yield Input(placeholder="filter: words in id, experiment, group, status, changes, notes", id="history-filter")
        yield DataTable(id="history", cursor_type="row", zebra_stripes=True)
        yield Static(id="history-detail")
        yield LabFooter({"reverse"})

    def on_mount(self) -> None:
        table = self.query_one("#history", DataTable)
        for label, key in zip(COLUMNS, self._column_keys):
            table.add_column(label, key=key)
        self.query_one("#history-filter").display = False
        self.query_one("#history-detail").border_title = "Row"
        self.data = HistoryData(self.app.workspace)
        self._title(0)
        self._signature = None
        self.watch(self.app, "runs", self._runs_changed, init=True)
        self.watch(self.app, "baseline_id", self.reload, init=False)
        self.set_interval(RELOAD_S, self.reload)  # evaluations finish without any run changing
        table.focus()

    # --- loading ------------------------------------------------------------------------------

    def _runs_changed(self, *_) -> None:
        """Reload when a run appears, changes status, or its notes or losses change; not every step."""
        signature = tuple((r.id, r.status, r.notes, r.train_loss if r.final else None, r.eval_loss)
                          for r in self.app.runs)
        if signature != self._signature:
            self._signature = signature
            self.reload()

    def reload(self, *_) -> None:
        self._version += 1
        self.load(self._version, tuple(self.app.runs), self.app.baseline_id, self.app.now(), self.prefer)

    @work(thread=True, group="history", exclusive=True, exit_on_error=False, description="history: evals and comparisons")
    def load(self, version: int, runs, baseline_id, now, prefer: str = "final") -> None:
        def first(rows: list[HistRow]) -> None:  # many comparisons to compute: the rows before them
            self.app.call_from_thread(self._loaded, version, rows, True)

        rows = self.data.build(runs, baseline_id, now, partial=first, prefer=prefer)
        self.app.call_from_thread(self._loaded, version, rows)

    def _loaded(self, version: int, rows: list[HistRow], comparing: bool = False) -> None:
        if version != self._version:
            return
        self.rows = rows
        self.loaded = True
        self.comparing = comparing
        self.show()

    @property
    def filter_text(self) -> str:
        return self.query_one("#history-filter", Input).value.strip()

    def visible(self) -> list[HistRow]:
        rows = [r for r in self.rows if matches(r, self.filter_text)]
        return sort_rows(rows, self.sort_key, self.reverse)

    def show(self) -> None:
        table = self.query_one("#history", DataTable)
        current = self.cursor_row.key if self.cursor_row else None
        shown, self.family = with_holm(self.visible())
        keys = [r.key for r in shown]
        same = keys == [r.key for r in self._shown] and table.row_count
        before, before_selected = self._shown, self._shown_selected
        self._shown, self._shown_selected = shown, set(self.selected)
        if same:  # the same rows in the same order: comparisons came in, or a row was marked
            self._update_cells(table, before, before_selected)
        else:  # rows still to come are made from self._shown when they are added
            fill(table, len(shown), lambda i: (self._shown[i].key, self._cells(self._shown[i], self._shown_selected)),
                 around=keys.index(current) if current in keys else 0)
        if current in keys:
            table.move_cursor(row=keys.index(current), animate=False)
        self._title(len(shown))
        self._detail()  # sets cursor_key: select, compare and baseline need a row under the cursor

    def _update_cells(self, table: DataTable, before: list[HistRow], before_selected: set[str]) -> None:
        """Change the cells that changed since `before`, in the rows already in the table."""
        selected = self._shown_selected
        rows = zip(self._shown[:table.row_count], before)
        update_cells(table, [change for r, old in rows
                             if r != old or (r.key in selected) != (old.key in before_selected)
                             for change in cell_changes(r.key, self._column_keys, self._cells(old, before_selected),
                                                        self._cells(r, selected))])

    def _cells(self, r: HistRow, selected: set[str]) -> tuple[Text, ...]:
        mark = ("★" if r.is_baseline and not r.sub else "") + ("●" if r.key in selected else "")
        style = STATUS_RICH.get(r.status, "")
        p_style = "bold" if r.p_holm is not None and r.p_holm < 0.05 else ""  # the stars too: the adjusted p
        nc = r.not_comparable
        return (
            Text(mark, style="bold"),
            Text(printable(r.label), style="dim" if r.sub else ""),
            Text("" if r.sub else r.status, style=style),
            Text(fmt.accuracy_ci(r.accuracy, r.ci) + (" !" if r.degenerate else ""),
                 style="red" if r.degenerate else ""),
            Text("base" if r.is_baseline and not r.sub and r.accuracy is not None
                 else "…" if r.pending else fmt.signed_points(r.diff), justify="right"),
            # a "-" says why: not comparable ("N 100 vs 300", "other examples")
            Text(SHORT_REASON.get(nc, printable(nc)), style="dim") if nc else
            Text("…" if r.pending else fmt.p_value(r.p).rstrip(" *")),
            Text("" if nc else "…" if r.pending else fmt.p_value(r.p_holm), style=p_style),
            Text("…" if r.pending else "-" if r.h is None else f"{r.h:+.2f}", justify="right"),
            Text(printable(r.evaluated_short), style="dim" if r.sub else ""),
            Text(printable(r.changed or "-")),
            Text("" if r.sub else fmt.duration(r.duration), justify="right"),
            Text("" if r.sub else fmt.num(r.train_loss), justify="right"),
            Text("" if r.sub else fmt.num(r.eval_loss), justify="right"),
            Text(printable(fmt.clip(r.notes, 40))),
        )

    def _title(self, shown: int) -> None:
        """Markup of our own, run data only through $variables (Content escapes them)."""
        base = self.app.row(self.app.baseline_id)
        bits = [Content.from_markup("[b]History[/b] $n rows", n=str(len(self.rows)))]
        if base and self.family:  # the family the adjusted p-values are over (early: it must fit in 80 columns)
            bits.append(Content.from_markup("$k comparison$s vs ★ $name, Holm", k=str(self.family),
                                            s="" if self.family == 1 else "s",
                                            name=printable(fmt.run_label(base.id, base.experiment, base.group))))
        if self.filter_text:
            bits.append(Content.from_markup("filter '$text': $shown", text=printable(self.filter_text), shown=str(shown)))
        if self.prefer == "best":  # the default (the final checkpoint's eval) goes without saying
            bits.append(Content.from_markup("headline best ([b $accent]f[/])"))
        bits.append(Content.from_markup(f"sort $key {'↓' if self.reverse else '↑'} ([b $accent]o[/] [b $accent]O[/])",
                                        key=self.sort_key))
        if not (base and self.family):
            bits.append(Content.from_markup("baseline ★ $name", name=printable(fmt.run_label(base.id, base.experiment, base.group)))
                        if base else Content.from_markup("no baseline ([b $accent]b[/] marks one)"))
        if self.selected:
            bits.append(Content(f"{len(self.selected)} selected"))
        if not self.loaded:
            bits.append(Content("loading…"))
        elif self.comparing:
            bits.append(Content(f"comparing {sum(r.pending for r in self.rows)} evals with the baseline…"))
        self.query_one("#history-title", Static).update(Content(" · ").join(bits))

    @property
    def cursor_row(self) -> HistRow | None:
        tables = self.query("#history").results(DataTable)  # none yet: the footer asks before compose
        table = next(tables, None)
        if table is None or not table.row_count:
            return None
        try:
            key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
        except Exception:
            return None
        shown = next((r for r in self._shown if r.key == key.value), None)  # with its adjusted p
        return shown or next((r for r in self.rows if r.key == key.value), None)

    @on(DataTable.RowHighlighted, "#history")
    def _detail(self, *_) -> None:
        r = self.cursor_row
        self.cursor_key = r.key if r else None
        box = self.query_one("#history-detail", Static)
        if r is None:
            box.update(Content.from_markup("[$text-muted]no runs yet[/]") if self.loaded else Content("loading…"))
            return

        def line(markup: str, **values: str) -> Content:
            return Content.from_markup(markup, **{k: printable(v) for k, v in values.items()})

        lines = [line("[b]$run[/b] / $eval · $evaluated", run=r.run_id, eval=r.eval_id, evaluated=r.evaluated)
                 if r.eval_id else line("[b]$run[/b] · not evaluated", run=r.run_id)]
        if r.why:
            lines.append(line("[$text-muted]headline eval: $why[/]", why=r.why))
        if r.changed:
            lines.append(line("changed: $changed", changed=r.changed))
        if r.verdict:
            lines.append(line("vs baseline: $verdict", verdict=r.verdict))
            if r.p_holm is not None:
                lines.append(line("Holm-adjusted p $p (family: the $k rows shown with a p; the stars follow it)",
                                  p=fmt.p_value(r.p_holm), k=str(self.family)))
        elif r.compare_error:
            lines.append(line("[$warning]vs baseline: $message[/]", message=r.compare_error))
        elif r.pending:
            lines.append(Content("vs baseline: comparing…"))
        if r.notes:
            lines.append(line("notes: $notes", notes=r.notes))
        box.update(Content("\n").join(lines))

    # --- keys ---------------------------------------------------------------------------------

    def why_disabled(self, action: str, parameters: tuple) -> str | None:
        """Why a key cannot run now (HonestKeys dims it, and says this when it is pressed)."""
        r = self.cursor_row
        if action in ("compare", "baseline", "detail", "evaluate", "toggle_select") and r is None:
            return "no rows yet" if self.loaded else "still loading"
        if action == "diff" and len(self.selected) != 2:
            return f"select two rows with space to compare their runs' configs ({len(self.selected)} selected)"
        if action == "report":
            if not self.loaded:
                return "still loading"
            if self.reporting:
                return "a report is being written"
            if not any(r.eval_id for r in self._shown):
                return "no evaluated rows shown"
        if action == "compare" and len(self.selected) != 2:
            base = self.app.baseline_id
            if not base:
                return "no baseline yet: press b on a run to mark it, or select two rows with space"
            if r.run_id == base:
                return "this row is the baseline: move to another run, or select two rows with space"
        return None

    def action_toggle_select(self) -> None:
        r = self.cursor_row
        if r is None:
            return
        if r.key in self.selected:
            self.selected = [k for k in self.selected if k != r.key]
        else:
            self.selected = [*self.selected, r.key][-2:]
        self.show()

    def _source(self, row: HistRow):
        return row.source or store.Run(self.app.workspace.logs / row.run_id)

    def action_compare(self) -> None:
        from .compare import CompareScreen

        by_key = {r.key: r for r in self.rows}
        if len(self.selected) == 2 and all(k in by_key for k in self.selected):
            a, b = (by_key[k] for k in self.selected)
            self.app.push_screen(CompareScreen(self._source(a), self._source(b)))
            return
        r = self.cursor_row
        base = self.app.baseline_id
        if r and base and r.run_id != base:  # the baseline's eval the table compares with
            shown = next((x for x in self.rows if x.run_id == base and not x.sub and x.eval_path), None)
            a = shown.source if shown else store.Run(self.app.workspace.logs / base)
            self.app.push_screen(CompareScreen(a, self._source(r)))

    def action_diff(self) -> None:
        from .diff import ConfigDiffScreen

        by_key = {r.key: r for r in self.rows}
        if len(self.selected) == 2 and all(k in by_key for k in self.selected):
            a, b = (store.Run(self.app.workspace.logs / by_key[k].run_id) for k in self.selected)
            self.app.push_screen(ConfigDiffScreen(a, b))

    def action_baseline(self) -> None:
        r = self.cursor_row
        if r is None:
            return
        self.app.set_baseline(None if self.app.baseline_id == r.run_id else r.run_id)  # the keys follow baseline_id

    def report_argv(self, out: Path) -> list[str]:
        """`labtui report` of the evaluations shown (each row's own eval, so the report shows what the
        table shows) against the baseline's eval as History compares with it, written into `out`."""
        refs = [f"{r.run_id}/{r.eval_id}" for r in self._shown if r.eval_id]
        args = ["report", *refs, "-o", str(out)]
        base = next((r for r in self.rows if r.is_baseline and not r.sub and r.eval_id), None)
        if base is not None:
            args += ["--baseline", f"{base.run_id}/{base.eval_id}"]
        return cli_runner.cli_argv(self.app.workspace.root, *args)

    def action_report(self) -> None:
        out = self.app.workspace.root / "reports" / time.strftime("%Y%m%d-%H%M%S", time.localtime(self.app.now()))
        self.reporting = True
        self.notify(printable(f"writing the report of {sum(1 for r in self._shown if r.eval_id)} evals…"),
                    title="Report", markup=False)
        self.write_report(self.report_argv(out))

    @work(thread=True, group="history-report", exclusive=True, exit_on_error=False, description="labtui report (subprocess)")
    def write_report(self, argv: list[str]) -> None:
        result = cli_runner.run_cli(argv, cwd=self.app.workspace.root, timeout=600)
        self.app.call_from_thread(self._reported, result)

    def _reported(self, result: cli_runner.CliResult) -> None:
        self.reporting = False
        self.last_report = result
        if not result.ok:
            self.notify(printable(result.message), title="Report not written", severity="error", markup=False)
            return
        path = Path(result.stdout.strip().splitlines()[-1])
        try:
            shown = path.relative_to(self.app.workspace.root)
        except ValueError:
            shown = path
        self.notify(printable(f"written to {shown} (and its figures)"), title="Report", markup=False, timeout=15)

    def action_headline(self) -> None:
        self.prefer = "best" if self.prefer == "final" else "final"
        self.reload()

    def action_sort(self, cycle: int) -> None:
        if cycle:
            keys = list(SORTS)
            self.sort_key = keys[(keys.index(self.sort_key) + 1) % len(keys)]
        else:
            self.reverse = not self.reverse
        self.show()

    def action_filter(self) -> None:
        box = self.query_one("#history-filter", Input)
        box.display = True
        box.focus()

    @on(Input.Changed, "#history-filter")
    def _filtered(self) -> None:
        self.show()

    @on(Input.Submitted, "#history-filter")
    def _filter_done(self) -> None:
        box = self.query_one("#history-filter", Input)
        box.display = bool(box.value.strip())
        self.query_one("#history", DataTable).focus()

    def action_back(self) -> None:
        box = self.query_one("#history-filter", Input)
        if box.display:
            box.value = ""
            box.display = False
            self.query_one("#history", DataTable).focus()
            return
        self.app.pop_screen()

    def action_detail(self) -> None:
        from .detail import RunDetailScreen

        if self.cursor_row:
            self.app.push_screen(RunDetailScreen(self.cursor_row.run_id))

    @on(DataTable.RowSelected, "#history")
    def _row_selected(self) -> None:
        self.action_detail()

    def action_evaluate(self) -> None:
        from .evaluate import EvalScreen

        if self.cursor_row:
            self.app.push_screen(EvalScreen(self.cursor_row.run_id))
