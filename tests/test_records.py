"""The typed records of the run directory (engine/rundir/records.py): every key a writer puts in run.json,
state.json, progress.json, env.json, eval.json and summary.json is declared there with its type; a reader
gets a field of the wrong type as missing, a null as null, and a key it does not know as it was written."""

from __future__ import annotations

import math
import re
import sys
import types
import typing

import pytest
import yaml
from conftest import ROOT, wait_for
from labtui.engine.analysis import evalstore
from labtui.engine.config.experiment import resolve
from labtui.engine.rundir import records, store
from labtui.engine.rundir.records import EnvInfo, EvalSettings, EvalSummary, Progress, RunInfo, State

T0 = 1_790_000_000.0

# each file, its record and the reader a user's command goes through
FILES = {
    store.RUN_FILE: (RunInfo, lambda d: store.Run(d).info()),
    store.STATE_FILE: (State, lambda d: store.Run(d).raw_state()),
    store.PROGRESS_FILE: (Progress, lambda d: store.Run(d).progress()),
    store.ENV_FILE: (EnvInfo, lambda d: store.Run(d).env()),
    evalstore.EVAL_FILE: (EvalSettings, lambda d: records.eval_settings(store.read_json(d / evalstore.EVAL_FILE))),
    evalstore.SUMMARY_FILE: (EvalSummary, lambda d: records.eval_summary(store.read_json(d / evalstore.SUMMARY_FILE))),
}


def _keys(td) -> set[str]:
    return set(typing.get_type_hints(td))


def _undeclared(written: dict, td) -> set[str]:
    return set(written) - _keys(td)


def _wrong_value(annotation) -> object:
    """A value of another type than the field's declared one (worked out from the type, not the coercer)."""
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    args = [a for a in typing.get_args(annotation) if a is not type(None)] if union else [annotation]
    (tp,) = args
    base = typing.get_origin(tp) or tp
    if base is str:
        return 12
    if base in (int, float):
        return "12"
    if base is bool:
        return "yes"
    assert base in (list, dict) or typing.is_typeddict(tp), tp
    return "not a container"


# --- a wrong type is a missing field; null stays null; unknown keys pass through --------------------


@pytest.mark.parametrize("name", list(FILES))
def test_every_declared_field_of_the_wrong_type_reads_as_missing(tmp_path, name):
    td, read = FILES[name]
    hints = typing.get_type_hints(td, include_extras=True)
    wrong = {key: _wrong_value(tp) for key, tp in hints.items()}
    store.atomic_write_json(tmp_path / name, {**wrong, "launch_v2": {"ranks": 2}, "slurm_job_id": "4242"})
    got = read(tmp_path)
    assert got == {"launch_v2": {"ranks": 2}, "slurm_job_id": "4242"}  # every declared field gone, the rest kept


@pytest.mark.parametrize("name", list(FILES))
def test_null_stays_null_in_every_file(tmp_path, name):
    td, read = FILES[name]
    store.atomic_write_json(tmp_path / name, dict.fromkeys(_keys(td)))
    assert read(tmp_path) == dict.fromkeys(_keys(td))


def test_a_hand_edited_run_folder_reads_field_by_field(tmp_path):
    d = tmp_path
    store.atomic_write_json(d / store.RUN_FILE, {"id": "r1", "created": "yesterday", "chain": ["a.yaml", 3],
                                                 "changed": {"lr": [1, 2], "bad": "x"}, "kind": "train"})
    store.atomic_write_json(d / store.STATE_FILE, {"status": "failed", "pid": "12", "exit_code": 1.0,
                                                   "error": None, "ranks": [0, 1], "queued_resume": "no"})
    d.joinpath(store.PROGRESS_FILE).write_text(
        '{"step": 80.0, "train_loss": NaN, "eval_loss": Infinity, "epoch": NaN, "best_step": "7", '
        '"tokens_per_s": 1500.5, "accuracy_so_far": "high", '
        '"result": {"status": "failed", "error": "boom", "ended": "later", "rank": 3}}')
    store.atomic_write_json(d / store.ENV_FILE, {"cuda_available": "yes", "device_count": 2, "gpu_capability": [9, "0"]})
    run = store.Run(d)
    assert run.info() == {"id": "r1", "changed": {"lr": [1, 2]}, "kind": "train"}
    assert run.raw_state() == {"status": "failed", "exit_code": 1, "error": None, "ranks": [0, 1]}
    progress = run.progress()
    assert progress["step"] == 80 and type(progress["step"]) is int
    assert math.isnan(progress["train_loss"]) and progress["eval_loss"] == math.inf  # a NaN loss stays visible
    assert "epoch" not in progress and "best_step" not in progress and "accuracy_so_far" not in progress
    assert progress[store.TOKENS_PER_S] == 1500.5
    assert progress["result"] == {"status": "failed", "error": "boom", "rank": 3}  # cleaned as a State
    assert run.env() == {"device_count": 2}


