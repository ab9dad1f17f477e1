"""Issue 11, "the numbers mean what they say": the headline eval of a run (History, compare,
export-predictions), what each eval row says it evaluated, why a difference is missing, which eval a
CLI command used, a compare of an eval with itself, GPU refused at once where there is none, doctor
on a fresh clone, run data with markup in the evaluation screens.

Evals are planted by hand (tests/test_tui_data.make_eval, the files engine.evaluate writes) where the
worker is not what is under test; NVML is faked at the `pynvml` boundary.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from conftest import ROOT, labtui
from labtui.engine.analysis import evalstore
from labtui.engine.rundir import store
from test_tui_app import app_for, fake_pynvml, until
from test_tui_data import T0, make_eval, make_run

FINAL, EXTRA, BASE_EVAL = "20261122-030000-score-cpu-f120", "20261122-040000-score-cpu-e080", "20261122-020000-score-cpu-b000"


def plant(run: store.Run, eval_id: str, correct: list[bool], *, step: int | str, created: float,
          split: str = "test", **kw) -> Path:
    """An eval of checkpoint `step` ("base": the base model) on the first len(correct) examples."""
    path = make_eval(run, eval_id, correct, created=created, **kw)
    settings = store.read_json(path / evalstore.EVAL_FILE, {})
    settings.update(split=split, checkpoint="base" if step == "base" else str(run.path / f"checkpoints/checkpoint-{step}"),
                    checkpoint_step=0 if step == "base" else step)
    store.atomic_write_json(path / evalstore.EVAL_FILE, settings)
    return path


def night(ws: store.Workspace, experiment: str = "demo-tuned", notes: str = "",
          tuned_id: str = "20261122-013000-demo-tuned-b002") -> tuple[store.Run, store.Run]:
    """The issue's night: a baseline (base model, N 300, 62.3%) and a tuned run of 120 steps whose final
    eval (checkpoint 120, N 300) scores 76.7% (+14.3 points, p < 0.001); then one more eval of
    checkpoint 80 on N 100 (44%), the newest of all."""
    ws.logs.mkdir(parents=True, exist_ok=True)
    base = make_run(ws, "20261122-010000-demo-baseline-a001", "demo-baseline", created=T0, steps=120, max_steps=120)
    tuned = make_run(ws, tuned_id, experiment, created=T0 + 1800, steps=120, max_steps=120,
                     notes=notes)
    plant(base, BASE_EVAL, [True] * 187 + [False] * 113, step="base", created=T0 + 3600)
    plant(tuned, FINAL, [True] * 230 + [False] * 70, step=120, created=T0 + 7200)
    plant(tuned, EXTRA, [True] * 44 + [False] * 56, step=80, created=T0 + 9000)
    return base, tuned


@pytest.fixture
def ws(tmp_path) -> store.Workspace:
    return store.Workspace(tmp_path / "ws")


# --- 1. the headline eval ---------------------------------------------------------------------------


def test_headline_is_the_final_checkpoints_eval_not_the_newest(ws):
    base, tuned = night(ws)
    head = evalstore.headline_eval(tuned)
    assert head["id"] == FINAL and head["accuracy"] == pytest.approx(230 / 300)
    assert "final checkpoint" in head["why"] and head["rule"] == evalstore.HEADLINE_RULE
    head = evalstore.headline_eval(tuned, baseline=base)
    assert head["id"] == FINAL and head["not_comparable"] is None
    assert head["why"] == "final checkpoint, with the baseline's N and split"
    assert evalstore.headline_eval(base)["why"] == "base model"
    # a run (or run folder) as a source is its headline eval, everywhere
    assert evalstore.resolve_source(ws, tuned.id) == tuned.file("evals") / FINAL
    assert len(evalstore.load_predictions(tuned)) == 300


def test_headline_with_a_baseline_prefers_the_baselines_n_and_split(ws):
    base, tuned = night(ws)
    plant(base, "20261122-050000-score-cpu-b100", [True] * 60 + [False] * 40, step="base", created=T0 + 9500)
    other = make_run(ws, "20261122-014000-demo-sft-c003", "demo-sft", created=T0 + 2000, steps=120, max_steps=120)
    plant(other, "20261122-031000-score-cpu-c300", [True] * 200 + [False] * 100, step=120, created=T0 + 7300,
          split="eval")
    plant(other, "20261122-032000-score-cpu-c080", [True] * 180 + [False] * 120, step=80, created=T0 + 7400)
    head = evalstore.headline_eval(other, baseline={"n": 300, "split": "test"})
    assert head["id"].endswith("c080") and "baseline's N and split" in head["why"]
    head = evalstore.headline_eval(other)  # no baseline: the final checkpoint, whatever its split
    assert head["id"].endswith("c300") and head["why"] == "final checkpoint"
    head = evalstore.headline_eval(other, baseline={"n": 50, "split": "test"})
    assert head["id"].endswith("c300") and head["not_comparable"] == "split eval vs test, N 300 vs 50"
    assert "no eval has the baseline's N 50" in head["why"]


def test_history_rows_use_the_headline_and_say_why_a_difference_is_missing(ws):
    from labtui.tui.history_data import HistoryData
    from labtui.tui.scan import row_for

    base, tuned = night(ws)
    rows = HistoryData(ws).build([row_for(base), row_for(tuned)], base.id, T0 + 10_000)
    main = next(r for r in rows if r.run_id == tuned.id and not r.sub)
    assert main.eval_id == FINAL and main.accuracy == pytest.approx(230 / 300)
    assert main.diff == pytest.approx(43 / 300) and main.p < 0.001
    assert main.evaluated == "checkpoint 120, N 300, score, cpu" and "final checkpoint" in main.why
    sub = next(r for r in rows if r.run_id == tuned.id and r.sub)
    assert sub.eval_id == EXTRA and sub.evaluated == "checkpoint 80, N 100, score, cpu"
    assert sub.diff is None and sub.not_comparable == "N 100 vs 300"
    assert "not comparable" in sub.compare_error and "N 100 vs 300" in sub.compare_error
    base_row = next(r for r in rows if r.run_id == base.id)
    assert base_row.eval_id == BASE_EVAL and base_row.evaluated == "base model, N 300, score, cpu"


# --- 3. which eval a command used; an eval compared with itself ---------------------------------------


def test_compare_and_export_of_runs_say_which_eval_they_used(ws):
    base, tuned = night(ws)
    proc = labtui(ws, "compare", base.id, tuned.id)
    assert proc.returncode == 0, proc.stderr
    assert "+14.3 points" in proc.stdout and "p < 0.001" in proc.stdout
    assert f"A: using eval {BASE_EVAL} (base model, N 300, score, cpu): base model" in proc.stderr
    assert (f"B: using eval {FINAL} (checkpoint 120, N 300, score, cpu): final checkpoint, with A's N and split"
            in proc.stderr)
    proc = labtui(ws, "export-predictions", tuned.id, "--format", "jsonl")
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 300
    assert proc.stderr.splitlines()[0] == f"using eval {FINAL} (checkpoint 120, N 300, score, cpu): final checkpoint"
    proc = labtui(ws, "compare", f"{tuned.id}/{EXTRA}", tuned.id, "--json")  # B paired with the N-100 eval? none
    assert proc.returncode == 2 and "N 100" in proc.stderr and "same --n" in proc.stderr


def test_compare_of_an_eval_with_itself_warns(ws):
    base, tuned = night(ws)
    proc = labtui(ws, "compare", tuned.id, f"{tuned.id}/{FINAL}")
    assert proc.returncode == 0, proc.stderr
    assert "warning: A and B are the same eval" in proc.stderr and "b = 0" in proc.stdout


# --- 2, 3, 6. the TUI: History's rows, Compare's header, markup in run data -------------------------------




@pytest.mark.anyio
async def test_history_and_compare_show_what_was_evaluated_and_survive_markup(ws):
    from labtui.tui import baseline

    nasty = "[/] [bad a[/"
    base, tuned = night(ws, experiment="tuned[/x", notes=nasty, tuned_id="20261122-013000-tu[ned[b]-b002")
    baseline.set(ws, base.id)
    app = app_for(ws)
    async with app.run_test(size=(160, 40)) as pilot:
        await until(pilot, lambda: len(app.runs) == 2)
        await pilot.press("h")
        screen = app.screen
        await until(pilot, lambda: screen.loaded and any(r.p is not None for r in screen.rows), what="history")
        table = screen.query_one("#history")
        main = next(r for r in screen.rows if r.run_id == tuned.id and not r.sub)
        sub = next(r for r in screen.rows if r.sub)
        assert table.get_cell(main.key, "evaluated").plain == "step 120 N300 score cpu"
        assert table.get_cell(sub.key, "evaluated").plain == "step 80 N100 score cpu"
        assert table.get_cell(sub.key, "Δ base").plain == "-"
        assert table.get_cell(sub.key, "McNemar p").plain == "N 100 vs 300"  # the "-" says why
        assert table.get_cell(main.key, "notes").plain == nasty
        await until(pilot, lambda: screen.cursor_row is not None)
        assert screen.cursor_row.run_id == tuned.id
        detail = screen.query_one("#history-detail").render()
        assert nasty in str(detail) and "headline eval: final checkpoint" in str(detail)
        await pilot.press("c")  # the cursor row against the baseline: runs, so their headline evals
        compare = app.screen
        await until(pilot, lambda: compare.result is not None or compare.error, what="compare")
        assert compare.error is None and compare.result["n"] == 300
        body = str(compare.query_one("#compare-body").render())
        assert "checkpoint 120, N 300, score, cpu" in body and "base model, N 300, score, cpu" in body
        assert "tu[ned[b]·b002 / checkpoint 120" in body, body
        assert "headline eval of its run" not in body  # both sides are the evals the table shows
        assert "same eval" not in body


@pytest.mark.anyio
async def test_compare_screen_warns_when_both_sides_are_the_same_eval(ws):
    from labtui.tui.screens.compare import CompareScreen

    base, tuned = night(ws)
    app = app_for(ws)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: len(app.runs) == 2)
        screen = CompareScreen(tuned, tuned.file("evals") / FINAL)
        await app.push_screen(screen)
        await until(pilot, lambda: screen.result is not None or screen.error, what="compare")
        body = str(screen.query_one("#compare-body").render())
        assert "A and B are the same eval" in body and "A: headline eval of its run: final checkpoint" in body
        assert "same eval twice" in str(screen.query_one("#compare-title").render())


# --- 4. a GPU that is not there is refused at once -------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("gpu", [False, True])
async def test_evaluate_screen_refuses_the_gpu_where_there_is_none(ws, monkeypatch, gpu):
    from labtui.engine.runtime import sysmon
    from labtui.tui.screens.evaluate import EvalScreen

    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(working=gpu))
    monkeypatch.setattr(sysmon, "_nvml_state", {"ok": None, "error": None})
    base, tuned = night(ws)
    app = app_for(ws)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: len(app.runs) == 2)
        screen = EvalScreen(tuned.id)
        await app.push_screen(screen)
        await pilot.pause()
        assert screen.device == "cpu"
        screen.query_one("#eval-list").focus()
        await pilot.press("d")
        if gpu:
            assert screen.device == "cuda"
            assert "--device cuda" in str(screen.query_one("#eval-command").render())
        else:
            assert screen.device == "cpu" and "--device cpu" in str(screen.query_one("#eval-command").render())
            assert any("no NVIDIA GPU" in n.message for n in app._notifications)
            assert "GPU refused" in str(screen.query_one("#eval-status").render())
    assert len(list(tuned.file("evals").iterdir())) == 2  # nothing started


def test_eval_device_cuda_without_a_gpu_exits_2_and_creates_nothing(ws):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    base, tuned = night(ws)
    before = sorted(p.name for p in tuned.file("evals").iterdir())
    proc = labtui(ws, "eval", tuned.id, "--device", "cuda", "--n", "10")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("labtui: error: --device cuda: no GPU here") and proc.stderr.count("\n") == 1
    assert sorted(p.name for p in tuned.file("evals").iterdir()) == before


# --- 5. doctor on a fresh clone -----------------------------------------------------------------------------


@pytest.mark.e2e  # doctor imports torch, transformers, peft and trl, and validates every shipped experiment with them
def test_doctor_on_a_fresh_clone_reports_the_pubmedqa_files_as_needed_not_failed(tmp_path):
    shutil.copytree(ROOT / "experiments", tmp_path / "experiments")  # what a fresh clone has: no data/, no demo/
    proc = labtui(tmp_path, "doctor", "--json")
    report = json.loads(proc.stdout)
    assert proc.returncode == 0, [c for c in report["checks"] if c["ok"] is False]
    data = [c for c in report["checks"] if c["name"] == "data"]
    assert [c["ok"] for c in data] == [None, None]
    assert "data/ori_pqal.json" in data[0]["detail"] and "pubmedqa/pubmedqa" in data[0]["detail"]
    assert "data/test_ground_truth.json" in data[1]["detail"] and "gemma3-4b-baseline.yaml" in data[0]["detail"]
    text = labtui(tmp_path, "doctor")
    assert text.returncode == 0 and "need data/ori_pqal.json (how to get it:" in text.stdout
    # a real problem in an experiment file still fails
    (tmp_path / "experiments" / "broken.yaml").write_text("model: {model_name_or_path: ./nowhere}\n")
    assert labtui(tmp_path, "doctor").returncode == 1


@pytest.mark.anyio
async def test_detail_lists_each_eval_with_what_it_evaluated(ws):
    from labtui.tui.screens.detail import RunDetailScreen

    base, tuned = night(ws)
    app = app_for(ws)
    async with app.run_test(size=(120, 50)) as pilot:
        await until(pilot, lambda: len(app.runs) == 2)
        screen = RunDetailScreen(tuned.id)
        await app.push_screen(screen)
        await until(pilot, lambda: "checkpoint 80" in str(screen.query_one("#detail-info").render()), what="evals")
        info = str(screen.query_one("#detail-info").render())
        assert f"{FINAL} completed checkpoint 120, N 300, score, cpu: 0.767 [" in info
        assert f"{EXTRA} completed checkpoint 80, N 100, score, cpu: 0.440 [" in info


@pytest.mark.anyio
async def test_history_compare_key_without_a_baseline_says_why(ws):
    base, tuned = night(ws)
    app = app_for(ws)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: len(app.runs) == 2)
        await pilot.press("h")
        screen = app.screen
        await until(pilot, lambda: screen.loaded and screen.cursor_row is not None, what="history")
        assert screen.check_action("compare", ()) is None  # shown dimmed
        await pilot.press("c")
        assert app.screen is screen  # nothing opened
        assert any("no baseline yet" in n.message for n in app._notifications)
        await pilot.press("space", "down", "space")  # two rows selected: compare works without a baseline
        assert screen.check_action("compare", ()) is True
        await pilot.press("f")  # each run's headline: the best checkpoint's eval
        assert screen.prefer == "best" and "headline best" in str(screen.query_one("#history-title").render())
        await until(pilot, lambda: any("best checkpoint (step 100) has no eval" in r.why for r in screen.rows),
                    what="rebuilt rows")


def test_evals_listing_shows_split_and_base_and_no_terminal_escapes(ws):
    base, tuned = night(ws)
    bad = plant(tuned, "20261122-050000-score-cpu-bad1", [True] * 10, step=80, created=T0 + 9900, split="eval")
    store.atomic_write_json(bad / store.STATE_FILE, {"status": "failed", "error": "boom \x1b]0;pwned\x07\x1b[2J"})
    proc = labtui(ws, "evals")
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if BASE_EVAL in x)
    assert " test " in line and " base " in line and "62.3%" in line
    assert " eval " in next(x for x in proc.stdout.splitlines() if "bad1" in x)
    shown = labtui(ws, "evals", f"{tuned.id}/bad1")
    assert shown.returncode == 0 and "boom" in shown.stdout and "\x1b" not in shown.stdout + shown.stderr


def test_best_checkpoint_headline_on_request(ws):
    from labtui.tui.history_data import HistoryData
    from labtui.tui.scan import row_for

    base, tuned = night(ws)
    progress = store.read_json(tuned.file(store.PROGRESS_FILE), {})
    store.atomic_write_json(tuned.file(store.PROGRESS_FILE), dict(progress, best_step=80))
    plant(tuned, "20261122-041000-score-cpu-b080", [True] * 210 + [False] * 90, step=80, created=T0 + 9100)
    assert evalstore.headline_eval(tuned, base)["id"] == FINAL
    head = evalstore.headline_eval(tuned, base, prefer="best")
    assert head["id"].endswith("b080")
    assert head["why"] == "best checkpoint (lowest eval loss, step 80), with the baseline's N and split"
    rows = HistoryData(ws).build([row_for(base), row_for(tuned)], base.id, T0 + 10_000, prefer="best")
    main = next(r for r in rows if r.run_id == tuned.id and not r.sub)
    assert main.eval_id.endswith("b080") and main.diff == pytest.approx(23 / 300)
    store.atomic_write_json(tuned.file(store.PROGRESS_FILE), dict(progress, best_step=40))
    head = evalstore.headline_eval(tuned, base, prefer="best")
    assert head["id"] == FINAL and head["why"].startswith("the best checkpoint (step 40) has no eval")


def test_history_says_other_examples_when_n_and_split_agree_but_the_ids_do_not(ws):
    from labtui.tui.history_data import HistoryData
    from labtui.tui.scan import row_for

    base, tuned = night(ws)
    other = make_run(ws, "20261122-014000-demo-sft-c003", "demo-sft", created=T0 + 2000, steps=120, max_steps=120)
    path = plant(other, "20261122-031000-score-cpu-c120", [True] * 200 + [False] * 100, step=120, created=T0 + 7300)
    recs = [json.loads(x) for x in (path / evalstore.PREDICTIONS_FILE).read_text().splitlines()]
    (path / evalstore.PREDICTIONS_FILE).write_text("".join(json.dumps(dict(r, id="x" + r["id"])) + "\n" for r in recs))
    rows = HistoryData(ws).build([row_for(base), row_for(other)], base.id, T0 + 10_000)
    row = next(r for r in rows if r.run_id == other.id)
    assert row.diff is None and row.not_comparable == "different examples"
    assert "not evaluated on the same examples" in row.compare_error


# --- 7. one schema for the eval settings' choices ------------------------------------------------------------


def test_eval_choices_come_from_the_experiment_schema_and_are_refused_alike(ws):
    import yaml
    from labtui.engine.config.experiment import check_field

    base, tuned = night(ws)
    before = sorted(p.name for p in tuned.file("evals").iterdir())
    proc = labtui(ws, "eval", tuned.id, "--split", "tset")
    file_words = check_field("eval.split", "tset")
    assert file_words.startswith("eval.split must be one of test, eval, train, got 'tset'")
    assert proc.returncode == 2 and proc.stderr == f"labtui: error: --split{file_words[len('eval.split'):]}\n"
    cfg = yaml.safe_load(tuned.file(store.CONFIG_FILE).read_text())  # a run made before eval.split was checked
    cfg["eval"]["split"] = "tset"
    tuned.file(store.CONFIG_FILE).write_text(yaml.safe_dump(cfg))
    proc = labtui(ws, "eval", tuned.id)
    assert proc.returncode == 2 and proc.stderr == f"labtui: error: {file_words}\n"
    proc = labtui(ws, "eval", tuned.id, "--split", "test", "--dtype", "bf16")
    assert proc.returncode == 2 and "--dtype must be one of auto, float32, bfloat16, float16" in proc.stderr
    assert sorted(p.name for p in tuned.file("evals").iterdir()) == before
