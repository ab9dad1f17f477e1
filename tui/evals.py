"""Evaluations as the TUI shows them, read through `labtui.engine.analysis.evalstore`.

Imported by the screens that show evaluations (not while the dashboard opens); call these from
worker threads: they read files, and a comparison may read every prediction. No Textual here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from labtui.engine.analysis import evalstore, stats
from labtui.engine.rundir import store

from .format import short_id


def list_evals(run: store.Run) -> list[dict]:
    """The run's evaluations, oldest first (rows of `labtui evals`)."""
    return evalstore.list_evals(run)


def eval_row(path: Path) -> dict:
    return evalstore.eval_row(path)


def summary(path: Path) -> dict:
    return evalstore.read_summary(path)


def settings_text(row: dict, short: bool = False) -> str:
    """What an eval evaluated, in a few words (labtui.engine.analysis.evalstore.eval_settings_text)."""
    return evalstore.eval_settings_text(row, short=short)


def gpu_here() -> tuple[bool, str]:
    """(whether this machine has an NVIDIA GPU, its name or why not), from NVML through engine.sysmon:
    no torch, so the TUI stays light. The eval's own `labtui eval --device cuda` checks torch too."""
    from labtui.engine.runtime import sysmon

    found = sysmon.gpus()
    if found:
        return True, str(found[0].get("name") or "GPU")
    err = sysmon.nvml_error()
    return False, "no NVIDIA GPU on this machine" + (f" (NVML: {err})" if err else "")


def headline_eval(run: store.Run, baseline: Any = None) -> dict | None:
    """labtui.engine.analysis.evalstore.headline_eval: the eval that stands for the run (its row, with `why`)."""
    return evalstore.headline_eval(run, baseline)


def pair(a: Any, b: Any) -> tuple[Any, Any, dict | None, dict | None]:
    """labtui.engine.analysis.evalstore.headline_pair: each run replaced by its headline eval folder, paired with the
    other side; (a, b, headline row of a or None, of b or None). ValueError when a run has none."""
    try:
        return evalstore.headline_pair(a, b)
    except evalstore.EvalNotFound as e:
        raise ValueError(str(e)) from None


def compare(a: Any, b: Any) -> dict:
    """labtui.engine.analysis.evalstore.compare_sources (B minus A). Sources: a store.Run (its headline eval) or an
    eval directory. Raises ValueError with the engine's message when a side has no finished
    evaluation or the two were not evaluated on the same examples."""
    try:
        return evalstore.compare_sources(a, b)
    except (stats.UnpairedError, evalstore.EvalNotFound) as e:
        raise ValueError(str(e)) from None


def describe(src: Any) -> str:
    """A comparison side in a few words: `demo-tuned·a1b2 / checkpoint 120, N 300, score, cpu`
    (a store.Run stands for its headline eval)."""
    if isinstance(src, store.Run):
        head = headline_eval(src)
        if head is None:
            return short_id(src.id, src.info().get("experiment"))
        src = head["path"]
    path = Path(src)
    run = store.Run(path.parent.parent)
    row = eval_row(path)
    return f"{short_id(run.id, run.info().get('experiment'))} / {settings_text(row)}"
