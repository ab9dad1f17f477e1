"""Readers of the run directory never crash, hang or lose data on what a run folder may hold (wrong-typed
fields, bad records, FIFOs, symlinks, terminal escapes), and the CLI prints the truth, safely."""

from __future__ import annotations

import json
import os
import threading

import pytest
from conftest import labtui
from labtui.engine.rundir import cache, fmt, store
from labtui.tui import scan
from labtui.tui import tail as tail_mod
from labtui.tui.tail import RunTail
from test_tui_data import T0, make_eval, make_run

ESC_TITLE = "\x1b]0;pwned\x07"
ESC_CLEAR = "\x1b[2J"


def _ws(tmp_path) -> store.Workspace:
    ws = store.Workspace(tmp_path)
    ws.logs.mkdir(parents=True, exist_ok=True)
    return ws


def _metrics(n: int, bad_at: int | None = None, bad=None) -> list:
    recs = [{"kind": "start", "t": T0, "step": 0, "max_steps": n, "resumed": False}]
    for step in range(1, n + 1):
        recs.append({"kind": "train", "t": T0 + step, "step": step, "max_steps": n, "loss": 2.0 - step / n})
        if step == bad_at:
            recs.append(bad)
    return recs


# --- 1. wrong-typed fields are missing fields ------------------------------------------------------


def _broken_run(ws: store.Workspace) -> store.Run:
    run = make_run(ws, "20260101-000001-broken-0001", "broken", status="failed", created=T0 + 1)
    d = run.path
    store.atomic_write_json(d / store.RUN_FILE, {
        "id": 7, "created": "yesterday", "experiment": ["x"], "description": 42, "kind": 3, "parent": 1.5,
        "changed": {"training.learning_rate": "not a pair", "ok.key": [1, 2]}, "command": "labtui run",
        "experiment_file": {"a": 1}})
    store.atomic_write_json(d / store.STATE_FILE, {
        "status": "failed", "started": "noon", "ended": [1], "heartbeat": "x", "pid": "12", "exit_code": "1",
        "error": {"msg": "x"}, "host": 5, "created": "yesterday"})
    store.atomic_write_json(d / store.PROGRESS_FILE, {
        "step": "NaN", "max_steps": "x", "epoch": "e", "train_loss": "x", "best_eval_loss": [1],
        "best_step": "b", "tokens_per_s": "fast", "checkpoint": 5, "result": "done"})
    (d / store.ENV_FILE).write_text("[1, 2, 3]")  # valid JSON, not an object
    return run


def test_wrong_typed_fields_read_as_missing(tmp_path):
    ws = _ws(tmp_path)
    good = make_run(ws, "20260101-000000-good-0000", "good", created=T0)
    run = _broken_run(ws)
    info, state, prog = run.info(), run.state(), run.progress()
    assert info.get("created") is None and info.get("experiment") is None and info.get("description") is None
    assert info["changed"] == {"ok.key": [1, 2]}
    assert state["status"] == "failed" and state.get("started") is None and state.get("pid") is None
    assert prog.get("step") is None and prog.get("train_loss") is None and prog.get("result") is None
    assert run.env() == {}
    s = run.summary()
    assert s["created"] is None and s["experiment"] == run.id and s["step"] == 0 and s["description"] == ""
    json.dumps(s)
    rows = scan.Scanner(ws, persist=False).scan()
    assert {r.id for r in rows} == {good.id, run.id}
    broken = next(r for r in rows if r.id == run.id)
    assert broken.created is None and broken.step == 0 and broken.train_loss is None
    assert sorted(rows, key=lambda r: (r.created or 0, r.id))[0].id == run.id  # sortable by creation
    assert ws.run("last").id == good.id


def test_a_damaged_rows_cache_is_read_again_from_the_run(tmp_path):
    ws = _ws(tmp_path)
    run = make_run(ws, "20260101-000000-good-0000", "good", created=T0)
    first = scan.Scanner(ws).scan()
    kept = cache.Store(ws.logs, scan.CACHE_NAME, scan.CACHE_VERSION)  # a well-formed file, rows hand-edited
    kept.load()
    stamps, row = kept.entries[run.id]
    row[list(scan.RunRow.__dataclass_fields__).index("created")] = "yesterday"
    kept.put(run.id, stamps, row)
    kept.dirty = True
    kept.save()
    again = scan.Scanner(ws).scan()
    assert again == first and again[0].created == T0


