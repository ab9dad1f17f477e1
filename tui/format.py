"""Short, fixed-width text for numbers, sizes, times and tiny charts. Pure; no Textual."""

from __future__ import annotations

import math
from typing import Sequence

from labtui.engine.rundir.fmt import (  # noqa: F401  (the CLI prints the same; one run name for the TUI and report)
    age,
    changed_summary,
    clip,
    duration,
    last_cr_segment,
    num,
    printable,
    run_label,
    short_id,
)

STATUS_ICONS = {
    "queued": "…",
    "starting": "◐",
    "running": "▶",
    "completed": "✓",
    "failed": "✗",
    "stopped": "■",
    "crashed": "✗",
}
# Theme variables (16-colour safe with the ansi themes) for each status.
STATUS_STYLES = {
    "queued": "$text-muted",
    "starting": "$accent",
    "running": "$success",
    "completed": "$text",
    "failed": "$error",
    "stopped": "$warning",
    "crashed": "$error",
}
SPARKS = "▁▂▃▄▅▆▇█"


def rate(x: float | None) -> str:
    """Throughput: `325`, `12.4k`, `0.35`."""
    if x is None or not isinstance(x, (int, float)) or not math.isfinite(x):
        return "-"
    if x >= 10_000:
        return f"{x / 1000:.1f}k"
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def size(n: float | None) -> str:
    """Bytes in binary units, 3 significant digits: `241M`, `1.6G`, `80.0G`."""
    if n is None:
        return "-"
    n = float(n)
    for unit in ("B", "K", "M", "G", "T"):
        if abs(n) < 1024 or unit == "T":
            if unit == "B":
                return f"{int(n)}B"
            return f"{n:.1f}{unit}" if abs(n) < 100 else f"{n:.0f}{unit}"
        n /= 1024
    return "-"


def gib(n: float | None) -> str:
    return "-" if n is None else f"{n / 2**30:.1f}"


def pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.0f}%"


def bar(fraction: float | None, width: int) -> str:
    """A meter `████░░░░` of `width` cells (eighths for the last cell)."""
    if width <= 0:
        return ""
    if fraction is None or not math.isfinite(fraction):
        return "░" * width
    f = min(1.0, max(0.0, fraction))
    eighths = round(f * width * 8)
    full, part = divmod(eighths, 8)
    partial = " ▏▎▍▌▋▊▉"[part] if part else ""
    s = "█" * full + partial
    return s + "░" * (width - len(s))


def sparkline(values: Sequence[float | None], width: int, lo: float | None = None, hi: float | None = None) -> str:
    """The last `width` values as `▁▂▅█`; missing or non-finite values are blanks."""
    vals = list(values)[-width:] if width > 0 else []
    finite = [v for v in vals if v is not None and math.isfinite(v)]
    if not finite:
        return " " * len(vals)
    lo = min(finite) if lo is None else lo
    hi = max(finite) if hi is None else hi
    span = hi - lo
    out = []
    for v in vals:
        if v is None or not math.isfinite(v):
            out.append(" ")
        elif span <= 0:
            out.append(SPARKS[len(SPARKS) // 2 - 1] if hi > 0 else SPARKS[0])
        else:
            i = int((min(hi, max(lo, v)) - lo) / span * (len(SPARKS) - 1) + 0.5)
            out.append(SPARKS[i])
    return "".join(out)


def accuracy_ci(acc: float | None, ci: Sequence[float] | None) -> str:
    """`0.620 [0.56, 0.67]`."""
    if acc is None:
        return "-"
    if ci and len(ci) == 2:
        return f"{acc:.3f} [{ci[0]:.2f}, {ci[1]:.2f}]"
    return f"{acc:.3f}"


def p_value(p: float | None) -> str:
    """McNemar p as labtui.engine.analysis.stats formats it, with significance marks: `0.0123 *`."""
    if p is None:
        return "-"
    if p < 0.001:
        s = "<0.001"
    else:
        s = f"{p:#.3g}"
    marks = "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else ""
    return f"{s} {marks}".rstrip()


def signed_points(diff: float | None) -> str:
    """A difference of fractions as percentage points: `+8.0`."""
    if diff is None or not math.isfinite(diff):
        return "-"
    return f"{diff * 100:+.1f}"
