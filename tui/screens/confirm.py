"""A small modal question answered with one key: `Choose("Stop run X?", [("y", "Stop", "stop"), ...])`."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.markup import escape
from textual.screen import ModalScreen
from textual.widgets import Static


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
            yield Static(f"[b]{escape(self.question)}[/b]", id="question")
            if self.detail:
                yield Static(escape(self.detail), id="detail")
            keys = "   ".join(f"[b $accent]{key}[/] {escape(label)}" for key, label, _ in self.choices)
            yield Static(keys + "   [b $accent]esc[/] cancel", id="answers")

    def action_pick(self, key: str) -> None:
        self.dismiss(self._values.get(key))

    def action_choose(self, value: object) -> None:
        self.dismiss(value)
