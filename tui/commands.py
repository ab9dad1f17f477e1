"""The command palette (ctrl+p) and honest keys.

The palette lists every labtui key of the current screen and of the app, by name, built from the
bindings themselves, so a new key is in the palette without extra work. An action that makes no
sense now is listed greyed with the reason (choosing it says the reason again), not left out.

`HonestKeys` is the one mechanism for "why is this key dimmed": a screen mixes it in and answers
`why_disabled(action, parameters) -> str | None`; its `check_action` then dims (None) every action
that has a reason, the footer greys the key, pressing the key notifies the reason, and the palette
shows it. For example (the History screen):

    class HistoryScreen(HonestKeys, Screen):
        def why_disabled(self, action, parameters):
            if action == "compare" and len(self.marked) != 2:
                return "mark two rows with space first"
            return None
"""

from __future__ import annotations

from functools import partial

from labtui.engine.rundir.fmt import printable
from textual import events
from textual.actions import parse
from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.content import Content
from textual.dom import DOMNode


def declared_bindings(node: DOMNode) -> list[Binding]:
    """The bindings `node`'s class declares in BINDINGS, its bases' included, merged as Textual
    merges them (a subclass's binding of a key replaces its bases'), in the order declared. The
    palette and `?` help list these: every key of a screen, also while an input that takes letter
    keys has focus (`active_bindings` leaves those out then)."""
    by_key: dict[str, list[Binding]] = {}
    for cls in reversed(type(node).__mro__):
        declared = cls.__dict__.get("BINDINGS")
        if not declared:
            continue
        mine: dict[str, list[Binding]] = {}
        for b in Binding.make_bindings(declared):
            mine.setdefault(b.key, []).append(b)
        by_key.update(mine)
    return [b for bindings in by_key.values() for b in bindings]


class HonestKeys:
    """Mix into a Screen (before Screen): `why_disabled` says why an action cannot run now."""

    def why_disabled(self, action: str, parameters: tuple) -> str | None:
        """The reason `action` cannot run now, in a few words, or None when it can."""
        return None

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        return None if self.why_disabled(action, parameters) else True

    def explain_disabled(self, action: str, parameters: tuple = (), description: str = "") -> bool:
        """Notify why `action` cannot run now; False when it can."""
        why = self.why_disabled(action, parameters)
        if not why:
            return False
        self.notify(printable(why), title=f"{description or action}: not now", severity="warning",  # type: ignore[attr-defined]
                    timeout=6, markup=False)
        return True

    def on_key(self, event: events.Key) -> None:
        """A dimmed key was pressed: say why (Textual does not run a disabled action)."""
        active = self.active_bindings.get(event.key)  # type: ignore[attr-defined]
        if active is None or active.enabled or active.node is not self:
            return
        name, params = _split(active.binding.action)
        if self.explain_disabled(name, params, active.binding.description):
            event.stop()


class LabCommands(Provider):
    def _commands(self) -> list[tuple[str, str, str, object, str | None]]:
        """(title, help, action, node, why it cannot run now or None)."""
        screen = self.screen
        app = self.app
        out = []
        seen = set()
        for node in (screen, app):
            for b in declared_bindings(node):
                if b.system or b.id is None or not b.description or (node, b.action) in seen:
                    continue
                seen.add((node, b.action))
                name, params = _split(b.action)
                state = node.check_action(name, params)
                if state is False:  # hidden on purpose: not a key of this moment at all
                    continue
                why = None
                if state is not True:
                    explain = getattr(node, "why_disabled", None)
                    why = (explain(name, params) if explain else None) or "not available now"
                key = app.get_key_display(b)
                out.append((b.description, f"key: {key}" + (f" · {b.tooltip}" if b.tooltip else ""), b.action,
                            node, why))
        return out

    async def _run(self, action: str, node, why: str | None) -> None:
        if why is None:
            await self.app.run_action(action, node)
            return
        name, params = _split(action)
        explain = getattr(node, "explain_disabled", None)
        if explain is None or not explain(name, params):
            self.app.notify(printable(why), title="not now", severity="warning", markup=False)

    @staticmethod
    def _title_shown(title: Content | str, why: str | None) -> Content:
        """The title; greyed, with the reason, for an action that cannot run now."""
        shown = title if isinstance(title, Content) else Content(title)
        if why is None:
            return shown
        return Content.assemble(shown, (f"  ({printable(why)})", "italic")).stylize("$text-muted")

    async def discover(self) -> Hits:
        for title, help_text, action, node, why in self._commands():
            yield DiscoveryHit(self._title_shown(title, why), partial(self._run, action, node, why), text=title,
                               help=help_text if why is None else f"unavailable: {printable(why)} · {help_text}")

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_text, action, node, why in self._commands():
            score = matcher.match(title)
            if score > 0:
                if why is not None:
                    score *= 0.5  # what can run now first
                yield Hit(score, self._title_shown(matcher.highlight(title), why), partial(self._run, action, node, why), text=title,
                          help=help_text if why is None else f"unavailable: {printable(why)} · {help_text}")


def _split(action: str) -> tuple[str, tuple]:
    """`move_queued(-1)` -> ("move_queued", (-1,))."""
    _, name, params = parse(action)
    return name, params
