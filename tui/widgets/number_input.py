"""An Input for numbers that leaves letter keys to the screen's bindings.

A plain Input claims every printable key, which hides and disables single-letter bindings
(the eval form's `d`, `m`, `p`) while it has focus. This one claims only the characters it
accepts, so the keys keep working and stay in the footer.
"""

from __future__ import annotations

from textual import events
from textual.widgets import Input


class NumberInput(Input):
    def __init__(self, *args, allowed: str = "0123456789", **kwargs) -> None:
        self.allowed = allowed
        pattern = "[" + "".join("\\" + c if c in "\\]^-" else c for c in allowed) + "]*"
        super().__init__(*args, restrict=pattern, **kwargs)

    def check_consume_key(self, key: str, character: str | None) -> bool:
        if character is not None and character.isprintable():
            return character in self.allowed
        return super().check_consume_key(key, character)

    def on_key(self, event: events.Key) -> None:
        # Runs before Input's own key handler (a subclass's handler comes first); prevent_default
        # skips Input's, which would take the key, and the key bubbles on to the bindings.
        if event.is_printable and event.character not in self.allowed:
            event.prevent_default()
