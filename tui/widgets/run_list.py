"""The dashboard's run list: live runs first, then the queue in order, then the rest newest first."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import DataTable

from .. import format as fmt
from ..scan import RunRow

COLUMNS = (("", "icon"), ("run", "run"), ("status", "status"), ("step", "step"), ("loss", "loss"),
           ("eval", "eval"), ("age", "age"))
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
    hay = " ".join([row.id, row.experiment, row.status, row.description, row.notes,
                    fmt.changed_summary(row.changed)]).lower()
    return all(word in hay for word in text.lower().split())


class RunList(DataTable):
    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.zebra_stripes = False
        for label, key in COLUMNS:
            self.add_column(label, key=key)

    def show(self, rows: list[RunRow], now: float, selected: str | None, baseline: str | None) -> None:
        """Replace the rows, keeping the cursor on `selected` when it is still listed."""
        keys = [r.id for r in rows]
        with self.prevent(DataTable.RowHighlighted):  # a rebuild is not the user moving
            self._fill(rows, now, baseline)
            if selected in keys:
                self.move_cursor(row=keys.index(selected), animate=False, scroll=True)

    def _fill(self, rows: list[RunRow], now: float, baseline: str | None) -> None:
        self.clear()
        for r in rows:
            style = STATUS_RICH.get(r.status, "")
            name = fmt.short_id(r.id, r.experiment) + (" ★" if r.id == baseline else "")
            if r.status == "queued":
                step = f"#{r.queue_pos}" if r.queue_pos else "queued"
            else:
                step = f"{r.step}/{r.max_steps or '?'}"
            self.add_row(
                Text(fmt.STATUS_ICONS.get(r.status, "?"), style=style),
                Text(name),
                Text(r.status, style=style),
                Text(step, justify="right"),
                Text(fmt.num(r.train_loss), justify="right"),
                Text(fmt.num(r.eval_loss), justify="right"),
                Text(fmt.age(r.created, now), justify="right"),
                key=r.id,
            )

    @property
    def current_id(self) -> str | None:
        if not self.row_count:
            return None
        try:
            key, _ = self.coordinate_to_cell_key(self.cursor_coordinate)
        except Exception:
            return None
        return key.value
