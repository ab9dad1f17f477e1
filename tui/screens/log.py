"""`l`: a run's full log (worker.log), following new lines as they are written.

The monitor thread reads the file by offset (the last 64 kB first) and posts `LogLines` here;
the Log widget keeps the last 10,000 lines, the file keeps everything.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.markup import escape
from textual.screen import Screen
from textual.widgets import Log, Static

from .. import messages
from ..widgets.footer import LabFooter

MAX_LINES = 10_000


def overprint(text: str) -> str:
    """What a terminal shows for progress bars: of `a\rb\rc` in one line, only `c`."""
    lines = text.replace("\r\n", "\n").split("\n")
    out = []
    for line in lines:
        if "\r" in line:
            parts = [p for p in line.split("\r") if p.strip()]
            line = parts[-1] if parts else ""
        out.append(line)
    return "\n".join(out)


class LogScreen(Screen):
    HELP_TITLE = "Log"
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back", id="back"),
        Binding("f", "follow", "Follow on/off", id="follow"),
        Binding("G,end", "bottom", "Bottom", id="bottom"),
        Binding("home", "top", "Top", id="top", show=False),
    ]

    def __init__(self, run_id: str):
        super().__init__()
        self.run_id = run_id
        self.follow = True

    def compose(self) -> ComposeResult:
        yield Static(id="log-title", classes="screen-title")
        yield Log(max_lines=MAX_LINES, auto_scroll=True, id="log")
        yield LabFooter()

    def on_mount(self) -> None:
        self._title()
        self.app.monitor.follow_log(self.run_id, target=self)
        self.query_one(Log).focus()

    def on_unmount(self) -> None:
        self.app.monitor.follow_log(None)

    def _title(self) -> None:
        path = self.app.workspace.logs / self.run_id / "worker.log"
        mode = "following" if self.follow else "paused (f to follow)"
        self.query_one("#log-title", Static).update(f"[b]Log[/b] {escape(str(path))} · {mode}")

    def on_log_lines(self, message: messages.LogLines) -> None:
        if message.run_id != self.run_id:
            return
        log = self.query_one(Log)
        if message.reset:
            log.clear()
        if message.text:
            log.write(overprint(message.text))

    def action_follow(self) -> None:
        self.follow = not self.follow
        log = self.query_one(Log)
        log.auto_scroll = self.follow
        if self.follow:
            log.scroll_end(animate=False)
        self._title()

    def action_bottom(self) -> None:
        self.query_one(Log).scroll_end(animate=False)

    def action_top(self) -> None:
        self.query_one(Log).scroll_home(animate=False)
