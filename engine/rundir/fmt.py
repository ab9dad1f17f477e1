"""Short text for ages, durations and loss-like numbers: one spelling for the CLI and the TUI.
Pure; no Textual (tui/format.py has the TUI's other formats)."""

from __future__ import annotations

import math
import re
import time


def age(t: float | None, now: float | None = None) -> str:
    """`42s`, `5m`, `3h`, `2d`: the time since `t`."""
    if not t:
        return "-"
    s = max(0.0, (time.time() if now is None else now) - t)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{int(s // size)}{unit}"
    return f"{int(s)}s"


def duration(s: float | None) -> str:
    """`0:42`, `12:05`, `3:02:11`; `-` when unknown."""
    if s is None or not math.isfinite(s) or s < 0:
        return "-"
    s = int(s)
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    if h >= 100:
        return f"{h // 24}d{h % 24:02d}h"
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def num(x, digits: int = 4) -> str:
    """A loss-like number in `digits` significant figures; NaN/Inf spelled out; `-` for None."""
    if x is None:
        return "-"
    if isinstance(x, str):
        return x
    x = float(x)
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Inf" if x > 0 else "-Inf"
    return f"{x:.{digits}g}"


# C0 controls but tab and newline, DEL, and the C1 range: a run's data may carry terminal escape
# sequences (a title change, a screen clear) that must never reach the user's terminal raw.
_CONTROL = {c: None for c in (*range(0x00, 0x09), *range(0x0B, 0x20), 0x7F, *range(0x80, 0xA0))}
_ESCAPED = {c: f"\\x{c:02x}" for c in _CONTROL}


def printable(text, escape: bool = False) -> str:
    """`text` safe to print to a terminal: control characters (ESC, BEL, CR, C1 ...) removed, or
    shown as `\\x1b` with `escape=True`; tab and newline kept. Non-strings are str()'d first."""
    s = text if isinstance(text, str) else str(text)
    return s.translate(_ESCAPED if escape else _CONTROL)


def last_cr_segment(line: str) -> str:
    """What a terminal shows of one line a progress bar (tqdm) redrew with carriage returns: the
    last non-blank part after a `\\r` (`"10%\\r50%\\r100%"` -> `"100%"`); a line without `\\r` as it is."""
    if "\r" not in line:
        return line
    parts = [p for p in line.split("\r") if p.strip()]
    return parts[-1] if parts else ""


def clip(text: str, width: int) -> str:
    """`text` cut to `width` characters, an ellipsis marking the cut."""
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def changed_summary(changed: dict | None, width: int | None = None) -> str:
    """`lora.r 4→16, learning_rate 5e-4→2e-3` from run.json's `changed` {key: [old, new]} (last key part
    only): History's `changed vs parent` column and `labtui report`'s."""
    if not changed:
        return ""
    parts = []
    for key, pair in changed.items():
        old, new = (pair + [None, None])[:2] if isinstance(pair, list) else (None, pair)
        name = key.split(".")[-1] if key.count(".") >= 1 and not key.startswith("lora.") else key
        parts.append(f"{name} {_short(old)}→{_short(new)}")
    text = ", ".join(parts)
    return clip(text, width) if width else text


def _short(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if v is None:
        return "∅"
    s = str(v)
    return s if len(s) <= 16 else s[:15] + "…"


_RUN_ID = re.compile(r"^\d{8}-\d{6}-(?P<name>.+)-(?P<tail>[0-9a-z]+)$")


def short_id(run_id: str, experiment: str | None = None) -> str:
    """`demo-baseline·37df`: the name the run id carries (the one `labtui runs` shows: `byo-train`,
    not run.json's `byo_train`) and the id's random tail, enough to tell runs apart. An id of
    another form: the experiment and the id's last part."""
    m = _RUN_ID.match(run_id)
    if m:
        return f"{m['name']}·{m['tail']}"
    tail = run_id.rsplit("-", 1)[-1] if "-" in run_id else run_id
    name = experiment or run_id
    return f"{name}·{tail}" if tail and tail != name else name


def run_label(run_id: str, experiment: str | None = None, group: str | None = None) -> str:
    """The name of a run in the run list, History and `labtui report`: `short_id`, or for a run of a group
    (a sweep's) the group's name and the id's tail, `lr-sweep·37df` (the experiment is the same for all of
    them; a derived group name starts with it), clipped to 28 columns."""
    if not group:
        return short_id(run_id, experiment)
    tail = short_id(run_id, experiment).rpartition("·")[2]
    return f"{clip(group, 27 - len(tail))}·{tail}"
