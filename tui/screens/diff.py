"""`d`: two runs' resolved configs side by side, only the keys that differ (labtui.engine.config.diff,
as `labtui diff A B` prints them): a table of key, A's value, B's value; a key one run lacks
shows `(missing)` on its side. Read in a worker thread; `x` swaps A and B."""

from __future__ import annotations

from labtui.engine.rundir import store
from labtui.engine.rundir.fmt import printable
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
        yield LabFooter()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for label, key in COLUMNS:
            table.add_column(label, key=key)
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

    def _show(self, result: dict | None, error: str | None) -> None:
        from labtui.engine.config import diff

        self.result, self.error = result, error
        title = self.query_one("#diff-title", Static)
        table = self.query_one(DataTable)
        table.clear()
        if result is None:
            title.update(Content.from_markup("[b]Config diff[/b] · [$error]$error[/]", error=printable(error or "")))
            return
        rows = result["differences"]
        count = f"{len(rows)} key{'s' if len(rows) != 1 else ''} differ" if rows else "no differences"
        title.update(Content.from_markup("[b]Config diff[/b] · A $a · B $b · $count", a=printable(result["a"]),
                                         b=printable(result["b"]), count=count))
        for r in rows:
            cells = [Text(printable(r["key"]), style="bold")]
            for side in (diff.A, diff.B):
                text = diff.side_text(r, side)
                cells.append(Text(printable(text), style="dim italic" if r["missing"] == side else ""))
            table.add_row(*cells, key=r["key"])
