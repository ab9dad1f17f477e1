"""Issue 11, "bad input is refused before anything starts", the Launch screen's checks as you type,
override descriptions, `labtui demo` twice, one name for a hand-started run, and the loss target.

Bad input: exit 2, one `labtui: error: ...` line naming the key or file, and no run folder.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, SHARED_PUBMEDQA, fast_overrides, labtui, wait_for
from labtui.engine.cli import main as cli
from labtui.engine.config import experiment as config
from labtui.engine.config.experiment import CHOICES, check_field, load_experiment
from labtui.engine.rundir import store
from labtui.engine.runtime import launcher

BASE = """
model: {model_name_or_path: demo/tiny-llama}
trainer: trainer
dataset: {format: pubmedqa, path: demo/ori_pqal.json, test_split: demo/test_ground_truth.json}
training: {max_steps: 2}
"""


@pytest.fixture
def no_start(monkeypatch):
    """Nothing in these tests may start a worker: a run that gets that far is a failure."""

    def refuse(*a, **k):
        raise AssertionError("a run was started: the bad input was not refused")

    monkeypatch.setattr(launcher, "start", refuse)


def run_cli(ws: store.Workspace, capsys, *args: str) -> tuple[int, str]:
    rc = cli.main(["--workspace", str(ws.root), *args])
    return rc, capsys.readouterr().err


def assert_refused(ws: store.Workspace, rc: int, err: str, *needles: str) -> None:
    assert rc == 2, err
    assert err.startswith("labtui: error: ") and err.count("\n") == 1, err  # one line
    for needle in needles:
        assert needle in err, err
    assert not ws.logs.exists() or not any(ws.logs.iterdir())  # no run folder


# --- 1. bad input, refused before anything starts ----------------------------------------------

BAD_FILES = [
    ("eval.n negative", "eval: {n: -3}\n", "eval.n must be an integer, 0 (all) or more, got -3"),
    ("max_length 0", "task: {max_length: 0}\n", "task.max_length must be a positive integer, got 0"),
    ("eval_size negative", "dataset: {format: pubmedqa, path: demo/ori_pqal.json, eval_size: -1}\n",
     "dataset.eval_size must be an integer, 0 or more, got -1"),
    ("unclosed template", 'task: {template: "{context"}\n', "task.template is not a valid format string"),
    ("template field that does not exist", 'task: {template: "{context} {abstract}"}\n', "task.template uses {abstract}"),
    ("template attribute", 'task: {template: "{context.upper}"}\n', "task.template uses {context.upper}"),
    ("learning rate nan", "training: {max_steps: 2, learning_rate: .nan}\n", "training.learning_rate must be a finite number"),
    ("eval.split typo", "eval: {split: tset}\n", "eval.split must be one of test, eval, train, got 'tset' (did you mean 'test'?)"),
    ("eval.dtype shorthand", "eval: {dtype: bf16}\n", "eval.dtype must be one of auto, float32, bfloat16, float16, got 'bf16'"),
    ("model.dtype shorthand", "model: {model_name_or_path: demo/tiny-llama, dtype: fp16}\n", "model.dtype must be one of"),
    ("loss_on typo", "task: {loss_on: prompt}\n", "task.loss_on must be one of all, answer, got 'prompt'"),
    ("eval.mode", "eval: {mode: greedy}\n", "eval.mode must be one of score, generate"),
    ("completion_only_loss", "trainer: sft\ntraining: {max_steps: 2, completion_only_loss: false}\n",
     "training.completion_only_loss is set from task.loss_on"),
]


@pytest.mark.parametrize("name,extra,message", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_value_in_a_file_is_refused(workspace, capsys, no_start, name, extra, message):
    f = workspace.root / "bad.yaml"
    f.write_text(BASE + extra)
    rc, err = run_cli(workspace, capsys, "run", str(f))
    assert_refused(workspace, rc, err, message, str(f))


BAD_SETS = [
    ("empty value", "training.max_steps=", "--set training.max_steps=: training.max_steps has no value"),
    ("not a regular file", "dataset.path=/dev/zero", "dataset.path: /dev/zero is not a regular file"),
    ("a folder as data", "dataset.path=demo", "is not a regular file"),
    ("test split a device", "dataset.test_split=/dev/zero", "dataset.test_split: /dev/zero is not a regular file"),
    ("abc as a learning rate", "training.learning_rate=abc", "training.learning_rate must be a number, got 'abc'"),
    ("deep value", "lora.target_modules=" + "[" * 40 + "]" * 40, "nested more than"),
]


@pytest.mark.parametrize("name,item,message", BAD_SETS, ids=[b[0] for b in BAD_SETS])
def test_bad_set_is_refused(workspace, capsys, no_start, name, item, message):
    rc, err = run_cli(workspace, capsys, "run", "experiments/demo-baseline.yaml", "--set", item)
    assert_refused(workspace, rc, err, message)


def test_binary_yaml_is_refused(workspace, capsys, no_start):
    f = workspace.root / "binary.yaml"
    f.write_bytes(b"model: \xff\xfe\x00\x81 binary \x00\x9c" * 20)
    rc, err = run_cli(workspace, capsys, "run", str(f))
    assert_refused(workspace, rc, err, f"{f}: not a text file")


def test_deeply_nested_yaml_is_refused(workspace, capsys, no_start):
    f = workspace.root / "deep.yaml"
    f.write_text("model: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n")
    rc, err = run_cli(workspace, capsys, "run", str(f))
    assert_refused(workspace, rc, err, f"{f}: nested too deeply")
    g = workspace.root / "deep2.yaml"
    g.write_text("engine:\n  alerts: " + "[" * 100 + "]" * 100 + "\n")
    rc, err = run_cli(workspace, capsys, "run", str(g))
    assert_refused(workspace, rc, err, f"{g}: nested more than {config.MAX_DEPTH} levels")


def test_an_experiment_file_that_is_a_device_is_refused(workspace, capsys, no_start):
    rc, err = run_cli(workspace, capsys, "run", "/dev/zero")
    assert_refused(workspace, rc, err, "/dev/zero: not a regular file")


def test_yes_no_are_strings_not_booleans():
    """The README's `choices: [yes, no, maybe]` is three answers (YAML 1.2), not [True, False, 'maybe']."""
    assert config.parse_value("[yes, no, maybe]") == ["yes", "no", "maybe"]
    assert config.parse_value("true") is True and config.parse_value("false") is False
    assert config.parse_value("on") == "on"


