"""Run data into screen text, safely: Textual `Content` built from a markup template whose `$names`
are filled with run data as plain text (never parsed as markup), control characters removed.

Run data can hold anything: `[/]`, an unclosed `[`, `ESC]0;...BEL`. `textual.markup.escape` does
not make an unclosed `[` or a trailing backslash safe; a template variable is never parsed, so
`markup("[b]$name[/b]", name=anything)` always renders `anything` in bold. Style names (`$accent`)
in the template's tags are theme variables, as in any markup.
"""

from __future__ import annotations

from typing import Iterable

from labtui.engine.rundir.fmt import printable
from textual.content import Content

NEWLINE = Content("\n")


def markup(template: str, **values: object) -> Content:
    """`template` is labtui's own markup; every value is shown as plain text (str()'d, control
    characters removed)."""
    return Content.from_markup(template, **{k: printable(v) for k, v in values.items()})


def plain(value: object, style: str = "") -> Content:
    """`value` as plain text in one style."""
    text = printable(value)
    return Content.styled(text, style) if style else Content(text)


def from_markup_or_plain(line: str) -> Content:
    """A markup string made elsewhere: parsed, or shown as it is when it does not parse."""
    try:
        return Content.from_markup(line)
    except Exception:  # noqa: BLE001  (textual's MarkupError, or a style it cannot read)
        return plain(line)


def join_lines(lines: Iterable[Content | str]) -> Content:
    """Lines (Content, or markup strings without run data in them) as one Content."""
    return NEWLINE.join(line if isinstance(line, Content) else from_markup_or_plain(line) for line in lines)
