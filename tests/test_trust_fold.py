"""Issue 12, item 4: each duplicated idea exists once, and every caller goes through it."""

from __future__ import annotations

import json
import math

import pytest
from labtui.engine.analysis import evalstore
from labtui.engine.rundir import alerts, store


def test_one_nan_to_json_converter_for_run_rows_alerts_and_cli_json():
    assert store.jsonable({"a": [1.0, math.nan, {2: math.inf}], "b": (-math.inf,)}) == \
        {"a": [1.0, "nan", {"2": "inf"}], "b": ["-inf"]}
    alert = alerts.make_alert("x", "m", data={"loss": math.nan, "steps": [math.inf]})
    assert json.loads(json.dumps(alert, allow_nan=False))["data"] == {"loss": "nan", "steps": ["inf"]}


def test_runs_and_evals_are_picked_by_the_same_prefix_rule(tmp_path):
    ws = store.Workspace(tmp_path)
    a = ws.create_run("abc", {"experiment": "abc"})
    names = ["20260101-000000-score-cpu-aaaa", "20260101-000000-score-cpu-aaaab"]
    for n in names:
        (a.path / store.EVALS_DIR / n).mkdir(parents=True)
    paths = a.evals()
    # an exact id wins over the longer id it is a prefix of, for evals as for runs
    assert evalstore._pick(paths, names[0], "here").name == names[0]
    assert store.matching(paths, names[0], lambda p: p.name) == [paths[0]]
    assert store.matching(paths, "aaaab", lambda p: p.name) == [paths[1]]  # else a substring
    with pytest.raises(evalstore.EvalNotFound, match="ambiguous"):
        evalstore._pick(paths, "2026", "here")


def test_runs_and_evals_take_their_ids_from_one_mkdir(tmp_path):
    made = {store.new_run_dir(tmp_path / "logs", "x").name for _ in range(50)}
    assert len(made) == 50 and all(n.endswith(("-x-" + n[-4:])) for n in made)


def test_history_compares_through_the_one_compare_and_keeps_no_correctness_of_its_own(tmp_path, monkeypatch):
    from labtui.tui import history_data, scan
    from test_tui_data import T0, make_eval, make_run, paired_sets

    ws = store.Workspace(tmp_path)
    a, b = paired_sets()
    runs = []
    for i, correct in enumerate((a, b)):
        run = make_run(ws, f"20260101-00000{i}-demo-{i:04x}", "demo", created=T0 + i)
        make_eval(run, f"20260101-01000{i}-cpu-score-{i:04x}", correct)
        runs.append(run)
    calls = []
    real = evalstore.compare_columns
    monkeypatch.setattr(evalstore, "compare_columns", lambda *a, **k: calls.append(1) or real(*a, **k))
    built = history_data.HistoryData(ws).build(scan.Scanner(ws).scan(), runs[0].id, T0)
    row = next(r for r in built if r.run_id == runs[1].id)
    ref = evalstore.compare_sources(runs[0], runs[1])
    assert calls and (row.diff, row.p, row.verdict) == (ref["diff"], ref["mcnemar_p"], ref["verdict"])
    kept = history_data._cache_for(ws).store.path.read_text()
    assert "correct" not in kept  # the evals' columns files are the one copy of their answers


def test_records_and_columns_are_compared_by_the_same_code(tmp_path):
    recs_a = {f"q{i}": {"gold": "yes", "pred": "yes" if i % 3 else "no"} for i in range(30)}
    recs_b = {f"q{i}": {"gold": "yes", "pred": "yes" if i % 5 else "maybe"} for i in reversed(range(30))}
    got = evalstore.compare_sources(recs_a, recs_b)
    want = evalstore.compare_columns(evalstore.Columns.from_records(recs_a), evalstore.Columns.from_records(recs_b))
    assert got == want and got["errors_b"]["hedged_maybe"] == 6


def _write_metrics(path, records):
    w = store.IndexedJsonlWriter(path)
    for r in records:
        w.write(r)
    w.close()


def test_one_metrics_index_reader_from_any_line_and_one_rewinder_for_records_and_entries(tmp_path):
    recs = [{"kind": "start", "step": 0, "t": 0.0}]
    recs += [{"kind": "train", "step": s, "loss": 1.0 / s, "t": float(s)} for s in range(1, 11)]
    recs += [{"kind": "start", "resumed": True, "step": 6, "t": 20.0}]  # steps 7.. are done again
    recs += [{"kind": "train", "step": s, "loss": 2.0 / s, "t": 20.0 + s} for s in range(7, 13)]
    path = tmp_path / store.METRICS_FILE
    _write_metrics(path, recs)
    entries, end = store.read_metrics_index(path)
    assert len(entries) == len(recs) and end == path.stat().st_size
    middle = int(entries[5]["offset"])
    part, end2 = store.read_metrics_index(path, offset=middle, limit=4)
    assert [int(e["offset"]) for e in part] == [int(e["offset"]) for e in entries[5:9]]
    assert end2 == int(entries[8]["offset"] + entries[8]["length"])
    assert store.read_metrics_index(path, offset=middle + 1) is None  # not the start of a line
    with open(path, "rb") as f:
        assert store.indexed_record(f, entries[3]) == recs[3]
    kept, rewind = store.Rewinder().feed(recs)
    mask, rewind2 = store.Rewinder().feed_entries(entries)
    assert rewind == rewind2 == 6
    assert [r for r, k in zip(recs, mask) if k] == kept


