"""`d`: two runs' resolved configs side by side, only the keys that differ (labtui.engine.config.diff,
as `labtui diff A B` prints them): a table of key, A's value, B's value; a key one run lacks
shows `(missing)` on its side. Read in a worker thread; `x` swaps A and B. The value columns share the
screen's width (a long value is clipped with `…`); the line under the table shows the highlighted key's
values whole."""

from __future__ import annotations

from labtui.engine.rundir import store
from labtui.engine.rundir.fmt import clip, printable, short_id
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.content import Content
from textual.screen import Screen
from textual.widgets import DataTable, Static

from ..widgets.footer import LabFooter

COLUMNS = (("key", "key"), ("A", "a"), ("B", "b"))


class ConfigDiffScreen(Screen):
    HELP_TITLE = "Config diff"
    BINDINGS = [
        Binding("x", "swap", "Swap A/B", id="swap"),
        Binding("escape", "app.pop_screen", "Back", id="back"),
    ]

    def __init__(self, a: store.Run, b: store.Run):
        super().__init__()
        self.a, self.b = a, b
        self.result: dict | None = None  # runs_diff's object once read
        self.error: str | None = None

    def compose(self) -> ComposeResult:
        yield Static("[b]Config diff[/b] · reading…", id="diff-title", classes="screen-title")
        yield DataTable(id="diff-table", cursor_type="row", zebra_stripes=True)
        yield Static("", id="diff-detail")
        yield LabFooter()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.focus()
        self.load(self.a, self.b)

    def action_swap(self) -> None:
        self.a, self.b = self.b, self.a
        self.load(self.a, self.b)

    @work(thread=True, group="config-diff", exclusive=True, exit_on_error=False, description="diff two runs' configs")
    def load(self, a: store.Run, b: store.Run) -> None:
        from labtui.engine.config import diff

        try:
            result, error = diff.runs_diff(a, b), None
        except diff.NoConfig as e:
            result, error = None, str(e)
        self.app.call_from_thread(self._show, result, error)

    def on_resize(self) -> None:
        if self.result is not None:
            self._show(self.result, self.error)

    def _widths(self, rows: list[dict]) -> tuple[int, int]:
        """(key column, each value column) in characters, so that key, A and B fit the screen's width."""
        width = self.size.width or self.app.size.width
        key = min(max((len(r["key"]) for r in rows), default=3), max(12, width // 3))
        return key, max(8, (width - key - 7) // 2)  # 6: the cells' padding, 1: the scrollbar's room

    def _show(self, result: dict | None, error: str | None) -> None:
        from labtui.engine.config import diff

        self.result, self.error = result, error
        title = self.query_one("#diff-title", Static)
        table = self.query_one(DataTable)
        cursor = table.cursor_row  # kept when the table is fitted again (on_resize) or A and B swap
        table.clear(columns=True)
        self.query_one("#diff-detail", Static).update("")
        if result is None:
            title.update(Content.from_markup("[b]Config diff[/b] · [$error]$error[/]", error=printable(error or "")))
            return
        rows = result["differences"]
        count = f"{len(rows)} key{'s' if len(rows) != 1 else ''} differ" if rows else "no differences"
        title.update(Content.from_markup("[b]Config diff[/b] · A $a · B $b · $count", a=printable(short_id(result["a"])),
                                         b=printable(short_id(result["b"])), count=count))
        key_width, value_width = self._widths(rows)
        for (label, key), width in zip(COLUMNS, (key_width, value_width, value_width)):
            table.add_column(label, key=key, width=width)
        for r in rows:
            cells = [Text(clip(printable(r["key"]), key_width), style="bold")]
            for side in (diff.A, diff.B):
                text = clip(printable(diff.side_text(r, side)), value_width)
                cells.append(Text(text, style="dim italic" if r["missing"] == side else ""))
            table.add_row(*cells, key=r["key"])
        if rows:
            table.move_cursor(row=min(cursor, len(rows) - 1), animate=False)
            self._detail(rows[table.cursor_row])

    def _detail(self, row: dict) -> None:
        from labtui.engine.config import diff

        self.query_one("#diff-detail", Static).update(Content.from_markup(
            "[b]$key[/b]\nA: $a\nB: $b", key=printable(row["key"]), a=printable(diff.side_text(row, diff.A)),
            b=printable(diff.side_text(row, diff.B))))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        rows = (self.result or {}).get("differences") or []
        if 0 <= event.cursor_row < len(rows):
            self._detail(rows[event.cursor_row])