def test_an_eval_row_from_wrong_typed_files(tmp_path):
    """`labtui evals` and the TUI's eval lists: a damaged eval folder gives a row with the good fields."""
    ev = tmp_path / "20261202-100000-score-cpu-0001"
    ev.mkdir()
    store.atomic_write_json(ev / store.RUN_FILE, {"id": ev.name, "kind": "eval", "run": "r1", "created": T0})
    store.atomic_write_json(ev / store.STATE_FILE, {"status": None, "created": T0})
    store.atomic_write_json(ev / evalstore.EVAL_FILE, {"mode": "score", store.CHECKPOINT_STEP: "120", "n": 300.0,
                                                       "purpose": None, "split": ["test"], "device": "cpu"})
    store.atomic_write_json(ev / evalstore.SUMMARY_FILE, {"accuracy": "0.9", "ci": [0.1, "x"], "n": 300,
                                                          "warnings": ["partial"], "degenerate": "no"})
    row = evalstore.eval_row(ev)
    assert row["status"] == "queued" and row["purpose"] == "eval"  # null reads as the default, not None
    assert row[store.CHECKPOINT_STEP] is None and row["split"] is None and row["n"] == 300
    assert row["accuracy"] is None and row["ci"] is None and row["degenerate"] is False
    assert row["warnings"] == ["partial"] and row["mode"] == "score" and row["device"] == "cpu"
    assert set(row) == _keys(records.EvalRow)


# --- the tables are the records' -------------------------------------------------------------------


def test_store_tables_are_derived_from_the_records():
    assert store.RUN_FIELDS == records.fields_of(RunInfo) and set(store.RUN_FIELDS) == _keys(RunInfo)
    assert store.STATE_FIELDS == records.fields_of(State)
    assert store.PROGRESS_FIELDS == records.fields_of(Progress)
    assert store.ENV_FIELDS == records.fields_of(EnvInfo)
    assert store.SUMMARY_FIELDS == tuple(records.Summary.__annotations__)
    assert store.TOKENS_PER_S in _keys(Progress) and store.TOKENS_PER_S in _keys(EvalSummary)
    assert store.CHECKPOINT_STEP in _keys(EvalSettings) and store.CHECKPOINT_STEP in _keys(EvalSummary)
    with pytest.raises(TypeError, match="Finite .* or Real"):  # a bare float does not say whether NaN is kept
        records.fields_of(typing.TypedDict("Bad", {"loss": float}, total=False))


def test_row_and_summary_have_the_declared_keys(tmp_path):
    ws = store.Workspace(tmp_path)
    run = ws.create_run("exp", {"experiment": "exp", "kind": "script", "command": ["labtui", "run"]})
    row = run.row()
    assert list(row) == list(records.Row.__annotations__)
    assert list(run.summary()) == list(store.SUMMARY_FIELDS)


# --- every key the writers write is declared --------------------------------------------------------


def test_launcher_and_supervisor_write_only_declared_keys(tmp_path):
    """A script run started as `labtui run -- CMD` starts it: run.json and state.json as the real launcher,
    supervisor and queue leave them."""
    from labtui.engine.runtime import launcher

    ws = store.Workspace(tmp_path)
    run = launcher.create_script_run(ws, [sys.executable, "-c", "print('hello')"], ["labtui", "run", "--"])
    launcher.start(run)
    assert wait_for(run, timeout=120)["status"] == "completed"
    assert _undeclared(store.read_json(run.file(store.RUN_FILE)), RunInfo) == set()
    state = store.read_json(run.file(store.STATE_FILE))
    assert {"pid", "supervisor_pid", "heartbeat", "exit_code", "started", "ended"} <= set(state)
    assert _undeclared(state, State) == set(), "declare them in engine/rundir/records.py State"
    assert _undeclared(run.state(), State) == set()


def test_training_callback_writes_only_declared_keys(tmp_path, monkeypatch):
    """LabtuiCallback in a script of its own (it makes its run): run.json, state.json, progress.json,
    driven with the Trainer's real state objects."""
    from labtui.engine.training.callback import LabtuiCallback
    from transformers import TrainerControl, TrainerState, TrainingArguments

    monkeypatch.setenv("LABTUI_WORKSPACE", str(tmp_path))
    monkeypatch.delenv("LABTUI_RUN_DIR", raising=False)
    cb = LabtuiCallback(handle_sigterm=False, sample_interval=0)
    run = cb.run
    args = TrainingArguments(output_dir=str(run.file(store.CHECKPOINTS_DIR)), report_to="none", use_cpu=True)
    state, control = TrainerState(max_steps=4), TrainerControl()
    cb.on_train_begin(args, state, control)
    state.global_step, state.epoch = 2, 0.5
    cb.on_log(args, state, control, logs={"loss": 1.25, "grad_norm": 0.5, "learning_rate": 1e-3, "epoch": 0.5})
    cb.on_log(args, state, control, logs={"eval_loss": 1.5, "eval_runtime": 0.1})
    cp = run.file(store.CHECKPOINTS_DIR) / "checkpoint-2"
    cp.mkdir(parents=True)
    (cp / store.CHECKPOINT_STATE_FILE).write_text("{}")
    (cp / "adapter_model.safetensors").write_bytes(b"x")
    cb.on_save(args, state, control)
    state.global_step = 4
    cb.on_log(args, state, control, logs={"train_loss": 1.1, "train_runtime": 1.0})
    cb.on_train_end(args, state, control)
    progress = store.read_json(run.file(store.PROGRESS_FILE))
    assert progress["best_step"] == 2 and progress["checkpoint"] == str(cp) and progress["result"]["status"] == "completed"
    assert _undeclared(progress, Progress) == set(), "declare them in engine/rundir/records.py Progress"
    assert _undeclared(progress["result"], State) == set()
    assert _undeclared(store.read_json(run.file(store.RUN_FILE)), RunInfo) == set()
    assert _undeclared(store.read_json(run.file(store.STATE_FILE)), State) == set()
    assert run.progress() == progress  # what it wrote reads back whole


