"""The command palette (ctrl+p): every labtui key of the current screen and of the app, by name.

Built from the bindings themselves, so a new key is in the palette without extra work, and an
action that makes no sense now (`check_action` says so) is left out.
"""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider


class LabCommands(Provider):
    def _commands(self) -> list[tuple[str, str, str, object]]:
        screen = self.screen
        app = self.app
        out = []
        seen = set()
        for node in (screen, app):
            for bindings in node._bindings.key_to_bindings.values():
                for b in bindings:
                    if b.system or b.id is None or not b.description or (node, b.action) in seen:
                        continue
                    seen.add((node, b.action))
                    name, params = _split(b.action)
                    if node.check_action(name, params) is not True:
                        continue
                    key = app.get_key_display(b)
                    out.append((b.description, f"key: {key}" + (f" · {b.tooltip}" if b.tooltip else ""), b.action, node))
        return out

    async def discover(self) -> Hits:
        for title, help_text, action, node in self._commands():
            yield DiscoveryHit(title, partial(self.app.run_action, action, node), help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_text, action, node in self._commands():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), partial(self.app.run_action, action, node), help=help_text)


def _split(action: str) -> tuple[str, tuple]:
    """`move_queued(-1)` -> ("move_queued", (-1,))."""
    from textual.actions import parse

    _, name, params = parse(action)
    return name, params
