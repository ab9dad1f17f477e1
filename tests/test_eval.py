"""End to end: a real demo run trained once for the module (its evaluation starts by itself after
training), then `labtui eval` in both modes, detached and in the foreground, and the commands that
read evals: evals, compare, export-predictions, parity."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from conftest import ROOT, fast_overrides, labtui, wait_for
from labtui.engine.analysis import evalstore
from labtui.engine.rundir import cache, store

N = 40  # examples per eval: the after-training eval and the score evals below share them


@pytest.fixture(scope="module")
def trained(tmp_path_factory, demo_assets):
    """A workspace with one completed demo run (10 steps, checkpoints 5 and 10, final adapter) whose
    config asks for an evaluation after training, and that evaluation finished."""
    root = tmp_path_factory.mktemp("eval-ws")
    (root / "demo").symlink_to(demo_assets)
    shutil.copytree(ROOT / "experiments", root / "experiments")
    ws = store.Workspace(root)
    proc = labtui(ws, "run", "experiments/demo-baseline.yaml", *fast_overrides(10),
                  "--set", "eval.after_training=true", "--set", f"eval.n={N}", "--set", "eval.batch_size=8", check=True)
    run = ws.run(proc.stdout.split()[0])
    state = wait_for(run, timeout=240)
    assert state["status"] == "completed", state
    deadline = time.time() + 180
    while time.time() < deadline and not (run.evals() and evalstore.latest_eval(run)):
        time.sleep(0.5)
    return ws, run


@pytest.fixture(scope="module")
def more_evals(trained):
    """Three more evals of the trained run: a generate eval and a checkpoint-5 eval started detached,
    and, while they run, a base-model eval in the foreground (its `--json` summary is kept)."""
    ws, run = trained
    started = {}
    t0 = time.time()
    for name, args in (("generate", ("--mode", "generate", "--temperature", "0", "0.7", "--n", "12", "--batch-size", "5",
                                     "--device", "cpu")),
                       ("step5", ("--checkpoint", "5", "--n", str(N)))):
        proc = labtui(ws, "eval", run.id, *args)
        assert proc.returncode == 0, proc.stderr
        started[name] = proc.stdout.strip()
    detach_s = time.time() - t0
    base = labtui(ws, "eval", run.id, "--base", "--n", str(N), "-f", "--json")
    assert base.returncode == 0, base.stderr
    for eval_id in started.values():
        assert wait_for(store.Run(_eval(run, eval_id)), timeout=180)["status"] == "completed"
    return {**started, "base_json": json.loads(base.stdout), "detach_s": detach_s}


def _eval(run: store.Run, eval_id: str) -> Path:
    return run.file(store.EVALS_DIR) / eval_id


def test_after_training_eval_runs_and_writes_every_file(trained):
    ws, run = trained
    rows = evalstore.list_evals(run)
    assert len(rows) == 1, rows
    row = rows[0]
    assert row["status"] == "completed" and row["mode"] == "score" and row["n"] == N
    path = Path(row["path"])
    assert path.parent == run.file("evals")
    for name in ("run.json", "eval.json", "state.json", "progress.json", "env.json", "predictions.jsonl",
                 "summary.json", "worker.log", "config.yaml"):
        assert (path / name).exists(), name

    info = store.read_json(path / "run.json")
    assert info["kind"] == "eval" and info["run"] == run.id and info["id"] == path.name
    assert info["workspace"] == str(ws.root) and info["created"] > 0

    settings = evalstore.read_settings(path)
    assert settings["checkpoint"] == str(run.file("adapter"))  # newer than checkpoint-10
    assert settings["checkpoint_step"] == 10
    assert settings["device"] == "auto" and settings["device_actual"] == "cpu"
    assert settings["n"] == N and settings["split"] == "test" and settings["batch_size"] == 8
    assert settings["dtype_actual"] == "float32" and settings["seed"] == 0

    state = store.Run(path).state()
    assert state["status"] == "completed" and state["exit_code"] == 0
    progress = store.Run(path).progress()
    assert progress["done"] == progress["total"] == progress["step"] == progress["max_steps"] == N
    assert progress["result"]["status"] == "completed"

    env = store.read_json(path / "env.json")
    assert env["device"] == "cpu" and env["dtype"] == "float32" and env["torch"] and env["device_name"]

    preds = store.read_jsonl(path / "predictions.jsonl")
    assert len(preds) == N and len({p["id"] for p in preds}) == N
    for p in preds:
        assert set(p) >= {"id", "gold", "pred", "raw", "correct", "temperature", "loglik"}
        assert set(p["loglik"]) == {"yes", "no", "maybe"}
        assert p["pred"] == max(p["loglik"], key=p["loglik"].get)
        assert p["correct"] == (p["pred"] == p["gold"])

    summary = evalstore.read_summary(path)
    keys = {"n", "accuracy", "ci", "macro_f1", "confusion", "errors", "tokens_per_s", "examples_per_s", "wall_s",
            "warnings", "degenerate", "device", "mode", "checkpoint", "checkpoint_step", "per_temperature", "created"}
    assert keys <= set(summary)
    k = sum(p["correct"] for p in preds)
    assert summary["n"] == N and summary["accuracy"] == pytest.approx(k / N)
    assert summary["ci"][0] <= summary["accuracy"] <= summary["ci"][1]
    assert sum(summary["errors"].values()) == N and summary["errors"]["correct"] == k
    assert sum(sum(r.values()) for r in summary["confusion"].values()) == N
    assert summary["tokens_per_s"] > 0 and summary["wall_s"] > 0
    assert "evaluation after training" in run.file("worker.log").read_text()
    assert evalstore.latest_eval(run)["id"] == path.name


def test_generate_mode_with_temperatures(trained, more_evals):
    ws, run = trained
    path = _eval(run, more_evals["generate"])
    assert "-generate-cpu-" in path.name
    summary = evalstore.read_summary(path)
    assert summary["mode"] == "generate" and summary["device"] == "cpu" and summary["n"] == 12
    assert set(summary["per_temperature"]) == {"0.0", "0.7"}
    assert summary["accuracy"] == summary["per_temperature"]["0.0"]["accuracy"]
    assert sum(summary["per_temperature"]["0.7"]["errors"].values()) == 12
    preds = store.read_jsonl(path / "predictions.jsonl")
    assert len(preds) == 24 and {p["temperature"] for p in preds} == {0.0, 0.7}
    for p in preds:
        assert p["pred"] in ("yes", "no", "maybe", "", "unparseable")
        assert isinstance(p["raw"], str) and "loglik" not in p
        assert p["correct"] == (p["pred"] == p["gold"])
    env = store.read_json(path / "env.json")
    assert env["device"] == "cpu" and env.get("cuda_hidden") is True


def test_detached_checkpoint_eval_then_compare(trained, more_evals):
    ws, run = trained
    assert more_evals["detach_s"] < 20  # detached: `labtui eval` returns before the model is even loaded
    eval_id = more_evals["step5"]
    path = _eval(run, eval_id)
    assert "-score-auto-" in eval_id
    settings = evalstore.read_settings(path)
    assert settings["checkpoint"].endswith("checkpoints/checkpoint-5") and settings["checkpoint_step"] == 5
    # the worker leaves the columns compare reads, in step with its predictions
    kept = evalstore.columns_cache(path)
    cols = evalstore.Columns.from_value(kept.get("", cache.stamps([path / "predictions.jsonl"])))
    assert cols is not None and sorted(cols.ids) == sorted(evalstore.load_predictions(path))

    first = evalstore.list_evals(run)[0]["id"]
    res = labtui(ws, "compare", f"{run.id}/{first}", f"{run.id}/{eval_id}", "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    for key in ("n", "acc_a", "acc_b", "ci_a", "ci_b", "b", "c", "mcnemar_p", "mcnemar_method", "cohens_h",
                "diff", "diff_ci", "errors_a", "errors_b", "verdict"):
        assert key in data, key
    a = evalstore.load_predictions(_eval(run, first))
    b = evalstore.load_predictions(path)
    assert data["n"] == N
    assert data["b"] == sum(a[i]["correct"] and not b[i]["correct"] for i in a)
    assert data["c"] == sum(b[i]["correct"] and not a[i]["correct"] for i in a)
    assert data["errors_a"]["correct"] == sum(r["correct"] for r in a.values())
    text = labtui(ws, "compare", f"{run.id}/{first}", eval_id[:-1])  # a unique prefix of the eval id
    assert text.returncode == 0, text.stderr
    assert "McNemar (exact)" in text.stdout and "verdict:" in text.stdout and "hedged maybe" in text.stdout


def test_base_model_eval_in_the_foreground(trained, more_evals):
    ws, run = trained
    summary = more_evals["base_json"]
    assert summary["checkpoint"] == "base" and summary["checkpoint_step"] == 0 and summary["n"] == N
    base = [r for r in evalstore.list_evals(run) if r["checkpoint_step"] == 0]
    assert len(base) == 1 and base[0]["accuracy"] == pytest.approx(summary["accuracy"])
    # a run id stands for its headline eval: the final checkpoint's (the eval after training), not the
    # newest (this base-model eval, or the checkpoint-5 one)
    head = evalstore.headline_eval(run)
    assert head["id"] == evalstore.list_evals(run)[0]["id"] and head["checkpoint_step"] == 10
    assert head["id"] != evalstore.latest_eval(run)["id"]
    recs = evalstore.load_predictions(run)
    assert recs == evalstore.load_predictions(Path(head["path"]))


def test_export_predictions_pubmedqa_round_trip(trained, tmp_path):
    ws, run = trained
    first = evalstore.list_evals(run)[0]
    out = tmp_path / "preds.json"
    proc = labtui(ws, "export-predictions", f"{run.id}/{first['id']}", "--format", "pubmedqa", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    official = json.loads(out.read_text())
    recs = evalstore.load_predictions(Path(first["path"]))
    assert official == {i: r["pred"] for i, r in recs.items()}
    gold = ws.root / "demo" / "test_ground_truth.json"
    res = labtui(ws, "compare", str(out), f"{run.id}/{first['id']}", "--gold", str(gold), "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["b"] == data["c"] == 0 and data["mcnemar_p"] == 1.0 and data["diff"] == 0.0
    assert data["acc_a"] == pytest.approx(first["accuracy"])


def test_unpaired_compare_is_refused(trained, more_evals):
    ws, run = trained
    score = evalstore.list_evals(run)[0]
    proc = labtui(ws, "compare", f"{run.id}/{score['id']}", f"{run.id}/{more_evals['generate']}")
    assert proc.returncode == 2
    assert "not evaluated on the same examples" in proc.stderr and "Traceback" not in proc.stderr
    assert "same --n" in proc.stderr and proc.stderr.count("\n") == 1


def test_bad_references_exit_2_with_one_message(trained, capsys):
    from labtui.engine.cli import main as cli

    ws, run = trained
    cases = [
        (("eval", "no-such-run"), "no run matches"),
        (("eval", run.id, "--checkpoint", "999"), "available steps: 5, 10"),
        (("eval", str(ws.experiments / "demo-baseline.yaml")), "--base"),
        (("compare", "missing.json", run.id), "missing.json"),
        (("compare", run.id, "nope-nope"), "not a file, a run or an eval"),
        (("export-predictions", "nope-nope"), "nope-nope"),
        (("evals", f"{run.id}/nope"), "no eval 'nope'"),
        (("parity", "no-such-run"), "no run matches"),
    ]
    for args, text in cases:
        rc = cli.main(["--workspace", str(ws.root), *args])
        err = capsys.readouterr().err
        assert rc == 2, (args, err)
        assert text in err and err.startswith("labtui: error: ") and err.count("\n") == 1, (args, err)


def test_evals_listing_and_detail(trained):
    ws, run = trained
    proc = labtui(ws, "evals", run.id, "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [r["id"] for r in rows] == [r["id"] for r in evalstore.list_evals(run)]
    first = rows[0]
    for key in ("id", "path", "status", "mode", "device", "checkpoint_step", "n", "accuracy", "ci", "created",
                "degenerate", "warnings"):
        assert key in first
    detail = labtui(ws, "evals", f"{run.id}/{first['id']}")
    assert detail.returncode == 0 and "accuracy" in detail.stdout and "confusion" in detail.stdout


def test_parity_on_a_cpu_only_machine_says_so_and_exits_0(trained, capsys):
    import torch
    from labtui.engine.cli import main as cli

    ws, run = trained
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU; parity would really run")
    rc = cli.main(["--workspace", str(ws.root), "parity", run.id])
    out = capsys.readouterr().out
    assert rc == 0
    assert "no GPU on this machine" in out and "Nothing to do" in out


def test_stop_a_running_eval_keeps_a_partial_summary(trained, more_evals):
    from labtui.engine.runtime.lifecycle import stop

    ws, run = trained
    proc = labtui(ws, "eval", run.id, "--mode", "generate", "--temperature", "0", "0.5", "1.0", "--n", "0",
                  "--batch-size", "1", "--max-new-tokens", "8", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    ev = store.Run(_eval(run, proc.stdout.strip()))
    deadline = time.time() + 90
    while time.time() < deadline and (ev.progress().get("done") or 0) < 3:
        time.sleep(0.1)
    assert "stopping after the current batch" in stop(ev)
    state = wait_for(ev, timeout=60)
    assert state["status"] == "stopped", state
    summary = evalstore.read_summary(ev.path)
    # stopped before all its work (3 temperatures x 300 examples) was done; progress is written every
    # few seconds, so the first pass may be complete by then: the summary then holds its 300 examples
    prog = ev.progress()
    assert summary["partial"] is True and 0 < prog["done"] < prog["total"] == 900, prog
    assert 0 < summary["n"] <= 300
    assert summary["warnings"][0].startswith("partial")
    assert evalstore.latest_eval(run)["id"] != ev.id  # only completed evals count as results