# --- the schema, light, for the CLI and the TUI ------------------------------------------------


def test_check_field_answers_for_one_key():
    assert check_field("training.learning_rate", "abc") == "training.learning_rate must be a number, got 'abc'"
    assert "finite" in check_field("training.learning_rate", math.inf)
    assert check_field("training.learning_rate", 1e-3) is None
    assert check_field("lora.r", 0) == "lora.r must be a positive integer, got 0"
    assert check_field("lora.r", True) == "lora.r must be an integer, got True"
    assert check_field("eval.n", 0) is None  # 0 = all, as `labtui eval --n 0`
    assert check_field("eval.split", "tset").startswith("eval.split must be one of test, eval, train")
    assert check_field("eval.dtype", None) is None  # null = the default
    assert check_field("trainer", None) == "trainer must be set, got null"
    assert check_field("training.some_library_key", object()) is None  # the libraries check those
    assert check_field("task.choices", ["yes", "yes"]).startswith("task.choices lists an answer twice")
    assert "write 'yes', not 'Yes'" in check_field("task.choices", ["Yes", "no"])  # never matched otherwise
    assert check_field("lora.r", list(range(1000))).endswith("...")  # one short line, whatever was given


def test_choices_come_from_one_place():
    assert CHOICES["eval.mode"] == ("score", "generate")
    assert CHOICES["eval.device"] == ("auto", "cpu", "cuda")
    assert CHOICES["eval.split"] == ("test", "eval", "train")
    assert CHOICES["eval.dtype"] == ("auto", "float32", "bfloat16", "float16")
    assert CHOICES["task.loss_on"] == ("all", "answer")
    assert CHOICES["trainer"] == config.TRAINERS
    assert CHOICES["launch.launcher"] == config.LAUNCHERS
    for key, options in CHOICES.items():
        assert check_field(key, options[0]) is None
        assert check_field(key, "nonsense-value") is not None


