"""The one cache of derived data (engine.rundir.cache): the run list's rows, History's rows and
comparisons, an eval's columns. A cache entry is trusted only while the files it came from are the
same files with the same contents: not when a file was edited in place with its size and mtime put
back, not when the cache file itself was damaged or hand-edited. All of it in `logs/.labtui-cache/`;
a workspace that cannot be written still works."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from labtui.engine.analysis import evalstore
from labtui.engine.rundir import cache, store
from labtui.engine.runtime import queue
from labtui.tui import baseline, history_data, scan
from labtui.tui.monitor import Monitor
from test_tui_data import T0, make_eval, make_run, paired_sets

ROOT = Path(__file__).resolve().parents[1]


def _edit_in_place(path: Path, old: bytes, new: bytes, count: int = 1, pause: float = 0.0) -> None:
    """Replace `old` by `new` (same length) in the file, in place (same inode), then put its mtime
    back: size and mtime are what they were, only the contents differ."""
    assert len(old) == len(new)
    st = path.stat()
    data = path.read_bytes()
    assert data.count(old) >= count, (old, path)
    time.sleep(pause)
    with open(path, "r+b") as f:
        f.write(data.replace(old, new, count))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (st.st_size, st.st_mtime_ns, st.st_ino)


def _two_evals(ws: store.Workspace, n: int = 60) -> tuple[list[store.Run], Path, Path]:
    a, b = paired_sets(n, b=3, c=9, both_right=n // 2)
    runs = [make_run(ws, f"20260101-00000{i}-demo-{i:04x}", "demo", created=T0 + i) for i in range(2)]
    ea = make_eval(runs[0], "20260101-010000-cpu-score-0000", a)
    eb = make_eval(runs[1], "20260101-010001-cpu-score-0001", b)
    return runs, ea, eb


def _from_records(a: Path, b: Path) -> dict:
    return evalstore.compare_sources(evalstore.load_predictions(a), evalstore.load_predictions(b))


def _figures(r: dict) -> tuple:
    return r["n"], r["acc_a"], r["acc_b"], r["b"], r["c"], r["diff"], r["mcnemar_p"]


def _new_session() -> None:
    """What a new process starts with: no cache in memory (the stamps' digests included)."""
    history_data._CACHES.clear()
    cache._digests.clear()
    cache._swept.clear()


def _swept() -> None:
    """Wait for the background sweeps (cache.sweep_soon) this process started."""
    for t in threading.enumerate():
        if t.name == "labtui-cache-sweep":
            t.join(30)


# --- a source edited in place, size and mtime put back --------------------------------------------


def test_compare_does_not_trust_columns_of_predictions_edited_in_place(tmp_path):
    ws = store.Workspace(tmp_path)
    _, a, b = _two_evals(ws)
    first = evalstore.compare_sources(a, b)
    assert evalstore.columns_cache(b).path.exists()
    # B's right answers become wrong ones ("yes" -> "yyy"), same bytes count, mtime put back
    _edit_in_place(b / evalstore.PREDICTIONS_FILE, b'"pred": "yes"', b'"pred": "yyy"', count=5)
    _new_session()
    got = evalstore.compare_sources(a, b)
    assert _figures(got) == _figures(_from_records(a, b)) != _figures(first)


def test_a_large_predictions_file_edited_in_the_middle_is_not_trusted(tmp_path):
    ws = store.Workspace(tmp_path)
    _, a, b = _two_evals(ws, n=600)  # far more than cache.SMALL: its digest covers only its ends
    assert (b / evalstore.PREDICTIONS_FILE).stat().st_size > 4 * cache.SMALL
    first = evalstore.compare_sources(a, b)
    data = (b / evalstore.PREDICTIONS_FILE).read_bytes()
    middle = data.index(b'"pred": "yes"', len(data) // 3)
    old = data[middle:middle + 13]
    path = b / evalstore.PREDICTIONS_FILE
    st = path.stat()
    time.sleep(0.05)  # ctime ticks (it is what catches this edit: the digest does not see the middle)
    with open(path, "r+b") as f:
        f.seek(middle)
        f.write(old.replace(b"yes", b"yyy"))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    _new_session()
    got = evalstore.compare_sources(a, b)
    assert _figures(got) == _figures(_from_records(a, b)) and got["acc_b"] < first["acc_b"]


def test_history_does_not_trust_rows_or_comparisons_of_files_edited_in_place(tmp_path):
    ws = store.Workspace(tmp_path)
    runs, a, b = _two_evals(ws)
    rows = scan.Scanner(ws, persist=False).scan()
    built = history_data.HistoryData(ws).build(rows, runs[0].id, T0)
    before = next(r for r in built if r.run_id == runs[1].id)
    assert before.diff is not None
    _edit_in_place(b / evalstore.PREDICTIONS_FILE, b'"pred": "yes"', b'"pred": "yyy"', count=5)
    summary = json.loads((b / evalstore.SUMMARY_FILE).read_text())
    acc = json.dumps(summary["accuracy"]).encode()
    wrong = (b"0." + b"1" * (len(acc) - 2)) if not acc.startswith(b"0.1") else (b"0." + b"2" * (len(acc) - 2))
    _edit_in_place(b / evalstore.SUMMARY_FILE, b'"accuracy": ' + acc, b'"accuracy": ' + wrong)
    _new_session()
    again = next(r for r in history_data.HistoryData(ws).build(rows, runs[0].id, T0) if r.run_id == runs[1].id)
    truth = _from_records(a, b)
    assert (again.diff, again.p) == (truth["diff"], truth["mcnemar_p"]) != (before.diff, before.p)
    assert again.accuracy == float(wrong) != before.accuracy  # summary.json as it is now


def test_the_run_list_does_not_trust_rows_of_files_edited_in_place(tmp_path):
    ws = store.Workspace(tmp_path)
    run = make_run(ws, "20260101-000000-demo-0000", "demo", created=T0)
    store.atomic_write_json(run.file(store.PROGRESS_FILE), {**run.progress(), "step": 200})
    assert scan.Scanner(ws).scan()[0].step == 200
    _edit_in_place(run.file(store.PROGRESS_FILE), b'"step": 200', b'"step": 150')
    _new_session()
    assert scan.Scanner(ws).scan()[0].step == 150


# --- the cache file itself: damaged or hand-edited --------------------------------------------------


def test_a_hand_edited_columns_cache_is_a_miss_not_a_hundred_percent(tmp_path):
    ws = store.Workspace(tmp_path)
    _, a, b = _two_evals(ws)
    truth = evalstore.compare_sources(a, b)
    path = evalstore.columns_cache(b).path
    head, body = path.read_text().split("\n", 1)
    entries = json.loads(body)
    value = entries[""][1]
    value["pred"] = value["gold"]  # well-formed, keyed right, and every answer right
    path.write_text(head + "\n" + json.dumps(entries))
    _new_session()
    got = evalstore.compare_sources(a, b)
    assert got["acc_b"] == truth["acc_b"] < 1.0
    head2, _ = path.read_text().split("\n", 1)
    assert head2 == head  # rewritten, with what predictions.jsonl says


def test_damaged_cache_files_are_misses_and_are_rewritten(tmp_path):
    ws = store.Workspace(tmp_path)
    runs, a, b = _two_evals(ws)
    rows = scan.Scanner(ws).scan()
    built = history_data.HistoryData(ws).build(rows, runs[0].id, T0)
    compared = evalstore.compare_sources(a, b)
    files = {p: p.read_bytes() for p in (ws.logs / cache.DIR).rglob("*.json")}
    assert len(files) == 4  # runs, history, the columns of a and of b
    for p in files:
        p.write_bytes(files[p][: len(files[p]) // 2])  # cut short
    _new_session()
    assert scan.Scanner(ws).scan() == rows
    assert history_data.HistoryData(ws).build(rows, runs[0].id, T0) == built
    assert _figures(evalstore.compare_sources(a, b)) == _figures(compared)
    for p, data in files.items():
        st = cache.Store(ws.logs, str(p.relative_to(ws.logs / cache.DIR).with_suffix("")),
                         json.loads(data.split(b"\n", 1)[0])["version"])
        st.load()
        assert st.entries, p  # whole again
    (ws.logs / cache.DIR / "runs.json").write_text('{"format": 1, "name": "history", "version": 1, "digest": ""}\n{}')
    _new_session()
    assert scan.Scanner(ws).scan() == rows  # a foreign store's header: a miss


# --- where ---------------------------------------------------------------------------------------------


def test_the_caches_live_where_the_docs_say(tmp_path):
    ws = store.Workspace(tmp_path)
    runs, a, b = _two_evals(ws)
    history_data.HistoryData(ws).build(scan.Scanner(ws).scan(), runs[0].id, T0)
    evalstore.compare_sources(a, b)
    where = ws.logs / ".labtui-cache"
    assert sorted(str(p.relative_to(where)) for p in where.rglob("*.json")) == sorted(
        ["runs.json", "history.json", f"columns/{runs[0].id}/{a.name}.json", f"columns/{runs[1].id}/{b.name}.json"])
    derived = [p for p in ws.logs.rglob("*") if p.is_file() and where not in p.parents
               and ("cache" in p.name or "columns" in p.name)]
    assert derived == []  # nothing beside the evals, nothing else in logs/
    readme = (ROOT / "README.md").read_text()
    para = readme[readme.index("Derived files"):].split("\n\n", 1)[0]
    assert "logs/.labtui-cache/" in para and "runs.json" in para and "history.json" in para and "columns/" in para


# --- a workspace that cannot be written -----------------------------------------------------------------

_READER = """
import json, sys
from pathlib import Path
from labtui.engine.analysis import evalstore
from labtui.engine.rundir import store
from labtui.tui import history_data, scan
ws = store.Workspace(Path(sys.argv[1]))
rows = scan.Scanner(ws).scan()
rows = scan.Scanner(ws).scan()
built = history_data.HistoryData(ws).build(rows, sys.argv[2], float(sys.argv[3]))
cmp = evalstore.compare_sources(Path(sys.argv[4]), Path(sys.argv[5]))
print(json.dumps({"steps": [r.step for r in rows], "diffs": [r.diff for r in built], "acc_b": cmp["acc_b"]}))
"""


def test_a_read_only_logs_folder_still_works(tmp_path):
    from test_trust_lifecycle import _as_reader

    root = tmp_path / "ro"
    root.mkdir()
    ws = store.Workspace(root)
    runs, a, b = _two_evals(ws)
    rows = scan.Scanner(ws, persist=False).scan()
    built = history_data.HistoryData(ws).build(rows, runs[0].id, T0)
    want = {"steps": [r.step for r in rows], "diffs": [r.diff for r in built],
            "acc_b": evalstore.compare_sources(a, b)["acc_b"]}
    shutil.rmtree(ws.logs / cache.DIR)  # what the reader finds is the runs and evals alone
    try:
        kw = _as_reader(root)
        out = subprocess.run([sys.executable, "-c", _READER, str(root), runs[0].id, str(T0), str(a), str(b)],
                             capture_output=True, text=True, timeout=60, cwd=str(root), **kw)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout) == want
        assert not (ws.logs / cache.DIR).exists()
    finally:
        for p in [root, *root.rglob("*")]:
            if not p.is_symlink():
                p.chmod(p.stat().st_mode | 0o200)


# --- the same rule outside the cache files: the queue, the monitor ---------------------------------------


def test_a_queued_runs_cached_answer_is_not_trusted_after_an_edit_in_place(tmp_path):
    ws = store.Workspace(tmp_path)
    run = make_run(ws, "20260101-000000-demo-0000", "demo", status="queued", created=T0)
    store.atomic_write_json(run.file(store.STATE_FILE), {**run.raw_state(), "status": "queued", "queued": True})
    assert [r.id for r in queue.queued(ws)] == [run.id]
    # the flag that `enqueue` sets is taken back in place, size and mtime put back: not in the queue
    _edit_in_place(run.file(store.STATE_FILE), b'"queued": true', b'"queued": null')
    assert queue.queued(ws) == []
    assert queue.advance(ws) == []  # nothing started (advance reads the same cached answers)


def test_the_monitor_chooses_a_headline_again_only_when_its_inputs_change(tmp_path):
    ws = store.Workspace(tmp_path)
    base = make_run(ws, "20260101-000000-base-0000", "base", created=T0)
    tuned = make_run(ws, "20260101-000100-tuned-0001", "tuned", created=T0 + 60)
    make_eval(base, "20260101-010000-cpu-score-0000", [True] * 20 + [False] * 10)
    small = make_eval(tuned, "20260101-010001-cpu-score-0001", [True] * 25 + [False] * 5)
    big = make_eval(tuned, "20260101-010002-cpu-score-0002", [True] * 40 + [False] * 20, created=T0 + 7300)
    posted: list = []
    monitor = Monitor(ws, posted.append)
    monitor.prime()
    monitor.tick()
    assert monitor.evals[tuned.id].headline["path"] == str(big)  # no baseline: the most examples
    scanned = [m for m in posted if type(m).__name__ == "EvalsScanned"]
    monitor.tick()
    assert [m for m in posted if type(m).__name__ == "EvalsScanned"] == scanned  # nothing new, nothing posted
    baseline.set(ws, base.id)
    monitor.tick()
    assert monitor.evals[tuned.id].headline["path"] == str(small)  # the baseline's N
    assert monitor.evals[base.id].headline is not None
    bigger = make_eval(tuned, "20260101-010003-cpu-score-0003", [True] * 50 + [False] * 40, created=T0 + 7400)
    monitor.tick()
    assert monitor.evals[tuned.id].headline["path"] == str(small)  # still the one with the baseline's N
    baseline.set(ws, None)
    monitor.tick()
    assert monitor.evals[tuned.id].headline["path"] == str(bigger)


# --- what no cache reads again ----------------------------------------------------------------------------


def _with_header(path: Path, **change) -> None:
    head, body = path.read_text().split("\n", 1)
    path.write_text(json.dumps({**json.loads(head), **change}) + "\n" + body)


def test_files_no_cache_reads_again_are_deleted_and_the_rest_kept(tmp_path):
    ws = store.Workspace(tmp_path)
    runs, a, b = _two_evals(ws)
    rows = scan.Scanner(ws).scan()
    built = history_data.HistoryData(ws).build(rows, runs[0].id, T0)
    compared = evalstore.compare_sources(a, b)
    _swept()
    where = ws.logs / cache.DIR
    cols_a, cols_b = evalstore.columns_cache(a).path, evalstore.columns_cache(b).path
    kept = {where / "runs.json", where / "history.json", cols_a}
    _with_header(cols_b, version=evalstore.COLUMNS_VERSION - 1)  # an older version's
    gone_eval = cols_a.parent / "20260101-020000-cpu-score-0009.json"  # its eval folder was deleted
    gone_run = where / cache.COLUMNS / "20250101-000000-gone-0000" / "20250101-010000-cpu-score-0000.json"
    gone_run.parent.mkdir()
    for p in (gone_eval, gone_run):
        shutil.copy(cols_a, p)
    (where / "junk.json").write_text("{not json")
    newer = where / "newer.json"  # a newer labtui's store: not ours to judge
    newer.write_text(json.dumps({"format": cache.FORMAT + 1, "name": "newer", "version": 1}) + "\n{}")
    kept.add(newer)
    stale_tmp, fresh_tmp = where / ".runs.json.abc123.tmp", where / ".history.json.def456.tmp"
    stale_tmp.write_text("{")
    fresh_tmp.write_text("{")  # being written right now
    hour_ago = time.time() - cache.TMP_AGE_S - 60
    os.utime(stale_tmp, (hour_ago, hour_ago))
    kept.add(fresh_tmp)
    old = [ws.logs / ".labtui-runs-cache.json", ws.logs / ".labtui-history-cache.json", a / cache.OLD_EVAL_FILE]
    for p in old:  # the layout before logs/.labtui-cache/
        p.write_text("{}")
    removed = cache.sweep(ws.logs)
    assert set(removed) == {cols_b, gone_eval, gone_run, where / "junk.json", stale_tmp, *old}
    assert {p for p in where.rglob("*") if p.is_file()} == kept
    assert not gone_run.parent.exists() and cols_a.parent.exists()
    assert all(p.exists() for p in (a / evalstore.PREDICTIONS_FILE, b / evalstore.PREDICTIONS_FILE))
    _new_session()  # and every cache still answers right
    assert scan.Scanner(ws).scan() == rows
    assert history_data.HistoryData(ws).build(rows, runs[0].id, T0) == built
    assert _figures(evalstore.compare_sources(a, b)) == _figures(compared)
    assert json.loads(cols_b.read_text().split("\n", 1)[0])["version"] == evalstore.COLUMNS_VERSION


def test_a_process_that_writes_a_cache_deletes_the_old_layouts_files(tmp_path):
    ws = store.Workspace(tmp_path)
    runs, a, b = _two_evals(ws)
    old = [ws.logs / ".labtui-runs-cache.json", ws.logs / ".labtui-history-cache.json", a / cache.OLD_EVAL_FILE]
    for p in old:
        p.write_text("{}")
    _new_session()
    scan.Scanner(ws).scan()  # writes runs.json: the first write of this process here
    _swept()
    assert not any(p.exists() for p in old)
    assert (ws.logs / cache.DIR / "runs.json").exists()
