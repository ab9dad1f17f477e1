"""A footer that fits: keys marked `wide-only` appear when the terminal is wide enough for them.

At 80 columns the footer holds the main keys; the chart and filter keys are shown next to what
they change, and all keys are in `?` help and the ctrl+p palette. On a wider terminal the footer
adds the wide-only keys, in the order given, each with its own label, as many as fit, then the
palette key if it fits too: nothing is cut off and no label runs into the next key.

Public Textual API only: the keys come from `screen.active_bindings`, Footer's own `compose` makes
them (a wide-only key that does not fit is left out of what it yields), and `recompose` is skipped
when nothing the footer shows changed.
"""

from __future__ import annotations

from typing import Iterable

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer

WIDE = 110  # below this, no wide-only key (the main keys fill 80 columns)
PALETTE = "^p palette"

Plan = tuple[tuple[str, ...], bool]  # (the wide-only ids shown, whether the palette key is shown)


class LabFooter(Footer):
    def __init__(self, wide_only: Iterable[str] = (), **kwargs) -> None:
        super().__init__(compact=True, **kwargs)
        self.wide_only = list(dict.fromkeys(wide_only))  # in the order they are added as room allows
        self.current_plan: Plan | None = None  # None until the first resize: every key as declared
        self.shown_keys: tuple | None = None  # what the last recompose drew

    def on_mount(self) -> None:
        # Footer updates itself when the screen's bindings change, but not while the terminal
        # reports no focus (a detached tmux, another window): a screen opened then would keep an
        # empty footer. This subscriber updates it then too (Footer's own runs as well).
        self.screen.bindings_updated_signal.subscribe(self, self.keys_changed)

    def keys_changed(self, screen: Screen) -> None:
        if not self.app.app_focus and self.is_attached and screen is self.screen:
            self.call_after_refresh(self.recompose)

    def on_resize(self) -> None:
        plan = self.plan(self.size.width)
        if plan == self.current_plan:
            return
        self.current_plan = plan
        self.show_command_palette = plan[1]
        self.call_after_refresh(self.recompose)

    def plan(self, width: int) -> Plan:
        """The wide-only ids to show at `width` columns, and whether the palette key fits too."""
        if width < WIDE:
            return (), False
        cells: dict[str, int] = {}
        used = 0
        for _, b, _, _ in self.screen.active_bindings.values():
            if b.id in self.wide_only:
                cells.setdefault(b.id, len(self.app.get_key_display(b)) + len(b.description) + 2)
            elif b.show and b.description and not b.system:
                used += len(self.app.get_key_display(b)) + len(b.description) + 2
        shown = []
        for key_id in self.wide_only:
            need = cells.get(key_id, 0)
            if used + need > width:
                break
            used += need
            shown.append(key_id)
        return tuple(shown), used + len(PALETTE) + 2 <= width

    def hidden_keys(self) -> set[str]:
        """The keys of the wide-only bindings that do not fit now."""
        if self.current_plan is None:
            return set()
        hidden = set(self.wide_only) - set(self.current_plan[0])
        return {key for key, active in self.screen.active_bindings.items() if active.binding.id in hidden}

    def compose(self) -> ComposeResult:
        hidden = self.hidden_keys()
        for widget in super().compose():
            if getattr(widget, "key", None) not in hidden:  # a FooterKey says its key
                yield widget

    async def recompose(self) -> None:
        """Recompose only when what the footer shows changed: the screen asks after every move
        in the run list and every run update, and a recompose makes and styles a widget a key."""
        if not self.is_attached:  # its screen closed in between
            return
        shown = (self.current_plan, self.show_command_palette, self.compact, tuple(
            (b.key, b.action, b.description, b.show, b.group, enabled, tooltip)
            for _, b, enabled, tooltip in self.screen.active_bindings.values()))
        if shown == self.shown_keys and self.children:
            return
        self.shown_keys = shown
        await super().recompose()
