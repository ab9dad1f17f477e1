"""Filling a DataTable fast: Textual measures every cell of every added row before the next frame,
so a thousand rows cost a few tenths of a second. `fill` adds the rows a screen can show first and
the rest after that frame is drawn, a chunk a frame, so keys and other screens are served between."""

from __future__ import annotations

from typing import Callable, Sequence
from weakref import WeakKeyDictionary

from textual.widgets import DataTable
from textual.widgets.data_table import ColumnKey

CHUNK = 150  # rows added per frame after the first: about 50 ms of work on this kind of machine
HIDDEN_RETRY_S = 0.25  # a table under another screen adds its rows when it shows again

_filling: WeakKeyDictionary[DataTable, object] = WeakKeyDictionary()  # table -> the token of its latest fill


def fill(table: DataTable, count: int, row: Callable[[int], tuple[str, Sequence]], around: int = 0) -> None:
    """Clear `table` and add `count` rows, `row(i)` giving row i's key and cells. Rows up to a
    screenful past `around` (where the cursor will go) are added now; the others a chunk after
    each refresh (while another screen is on top, once it is gone), made by `row` then, so they
    are as fresh as the call. Rows go in in order: while some
    are still to come, `table.row_count` counts those in. A later `fill` cancels what is left."""
    table.clear()
    token = object()
    _filling[table] = token
    screenful = max(table.app.size.height, 24) + 8
    first = min(count, max(0, around) + screenful)
    for i in range(first):
        key, cells = row(i)
        table.add_row(*cells, key=key)

    def rest(start: int) -> None:
        if _filling.get(table) is not token or not table.is_attached:
            return  # filled again since, or its screen has closed
        if table.screen is not table.app.screen:  # another screen on top: its work goes first
            table.set_timer(HIDDEN_RETRY_S, lambda: rest(start))
            return
        end = min(count, start + CHUNK)
        for i in range(start, end):
            key, cells = row(i)
            table.add_row(*cells, key=key)
        if end < count:  # a frame, and whatever else is waiting, between chunks
            table.call_after_refresh(rest, end)

    if first < count:
        table.call_after_refresh(rest, first)


def update_cells(table: DataTable, changes) -> None:
    """Set cells, `changes` being (row key, column key, new cell). A column widens for a cell wider
    than it; a narrower cell leaves it as it is. (Textual's `update_width` re-measures the whole
    column for every narrower cell: a thousand such cells in a thousand rows stall the screen.)"""
    widths: dict[str, int] = {}
    for row_key, column_key, cell in changes:
        if column_key not in widths:
            column = table.columns.get(ColumnKey(column_key))
            widths[column_key] = column.content_width if column is not None else 0
        wider = cell.cell_len > widths[column_key]
        if wider:
            widths[column_key] = cell.cell_len
        table.update_cell(row_key, column_key, cell, update_width=wider)


def cell_changes(row_key: str, column_keys: Sequence[str], before: Sequence, after: Sequence):
    """(row key, column key, new cell) for each cell of a row that reads or looks different
    (rich's Text == compares the characters only, not the style a status brings)."""
    for column_key, a, b in zip(column_keys, before, after):
        if (a.plain, a.style) != (b.plain, b.style):
            yield row_key, column_key, b