def test_the_tui_calls_the_engine_directly_without_may_not_exist_scaffolding(tmp_path, monkeypatch):
    import sys

    from labtui.tui import engine_api, evals

    assert not any(hasattr(engine_api, x) for x in ("Unavailable", "available", "_module", "_need"))
    assert not hasattr(evals, "_evalstore")
    # a broken engine module is an error the user sees, not "this installation does not have it yet"
    import labtui.engine.runtime

    monkeypatch.setitem(sys.modules, "labtui.engine.runtime.lifecycle", None)
    monkeypatch.delattr(labtui.engine.runtime, "lifecycle", raising=False)
    ws = store.Workspace(tmp_path)
    run = ws.create_run("x", {"experiment": "x"})
    with pytest.raises(ImportError):
        engine_api.stop(run)


def test_one_stop_for_runs_and_evals(tmp_path):
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time

    from conftest import labtui
    from labtui.engine.runtime import lifecycle
    from labtui.engine.runtime.supervisor import STOP_FILE

    ws = store.Workspace(tmp_path)
    run = ws.create_run("r", {"experiment": "r", "kind": "train", "workspace": str(tmp_path)})
    ev = store.Run(store.new_run_dir(run.file(store.EVALS_DIR), "score-cpu"))
    store.atomic_write_json(ev.file(store.RUN_FILE), {"id": ev.id, "kind": "eval", "run": run.id})
    (ev.path / evalstore.EVAL_FILE).write_text("{}")
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        start = store.process_start_time(worker.pid)
        ev.update_state(status="running", pid=worker.pid, pid_start=start, pgid=worker.pid, supervisor_pid=worker.pid,
                        supervisor_start=start, host=socket.gethostname(), heartbeat=time.time())
        out = labtui(ws, "evals", f"{run.id}/{ev.id}", "--stop")
        assert out.returncode == 0 and "stopping after the current batch" in out.stderr, out.stderr
        assert worker.wait(timeout=10) == -signal.SIGTERM
        assert store.read_json(ev.file(STOP_FILE))["signal"] == "SIGTERM"  # what the supervisor reads
        with pytest.raises(lifecycle.LifecycleError, match="not running"):
            lifecycle.stop(ev)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)


def test_runs_and_evals_draw_one_progress_line_head():
    from labtui.engine.cli import eval_cli, runs

    run_line = runs.progress_line("r\x1b[2J1", {"status": "running"}, {"step": 5, "max_steps": 10})
    eval_line = eval_cli.progress_line("e\x1b[2J1", {"status": "running"}, {"done": 5, "total": 10})
    assert run_line.replace("r", "e", 1) == eval_line  # the same head: id, status, bar, done/total
    assert "\x1b" not in eval_line and "[############------------] 5/10" in eval_line


def test_the_run_list_row_and_runs_json_come_from_one_reader(tmp_path):
    from labtui.tui import scan

    ws = store.Workspace(tmp_path)
    run = ws.create_run("x", {"experiment": "x", "parent_experiment": "base", "changed": {"lr": [1, 2]}})
    store.atomic_write_text(run.file(store.PROGRESS_FILE), '{"step": 3, "train_loss": NaN, "tokens_per_s": 12.5}')
    run.file(store.NOTES_FILE).write_text("first line\nsecond\n")
    row, summary, listed = run.row(), run.summary(), scan.row_for(run)
    assert summary == {k: store.jsonable(row[k]) for k in store.SUMMARY_FIELDS}
    assert summary["train_loss"] == "nan" and math.isnan(listed.train_loss) and summary["tokens_per_s"] == 12.5
    assert (listed.step, listed.notes, listed.parent_experiment, listed.changed) == (3, "first line", "base", {"lr": [1, 2]})


def test_one_failure_epilogue_for_training_and_evaluation(capsys):
    from labtui.engine.training import evaluate, worker

    recorded = []
    try:
        raise ValueError("bad value")
    except ValueError as e:
        assert worker.failed(e, lambda *a: recorded.append(a)) == 1
    assert recorded[0][:2] == ("failed", "ValueError: bad value") and "test_trust_fold.py" in recorded[0][2]

    def broken(*a):
        raise OSError("disk full")

    assert worker.failed(KeyboardInterrupt(), broken) == 1  # finish failing does not hide the line
    out = capsys.readouterr().out
    assert "[labtui] failed: ValueError: bad value" in out and "[labtui] stopped: interrupted" in out
    assert "failed(e" in open(evaluate.__file__).read()  # the eval worker ends through it too


@pytest.mark.e2e
def test_one_pad_token_policy_for_training_and_evaluation(demo_assets):
    from labtui.engine.training import demo, worker
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = demo_assets / demo.MODEL_DIR
    tok, model = AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path)
    tok.pad_token = tok.eos_token
    worker.set_pad_token(tok, model)  # training: padded labels are -100, a pad equal to EOS is kept
    assert tok.pad_token_id == tok.eos_token_id
    worker.set_pad_token(tok, model, not_eos=True)  # generation: padding must not read as the end
    assert tok.pad_token_id != tok.eos_token_id
    assert model.get_input_embeddings().weight.shape[0] >= len(tok)


def test_a_scored_records_loglik_goes_through_the_one_converter():
    from labtui.engine.training import evaluate

    rec = evaluate.score_record({"id": "q1", "answer": "yes"}, [-1.0, -math.inf, math.nan], ["yes", "no", "maybe"],
                                {"answer_prefix": " "})
    assert rec["loglik"] == {"yes": -1.0, "no": "-inf", "maybe": "nan"} and rec["pred"] == "yes"
    json.dumps(rec, allow_nan=False)
