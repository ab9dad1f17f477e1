"""A footer that fits: keys marked `wide-only` appear when the terminal is wide enough for them.

At 80 columns the footer holds the main keys; the chart and filter keys are shown next to what
they change, and all keys are in `?` help and the ctrl+p palette. On a wider terminal the footer
adds the wide-only keys, in the order given, each with its own label, as many as fit, then the
palette key if it fits too: nothing is cut off and no label runs into the next key.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable

from textual.screen import Screen
from textual.widgets import Footer

WIDE = 110  # below this, no wide-only key (the main keys fill 80 columns)
PALETTE = "^p palette"


class LabFooter(Footer):
    def __init__(self, wide_only: Iterable[str] = (), **kwargs) -> None:
        super().__init__(compact=True, **kwargs)
        self.wide_only = list(dict.fromkeys(wide_only))  # in the order they are added as room allows
        self._plan: tuple | None = None

    def on_resize(self) -> None:
        plan = self.plan(self.size.width)
        if plan == self._plan:
            return
        self._plan = plan
        shown, palette = plan
        set_shown(self.screen, set(self.wide_only) - set(shown), False)
        set_shown(self.screen, set(shown), True)
        self.show_command_palette = palette
        self.screen.refresh_bindings()

    def plan(self, width: int) -> tuple[tuple[str, ...], bool]:
        """The wide-only ids to show at `width` columns, and whether the palette key fits too."""
        if width < WIDE:
            return (), False
        cells: dict[str, int] = {}
        used = 0
        for bindings in self.screen._bindings.key_to_bindings.values():
            for b in bindings:
                if b.id in self.wide_only:
                    cells.setdefault(b.id, len(self.app.get_key_display(b)) + len(b.description) + 2)
                elif b.show and b.description and not b.system:
                    used += len(self.app.get_key_display(b)) + len(b.description) + 2
        for bindings in self.app._bindings.key_to_bindings.values():
            for b in bindings:
                if b.show and b.description and not b.system:
                    used += len(self.app.get_key_display(b)) + len(b.description) + 2
        shown = []
        for key_id in self.wide_only:
            need = cells.get(key_id, 0)
            if used + need > width:
                break
            used += need
            shown.append(key_id)
        return tuple(shown), used + len(PALETTE) + 2 <= width


    def bindings_changed(self, screen: Screen) -> None:
        # Footer skips the update while the terminal reports no focus (a detached tmux, another
        # window); a screen opened then would keep an empty footer.
        self._bindings_ready = True
        if self.is_attached and screen is self.screen:
            self.call_after_refresh(self._recompose_if_changed)

    async def _recompose_if_changed(self) -> None:
        """Recompose only when what the footer shows changed: the screen asks after every move
        in the run list and every run update, and a recompose makes and styles a widget a key."""
        if not self.is_attached:  # its screen closed in between
            return
        shown = (self.show_command_palette, self.compact, tuple(
            (b.key, b.action, b.description, b.show, b.group, enabled, tooltip)
            for _, b, enabled, tooltip in self.screen.active_bindings.values()))
        if shown != getattr(self, "_shown", None):
            self._shown = shown
            await self.recompose()


def set_shown(screen: Screen, ids: set[str], show: bool) -> None:
    """Show or hide (in the footer only) the screen's bindings with these ids."""
    for key, bindings in screen._bindings.key_to_bindings.items():
        screen._bindings.key_to_bindings[key] = [
            dataclasses.replace(b, show=show) if b.id in ids else b for b in bindings
        ]
