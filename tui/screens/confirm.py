"""A small modal question answered with one key: `Choose("Stop run X?", [("y", "Stop", "stop"), ...])`."""

from __future__ import annotations

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
        self._values = {key: value for key, _, value in choices}
        for key, label, _ in choices:
            self._bindings.bind(key, f"pick('{key}')", label, show=True)

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(markup("[b]$question[/b]", question=self.question), id="question")
            if self.detail:
                yield Static(plain(self.detail), id="detail")
            keys = [markup("[b $accent]$key[/] $label", key=key, label=label) for key, label, _ in self.choices]
            yield Static(Content("   ").join([*keys, Content.from_markup("[b $accent]esc[/] cancel")]), id="answers")

    def action_pick(self, key: str) -> None:
        self.dismiss(self._values.get(key))

    def action_choose(self, value: object) -> None:
        self.dismiss(value)
