"""The rows of the History table: every run with its evaluations, compared with the baseline.

One row per run (its latest finished eval), then one indented row per older finished eval.
Against the baseline's latest eval each row gets the difference (B - A, B = the row), the exact
McNemar p and Cohen's h from engine.stats via engine.evalstore. Comparisons are cached by the
files' modification times, so reopening History costs nothing. Runs in a worker thread (scipy);
no Textual here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from engine import store

from . import evals
from . import format as fmt
from .scan import RunRow


@dataclass(frozen=True)
class HistRow:
    key: str  # "run:<id>" or "eval:<path>"
    run_id: str
    label: str
    experiment: str
    changed: str
    status: str
    created: float | None
    duration: float | None
    train_loss: float | str | None
    eval_loss: float | str | None
    eval_path: str | None = None
    eval_id: str | None = None
    accuracy: float | None = None
    ci: tuple | None = None
    n: int | None = None
    device: str | None = None
    mode: str | None = None
    degenerate: bool = False
    diff: float | None = None
    p: float | None = None
    h: float | None = None
    verdict: str = ""
    compare_error: str = ""
    notes: str = ""
    sub: bool = False  # an older eval of the run above
    is_baseline: bool = False

    @property
    def source(self):
        """What evals.compare takes for this row."""
        return Path(self.eval_path) if self.eval_path else None


def _mtime(path: Path) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return 0


class HistoryData:
    """Keeps the comparison cache between refreshes."""

    def __init__(self, ws: store.Workspace):
        self.ws = ws
        self._cmp: dict[tuple, dict | str] = {}

    def compare_cached(self, a: Path, b: Path) -> dict | str:
        """The comparison dict, or the error message."""
        key = (str(a), _mtime(a / "predictions.jsonl"), str(b), _mtime(b / "predictions.jsonl"))
        if key not in self._cmp:
            try:
                self._cmp[key] = evals.compare(a, b)
            except Exception as e:  # noqa: BLE001 - the message is shown in the row
                self._cmp[key] = str(e)
        return self._cmp[key]

    def build(self, runs: list[RunRow] | tuple[RunRow, ...], baseline_id: str | None, now: float) -> list[HistRow]:
        per_run: dict[str, list[dict]] = {}
        for r in runs:
            try:
                rows = evals.list_evals(store.Run(self.ws.logs / r.id))
            except Exception:  # noqa: BLE001 - no evalstore: runs without eval columns
                rows = []
            per_run[r.id] = [e for e in rows if e.get("purpose") != "parity" and e.get("status") == "completed"
                             and e.get("accuracy") is not None]
        base_dir = None
        if baseline_id and per_run.get(baseline_id):
            base_dir = Path(per_run[baseline_id][-1]["path"])
        out = []
        for r in sorted(runs, key=lambda x: x.created or 0, reverse=True):
            done = per_run.get(r.id, [])
            evs = list(reversed(done)) or [None]
            for i, e in enumerate(evs):
                out.append(self._row(r, e, sub=i > 0, base_dir=base_dir, baseline_id=baseline_id, now=now))
        return out

    def _row(self, r: RunRow, e: dict | None, sub: bool, base_dir: Path | None, baseline_id: str | None,
             now: float) -> HistRow:
        label = fmt.short_id(r.id, r.experiment)
        common = dict(run_id=r.id, experiment=r.experiment, status=r.status, created=r.created,
                      duration=r.duration(now), train_loss=r.train_loss, eval_loss=r.eval_loss,
                      changed=fmt.changed_summary(r.changed), notes=r.notes, is_baseline=r.id == baseline_id)
        if e is None:
            return HistRow(key=f"run:{r.id}", label=label, **common)
        path = Path(e["path"])
        fields = dict(eval_path=str(path), eval_id=e["id"], accuracy=e.get("accuracy"),
                      ci=tuple(e["ci"]) if e.get("ci") else None, n=e.get("n"), device=e.get("device"),
                      mode=e.get("mode"), degenerate=bool(e.get("degenerate")))
        if base_dir is not None and path != base_dir:
            res = self.compare_cached(base_dir, path)
            if isinstance(res, dict):
                fields.update(diff=res.get("diff"), p=res.get("mcnemar_p"), h=res.get("cohens_h"),
                              verdict=res.get("verdict") or "")
            else:
                fields.update(compare_error=res)
        if sub:
            label = f"  ↳ {e.get('device') or ''} {e.get('mode') or ''} {e['id'][-4:]}".rstrip()
        return HistRow(key=f"eval:{path}" if sub else f"run:{r.id}", label=label, **common, **fields)


SORTS = {
    "created": lambda r: r.created or 0,
    "experiment": lambda r: r.experiment,
    "status": lambda r: r.status,
    "duration": lambda r: r.duration,
    "train loss": lambda r: _f(r.train_loss),
    "eval loss": lambda r: _f(r.eval_loss),
    "accuracy": lambda r: r.accuracy,
    "difference": lambda r: r.diff,
    "p": lambda r: r.p,
}


def _f(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def sort_rows(rows: list[HistRow], key: str, reverse: bool) -> list[HistRow]:
    """Sort run groups (a run and its older evals stay together); missing values go last."""
    groups: list[list[HistRow]] = []
    for r in rows:
        if r.sub and groups:
            groups[-1].append(r)
        else:
            groups.append([r])
    get = SORTS[key]
    present = [g for g in groups if get(g[0]) is not None]
    missing = [g for g in groups if get(g[0]) is None]
    present.sort(key=lambda g: get(g[0]), reverse=reverse)
    return [r for g in present + missing for r in g]


def matches(row: HistRow, text: str) -> bool:
    if not text:
        return True
    hay = " ".join(str(x) for x in (row.run_id, row.experiment, row.status, row.changed, row.notes, row.device,
                                     row.mode, row.label)).lower()
    return all(w in hay for w in text.lower().split())
