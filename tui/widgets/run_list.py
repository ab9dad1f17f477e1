"""The dashboard's run list: live runs first, then the queue in order, then the rest newest first."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import DataTable

from .. import format as fmt
from .. import slurm_view
from ..scan import RunRow
from .loss_chart import PALETTE
from .tables import cell_changes, fill, update_cells

# "eval loss": the loss on the eval split during training; "acc": the headline eval's accuracy
# (labtui.engine.analysis.evalstore's rule), or the progress of an evaluation still going.
COLUMNS = (("", "icon"), ("run", "run"), ("status", "status"), ("step", "step"), ("loss", "loss"),
           ("eval loss", "eval"), ("acc", "acc"), ("age", "age"))
# Rich styles for the run list cells: plain ANSI colours, right in 16-colour terminals.
STATUS_RICH = {"queued": "dim", "starting": "cyan", "running": "green", "completed": "",
               "failed": "red", "stopped": "yellow", "crashed": "bold red"}


def order(rows: list[RunRow] | tuple[RunRow, ...]) -> list[RunRow]:
    def key(r: RunRow):
        if r.live:
            return (0, -(r.started or r.created or 0), r.id)
        if r.status == "queued":
            return (1, r.queue_pos if r.queue_pos is not None else 10**9, r.created or 0, r.id)
        return (2, -(r.created or 0), r.id)

    return sorted(rows, key=key)


def default_selection(rows) -> str:
    """The first live run, else the newest run that has started, else the first in the list."""
    ordered = order(rows)
    for r in ordered:
        if r.live:
            return r.id
    return next((r.id for r in ordered if r.status != "queued"), ordered[0].id)


def matches(row: RunRow, text: str) -> bool:
    if not text:
        return True
    hay = " ".join([row.id, row.experiment, row.status, row.description, row.notes, row.group or "",
                    fmt.changed_summary(row.changed)]).lower()
    return all(word in hay for word in text.lower().split())


def accuracy_cell(info) -> str:
    """`0.767` (the headline eval), `ev 40%` while an evaluation runs and none is finished, else `-`."""
    if info is None:
        return "-"
    if info.headline and isinstance(info.headline.get("accuracy"), (int, float)):
        return f"{info.headline['accuracy']:.3f}"
    for r in info.running:
        done, total = r.get("done"), r.get("total")
        if isinstance(done, int) and isinstance(total, int) and total > 0:
            return f"ev {100 * done // total}%"
        return "ev …"
    return "-"


WIDE_FOR_REASON = 90  # a list at least this wide shows a queued Slurm run's reason: `queued (Resources)`


def mark_style(slot: int) -> str:
    """The Rich style of a marked run's `●`: its colour on the loss chart (loss_chart.PALETTE)."""
    return "bold " + PALETTE[slot % len(PALETTE)][2].removeprefix("ansi_")


def signature(r: RunRow, now: float, baseline: str | None, evals: dict | None = None, width: int = 0,
              mark: int | None = None) -> tuple:
    """What a row's cells are made of: equal signatures draw equal cells. A queued Slurm run has its
    job id in the step column and, in a list `WIDE_FOR_REASON` wide, Slurm's reason after its status."""
    job = slurm_view.job_id(r) if r.status == "queued" else None
    why = slurm_view.reason(r) if width >= WIDE_FOR_REASON else None
    return (r.id, r.experiment, r.status, r.step, r.max_steps, r.queue_pos, r.train_loss, r.eval_loss,
            r.id == baseline, fmt.age(r.created, now), accuracy_cell((evals or {}).get(r.id)), job, why, r.group,
            mark)


def cells(sig: tuple) -> tuple[Text, ...]:
    run_id, experiment, status, step, max_steps, queue_pos, train_loss, eval_loss, is_baseline, age, acc, job, why, group, mark = sig
    style = STATUS_RICH.get(status, "")
    # a sweep's run: its group's name and the id's tail (fmt.run_label)
    name = fmt.printable(fmt.run_label(run_id, experiment, group)) + (" ★" if is_baseline else "")
    if status == "queued":
        where = f"job {job}" if job else f"#{queue_pos}" if queue_pos else "queued"
    else:
        where = f"{step}/{max_steps or '?'}"
    return (
        Text(fmt.STATUS_ICONS.get(status, "?"), style=style),
        Text.assemble(name, (" ●", mark_style(mark))) if mark is not None else Text(name),
        Text(fmt.printable(status) + (f" ({fmt.clip(why, 16)})" if why else ""), style=style),
        Text(where, justify="right"),
        Text(fmt.printable(fmt.num(train_loss)), justify="right"),
        Text(fmt.printable(fmt.num(eval_loss)), justify="right"),
        Text(acc, justify="right"),
        Text(age, justify="right"),
    )


class RunList(DataTable):
    """The run list. `show` changes only the cells that changed while the same runs are listed
    in the same order (every few seconds, as steps, losses and ages move on); a new set or order
    of runs rebuilds it. A long list gets its first rows at once and the rest after that frame is
    drawn, so a workspace of a thousand runs opens about as fast as one of a hundred."""

    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.zebra_stripes = False
        self._keys: list[str] = []
        self._sigs: list[tuple] = []
        for label, key in COLUMNS:
            self.add_column(label, key=key)

    def show(self, rows: list[RunRow], now: float, selected: str | None, baseline: str | None,
             evals: dict | None = None, marks: dict[str, int] | None = None) -> None:
        """Show `rows`, keeping the cursor on `selected` when it is still listed; `evals`: {run id:
        monitor.EvalInfo} for the accuracy column; `marks`: {run id: PALETTE slot} of the runs marked
        for the chart (a `●` in their colour after the name)."""
        keys = [r.id for r in rows]
        width = self.size.width or self.app.size.width
        marks = marks or {}
        sigs = [signature(r, now, baseline, evals, width, marks.get(r.id)) for r in rows]
        at = keys.index(selected) if selected in keys else None
        with self.prevent(DataTable.RowHighlighted):  # a rebuild is not the user moving
            if keys == self._keys:
                self._update(sigs)
            else:
                self._keys, self._sigs = keys, sigs
                fill(self, len(keys), lambda i: (self._keys[i], cells(self._sigs[i])), around=at or 0)
            if at is not None and self.cursor_row != at:
                self.move_cursor(row=at, animate=False, scroll=True)

    def _update(self, sigs: list[tuple]) -> None:
        columns = [key for _, key in COLUMNS]
        # the rows in the table; those still to come are made from self._sigs when they are added
        changed = [i for i in range(min(self.row_count, len(sigs))) if self._sigs[i] != sigs[i]]
        update_cells(self, [change for i in changed
                            for change in cell_changes(self._keys[i], columns, cells(self._sigs[i]), cells(sigs[i]))])
        self._sigs = sigs

    @property
    def current_id(self) -> str | None:
        if not self.row_count:
            return None
        try:
            key, _ = self.coordinate_to_cell_key(self.cursor_coordinate)
        except Exception:
            return None
        return key.value