def test_cli_lists_and_shows_a_run_with_wrong_typed_fields(tmp_path):
    ws = _ws(tmp_path)
    make_run(ws, "20260101-000000-good-0000", "good", created=T0)
    run = _broken_run(ws)
    for args in (("runs",), ("runs", "--json"), ("show", run.id), ("show", run.id, "--json")):
        p = labtui(ws, *args, timeout=60)
        assert p.returncode == 0, (args, p.stderr)
        assert "Traceback" not in p.stderr
    rows = json.loads(labtui(ws, "runs", "--json").stdout)
    assert [r["id"] for r in rows][0] == run.id and rows[0]["created"] is None


# --- 2. bad records are skipped and counted, the rest of the chunk is kept --------------------------

BAD = {"kind": "train", "step": "NaN", "loss": "x"}


def _write(path, recs) -> None:
    with open(path, "w") as f:
        for r in recs:
            f.write((r if isinstance(r, str) else store.dumps(r)) + "\n")


@pytest.mark.parametrize("indexed", [False, True])
def test_a_bad_metrics_record_is_skipped_not_the_chunk(tmp_path, monkeypatch, indexed):
    recs = _metrics(80, bad_at=40, bad=BAD)
    recs.insert(10, "[1, 2]")  # a line that is JSON but not an object
    recs.insert(20, {"kind": "eval", "step": 20, "eval_loss": {"v": 1}})
    recs.insert(30, {"kind": "start", "step": float("nan"), "resumed": True})
    if indexed:
        monkeypatch.setattr(tail_mod, "INDEX_MIN_BYTES", 0)
        w = store.IndexedJsonlWriter(tmp_path / store.METRICS_FILE)
        for r in recs:
            if isinstance(r, str):
                os.write(w._fd, (r + "\n").encode())
                w.close()
                w = store.IndexedJsonlWriter(tmp_path / store.METRICS_FILE)  # indexes the odd line on opening
            else:
                w.write(r)
        w.close()
    else:
        _write(tmp_path / store.METRICS_FILE, recs)
    tail = RunTail(tmp_path)
    tail.poll()
    snap = tail.snapshot()
    assert indexed == (tail.indexed_records > 0)
    assert snap.train_count == 80 and snap.last_train["step"] == 80
    assert snap.skipped == 4
    assert snap.metrics_offset == (tmp_path / store.METRICS_FILE).stat().st_size
    hist = store.metrics_history(store.Run(tmp_path))
    assert sum(r["kind"] == "train" for r in hist) == 80


def test_bad_records_arriving_later_are_skipped_too(tmp_path):
    path = tmp_path / store.METRICS_FILE
    _write(path, _metrics(10))
    tail = RunTail(tmp_path)
    tail.poll()
    with open(path, "a") as f:
        f.write(json.dumps(BAD) + "\n" + json.dumps({"kind": "train", "t": T0 + 11, "step": 11, "loss": 0.5}) + "\n")
    tail.poll()
    snap = tail.snapshot()
    assert snap.train_count == 11 and snap.skipped == 1 and snap.last_train["step"] == 11


def test_bad_system_and_alert_records_are_skipped(tmp_path):
    _write(tmp_path / store.SYSTEM_FILE, [{"kind": "system", "t": T0, "cpu": "hot", "gpus": "many"},
                                          {"kind": "system", "t": T0, "cpu": 5.0,
                                           "gpus": [{"index": 0, "mem_used": 1, "mem_total": "x"}]},
                                          {"kind": "system", "t": T0 + 1, "cpu": 7.0, "gpus": []}])
    _write(tmp_path / store.ALERTS_FILE, [{"kind": "nan", "severity": "error", "message": ["x"]},
                                          {"kind": "nan", "severity": "error", "step": 3, "message": "NaN loss"}])
    tail = RunTail(tmp_path)
    tail.poll()
    snap = tail.snapshot()
    assert snap.cpu == (7.0,) and [a["message"] for a in snap.alerts] == ["NaN loss"]
    assert snap.skipped == 3


