"""An Input for numbers that leaves letter keys to the screen's bindings.

A plain Input claims every printable key, which hides and disables single-letter bindings
(the eval form's `d`, `m`, `p`) while it has focus. This one claims only the characters it
accepts, so the keys keep working and stay in the footer.
"""

from __future__ import annotations

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

    async def _on_key(self, event) -> None:
        if event.is_printable and event.character not in self.allowed:
            event.prevent_default()  # skip Input's handler; the key bubbles on to the bindings
