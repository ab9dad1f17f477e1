"""Evaluations as the TUI shows them, read through `engine.evalstore`.

evalstore imports engine.stats and numpy where they are used, so this module imports it lazily: call
these from worker threads, never while the dashboard opens. Where evalstore is missing, the
functions raise `engine_api.Unavailable` and screens say so. No Textual here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from labtui.engine import store

from . import engine_api
from .format import short_id


def _evalstore():
    mod = engine_api._module("evalstore")
    if mod is None:
        raise engine_api.Unavailable("evaluations need engine/evalstore.py, which this installation does not have")
    return mod


def list_evals(run: store.Run) -> list[dict]:
    """The run's evaluations, oldest first (rows of `labtui evals`)."""
    return _evalstore().list_evals(run)


def eval_row(path: Path) -> dict:
    return _evalstore().eval_row(path)


def summary(path: Path) -> dict:
    return _evalstore().read_summary(path)


def gpu_here() -> tuple[bool, str]:
    """(whether this machine has an NVIDIA GPU, its name or why not), from NVML through engine.sysmon:
    no torch, so the TUI stays light. The eval's own `labtui eval --device cuda` checks torch too."""
    from labtui.engine import sysmon

    found = sysmon.gpus()
    if found:
        return True, str(found[0].get("name") or "GPU")
    err = sysmon.nvml_error()
    return False, "no NVIDIA GPU on this machine" + (f" (NVML: {err})" if err else "")


def headline_eval(run: store.Run, baseline: Any = None) -> dict | None:
    """engine.evalstore.headline_eval: the eval that stands for the run (its row, with `why`)."""
    return _evalstore().headline_eval(run, baseline)


def pair(a: Any, b: Any) -> tuple[Any, Any, dict | None, dict | None]:
    """engine.evalstore.headline_pair: each run replaced by its headline eval folder, paired with the
    other side; (a, b, headline row of a or None, of b or None). ValueError when a run has none."""
    es = _evalstore()
    try:
        return es.headline_pair(a, b)
    except es.EvalNotFound as e:
        raise ValueError(str(e)) from None


def compare(a: Any, b: Any) -> dict:
    """engine.evalstore.compare_sources (B minus A). Sources: a store.Run (its headline eval) or an
    eval directory. Raises ValueError with the engine's message when a side has no finished
    evaluation or the two were not evaluated on the same examples."""
    es = _evalstore()
    from labtui.engine import stats

    try:
        return es.compare_sources(a, b)
    except (stats.UnpairedError, es.EvalNotFound) as e:
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
    return f"{short_id(run.id, run.info().get('experiment'))} / {_evalstore().eval_settings_text(row)}"