def test_environment_records_are_declared():
    from labtui.engine.training.evaluate import eval_environment
    from labtui.engine.training.worker import environment

    env = {**environment(), "workspace_git": None, "command": ["labtui", "run"]}  # as the worker writes env.json
    assert _undeclared(env, EnvInfo) == set()
    assert _undeclared(eval_environment("cpu", "float32"), EnvInfo) == set()


def test_eval_writers_write_only_declared_keys(tmp_path):
    """An eval folder as `labtui eval RUN --base` makes it, then the evaluation worker's progress and summary."""
    from labtui.engine.runtime import evaluate_launch
    from labtui.engine.training.evaluate import Evaluation

    cfg = resolve({"model": {"model_name_or_path": "demo/tiny-llama"}, "dataset": {"path": "demo/ori_pqal.json"}})
    ws = store.Workspace(tmp_path)
    run = ws.create_run("exp", {"experiment": "exp", "kind": "train", "workspace": str(tmp_path)},
                        yaml.safe_dump(cfg, sort_keys=False))
    ev = evaluate_launch.create_eval(run, {**evaluate_launch.settings_from(cfg, n=3), "base": True},
                                     argv=["labtui", "eval", run.id, "--base"])
    assert _undeclared(store.read_json(ev.file(store.RUN_FILE)), RunInfo) == set()
    assert _undeclared(store.read_json(ev.file(evalstore.EVAL_FILE)), EvalSettings) == set()
    assert _undeclared(store.read_json(ev.file(store.STATE_FILE)), State) == set()

    evaluation = Evaluation(ev)
    preds = [{"id": f"e{i}", "gold": g, "pred": p, "raw": p, "correct": g == p, "temperature": None}
             for i, (g, p) in enumerate([("yes", "yes"), ("no", "yes"), ("maybe", "maybe")])]
    evaluation.tokens = 30
    evaluation.advance(3, evaluation._write(preds))
    evaluation.write_summary({"device_name": "cpu"}, wall=1.5, partial=False)
    evaluation.finish("completed")
    progress = store.read_json(ev.file(store.PROGRESS_FILE))
    summary = store.read_json(ev.file(evalstore.SUMMARY_FILE))
    assert progress["done"] == 3 and summary["n"] == 3 and summary["accuracy"] == pytest.approx(2 / 3)
    assert _undeclared(progress, Progress) == set()
    assert _undeclared(summary, EvalSummary) == set()
    assert records.eval_summary(summary) == summary  # every field the worker wrote has its declared type
    row = evalstore.eval_row(ev.path)
    assert row["accuracy"] == pytest.approx(2 / 3) and row["checkpoint"] == "base" and row["done"] == 3


def _table_row(text: str, file: str) -> str:
    (line,) = [ln for ln in text.splitlines() if ln.startswith(f"| `{file}` |")]
    return line.split("|")[3]


def test_the_documented_keys_are_declared():
    """README's run-directory table and docs/evaluation.md name the keys of each file: each one is declared."""
    readme = (ROOT / "README.md").read_text()
    assert "engine/rundir/records.py" in readme.split("## The run directory")[1].split("\n## ")[0]
    for file, td in ((store.RUN_FILE, RunInfo), (store.STATE_FILE, State)):
        keys = {k.split()[0] for k in _table_row(readme, file).split(",")}  # "heartbeat (every few seconds)"
        assert keys and keys <= _keys(td), keys - _keys(td)
    docs = (ROOT / "docs" / "evaluation.md").read_text()
    for file, td in ((store.RUN_FILE, RunInfo), (evalstore.EVAL_FILE, EvalSettings), (store.PROGRESS_FILE, Progress)):
        keys = set(re.findall(r"`([a-z_]+)`", _table_row(docs, file))) - {"eval", "parity"}  # `purpose` values
        assert keys and keys <= _keys(td), (file, keys - _keys(td))
    summary_doc = docs.split("### summary.json")[1].split("**Degenerate output**")[0]
    errors = {"correct", "hedged_maybe", "yes_no_swap", "missed_maybe", "empty", "unparseable", "other"}
    keys = set(re.findall(r"`([a-z_0-9]+)`", summary_doc)) - errors  # the keys inside `errors`
    assert keys and keys <= _keys(EvalSummary), keys - _keys(EvalSummary)
