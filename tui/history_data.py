"""The rows of the History table: every run with its evaluations, compared with the baseline.

One row per run (its headline eval: labtui.engine.analysis.evalstore.choose_headline, the rule written in
HEADLINE_RULE), then one indented row per other finished eval, newest first. Against the baseline's
headline eval each row gets the difference (B - A, B = the row), the exact
McNemar p and Cohen's h from engine.stats via labtui.engine.analysis.evalstore. Runs in a worker thread;
no Textual here.

What it reads is cached (engine.rundir.cache, the one rule: keyed by the stamps of the files it
came from), so History opens fast with a thousand evaluated runs: a finished eval's row by its JSON
files, and each comparison by both predictions.jsonl files. A comparison is
labtui.engine.analysis.evalstore.compare_columns (what `labtui compare` computes) on the evals' columns
(labtui.engine.analysis.evalstore.columns); the baseline's columns are read once per build, not once per row. The
cache is shared by every History screen of the process and kept in `logs/.labtui-cache/history.json`,
so the next session starts warm too.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, replace
from pathlib import Path

from labtui.engine.analysis import evalstore, stats
from labtui.engine.rundir import cache, store

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
    evaluated: str = ""  # checkpoint, N, (split), mode, device: evalstore.eval_settings_text
    evaluated_short: str = ""  # the same for a table cell: `step 120 N300 score cpu`
    why: str = ""  # why this eval is the run's headline (the run's own row)
    not_comparable: str = ""  # why there is no difference / p: "N 100 vs 300", "different examples"
    diff: float | None = None
    p: float | None = None
    p_holm: float | None = None  # p adjusted (Holm) over the rows shown with a p: with_holm, by the screen
    h: float | None = None
    verdict: str = ""
    compare_error: str = ""
    notes: str = ""
    sub: bool = False  # an older eval of the run above
    is_baseline: bool = False
    pending: bool = False  # its comparison with the baseline is still being computed
    group: str = ""  # run.json's group: the runs of one `labtui sweep`

    @property
    def source(self):
        """What evals.compare takes for this row."""
        return Path(self.eval_path) if self.eval_path else None


CACHE_NAME = "history"  # logs/.labtui-cache/history.json: "row:<eval dir>" and "pair:<eval dir A>\n<B>"
CACHE_VERSION = 1  # rows: evals.eval_row without its path; pairs: RESULT_KEYS or the error text
EVAL_FILES = (store.RUN_FILE, evalstore.EVAL_FILE, evalstore.SUMMARY_FILE, store.PROGRESS_FILE, store.STATE_FILE)
PREDICTIONS = evalstore.PREDICTIONS_FILE
PARTIAL_AFTER = 20  # more comparisons than this to compute: the rows are shown first, without them
RESULT_KEYS = ("n", "acc_a", "acc_b", "b", "c", "diff", "mcnemar_p", "cohens_h", "verdict")


class _Cache:
    """Eval rows and comparisons of one workspace (see the module's doc)."""

    def __init__(self, logs: Path):
        self.logs = logs
        self.store = cache.Store(logs, CACHE_NAME, CACHE_VERSION)
        self.lock = self.store.lock
        self.columns: dict[str, tuple] = {}  # eval dir -> (predictions stamp, Columns), this build only
        self.seen: set[str] = set()

    def save(self) -> None:
        """Keep what this build used (evals and pairs of runs that are gone drop out), atomically."""
        keep = self.seen

        def used(key: str) -> bool:
            rest = key.partition(":")[2]
            return all(x in keep for x in rest.split("\n"))

        self.store.prune(used)
        self.store.save()

    def rel(self, path: Path | str) -> str:
        text, logs = str(path), str(self.logs)
        return text[len(logs) + 1:] if text.startswith(logs + os.sep) else text


_CACHES: dict[str, _Cache] = {}
_CACHES_LOCK = threading.Lock()


def _cache_for(ws: store.Workspace) -> _Cache:
    with _CACHES_LOCK:
        key = str(ws.logs)
        if key not in _CACHES:
            _CACHES[key] = _Cache(ws.logs)
        return _CACHES[key]


class HistoryData:
    """Builds the History rows; the caches behind it are shared per workspace (see the module)."""

    def __init__(self, ws: store.Workspace):
        self.ws = ws
        self._cache = _cache_for(ws)

    # --- evaluations --------------------------------------------------------------------------

    def eval_rows(self, run_id: str) -> list[dict]:
        """`evals.list_evals` of the run, with finished evals' rows taken from the cache."""
        c = self._cache
        out = []
        folder = os.path.join(str(self.ws.logs), run_id, store.EVALS_DIR)
        try:
            with os.scandir(folder) as it:
                names = sorted(e.name for e in it if e.is_dir())  # = Run.evals(), without pathlib
        except OSError:
            names = []
        for name in names:
            where = os.path.join(folder, name)
            rel = f"{run_id}/{store.EVALS_DIR}/{name}"
            key = cache.stamps(os.path.join(where, f) for f in EVAL_FILES)
            hit = c.store.get("row:" + rel, key)
            if isinstance(hit, dict):
                row = dict(hit, path=where)
            else:
                path = Path(where)
                if not evalstore.is_eval_dir(path):
                    continue
                row = evals.eval_row(path)
                if row.get("status") in store.FINAL:
                    c.store.put("row:" + rel, key, {k: v for k, v in row.items() if k != "path"})
            c.seen.add(rel)
            out.append(row)
        return out

    def _columns(self, path: Path):
        """The eval's columns (labtui.engine.analysis.evalstore.columns), kept for this build: the baseline's are
        read once, not once per row. None when they cannot be read (the comparison then says why)."""
        c = self._cache
        rel = c.rel(path)
        stamp = cache.stamp(os.path.join(path, PREDICTIONS))
        hit = c.columns.get(rel)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        try:
            cols = evalstore.columns(Path(path))
        except Exception:  # noqa: BLE001
            return None
        c.columns[rel] = (stamp, cols)
        return cols

    def cached_pair(self, a: Path, b: Path) -> dict | str | None:
        """The cached comparison of a and b if it is still valid, else None (nothing computed)."""
        return self._lookup(a, b)[2]

    def _lookup(self, a: Path, b: Path) -> tuple[str, tuple, dict | str | None]:
        """(cache key, both predictions files' stamps, the cached result if those stamps match)."""
        c = self._cache
        key = f"pair:{c.rel(a)}\n{c.rel(b)}"
        stamps = cache.stamps((os.path.join(a, PREDICTIONS), os.path.join(b, PREDICTIONS)))
        hit = c.store.get(key, stamps)
        return key, stamps, hit if isinstance(hit, (dict, str)) else None

    def compare_cached(self, a: Path, b: Path) -> dict | str:
        """The comparison (B minus A: n, acc_a, acc_b, b, c, diff, mcnemar_p, cohens_h, verdict), or the
        error message. Cached by both predictions files' stamps."""
        c = self._cache
        with c.lock:
            c.seen.update((c.rel(a), c.rel(b)))
            key, stamps, hit = self._lookup(a, b)
            if hit is not None:
                return hit
            result = self._compare(Path(a), Path(b))
            c.store.put(key, stamps, result)
            return result

    def _compare(self, a: Path, b: Path) -> dict | str:
        ca, cb = self._columns(a), self._columns(b)
        try:
            res = evalstore.compare_columns(ca, cb) if ca is not None and cb is not None else evals.compare(a, b)
        except Exception as e:  # noqa: BLE001 - the message is shown in the row
            return str(e)
        return {k: res.get(k) for k in RESULT_KEYS}

    # --- the rows -----------------------------------------------------------------------------

    def build(self, runs: list[RunRow] | tuple[RunRow, ...], baseline_id: str | None, now: float,
              partial=None, prefer: str = "final") -> list[HistRow]:
        """The rows. With `partial`, and more than PARTIAL_AFTER comparisons not cached, `partial` is
        called first with the rows whose comparisons are not known yet marked `pending` (the first
        History after many new evaluations shows its table while it computes them)."""
        c = self._cache
        with c.lock:
            c.seen = set()
            c.columns = {}
            try:
                return self._build(runs, baseline_id, now, partial, prefer)
            finally:
                c.save()

    def _build(self, runs, baseline_id: str | None, now: float, partial=None, prefer: str = "final") -> list[HistRow]:
        per_run: dict[str, list[dict]] = {}
        for r in runs:
            try:
                rows = self.eval_rows(r.id)
            except Exception:  # noqa: BLE001 - evals that cannot be read: the run without eval columns
                rows = []
            per_run[r.id] = [e for e in rows if evalstore.finished(e)]
        by_id = {r.id: r for r in runs}

        def headline(r: RunRow, base: dict | None) -> dict | None:
            return evalstore.choose_headline(per_run.get(r.id, []), base, r.step, best_step=r.best_step, prefer=prefer)

        base_row = headline(by_id[baseline_id], None) if baseline_id in by_id else None
        base_dir = Path(base_row["path"]) if base_row else None
        order = []
        for r in sorted(runs, key=lambda x: x.created or 0, reverse=True):
            finished = per_run.get(r.id, [])
            head = headline(r, base_row if r.id != baseline_id else None)
            if head is None:
                order.append((r, None, False))
                continue
            order.append((r, head, False))  # the headline eval, then the others, newest first
            order += [(r, dict(e, why="", not_comparable=None), True) for e in reversed(finished)
                      if e["path"] != head["path"]]
        for k, (r, e, sub) in enumerate(order):
            if e is not None and base_row is not None and Path(e["path"]) != base_dir:
                order[k] = (r, dict(e, not_comparable=evalstore.comparability(e, base_row)), sub)
        compare = self.compare_cached
        if partial is not None and base_dir is not None:
            known = {path: self.cached_pair(base_dir, path) for path in
                     (Path(e["path"]) for _, e, _ in order if e is not None and not e.get("not_comparable"))
                     if path != base_dir}
            if sum(res is None for res in known.values()) > PARTIAL_AFTER:
                partial([self._row(r, e, sub, base_dir, baseline_id, now, lambda a, b: known[b])
                         for r, e, sub in order])

            def compare(a: Path, b: Path) -> dict | str:  # what was looked up is not looked up again
                return known[b] if known[b] is not None else self.compare_cached(a, b)

        return [self._row(r, e, sub, base_dir, baseline_id, now, compare) for r, e, sub in order]

    def _row(self, r: RunRow, e: dict | None, sub: bool, base_dir: Path | None, baseline_id: str | None,
             now: float, compare) -> HistRow:
        """One row; `compare(base_dir, eval_dir)` gives its comparison, or None while it is pending."""
        label = fmt.run_label(r.id, r.experiment, r.group)
        common = dict(run_id=r.id, experiment=r.experiment, group=r.group or "", status=r.status, created=r.created,
                      duration=r.duration(now), train_loss=r.train_loss, eval_loss=r.eval_loss,
                      changed=fmt.changed_summary(r.changed), notes=r.notes, is_baseline=r.id == baseline_id)
        if e is None:
            return HistRow(key=f"run:{r.id}", label=label, **common)
        path = Path(e["path"])
        fields = dict(eval_path=str(path), eval_id=e["id"], accuracy=e.get("accuracy"),
                      ci=tuple(e["ci"]) if isinstance(e.get("ci"), (list, tuple)) else None, n=e.get("n"),
                      device=e.get("device"), mode=e.get("mode"), degenerate=bool(e.get("degenerate")),
                      evaluated=evalstore.eval_settings_text(e), evaluated_short=evalstore.eval_settings_text(e, short=True), why=e.get("why") or "")
        if base_dir is not None and path != base_dir:
            if e.get("not_comparable"):
                fields.update(compare_error=f"not comparable with the baseline's eval: {e['not_comparable']}",
                              not_comparable=e["not_comparable"])
            else:
                res = compare(base_dir, path)
                if res is None:
                    fields.update(pending=True)
                elif isinstance(res, dict):
                    fields.update(diff=res.get("diff"), p=res.get("mcnemar_p"), h=res.get("cohens_h"),
                                  verdict=res.get("verdict") or "")
                else:
                    fields.update(compare_error=res, not_comparable="different examples"
                                  if "same examples" in res or "not evaluated on" in res else "error")
        if sub:
            label = f"  ↳ {e['id'][-4:]}"
        return HistRow(key=f"eval:{path}" if sub else f"run:{r.id}", label=label, sub=sub, **common, **fields)


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


def with_holm(rows: list[HistRow]) -> tuple[list[HistRow], int]:
    """(the rows with p_holm set, the family's size): Holm-Bonferroni over the rows given (History: the
    rows shown, filter applied) that have a p against the baseline; the others keep p_holm None."""
    adjusted = stats.holm([r.p for r in rows])
    family = sum(1 for r in rows if r.p is not None)
    return [r if r.p is None and r.p_holm is None else replace(r, p_holm=a) for r, a in zip(rows, adjusted)], family


def matches(row: HistRow, text: str) -> bool:
    if not text:
        return True
    hay = " ".join(str(x) for x in (row.run_id, row.experiment, row.group, row.status, row.changed, row.notes, row.device,
                                     row.mode, row.label, row.evaluated)).lower()
    return all(w in hay for w in text.lower().split())
