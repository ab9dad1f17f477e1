"""`?`: every key of the screen underneath, the app's keys, and what the symbols mean."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen, Screen
from textual.widgets import Static

from ..commands import declared_bindings
from ..format import STATUS_ICONS
from ..text import join_lines, markup

LEGEND = """\
[b]Run status[/b]  {icons}
[b]Loss chart[/b]  cyan: train loss (EMA-smoothed, debiased), grey: raw min/max per column,
            magenta dots: eval loss, red line: a NaN/Inf loss in that column
[b]Memory[/b]      NVML: the whole GPU (all processes); torch: allocated / reserved / peak
            of the run's own process (they differ: the CUDA context and other processes)
[b]History[/b]     ★ baseline, ● selected for compare, p: McNemar (exact) vs the baseline,
            * p<0.05  ** p<0.01  *** p<0.001, h: Cohen's h
Runs never depend on this window: quit, detach or lose SSH and they keep going.
ctrl+p opens the command palette: every action by name."""


def binding_rows(screen: Screen) -> list[tuple[str, str, str]]:
    rows = []
    seen = set()
    for node in (screen, screen.app):
        for b in declared_bindings(node):
            if b.system or b.id is None or (b.action, b.key) in seen or not b.description:
                continue
            seen.add((b.action, b.key))
            rows.append((screen.app.get_key_display(b), b.description, b.tooltip))
    return rows


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,question_mark,q", "dismiss", "Close", id="close-help")]

    def __init__(self, under: Screen):
        super().__init__(classes="dialog")
        self.under = under

    def compose(self) -> ComposeResult:
        title = getattr(self.under, "HELP_TITLE", type(self.under).__name__)
        keys = join_lines(markup("[b $accent]$key[/]  $what" + (" [$text-muted]· $tip[/]" if t else ""),
                                 key=f"{k:>6}", what=d, tip=t or "") for k, d, t in binding_rows(self.under))
        icons = "  ".join(f"{icon} {name}" for name, icon in STATUS_ICONS.items())
        with VerticalScroll(id="dialog"):
            yield Static(markup("[b]$title: keys[/b]", title=title), classes="dialog-title")
            yield Static(keys)
            yield Static(Content("\n") + Content.from_markup(LEGEND.format(icons=icons)))

    async def action_dismiss(self, result=None) -> None:
        self.dismiss(None)
