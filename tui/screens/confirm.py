"""A small modal question answered with one key: `Choose("Stop run X?", [("y", "Stop", "stop"), ...])`."""

from __future__ import annotations

from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Static

from ..text import markup, plain


class Choose(ModalScreen[object]):
    """Dismisses with the value of the chosen answer; escape dismisses with None."""

    BINDINGS = [Binding("escape", "choose(None)", "Cancel", id="cancel")]

    def __init__(self, question: str, choices: list[tuple[str, str, object]], detail: str = ""):
        super().__init__(classes="dialog")
        self.question = question
        self.detail = detail
        self.choices = choices
        self.values = {key: value for key, _, value in choices}

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(markup("[b]$question[/b]", question=self.question), id="question")
            if self.detail:
                yield Static(plain(self.detail), id="detail")
            keys = [markup("[b $accent]$key[/] $label", key=key, label=label) for key, label, _ in self.choices]
            yield Static(Content("   ").join([*keys, Content.from_markup("[b $accent]esc[/] cancel")]), id="answers")

    def on_key(self, event: events.Key) -> None:
        """An answer's key (the answers differ per question: keys here, not class BINDINGS)."""
        if event.key in self.values:
            event.stop()  # the answer, not a key of the screen underneath or the app (q)
            self.dismiss(self.values[event.key])

    def action_choose(self, value: object) -> None:
        self.dismiss(value)
