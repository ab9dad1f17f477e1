"""A resolved config as YAML-like lines, with chosen keys highlighted (the diff, the overrides).

Pure: returns Textual content markup; the Launch and Run detail screens show it in a Static.
"""

from __future__ import annotations

from textual.markup import escape


def _scalar(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_scalar(x) for x in v) + "]"
    if isinstance(v, str):
        if "\n" in v:
            return '"' + v.replace("\n", "\\n") + '"'
        return v if v and v.strip() == v and not any(c in v for c in ":#{}[]") else f'"{v}"'
    return str(v)


def config_lines(cfg: dict, marks: dict[str, str] | None = None, prefix: str = "", indent: int = 0) -> list[str]:
    """`marks`: {dotted key: style} for leaves (or sections) to highlight, e.g. {"lora.r": "$warning"}.
    A marked leaf also shows `(was X)` when `was` has it."""
    marks = marks or {}
    out = []
    pad = "  " * indent
    for key, value in cfg.items():
        dotted = f"{prefix}{key}"
        style = marks.get(dotted)
        if isinstance(value, dict) and value:
            head = f"{pad}{escape(str(key))}:"
            out.append(f"[b]{head}[/b]")
            out.extend(config_lines(value, marks, dotted + ".", indent + 1))
        else:
            line = f"{pad}{escape(str(key))}: {escape(_scalar(value))}"
            out.append(f"[{style}]{line}[/]" if style else line)
    return out


def diff_lines(changed: dict, style: str = "$warning") -> list[str]:
    """`lora.r: 4 → 16` lines for a {key: [old, new]} diff."""
    out = []
    for key, pair in changed.items():
        old, new = pair if isinstance(pair, (list, tuple)) and len(pair) == 2 else (None, pair)
        out.append(f"[{style}]{escape(key)}[/]: {escape(_scalar(old))} → [b]{escape(_scalar(new))}[/b]")
    return out
