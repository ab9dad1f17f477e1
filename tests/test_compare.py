"""`labtui compare` and the summary: PubMedQA official-format files against scipy's own tests, the
error kinds, the degenerate-output warning on planted predictions, and prediction loading."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import SHARED_PUBMEDQA, labtui
from labtui.engine.analysis import evalstore
from labtui.engine.config.experiment import ConfigError
from labtui.engine.rundir import store
from scipy import stats as sps

GOLD_FILE = SHARED_PUBMEDQA / "test_ground_truth.json"
needs_pubmedqa = pytest.mark.skipif(not GOLD_FILE.exists(), reason=f"PubMedQA is not at {SHARED_PUBMEDQA} (../shared/data/pubmedqa from the repo root)")

WRONG = {"yes": "maybe", "no": "maybe", "maybe": "yes"}  # hedge on yes/no, miss the maybes


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """Official-format prediction files over the 500 PubMedQA test PMIDs (sorted):
    A right on the first 350 (70.0%), B right on positions 13..474 (92.4%):
    b = 13 (A right, B wrong), c = 125 (A wrong, B right)."""
    if not GOLD_FILE.exists():
        pytest.skip(f"PubMedQA is not at {SHARED_PUBMEDQA}")
    gold = json.loads(GOLD_FILE.read_text())
    ids = sorted(gold)
    d = tmp_path_factory.mktemp("official")
    a = {i: gold[i] if k < 350 else WRONG[gold[i]] for k, i in enumerate(ids)}
    b = {i: gold[i] if 13 <= k < 475 else WRONG[gold[i]] for k, i in enumerate(ids)}
    (d / "a.json").write_text(json.dumps(a))
    (d / "b.json").write_text(json.dumps(b))
    del b[ids[-1]]
    (d / "b_short.json").write_text(json.dumps(b))
    return d, gold, ids


@needs_pubmedqa
def test_compare_official_files_against_independent_values(official):
    d, gold, ids = official
    proc = labtui(d, "compare", str(d / "a.json"), str(d / "b.json"), "--gold", str(GOLD_FILE), "--json")
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["n"] == 500 and r["b"] == 13 and r["c"] == 125
    assert r["acc_a"] == 0.7 and r["acc_b"] == pytest.approx(0.924)
    # exact McNemar = two-sided binomial test on the 138 discordant pairs (scipy's own implementation)
    assert r["mcnemar_method"] == "exact"
    assert r["mcnemar_p"] == pytest.approx(sps.binomtest(13, 138, 0.5).pvalue, rel=1e-9)
    assert r["mcnemar_p"] < 0.001 and r["significant"] is True
    # Wilson intervals (scipy), Cohen's h and the paired difference by hand
    for key, k in (("ci_a", 350), ("ci_b", 462)):
        ci = sps.binomtest(k, 500).proportion_ci(confidence_level=0.95, method="wilson")
        assert r[key] == pytest.approx([ci.low, ci.high], abs=1e-9)
    assert r["cohens_h"] == pytest.approx(2 * math.asin(math.sqrt(0.924)) - 2 * math.asin(math.sqrt(0.7)), abs=1e-12)
    assert r["diff"] == pytest.approx(0.224)
    se = math.sqrt(138 - 112 ** 2 / 500) / 500
    assert r["diff_ci"] == pytest.approx([0.224 - 1.959963984540054 * se, 0.224 + 1.959963984540054 * se], abs=1e-9)
    # the error kinds, counted straight from the files
    a = json.loads((d / "a.json").read_text())
    wrong_a = [i for i in ids if a[i] != gold[i]]
    assert r["errors_a"]["correct"] == 350
    assert r["errors_a"]["hedged_maybe"] == sum(gold[i] != "maybe" for i in wrong_a)
    assert r["errors_a"]["missed_maybe"] == sum(gold[i] == "maybe" for i in wrong_a)
    assert r["errors_a"]["yes_no_swap"] == r["errors_a"]["empty"] == r["errors_a"]["unparseable"] == 0
    assert sum(r["errors_b"].values()) == 500 and r["errors_b"]["correct"] == 462
    assert r["verdict"].startswith("B is better than A: +22.4 points")


@needs_pubmedqa
def test_compare_text_output_and_chi2(official):
    d, gold, ids = official
    proc = labtui(d, "compare", str(d / "a.json"), str(d / "b.json"), "--gold", str(GOLD_FILE), "--method", "chi2")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "70.0%" in out and "92.4%" in out and "b = 13" in out and "c = 125" in out
    assert "McNemar (chi2)" in out and "p < 0.001 ***" in out and "hedged maybe" in out and "verdict: B is better" in out
    r = evalstore.compare_sources(d / "a.json", d / "b.json", gold=GOLD_FILE, method="chi2")
    assert r["mcnemar_p"] == pytest.approx(sps.chi2.sf((125 - 13 - 1) ** 2 / 138, 1), rel=1e-9)


@needs_pubmedqa
def test_identical_predictions_b_c_zero(official):
    d, gold, ids = official
    r = evalstore.compare_sources(d / "a.json", d / "a.json", gold=GOLD_FILE)
    assert (r["b"], r["c"], r["mcnemar_p"], r["diff"], r["cohens_h"]) == (0, 0, 1.0, 0.0, 0.0)
    assert r["significant"] is False and "No significant difference" in r["verdict"]


@needs_pubmedqa
def test_unpaired_official_files_are_refused(official):
    d, gold, ids = official
    proc = labtui(d, "compare", str(d / "a.json"), str(d / "b_short.json"), "--gold", str(GOLD_FILE))
    assert proc.returncode == 2
    assert "not evaluated on the same examples" in proc.stderr and ids[-1] in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1


@needs_pubmedqa
def test_official_file_without_gold_is_refused(official):
    d, gold, ids = official
    proc = labtui(d, "compare", str(d / "a.json"), str(d / "b.json"))
    assert proc.returncode == 2 and "--gold" in proc.stderr and "Traceback" not in proc.stderr
    proc = labtui(d, "compare", str(d / "a.json"), str(d / "b.json"), "--gold", str(d / "nope.json"))
    assert proc.returncode == 2 and "nope.json" in proc.stderr


@needs_pubmedqa
def test_ori_pqal_works_as_gold_file(official):
    d, gold, ids = official
    recs = evalstore.load_predictions(d / "a.json", gold=SHARED_PUBMEDQA / "ori_pqal.json")
    assert len(recs) == 500 and sum(r["correct"] for r in recs.values()) == 350


# --- prediction files -----------------------------------------------------------------------------


def _jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_jsonl_predictions_with_and_without_gold(tmp_path):
    a = _jsonl(tmp_path / "a.jsonl", [{"id": 1, "gold": "yes", "pred": "yes"}, {"id": 2, "gold": "no", "pred": "maybe"}])
    recs = evalstore.load_predictions(a)
    assert set(recs) == {"1", "2"} and recs["1"]["correct"] and not recs["2"]["correct"]
    nogold = _jsonl(tmp_path / "b.jsonl", [{"id": "1", "pred": "no"}, {"id": "2", "pred": "no"}])
    with pytest.raises(ConfigError, match="--gold"):
        evalstore.load_predictions(nogold)
    gold = tmp_path / "gold.json"
    gold.write_text(json.dumps({"1": "yes", "2": "no"}))
    r = evalstore.compare_sources(a, nogold, gold=gold)
    assert (r["n"], r["b"], r["c"], r["acc_a"], r["acc_b"]) == (2, 1, 1, 0.5, 0.5)
    assert r["errors_a"]["hedged_maybe"] == 1 and r["errors_b"]["yes_no_swap"] == 1


def test_n_equals_one_and_one_discordant_pair(tmp_path):
    a = _jsonl(tmp_path / "a.jsonl", [{"id": "x", "gold": "yes", "pred": "yes"}])
    b = _jsonl(tmp_path / "b.jsonl", [{"id": "x", "gold": "yes", "pred": ""}])
    r = evalstore.compare_sources(a, b)
    assert (r["n"], r["b"], r["c"], r["mcnemar_p"]) == (1, 1, 0, 1.0)
    assert r["errors_b"]["empty"] == 1 and r["significant"] is False


def test_generate_records_pick_a_temperature(tmp_path):
    rows = [{"id": "1", "gold": "yes", "pred": "yes", "temperature": 0.0},
            {"id": "1", "gold": "yes", "pred": "no", "temperature": 0.7}]
    f = _jsonl(tmp_path / "p.jsonl", rows)
    assert evalstore.load_predictions(f)["1"]["pred"] == "yes"
    assert evalstore.load_predictions(f, temperature=0.7)["1"]["pred"] == "no"
    with pytest.raises(ConfigError, match="no predictions at temperature 1.0"):
        evalstore.load_predictions(f, temperature=1.0)


def test_duplicate_ids_and_unknown_gold_ids_are_errors(tmp_path):
    f = _jsonl(tmp_path / "d.jsonl", [{"id": "1", "gold": "yes", "pred": "yes"}, {"id": "1", "gold": "yes", "pred": "no"}])
    with pytest.raises(ConfigError, match="appears twice"):
        evalstore.load_predictions(f)
    official = tmp_path / "o.json"
    official.write_text(json.dumps({"1": "yes", "9": "no"}))
    gold = tmp_path / "g.json"
    gold.write_text(json.dumps({"1": "yes"}))
    with pytest.raises(ConfigError, match="not in the gold file"):
        evalstore.load_predictions(official, gold=gold)


# --- error kinds and the degenerate warning ------------------------------------------------------


@pytest.mark.parametrize("gold, pred, kind", [
    ("yes", "yes", "correct"), ("maybe", "maybe", "correct"), ("yes", "maybe", "hedged_maybe"),
    ("no", "maybe", "hedged_maybe"), ("yes", "no", "yes_no_swap"), ("no", "yes", "yes_no_swap"),
    ("maybe", "yes", "missed_maybe"), ("maybe", "no", "missed_maybe"), ("yes", "", "empty"), ("no", None, "empty"),
    ("yes", "unparseable", "unparseable"), ("maybe", "perhaps", "unparseable"),
])
def test_error_kinds(gold, pred, kind):
    assert evalstore.error_kind(gold, pred) == kind


def _gold_labels() -> list[str]:
    if GOLD_FILE.exists():
        return list(json.loads(GOLD_FILE.read_text()).values())
    return ["yes"] * 55 + ["no"] * 34 + ["maybe"] * 11


def _records(golds, preds):
    return [{"id": str(k), "gold": g, "pred": p, "correct": g == p, "temperature": None}
            for k, (g, p) in enumerate(zip(golds, preds))]


def test_degenerate_warning_fires_on_planted_all_maybe():
    golds = _gold_labels()
    recs = _records(golds, ["maybe"] * len(golds))
    s = evalstore.summarize(recs, device="cpu")
    assert s["degenerate"] is True
    assert any("'maybe' is 100%" in w for w in s["warnings"])
    assert s["suggest_cpu_rerun"] is False
    assert s["errors"]["hedged_maybe"] == sum(g != "maybe" for g in golds)
    # on the GPU the summary offers the CPU re-run (the seeds' fix)
    g = evalstore.summarize(recs, device="cuda", rerun_command="labtui eval r1 --device cpu")
    assert g["degenerate"] is True and g["suggest_cpu_rerun"] is True
    assert g["cpu_rerun_command"] == "labtui eval r1 --device cpu"
    assert any("re-run it on the CPU" in w and "labtui eval r1 --device cpu" in w for w in g["warnings"])


def test_degenerate_warning_on_empty_outputs_and_not_on_healthy_ones():
    golds = _gold_labels()[:100]
    preds = ["" if k < 11 else g for k, g in enumerate(golds)]  # 11% empty
    s = evalstore.summarize(_records(golds, preds), mode="generate")
    assert s["degenerate"] is True and any("11% of the outputs are empty or unparseable" in w for w in s["warnings"])
    assert s["errors"]["empty"] == 11
    healthy = evalstore.summarize(_records(golds, golds[1:] + golds[:1]))
    assert healthy["degenerate"] is False and healthy["warnings"] == []
    # a test set that really is 95% "yes" may be answered "yes" 95% of the time
    lopsided = evalstore.summarize(_records(["yes"] * 95 + ["no"] * 5, ["yes"] * 100))
    assert lopsided["degenerate"] is False


def test_summary_numbers_per_temperature():
    golds = ["yes", "no", "maybe", "yes"]
    recs = [{**r, "temperature": 0.0} for r in _records(golds, ["yes", "no", "no", "yes"])]
    recs += [{**r, "temperature": 0.7} for r in _records(golds, ["yes", "", "unparseable", "no"])]
    s = evalstore.summarize(recs, mode="generate", wall_s=2.0, tokens=100)
    assert s["n"] == 4 and s["accuracy"] == 0.75 and s["per_temperature"]["0.0"]["accuracy"] == 0.75
    assert s["per_temperature"]["0.7"]["accuracy"] == 0.25
    assert s["per_temperature"]["0.7"]["errors"] == {"correct": 1, "hedged_maybe": 0, "yes_no_swap": 1, "missed_maybe": 0,
                                                    "empty": 1, "unparseable": 1, "other": 0}
    assert s["confusion"]["maybe"] == {"yes": 0, "no": 1, "maybe": 0}
    assert s["tokens_per_s"] == 50.0 and s["examples_per_s"] == 4.0
    ci = sps.binomtest(3, 4).proportion_ci(method="wilson")
    assert s["ci"] == pytest.approx([ci.low, ci.high])


def test_planted_eval_dir_is_listed_with_its_warning(tmp_path):
    ws = store.Workspace(tmp_path)
    run = ws.create_run("r", {"experiment": "r", "kind": "train", "workspace": str(tmp_path)}, "model: {}\n")
    path = run.file("evals") / "20260101-000000-score-cuda-0000"
    path.mkdir(parents=True)
    golds = _gold_labels()[:50]
    recs = _records(golds, ["maybe"] * 50)
    store.atomic_write_json(path / "run.json", {"id": path.name, "kind": "eval", "run": run.id, "created": 1.0})
    store.atomic_write_json(path / "eval.json", {"mode": "score", "device": "cuda", "checkpoint_step": 10, "n": 50})
    store.atomic_write_json(path / "state.json", {"status": "completed"})
    (path / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    store.atomic_write_json(path / "summary.json", evalstore.summarize(recs, device="cuda"))
    row = evalstore.latest_eval(run)
    assert row["id"] == path.name and row["degenerate"] is True and row["warnings"]
    proc = labtui(ws, "evals")
    assert proc.returncode == 0 and path.name in proc.stdout and "!" in proc.stdout


def test_eval_readers_import_no_torch():
    """The TUI and the CLI read evals through these modules; they must stay light."""
    import subprocess
    import sys

    code = ("import sys, labtui.engine.analysis.evalstore, labtui.engine.cli.eval_cli, labtui.engine.runtime.evaluate_launch; "
            "print(sorted(m for m in ('torch', 'transformers', 'peft', 'trl', 'datasets', 'textual') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_parity_report_counts_agreement_and_the_largest_loglik_difference(tmp_path):
    from labtui.engine.cli.eval_cli import parity_report

    def planted(name, rows):
        d = tmp_path / name
        d.mkdir()
        store.atomic_write_json(d / "eval.json", {"mode": "score"})
        _jsonl(d / "predictions.jsonl", rows)
        return d

    def row(i, gold, ll):
        pred = max(ll, key=ll.get)
        return {"id": str(i), "gold": gold, "pred": pred, "correct": pred == gold, "temperature": None, "loglik": ll}

    cpu = planted("cpu", [row(k, "yes", {"yes": -1.0, "no": -2.0, "maybe": -3.0}) for k in range(20)])
    gpu_rows = [row(k, "yes", {"yes": -1.01, "no": -2.0, "maybe": -3.0}) for k in range(19)]
    gpu_rows.append(row(19, "yes", {"yes": -4.0, "no": -2.0, "maybe": -0.5}))  # broken: "maybe"
    r = parity_report(cpu, planted("gpu", gpu_rows))
    assert (r["n"], r["agree"], r["agreement"]) == (20, 19, 0.95)
    assert r["max_loglik_diff"] == pytest.approx(3.0)
    assert r["acc_cpu"] == 1.0 and r["acc_gpu"] == 0.95 and r["ok"] is True
    bad = parity_report(cpu, planted("gpu2", [row(k, "yes", {"yes": -5.0, "no": -2.0, "maybe": -0.1}) for k in range(20)]))
    assert bad["ok"] is False and bad["agreement"] == 0.0 and "--device cpu" in bad["verdict"]


# --- compare from the columns file: the same answers without parsing every record -----------------


def _eval_dir(ws: store.Workspace, run_id: str, rows: list[dict]) -> Path:
    run = ws.create_run(run_id, {"experiment": run_id, "kind": "train", "workspace": str(ws.root)}, "model: {}\n")
    path = run.file("evals") / f"20260101-000000-score-cpu-{run_id}"
    path.mkdir(parents=True)
    store.atomic_write_json(path / "run.json", {"id": path.name, "kind": "eval", "run": run.id, "created": 1.0})
    store.atomic_write_json(path / "eval.json", {"mode": "score", "device": "cpu", "n": len(rows)})
    store.atomic_write_json(path / "state.json", {"status": "completed"})
    (path / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    store.atomic_write_json(path / "summary.json", evalstore.summarize(rows))
    return path


def _without_names(r: dict) -> dict:
    return {k: v for k, v in r.items() if k not in ("name_a", "name_b")}


def test_compare_from_columns_equals_compare_from_records_and_follows_changes(tmp_path):
    ws = store.Workspace(tmp_path)
    rng = __import__("random").Random(7)
    labels = ["yes", "no", "maybe"]
    golds = [rng.choice(labels) for _ in range(300)]
    a_rows = [{"id": f"e{k}", "gold": g, "pred": g if rng.random() < 0.7 else rng.choice(labels + ["", "unparseable"]),
               "temperature": None} for k, g in enumerate(golds)]
    b_rows = [{"id": f"e{k}", "gold": g, "pred": g if rng.random() < 0.85 else rng.choice(labels), "temperature": None}
              for k, g in enumerate(golds)]
    b_rows[5]["gold"] = "maybe" if golds[5] != "maybe" else "no"  # one gold answer differs
    b_rows[7]["gold"] = "n/a"  # an answer class outside yes/no/maybe
    rng.shuffle(b_rows)  # B lists the same examples in another order
    a = _eval_dir(ws, "a", a_rows)
    b = _eval_dir(ws, "b", b_rows)

    expected = evalstore.compare_sources(evalstore.load_predictions(a), evalstore.load_predictions(b))
    got = evalstore.compare_sources(a, b)
    assert evalstore.columns_cache(a).path.exists() and evalstore.columns_cache(b).path.exists()
    again = evalstore.compare_sources(a.parent.parent, b)  # a run stands for its latest eval; columns read back
    for r in (got, again):
        assert _without_names(r) == _without_names(expected)
    assert got["gold_mismatch"] == 2 and "n/a" in got["labels"] and "gold answers differ" in got["verdict"]
    assert got["name_a"] == evalstore.source_name(a)

    # predictions.jsonl changes (an eval re-run in place): the columns are remade, not trusted
    a_rows[0]["pred"] = "maybe" if a_rows[0]["pred"] != "maybe" else "yes"
    (a / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in a_rows) + "\n")
    fresh = evalstore.compare_sources(evalstore.load_predictions(a), evalstore.load_predictions(b))
    assert _without_names(evalstore.compare_sources(a, b)) == _without_names(fresh) != _without_names(expected)

    # a damaged columns file is ignored and rewritten
    kept = evalstore.columns_cache(a).path
    kept.write_text(kept.read_text()[:100])
    assert _without_names(evalstore.compare_sources(a, b)) == _without_names(fresh)
    assert json.loads(kept.read_text().split("\n", 1)[1])[""][1]["ids"][0] == "e0"

    # different examples: the same refusal as from records
    c = _eval_dir(ws, "c", a_rows[:-1])
    with pytest.raises(evalstore.stats.UnpairedError, match="A has 300 examples, B has 299"):
        evalstore.compare_sources(a, c)


def test_an_ambiguous_eval_prefix_names_the_evals_it_matches(tmp_path):
    ws = store.Workspace(tmp_path)
    rows = [{"id": "e1", "gold": "yes", "pred": "yes"}]
    a, b = _eval_dir(ws, "a", rows), _eval_dir(ws, "b", rows)
    with pytest.raises(evalstore.EvalNotFound, match="ambiguous") as err:
        evalstore.resolve_source(ws, "20260101-000000-score-cpu-")
    assert a.name in str(err.value) and b.name in str(err.value)
    assert evalstore.resolve_source(ws, a.name) == a
