"""Two runs' resolved configs side by side: only the keys that differ, with both values.

`labtui diff A B` and the TUI's `d` both call `runs_diff`. Each run's resolved config is its
config.yaml (store.Run.config()), flattened to dotted keys (experiment.flatten); a key only one
side has is reported with `missing` naming the side that lacks it (its value there is None).
Unlike a run's diff against its parent (experiment.diff), nothing is skipped: two runs of
different experiments differ in `name` too, and that is worth seeing.
"""

from __future__ import annotations

from typing import Any, TypedDict

from labtui.engine.config.experiment import flatten
from labtui.engine.rundir import store

A, B = "a", "b"  # the sides, as the JSON names them


class Difference(TypedDict):
    key: str  # dotted, e.g. "lora.r"
    a: Any  # A's value (None when A lacks the key: see `missing`)
    b: Any
    missing: str | None  # "a" or "b": the side without this key; None when both have it


def config_diff(a: dict, b: dict) -> list[Difference]:
    """Every dotted leaf key whose value differs between `a` and `b`, in key order. An empty
    section has no leaves, so it is neither a key nor a difference."""
    fa, fb = flatten(a), flatten(b)
    out: list[Difference] = []
    for key in sorted(set(fa) | set(fb)):
        if key not in fa:
            out.append(Difference(key=key, a=None, b=fb[key], missing=A))
        elif key not in fb:
            out.append(Difference(key=key, a=fa[key], b=None, missing=B))
        elif not _same(fa[key], fb[key]):
            out.append(Difference(key=key, a=fa[key], b=fb[key], missing=None))
    return out


def _same(x: Any, y: Any) -> bool:
    """Equal as YAML values: 1 and 1.0 are the same number, True and 1 are not."""
    if isinstance(x, bool) or isinstance(y, bool):
        return type(x) is type(y) and x == y
    return bool(x == y)


class NoConfig(ValueError):
    """A run without a readable config.yaml (a bring-your-own command run, or a damaged folder)."""


def runs_diff(run_a: store.Run, run_b: store.Run) -> dict:
    """{"a": A's id, "b": B's id, "differences": [Difference, ...]}: `labtui diff --json`'s object."""
    configs = []
    for run in (run_a, run_b):
        cfg = run.config()
        if not cfg:
            raise NoConfig(f"run {run.id} has no resolved config ({store.CONFIG_FILE} is missing or unreadable)")
        configs.append(cfg)
    return {"a": run_a.id, "b": run_b.id, "differences": config_diff(*configs)}


MISSING = "(missing)"


def value_text(v: Any) -> str:
    """A config value as its YAML reads: `null`, `true`, `0.0002`, `[q_proj, v_proj]`."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(value_text(x) for x in v) + "]"
    return str(v)


def side_text(d: Difference, side: str) -> str:
    """One side's cell: its value, or `(missing)` when that side lacks the key."""
    return MISSING if d["missing"] == side else value_text(d[side])  # type: ignore[literal-required]
