"""A resolved config as YAML-like lines, with chosen keys highlighted (the diff, the overrides).

`config_content` / `diff_content` give Textual `Content` lines (values shown as plain text, whatever
they hold); `config_lines` / `diff_lines` the same as markup strings.
"""

from __future__ import annotations

from labtui.engine.config.diff import value_text
from labtui.engine.rundir.fmt import printable
from textual.content import Content


def _scalar(v) -> str:
    """A value as YAML reads (engine.config.diff.value_text), a string quoted where YAML would need it."""
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_scalar(x) for x in v) + "]"
    if isinstance(v, str):
        if "\n" in v:
            return '"' + v.replace("\n", "\\n") + '"'
        return v if v and v.strip() == v and not any(c in v for c in ":#{}[]") else f'"{v}"'
    return value_text(v)


def config_lines(cfg: dict, marks: dict[str, str] | None = None) -> list[str]:
    """`marks`: {dotted key: style} for leaves (or sections) to highlight, e.g. {"lora.r": "$warning"}.
    Markup strings (prefer `config_content`: markup cannot hold every value safely)."""
    return [c.markup for c in config_content(cfg, marks)]


def diff_lines(changed: dict, style: str = "$warning") -> list[str]:
    """`lora.r: 4 → 16` lines for a {key: [old, new]} diff, as markup strings (see `diff_content`)."""
    return [c.markup for c in diff_content(changed, style)]


def config_content(cfg: dict, marks: dict[str, str] | None = None, prefix: str = "", indent: int = 0) -> list[Content]:
    """A resolved config as YAML-like lines; `marks`: {dotted key: style} for leaves (or sections) to
    highlight, e.g. {"lora.r": "$warning"}. A key or value with `[/]` or an unclosed `[` shows as it is."""
    marks = marks or {}
    out = []
    pad = "  " * indent
    for key, value in cfg.items():
        dotted = f"{prefix}{key}"
        style = marks.get(dotted)
        if isinstance(value, dict) and value:
            out.append(Content.styled(printable(f"{pad}{key}:"), "b"))
            out.extend(config_content(value, marks, dotted + ".", indent + 1))
        else:
            line = printable(f"{pad}{key}: {_scalar(value)}")
            out.append(Content.styled(line, style) if style else Content(line))
    return out


def diff_content(changed: dict, style: str = "$warning") -> list[Content]:
    """`lora.r: 4 → 16` lines for a {key: [old, new]} diff."""
    out = []
    for key, pair in changed.items():
        old, new = pair if isinstance(pair, (list, tuple)) and len(pair) == 2 else (None, pair)
        out.append(Content.assemble((printable(key), style), printable(f": {_scalar(old)} → "),
                                    (printable(_scalar(new)), "b")))
    return out