def test_show_json_counts_skipped_records(tmp_path):
    ws = _ws(tmp_path)
    run = make_run(ws, "20260101-000000-good-0000", "good", created=T0)
    with open(run.file(store.METRICS_FILE), "a") as f:
        f.write(json.dumps(BAD) + "\nnot json\n")
    p = labtui(ws, "show", run.id, "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["skipped_records"][store.METRICS_FILE] == 2


# --- 3. only regular files are read: a FIFO never hangs a reader ------------------------------------


def _no_hang(fn, fifos, timeout: float = 10.0):
    out = {}
    th = threading.Thread(target=lambda: out.setdefault("v", fn()), daemon=True)
    th.start()
    th.join(timeout)
    if th.is_alive():
        for f in fifos:  # unblock the reader so the test process can end
            try:
                os.close(os.open(f, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass
        pytest.fail(f"reader hung on a FIFO ({fifos})")
    return out.get("v")


def test_fifos_in_a_run_folder_never_hang_readers(tmp_path):
    ws = _ws(tmp_path)
    run = make_run(ws, "20260101-000000-good-0000", "good", created=T0)
    fifos = []
    for name in (store.ALERTS_FILE, store.NOTES_FILE, store.LOG_FILE, store.ENV_FILE, store.SYSTEM_FILE):
        p = run.file(name)
        if p.exists():
            p.unlink()
        os.mkfifo(p)
        fifos.append(p)
    other = make_run(ws, "20260101-000001-other-0001", "other", created=T0 + 1)
    for name in (store.RUN_FILE, store.STATE_FILE, store.PROGRESS_FILE, store.CONFIG_FILE, store.METRICS_FILE,
                 store.METRICS_INDEX_FILE):
        p = other.file(name)
        if p.exists():
            p.unlink()
        os.mkfifo(p)
        fifos.append(p)
    snap = _no_hang(lambda: (lambda t: (t.poll(), t.snapshot())[1])(RunTail(run.path)), fifos)
    assert snap.train_count > 0 and snap.log_tail == ()
    snap = _no_hang(lambda: (lambda t: (t.poll(), t.snapshot())[1])(RunTail(other.path)), fifos)
    assert snap.train_count == 0
    assert _no_hang(lambda: (other.info(), other.state(), other.config(), other.summary())[3], fifos)["status"]
    assert _no_hang(lambda: store.read_metrics_index(other.file(store.METRICS_FILE)), fifos) is None
    assert _no_hang(run.notes, fifos) == ""
    assert _no_hang(lambda: store.tail_lines(run.file(store.LOG_FILE)), fifos) == []
    assert _no_hang(lambda: scan.Scanner(ws, persist=False).scan(), fifos)[0].notes == ""
    for args in (("show", run.id), ("show", run.id, "--json"), ("logs", run.id), ("runs",), ("show", other.id),
                 ("show", other.id, "--json")):
        p = labtui(ws, *args, timeout=30)
        assert p.returncode == 0, (args, p.stderr)


# --- 4. no symlinks out of the run folder ---------------------------------------------------------


def test_a_symlinked_notes_file_is_not_read(tmp_path):
    ws = _ws(tmp_path)
    run = make_run(ws, "20260101-000000-good-0000", "good", created=T0)
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:SECRET\n")
    run.file(store.NOTES_FILE).symlink_to(secret)
    (tmp_path / "alerts-elsewhere.jsonl").write_text(json.dumps({"kind": "x", "message": "SECRET"}) + "\n")
    run.file(store.ALERTS_FILE).symlink_to(tmp_path / "alerts-elsewhere.jsonl")
    assert run.notes() == "" and store.read_jsonl(run.file(store.ALERTS_FILE)) == []
    assert scan.row_for(run).notes == ""
    p = labtui(ws, "show", run.id, "--json")
    assert p.returncode == 0 and "SECRET" not in p.stdout
    assert json.loads(p.stdout)["notes"] == ""
    assert "SECRET" not in labtui(ws, "show", run.id).stdout


# --- 5. terminal escapes from run data never reach the terminal raw -------------------------------


def test_cli_text_output_strips_control_characters(tmp_path):
    ws = _ws(tmp_path)
    run = make_run(ws, "20260101-000000-good-0000", "good", created=T0, description=f"lr {ESC_TITLE}3e-4",
                   error=f"boom{ESC_CLEAR}", status="failed", notes=f"notes {ESC_CLEAR}here")
    store.append_jsonl(run.file(store.ALERTS_FILE), {"kind": "nan", "severity": "error", "step": 3,
                                                      "message": f"bad {ESC_TITLE}"})
    with open(run.file(store.LOG_FILE), "a") as f:
        f.write(f"log {ESC_CLEAR}line\n")
    for args in (("runs",), ("show", run.id), ("logs", run.id), ("show", run.id, "--json"),
                 ("runs", "--json"), ("show", f"x{ESC_CLEAR}y")):
        p = labtui(ws, *args)
        for stream in (p.stdout, p.stderr):
            assert "\x1b" not in stream and "\x07" not in stream, (args, stream)
    shown = labtui(ws, "show", run.id).stdout
    assert "lr ]0;pwned3e-4" in shown and "boom[2J" in shown and "notes [2Jhere" in shown
    assert json.loads(labtui(ws, "show", run.id, "--json").stdout)["error"] == f"boom{ESC_CLEAR}"


# --- 6. carriage-return progress lines --------------------------------------------------------------


def test_logs_draws_carriage_return_lines_as_their_last_segment(tmp_path):
    assert fmt.last_cr_segment(" 10%|#\r 50%|###\r100%|#####\r") == "100%|#####"
    ws = _ws(tmp_path)
    run = make_run(ws, "20260101-000000-good-0000", "good", created=T0)
    run.file(store.LOG_FILE).write_text("before\n 10%|#\r 50%|###\r100%|#####\nafter\n")
    out = labtui(ws, "logs", run.id).stdout.splitlines()
    assert out == ["before", "100%|#####", "after"]
    out = labtui(ws, "logs", run.id, "-f").stdout.splitlines()  # a finished run: prints and returns
    assert out == ["before", "100%|#####", "after"]
    assert labtui(ws, "logs", run.id, "-n", "1").stdout == "after\n"
    assert labtui(ws, "logs", run.id, "-n", "0").stdout == ""  # not the whole log ([-0:])


# --- 7. run references and status filters ------------------------------------------------------------


def test_empty_run_reference_and_bad_status_are_errors(tmp_path):
    ws = _ws(tmp_path)
    make_run(ws, "20260101-000000-good-0000", "good", created=T0)
    with pytest.raises(store.RunNotFound):  # with one run, "" would be a prefix of it
        ws.run("")
    for i in range(1, 3):
        make_run(ws, f"20260101-00000{i}-good-000{i}", "good", created=T0 + i)
    for args in (("show", ""), ("show", "  "), ("runs", "--status", "bogus")):
        p = labtui(ws, *args)
        assert p.returncode == 2 and p.stdout == "", args
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("labtui: error: "), p.stderr
    assert "queued" in p.stderr and "crashed" in p.stderr  # names the valid statuses
    p = labtui(ws, "runs", "--status", "running")
    assert p.returncode == 0 and p.stdout.strip() == "no running runs (3 in all)"
    p = labtui(ws, "runs", "--status", "running", "--status", "queued")
    assert p.stdout.strip() == "no running or queued runs (3 in all)"
    p = labtui(ws, "runs", "--status", "completed")
    assert p.returncode == 0 and len(p.stdout.strip().splitlines()) == 4


# --- 8. show lists the evals and the notes ----------------------------------------------------------


def test_show_lists_evals_and_notes(tmp_path):
    ws = _ws(tmp_path)
    run = make_run(ws, "20260101-000000-good-0000", "good", created=T0, notes="tried lr 3e-4\nlooked fine")
    make_eval(run, "20260101-010000-eval-aaaa", [True] * 20 + [False] * 10)
    make_eval(run, "20260101-020000-eval-bbbb", [True] * 5 + [False] * 5, device="cuda", mode="generate",
              created=T0 + 9000)
    odd = make_eval(run, "20260101-030000-eval-cccc", [True] * 4)
    store.atomic_write_json(odd / "summary.json", {"accuracy": "high", "n": "x", "device": 5})  # wrong types
    p = labtui(ws, "show", run.id)
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert "eval-cccc" in out and "high" not in out
    lines = out.splitlines()
    rows = [ln for ln in lines if "eval-aaaa" in ln or "eval-bbbb" in ln]
    assert len(rows) == 2, out
    a = next(r for r in rows if "eval-aaaa" in r)
    b = next(r for r in rows if "eval-bbbb" in r)
    assert "0.667" in a and "N 30" in a and "score" in a and "cpu" in a and "checkpoint 200" in a
    assert "0.5" in b and "N 10" in b and "generate" in b and "cuda" in b
    assert "headline" in a and "headline" not in b  # the largest N on the test split
    assert "tried lr 3e-4" in out and "looked fine" in out


def test_follow_log_prints_a_redrawn_line_once_when_it_ends(tmp_path):
    import io

    from labtui.engine.cli.follow import follow_log

    log = tmp_path / "worker.log"
    log.write_bytes(b"old\n 10%|#\r 50%|###")  # a bar being redrawn, its line not finished yet
    calls = []

    def finished() -> bool:  # the run writes between polls: the bar's end, then a line split inside a character
        calls.append(1)
        with open(log, "ab") as f:
            if len(calls) == 2:
                f.write(b" \r100%|#####\r\nnew \x1b[2J\xc3")
            elif len(calls) == 3:
                f.write(b"\xa9\n")
        return len(calls) > 4

    out = io.StringIO()
    follow_log(log, 10, finished, poll_s=0.01, out=out)
    assert out.getvalue().splitlines() == ["old", "100%|#####", "new [2J\u00e9"]
