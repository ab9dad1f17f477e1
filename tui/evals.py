"""Evaluations as the TUI shows them, read through `engine.evalstore`.

evalstore imports engine.stats and numpy where they are used, so this module imports it lazily: call
these from worker threads, never while the dashboard opens. Where evalstore is missing, the
functions raise `engine_api.Unavailable` and screens say so. No Textual here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine import store

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


def latest_eval(run: store.Run) -> dict | None:
    """The newest completed evaluation that is not a parity check."""
    return _evalstore().latest_eval(run)


def eval_row(path: Path) -> dict:
    return _evalstore().eval_row(path)


def summary(path: Path) -> dict:
    return _evalstore().read_summary(path)


def compare(a: Any, b: Any) -> dict:
    """engine.evalstore.compare_sources (B minus A). Sources: a store.Run (its latest completed
    eval) or an eval directory. Raises ValueError with the engine's message when a side has no
    finished evaluation or the two were not evaluated on the same examples."""
    es = _evalstore()
    from engine import stats

    try:
        return es.compare_sources(a, b)
    except (stats.UnpairedError, es.EvalNotFound) as e:
        raise ValueError(str(e)) from None


def describe(src: Any) -> str:
    """A comparison side in a few words: `demo-tuned·a1b2` or `demo-tuned·a1b2 / cpu score n=300`."""
    if isinstance(src, store.Run):
        latest = latest_eval(src)
        if latest is None:
            return short_id(src.id, src.info().get("experiment"))
        src = latest["path"]
    path = Path(src)
    run = store.Run(path.parent.parent)
    row = eval_row(path)
    bits = " ".join(str(x) for x in (row.get("device"), row.get("mode"), f"n={row['n']}" if row.get("n") else None) if x)
    return f"{short_id(run.id, run.info().get('experiment'))} / {bits or path.name}"