def test_schema_is_light():
    code = ("import sys; from labtui.engine.config import experiment as config; config.check_field('eval.n', -1); "
            "heavy = [m for m in ('torch', 'transformers', 'peft', 'trl', 'datasets') if m in sys.modules]; "
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


# --- 2. data the task cannot use is refused before training --------------------------------------


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def qa_rows(n: int, answers=("yes", "no", "maybe")) -> list[dict]:
    return [{"id": str(i), "question": f"q{i}?", "context": f"c{i}", "answer": answers[i % len(answers)]} for i in range(n)]


def test_labels_outside_choices_are_refused(workspace, capsys, no_start):
    data = write_jsonl(workspace.root / "qa.jsonl", qa_rows(60, answers=("yes", "no", "unsure")))
    rc, err = run_cli(workspace, capsys, "run", "experiments/demo-baseline.yaml",
                      "--set", "dataset.format=jsonl_qa", "--set", f"dataset.path={data}", "--set", "dataset.test_split=null")
    assert_refused(workspace, rc, err, "20 of 60 examples have a label outside task.choices", "'unsure'")


def test_demo_data_with_fewer_choices_is_refused(workspace, capsys, no_start):
    rc, err = run_cli(workspace, capsys, "run", "experiments/demo-baseline.yaml", "--set", "task.choices=[yes, no]")
    assert_refused(workspace, rc, err, "have a label outside task.choices ['yes', 'no']: 'maybe'")


def test_no_eval_or_no_test_examples_is_refused(workspace, capsys, no_start):
    few = write_jsonl(workspace.root / "few.jsonl", qa_rows(4))  # 20% of 4 is 0 test examples
    rc, err = run_cli(workspace, capsys, "run", "experiments/demo-baseline.yaml", "--set", "dataset.format=jsonl_qa",
                      "--set", f"dataset.path={few}", "--set", "dataset.test_split=null")
    assert_refused(workspace, rc, err, "leaves 0 test examples")
    ids = workspace.root / "ids.json"
    rows = qa_rows(6)
    ids.write_text(json.dumps([r["id"] for r in rows[:5]]))  # five test, one left: no eval, one train
    six = write_jsonl(workspace.root / "six.jsonl", rows)
    rc, err = run_cli(workspace, capsys, "run", "experiments/demo-baseline.yaml", "--set", "dataset.format=jsonl_qa",
                      "--set", f"dataset.path={six}", "--set", f"dataset.test_split={ids}")
    assert_refused(workspace, rc, err, "dataset.eval_size is 64 but the split leaves 0 eval examples")


@pytest.mark.skipif(not SHARED_PUBMEDQA.is_dir(), reason="../shared/data/pubmedqa is not beside this checkout")
def test_real_pubmedqa_labels_are_checked(workspace, capsys, no_start):
    from labtui.engine.training.data import check_splits

    sets = ["dataset.path=" + str(SHARED_PUBMEDQA / "ori_pqal.json"),
            "dataset.test_split=" + str(SHARED_PUBMEDQA / "test_ground_truth.json")]
    exp = load_experiment(ROOT / "experiments" / "gemma3-4b-baseline.yaml", sets)
    splits = check_splits(exp.config, workspace.root)
    assert (len(splits.train), len(splits.eval), len(splits.test)) == (450, 50, 500)
    rc, err = run_cli(workspace, capsys, "run", "experiments/demo-baseline.yaml", *(x for s in sets for x in ("--set", s)),
                      "--set", "task.choices=[yes, no]")
    assert_refused(workspace, rc, err, "110 of 1000 examples have a label outside task.choices", "'maybe'")


# --- 4. an override run says so in its description ----------------------------------------------


def test_override_run_description_names_the_overrides(workspace, capsys):
    exp = load_experiment(workspace.experiments / "demo-baseline.yaml", ["training.learning_rate=1e-3", "lora.r = 8"])
    parent = load_experiment(workspace.experiments / "demo-baseline.yaml").config["description"]
    assert exp.config["description"] == f"{parent} · with training.learning_rate=1e-3, lora.r=8"
    run = launcher.create_training_run(workspace, exp, ["labtui", "run"])
    assert run.info()["description"].endswith("· with training.learning_rate=1e-3, lora.r=8")
    rc = cli.main(["--workspace", str(workspace.root), "show", run.id])
    out = capsys.readouterr().out
    assert rc == 0 and "with training.learning_rate=1e-3, lora.r=8" in out
    plain = load_experiment(workspace.experiments / "demo-baseline.yaml")
    assert "· with" not in plain.config["description"]
    mine = load_experiment(workspace.experiments / "demo-baseline.yaml", ["description=my own words", "lora.r=8"])
    assert mine.config["description"] == "my own words"


# --- 5. `labtui demo` twice, one name for a hand-started run ------------------------------------


def test_demo_twice_reuses_the_demo_runs(workspace, capsys, monkeypatch):
    from labtui.engine.cli import runs as runs_mod

    started: list[str] = []
    monkeypatch.setattr(launcher, "start", lambda run, **k: started.append(run.id))
    monkeypatch.setattr(runs_mod, "follow_many", lambda rs: 0)
    exps = {n: load_experiment(workspace.experiments / f"{n}.yaml") for n in ("demo-baseline", "demo-tuned", "demo-sft")}
    old = {n: launcher.create_training_run(workspace, e, ["labtui", "demo"]) for n, e in exps.items()}
    old["demo-baseline"].update_state(status="completed")
    old["demo-tuned"].update_state(status="completed")
    old["demo-sft"].update_state(status="failed", error="boom")  # not reused: queued again
    rc = cli.main(["--workspace", str(workspace.root), "demo", "--no-tui"])
    out, err = capsys.readouterr()
    assert rc == 0
    ids = out.split()
    assert ids[:2] == [old["demo-baseline"].id, old["demo-tuned"].id]
    assert ids[2] != old["demo-sft"].id and "demo-sft" in ids[2]
    assert "already here (completed)" in err and "labtui demo --again" in err
    assert len(workspace.runs()) == 4
    rc = cli.main(["--workspace", str(workspace.root), "demo", "--no-tui"])
    assert rc == 0 and len(workspace.runs()) == 4  # a third time: nothing new
    capsys.readouterr()
    rc = cli.main(["--workspace", str(workspace.root), "demo", "--no-tui", "--again"])
    assert rc == 0 and len(workspace.runs()) == 7


def test_demo_again_with_the_dashboard_says_so_there(workspace, monkeypatch):
    """In a terminal `labtui demo` opens the dashboard, which hides what it printed: it says so there."""
    import asyncio

    from labtui.tui.app import LabApp

    monkeypatch.setattr(launcher, "start", lambda run, **k: None)
    for name in ("demo-baseline", "demo-tuned", "demo-sft"):
        run = launcher.create_training_run(workspace, load_experiment(workspace.experiments / f"{name}.yaml"))
        run.update_state(status="completed")
    opened: list[LabApp] = []
    monkeypatch.setattr(LabApp, "run", lambda self, *a, **k: opened.append(self))
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True, raising=False)
    from labtui.main import main as labtui_main

    assert labtui_main(["--workspace", str(workspace.root), "demo"]) == 0
    assert len(workspace.runs()) == 3 and len(opened) == 1

    async def shown() -> list[str]:
        async with opened[0].run_test(size=(80, 24)) as pilot:
            await pilot.pause(0.2)
            return [n.message for n in opened[0]._notifications]

    (note,) = asyncio.run(shown())
    assert "3 of the demo runs are already here" in note and "labtui demo --again" in note


