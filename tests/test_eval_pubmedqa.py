"""Real PubMedQA (../shared/data/pubmedqa): the official files load as the test split, and a base-model
eval straight from an experiment file runs on them (long abstracts: prompts are cut to the model's
positions), and `labtui doctor` checks the environment."""

from __future__ import annotations

import json

import pytest
from conftest import SHARED_PUBMEDQA, labtui
from labtui.engine.analysis import evalstore

needs_pubmedqa = pytest.mark.skipif(not (SHARED_PUBMEDQA / "ori_pqal.json").exists(),
                                    reason=f"PubMedQA is not at {SHARED_PUBMEDQA} (../shared/data/pubmedqa from the repo root)")

EXPERIMENT = """\
description: "Baseline row: the demo model, no adapter, on real PubMedQA"
model:
  model_name_or_path: demo/tiny-llama
  dtype: float32
dataset:
  format: pubmedqa
  path: {data}/ori_pqal.json
  test_split: {data}/test_ground_truth.json
eval:
  n: 8
  batch_size: 4
"""


@needs_pubmedqa
def test_real_pubmedqa_loads_as_the_official_test_split():
    from labtui.engine.config.experiment import resolve
    from labtui.engine.training.data import format_prompt, load_splits

    cfg = resolve({"model": {"model_name_or_path": "x"},
                   "dataset": {"format": "pubmedqa", "path": str(SHARED_PUBMEDQA / "ori_pqal.json"),
                               "test_split": str(SHARED_PUBMEDQA / "test_ground_truth.json")}})
    splits = load_splits(cfg, SHARED_PUBMEDQA)
    gold = json.loads((SHARED_PUBMEDQA / "test_ground_truth.json").read_text())
    assert len(splits.test) == 500 and {e["id"]: e["answer"] for e in splits.test} == gold
    assert len(splits.train) + len(splits.eval) == 500
    prompt = format_prompt(splits.test[0], cfg["task"])
    assert prompt.startswith("Context: ") and prompt.endswith("\nAnswer:")


@needs_pubmedqa
def test_base_model_eval_from_an_experiment_file_on_real_pubmedqa(workspace, capsys):
    exp = workspace.experiments / "pubmedqa-base.yaml"
    exp.write_text(EXPERIMENT.format(data=SHARED_PUBMEDQA.resolve()))
    proc = labtui(workspace, "eval", "experiments/pubmedqa-base.yaml", "--base", "-f", "--json", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["n"] == 8 and summary["checkpoint"] == "base" and summary["mode"] == "score"
    # the baseline row is a run of kind "base" holding the eval; the eval has no training run
    holder = workspace.run("pubmedqa-base")
    assert holder.info()["kind"] == "base" and holder.state()["status"] == "completed"
    row = evalstore.latest_eval(holder)
    assert row["accuracy"] == summary["accuracy"] and row["run"] is None
    gold = json.loads((SHARED_PUBMEDQA / "test_ground_truth.json").read_text())
    recs = evalstore.load_predictions(holder)
    assert all(gold[i] == r["gold"] for i, r in recs.items())
    # exported in the official format, scored against the official gold file: the same numbers
    from labtui.engine.cli import main as cli

    out = workspace.root / "official.json"
    assert cli.main(["-w", str(workspace.root), "export-predictions", holder.id, "-o", str(out)]) == 0
    capsys.readouterr()
    gold = str(SHARED_PUBMEDQA / "test_ground_truth.json")
    assert cli.main(["-w", str(workspace.root), "compare", str(out), holder.id, "--gold", gold, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["acc_a"] == summary["accuracy"]


def test_doctor_reports_and_fails_on_a_broken_experiment(workspace, capsys):
    from labtui.engine.cli import main as cli

    rc = cli.main(["--workspace", str(workspace.root), "doctor"])
    out = capsys.readouterr().out
    for name in ("torch", "cuda", "nvml", "disk", "workspace", "experiments"):
        assert name in out
    problems = [ln for ln in out.splitlines() if ln.startswith("FAIL")]
    assert rc == (1 if problems else 0), out
    (workspace.experiments / "broken.yaml").write_text("model:\n  model_name_or_path: demo/tiny-llama\nlora:\n  r: 4\ntrainin: {}\n")
    rc = cli.main(["--workspace", str(workspace.root), "doctor", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert rc == 1 and report["ok"] is False
    bad = [c for c in report["checks"] if c["name"] == "experiment broken.yaml"]
    assert bad and bad[0]["ok"] is False and "trainin" in bad[0]["detail"] and "broken.yaml" in bad[0]["fix"]
