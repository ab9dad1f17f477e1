"""`l`: a run's full log (worker.log), following new lines as they are written.

The monitor thread reads the file by offset (the last 64 kB first) and posts `LogLines` here;
the Log widget keeps the last 10,000 lines, the file keeps everything.
"""

from __future__ import annotations

from labtui.engine.rundir.fmt import last_cr_segment, printable
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Log, Static

from .. import messages
from ..guard import guarded
from ..text import markup
from ..widgets.footer import LabFooter

MAX_LINES = 10_000


def overprint(text: str) -> str:
    """What a terminal shows for progress bars: of `a\rb\rc` in one line, only `c`; control
    characters (an escape sequence in the log) removed."""
    return "\n".join(printable(last_cr_segment(line)) for line in text.replace("\r\n", "\n").split("\n"))


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
        yield Static(id="log-progress")  # the line still being written (a progress bar), updated in place
        yield LabFooter()

    def on_mount(self) -> None:
        self._partial = ""  # the last line, until its newline comes
        self.query_one("#log-progress").display = False
        self._title()
        self.app.monitor.follow_log(self.run_id, target=self)
        self.query_one(Log).focus()

    def on_unmount(self) -> None:
        self.app.monitor.follow_log(None)

    def _title(self) -> None:
        path = self.app.workspace.logs / self.run_id / "worker.log"
        mode = "following" if self.follow else "paused (f to follow)"
        self.query_one("#log-title", Static).update(markup("[b]Log[/b] $path · $mode", path=path, mode=mode))

    @guarded("log")
    def on_log_lines(self, message: messages.LogLines) -> None:
        """Complete lines go to the log; the line still being written (tqdm redraws it with `\r`
        every update, in many small writes) is shown below it as one line that updates."""
        if message.run_id != self.run_id:
            return
        log = self.query_one(Log)
        if message.reset:
            log.clear()
            self._partial = ""
        text = self._partial + message.text
        done, newline, self._partial = text.rpartition("\n")
        if newline:
            log.write(overprint(done) + "\n")
        progress = self.query_one("#log-progress", Static)
        current = overprint(self._partial)
        progress.display = bool(current.strip())
        progress.update(markup("[$accent]$line[/]", line=current))

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
