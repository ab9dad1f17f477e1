"""A footer that fits: keys marked `wide-only` appear when the terminal is wide enough.

At 80 columns the footer holds the main keys; the chart and filter keys are shown next to what
they change, and all keys are in `?` help and the ctrl+p palette. From `WIDE` columns up, the
footer shows those keys too, and the palette key.
"""

from __future__ import annotations

import dataclasses

from textual.screen import Screen
from textual.widgets import Footer

WIDE = 110


class LabFooter(Footer):
    def __init__(self, wide_only: set[str] = frozenset(), **kwargs) -> None:
        super().__init__(compact=True, **kwargs)
        self.wide_only = set(wide_only)
        self._wide: bool | None = None

    def on_resize(self) -> None:
        wide = self.size.width >= WIDE
        if wide == self._wide:
            return
        self._wide = wide
        set_shown(self.screen, self.wide_only, wide)
        self.show_command_palette = wide
        self.screen.refresh_bindings()


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