def test_hand_started_callback_run_has_one_name(tmp_path, monkeypatch):
    from labtui.engine.training.callback import LabtuiCallback

    monkeypatch.setenv("LABTUI_WORKSPACE", str(tmp_path))
    monkeypatch.setattr(sys, "argv", [str(tmp_path / "byo_train.py"), "--lr", "5e-5"])
    run = store.Run(LabtuiCallback._create_run())
    assert run.info()["experiment"] == "byo-train"
    assert "-byo-train-" in run.id
    assert run.summary()["experiment"] == "byo-train"


# --- 6. the loss target: task.loss_on ----------------------------------------------------------


def test_loss_on_defaults_per_trainer_and_is_visible():
    base = load_experiment(ROOT / "experiments" / "demo-baseline.yaml")
    sft = load_experiment(ROOT / "experiments" / "demo-sft.yaml")
    assert base.config["task"]["loss_on"] == "all"  # the plain Trainer's causal-LM set-up
    assert sft.config["task"]["loss_on"] == "answer"  # TRL's completion_only_loss on prompt/completion data
    assert sft.changed == {"trainer": ["trainer", "sft"], "task.loss_on": ["all", "answer"]}
    mine = load_experiment(ROOT / "experiments" / "demo-sft.yaml", ["task.loss_on=all"])
    assert mine.config["task"]["loss_on"] == "all"


def test_plain_trainer_labels_follow_loss_on(demo_assets):
    from labtui.engine.training.worker import plain_trainer_features
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(demo_assets / "tiny-llama")
    prompt, answer = "Context: aspirin helped.\nQuestion: Does aspirin help?\nAnswer:", " yes"
    n_answer = len(tok(answer, add_special_tokens=False)["input_ids"]) + 1  # + EOS
    every = plain_trainer_features(tok, prompt, answer, 192, "all")
    only = plain_trainer_features(tok, prompt, answer, 192, "answer")
    assert every["input_ids"] == only["input_ids"]
    n_prompt = len(every["input_ids"]) - n_answer
    assert n_prompt > 5
    assert every["labels"] == every["input_ids"]  # prompt and answer
    assert only["labels"][:n_prompt] == [-100] * n_prompt  # the answer only
    assert only["labels"][n_prompt:] == only["input_ids"][n_prompt:]
    assert only["labels"][-1] == tok.eos_token_id
    cut = plain_trainer_features(tok, prompt, answer, n_answer + 3, "all")  # the prompt loses its start
    assert cut["input_ids"][-n_answer:] == every["input_ids"][-n_answer:] and len(cut["input_ids"]) == n_answer + 3


@pytest.mark.e2e
def test_tuned_and_sft_log_different_losses(workspace):
    """Same data, same hyperparameters; only the trainer (and with it the loss target) changes."""
    proc = labtui(workspace, "run", "experiments/demo-tuned.yaml", "experiments/demo-sft.yaml",
                  *fast_overrides(10), check=True)
    tuned, sft = (workspace.run(i) for i in proc.stdout.split())
    losses = {}
    for run in (tuned, sft):
        assert wait_for(run)["status"] == "completed", store.tail_lines(run.file(store.LOG_FILE), 30)
        losses[run.id] = [round(r["loss"], 4) for r in store.read_jsonl(run.file(store.METRICS_FILE)) if r["kind"] == "train"]
        assert len(losses[run.id]) == 5
    a, b = losses[tuned.id], losses[sft.id]
    assert all(x != y for x, y in zip(a, b)), (a, b)  # before: identical at every logged step
    assert tuned.config()["task"]["loss_on"] == "all" and sft.config()["task"]["loss_on"] == "answer"


# --- 3. the Launch screen checks as you type, and reads at 80 columns ----------------------------



def screen_lines(widget) -> list[str]:
    from textual.geometry import Region

    w, h = widget.size
    return [strip.text.rstrip() for strip in widget.render_lines(Region(0, 0, w, h))]


@pytest.mark.anyio
async def test_launch_checks_values_as_you_type_at_80_columns(tmp_path):
    import shutil

    from labtui.tui.app import LabApp
    from test_tui_app import until

    shutil.copytree(ROOT / "experiments", tmp_path / "experiments")
    ws = store.Workspace(tmp_path)
    app = LabApp(workspace=ws, poll_interval=0.05)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("n")
        screen = app.screen
        await until(pilot, lambda: screen.experiment is not None, what="the experiment files")  # read in a worker
        while screen.experiment.name != "demo-tuned.yaml":
            await pilot.press("down")
        lr = screen.query_one("#f-training-learning_rate")
        lr.focus()
        await pilot.press("a", "b", "c")
        # at once, in this process: no subprocess, no 20 s wait
        error = screen.query_one("#field-error")
        assert error.display and "training.learning_rate must be a number, got 'abc'" in " ".join(screen_lines(error))
        assert "✗ learning" in " ".join(screen_lines(screen.query_one("#l-training-learning_rate")))
        assert not screen.preview_ok and screen.check_action("start", (False,)) is None
        assert screen.last_argv is None  # nothing was run
        await pilot.press("backspace", "backspace", "backspace", *"1e-3")
        await until(pilot, lambda: screen.preview_ok, what="the preview")  # resolved in a worker
        assert screen.preview_ok and not error.display
        assert "learning rate" == " ".join(screen_lines(screen.query_one("#l-training-learning_rate"))).strip()
        # each change on its own line, old and new value both on screen at 80 columns
        shown = screen_lines(screen.query_one("#resolved"))
        assert "changes vs demo-baseline" in shown[0]
        assert any("training.learning_rate: 0.0003 → 0.001 (--set)" in line for line in shown), shown
        assert any("lora.r: 4 → 16" in line for line in shown), shown
        assert all(len(line) <= screen.query_one("#resolved").size.width for line in shown)
        info = " ".join(screen_lines(screen.query_one("#exp-info")))
        assert "with training.learning_rate=1e-3" in info  # the run's description names the override
        screen.query_one("#more").value = "lora.lora_alpha=-2"
        await pilot.pause()
        assert "lora.lora_alpha must be a positive number, got -2" in " ".join(screen_lines(error))
        assert not screen.preview_ok
