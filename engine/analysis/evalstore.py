"""Reading evaluations: `logs/<run-id>/evals/<eval-id>/`, their predictions, summaries and comparisons.

An eval directory is a run directory of its own (`store.Run(eval_dir).state()` works) holding:
  run.json          {id, kind: "eval", run, workspace, created, command}
  eval.json         the settings: checkpoint (a path, or "base"), checkpoint_step, device, mode, n, ...
  config.yaml       the experiment config of the evaluated run (model, data, task)
  state.json, progress.json, worker.log   as for runs (supervisor / worker)
  env.json          device name, dtype, torch / CUDA versions
  predictions.jsonl one record per example and temperature: id, gold, pred, raw, correct, temperature
                    (and loglik {choice: float} in score mode)
  summary.json      accuracy, Wilson interval, macro-F1, confusion, error kinds, speed, warnings
Derived, for speed: the ids, gold and predicted answers of predictions.jsonl as columns (answers
as codes into a label table), kept in the workspace's cache (engine.rundir.cache, keyed by that
file's stamp: `logs/.labtui-cache/columns/<run-id>/<eval-id>.json`); written when the eval ends and
remade whenever it is stale.

Light: used by the TUI and the CLI, so nothing here imports torch. `summarize` is the one place
where a summary is computed, for the worker and for planted prediction sets alike.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from labtui.engine.analysis import stats
from labtui.engine.config.experiment import ConfigError, resolve_path
from labtui.engine.rundir import cache, records, store

EVAL_FILE = "eval.json"
PREDICTIONS_FILE = "predictions.jsonl"
COLUMNS_VERSION = 1  # the columns cache's entries (engine.rundir.cache): Columns.to_value
SUMMARY_FILE = "summary.json"

EMPTY = ""  # pred of an output with no text
UNPARSEABLE = "unparseable"  # pred of an output with text but no answer in it

ERROR_KINDS = ("correct", "hedged_maybe", "yes_no_swap", "missed_maybe", "empty", "unparseable", "other")
ERROR_HELP = {
    "correct": "right answer",
    "hedged_maybe": "answered maybe, gold is yes or no",
    "yes_no_swap": "answered yes for no, or no for yes",
    "missed_maybe": "answered yes or no, gold is maybe",
    "empty": "no text at all",
    "unparseable": "text without a yes/no/maybe",
    "other": "any other wrong answer",
}
DEGENERATE_SHARE = 0.90  # one answer above this share of predictions
DEGENERATE_BAD = 0.10  # empty + unparseable above this share


class EvalNotFound(ConfigError):
    """An unknown eval, run or predictions file (exit code 2 in the CLI)."""


# --- one eval directory -----------------------------------------------------------------------


def is_eval_dir(path: Path) -> bool:
    path = Path(path)
    return (path / EVAL_FILE).exists() or (store.read_json(path / store.RUN_FILE, {}) or {}).get("kind") == "eval"


def eval_row(path: Path) -> records.EvalRow:
    """The row of `labtui evals` and the TUI: cheap (four small JSON files)."""
    path = Path(path)
    ev = store.Run(path)
    info = ev.info()
    # typed (records.py): a wrong-typed field (a hand-edited or damaged file) reads as missing
    settings = records.eval_settings(store.read_json(path / EVAL_FILE, {}))
    summary = records.eval_summary(store.read_json(path / SUMMARY_FILE, {}))
    progress = ev.progress()
    state = ev.state()
    return {
        "id": path.name,
        "path": str(path),
        "run": info.get("run"),
        "status": state.get("status") or "queued",
        "error": state.get("error"),
        "mode": settings.get("mode"),
        "device": summary.get("device") or settings.get("device_actual") or settings.get("device"),
        "checkpoint": settings.get("checkpoint"),
        store.CHECKPOINT_STEP: settings.get(store.CHECKPOINT_STEP),
        "split": settings.get("split"),
        "purpose": settings.get("purpose") or "eval",
        "n": summary.get("n", settings.get("n")),
        "done": progress.get("done"),
        "total": progress.get("total"),
        "accuracy": summary.get("accuracy"),
        "ci": summary.get("ci"),
        "macro_f1": summary.get("macro_f1"),
        "created": info.get("created"),
        "degenerate": bool(summary.get("degenerate", False)),
        "warnings": list(summary.get("warnings") or []),
        "partial": bool(summary.get("partial", False)),
    }


def list_evals(run: store.Run) -> list[records.EvalRow]:
    """The run's evaluations, oldest first (ids sort by time)."""
    return [eval_row(p) for p in run.evals() if is_eval_dir(p)]


def latest_eval(run: store.Run, completed_only: bool = True) -> records.EvalRow | None:
    """The newest evaluation of the run (parity checks left out); None if there is none."""
    for row in reversed(list_evals(run)):
        if row["purpose"] == "parity":
            continue
        if completed_only and (row["status"] != "completed" or row["accuracy"] is None):
            continue
        return row
    return None


# --- the headline eval: the one eval that stands for a run ----------------------------------------

HEADLINE_RULE = ("the completed eval of the final checkpoint; with a baseline, one with the baseline's N and "
                 "split; else the largest N on the test split; the newest of equals (or, asked for, of the best "
                 "checkpoint: the lowest eval loss)")


def finished(row: Mapping) -> bool:
    """A completed evaluation with an accuracy, not a parity check: one that can stand for its run."""
    return (row.get("purpose") != "parity" and row.get("status") == "completed"
            and isinstance(row.get("accuracy"), (int, float)))


def step_text(row: Mapping, short: bool = False) -> str:
    """`checkpoint 120`, `base model`, `checkpoint ?` (short: `step 120`, `base`)."""
    if row.get("checkpoint") == "base":
        return "base" if short else "base model"
    step = store.as_whole(row.get(store.CHECKPOINT_STEP))
    return f"{'step' if short else 'checkpoint'} {step if step is not None else '?'}"


def eval_settings_text(row: Mapping, short: bool = False) -> str:
    """`checkpoint 120, N 300, score, cpu`: what an eval evaluated, and how (the split when it is not
    test). short, for a table cell: `step 120 N300 score cpu`."""
    n = store.as_whole(row.get("n"))
    bits = [step_text(row, short), f"N{'' if short else ' '}{n if n is not None else '?'}"]
    if row.get("split") not in (None, "test"):
        bits.append(f"{'' if short else 'split '}{row.get('split')}")
    bits += [str(row.get("mode") or "?"), str(row.get("device") or "?")]
    return (" " if short else ", ").join(bits)


def comparability(row: Mapping, base: Mapping) -> str | None:
    """Why two evals cannot be paired (`N 100 vs 300`, `split eval vs test`; row first), or None when
    their N and split agree (the examples are then the first N of the same split)."""
    reasons = []
    sa, sb = row.get("split") or "test", base.get("split") or "test"
    if sa != sb:
        reasons.append(f"split {sa} vs {sb}")
    na, nb = store.as_whole(row.get("n")), store.as_whole(base.get("n"))
    if na != nb:
        reasons.append(f"N {'?' if na is None else na} vs {'?' if nb is None else nb}")
    return ", ".join(reasons) or None


def choose_headline(rows: Iterable[Mapping], base: Mapping | None = None, final_step: int | None = None,
                    against: str = "the baseline", best_step: int | None = None, prefer: str = "final") -> dict | None:
    """The headline eval among a run's eval rows (HEADLINE_RULE), as a copy of its row with `rule`, `why`
    (why this one, in words) and `not_comparable` (why it cannot be paired with `base`, or None).
    `final_step` is the run's last training step; `against` names `base` in `why`. prefer="best": the
    eval of `best_step`'s checkpoint (the lowest eval loss) where there is one, else the rule as usual."""
    cands = [dict(r) for r in rows if finished(r)]
    if not cands:
        return None
    matching = ([r for r in cands if comparability(r, base) is None and not _same_path(r, base)]
                if base is not None else [])  # an eval is not paired with itself
    pool = matching or cands
    best = store.as_whole(best_step) if prefer == "best" else None
    best_note = None
    if prefer == "best":
        at_best = [r for r in pool if best is not None and store.as_whole(r.get(store.CHECKPOINT_STEP)) == best]
        if at_best:
            pool = at_best
        else:
            best_note = ("the run recorded no eval loss, so it has no best checkpoint" if best is None
                         else f"the best checkpoint (step {best}) has no eval" + (f" with {against}'s N and split"
                                                                               if matching else ""))

    def step(r) -> int:
        s = store.as_whole(r.get(store.CHECKPOINT_STEP))
        return -1 if s is None else s

    def created(r) -> float:
        c = r.get("created")
        return float(c) if isinstance(c, (int, float)) and math.isfinite(c) else 0.0

    pick = max(pool, key=lambda r: (step(r), (r.get("split") or "test") == "test", store.as_whole(r.get("n")) or 0,
                                    created(r), str(r.get("id"))))
    top = max(step(r) for r in cands)
    final = store.as_whole(final_step)
    if pick.get("checkpoint") == "base":
        why = ["base model"]
    elif best is not None and best_note is None:
        why = [f"best checkpoint (lowest eval loss, step {best})"]
    elif final is not None and step(pick) == final:
        why = ["final checkpoint"]
    elif step(pick) == top:
        why = ["newest evaluated checkpoint" + (f" (training reached step {final})" if final and final > top else "")]
    else:
        why = [f"newest checkpoint evaluated with {against}'s N and split"]
    if base is not None and matching:
        if "with " not in why[0]:
            why.append(f"with {against}'s N and split")
    elif base is not None:
        why.append(f"no eval has {against}'s N {base.get('n')} and split {base.get('split') or 'test'}")
    else:
        same_step = [r for r in pool if step(r) == step(pick)]
        if len({(store.as_whole(r.get('n')), r.get('split') or 'test') for r in same_step}) > 1:
            why.append("the largest N on the test split")
    if sum(1 for r in pool if step(r) == step(pick) and (store.as_whole(r.get("n")), r.get("split")) ==
           (store.as_whole(pick.get("n")), pick.get("split"))) > 1:
        why.append("the newest of equals")
    if best_note:
        why.insert(0, best_note)
    pick.update(rule=HEADLINE_RULE, why=", ".join(why),
                not_comparable=comparability(pick, base) if base is not None else None)
    return pick


def _same_path(a: Mapping, b: Mapping) -> bool:
    return bool(a.get("path")) and str(a.get("path")) == str(b.get("path"))


def _as_row(x: Any) -> dict | None:
    """An eval row from a row, an eval folder or a run (its headline eval)."""
    if x is None or isinstance(x, Mapping):
        return dict(x) if x is not None else None
    if isinstance(x, store.Run):
        return headline_eval(x)
    return dict(eval_row(Path(x)))


def headline_eval(run: store.Run, baseline: Any = None, against: str = "the baseline",
                  prefer: str = "final") -> dict | None:
    """The eval that stands for `run` in History, the dashboard, `compare RUN` and `export-predictions RUN`
    (HEADLINE_RULE): its eval row with `rule`, `why` and `not_comparable`; None when the run has no
    completed eval. `baseline`: a run (its own headline eval), an eval row or an eval folder.
    prefer="best": the eval of the best checkpoint (lowest eval loss) where there is one."""
    base = None if isinstance(baseline, store.Run) and baseline.path == run.path else _as_row(baseline)
    progress = run.progress()
    return choose_headline(list_evals(run), base, store.as_whole(progress.get("step")), against,
                           store.as_whole(progress.get("best_step")), prefer)


def which_line(row: Mapping) -> str:
    """The line a CLI command prints on stderr when it resolved a run to an eval."""
    return f"using eval {row.get('id')} ({eval_settings_text(row)}): {row.get('why') or 'given'}"


def read_summary(path: Path) -> dict:
    return store.read_json(Path(path) / SUMMARY_FILE, {}) or {}


def read_settings(path: Path) -> dict:
    return store.read_json(Path(path) / EVAL_FILE, {}) or {}


# --- error kinds and the summary ----------------------------------------------------------------


def error_kind(gold: str | None, pred: str | None, choices: Iterable[str] = ("yes", "no", "maybe")) -> str:
    """One of ERROR_KINDS for a (gold, prediction) pair."""
    choices = list(choices)
    if pred is None or (isinstance(pred, str) and not pred.strip()):
        return "empty"
    if pred == gold:
        return "correct"
    if pred not in choices:
        return "unparseable"
    yes_no = {"yes", "no"}
    if pred == "maybe" and gold in yes_no:
        return "hedged_maybe"
    if pred in yes_no and gold in yes_no:
        return "yes_no_swap"
    if gold == "maybe" and pred in yes_no:
        return "missed_maybe"
    return "other"


def error_counts(records: Iterable[Mapping], choices: Iterable[str] = ("yes", "no", "maybe")) -> dict[str, int]:
    choices = list(choices)
    counts = Counter(error_kind(r.get("gold"), r.get("pred"), choices) for r in records)
    return {k: counts.get(k, 0) for k in ERROR_KINDS}


def group_by_temperature(records: Iterable[Mapping]) -> dict[Any, list[dict]]:
    """{temperature: records}, in order of first appearance (None in score mode)."""
    groups: dict[Any, list[dict]] = {}
    for r in records:
        groups.setdefault(r.get("temperature"), []).append(dict(r))
    return groups


def _temp_key(t: Any) -> str:
    return "null" if t is None else str(float(t))


def degenerate_warnings(records: Sequence[Mapping], choices: list[str]) -> list[str]:
    """Signs of broken inference: one answer above 90% of predictions (unless the gold answers are
    just as lopsided), or over 10% empty or unparseable outputs."""
    n = len(records)
    if n == 0:
        return []
    out = []
    preds = Counter(r.get("pred") or EMPTY for r in records)
    golds = Counter(r.get("gold") for r in records)
    top, k = preds.most_common(1)[0]
    share = k / n
    if top in choices and share > DEGENERATE_SHARE and golds.get(top, 0) / n <= DEGENERATE_SHARE:
        out.append(f"degenerate output: '{top}' is {share:.0%} of the {n} predictions "
                   f"(gold has {golds.get(top, 0) / n:.0%} '{top}')")
    bad = sum(v for p, v in preds.items() if p not in choices)
    if bad / n > DEGENERATE_BAD:
        empty = preds.get(EMPTY, 0)
        out.append(f"degenerate output: {bad / n:.0%} of the outputs are empty or unparseable "
                   f"({empty} empty, {bad - empty} unparseable)")
    return out


def _accuracy_block(records: Sequence[Mapping], choices: list[str]) -> dict:
    n = len(records)
    k = sum(1 for r in records if r.get("correct"))
    return {
        "n": n,
        "accuracy": k / n if n else None,
        "ci": list(stats.wilson_interval(k, n)),
        "errors": error_counts(records, choices),
    }


def summarize(records: list[Mapping], choices: Iterable[str] = ("yes", "no", "maybe"), *,
              mode: str = "score", device: str | None = None, device_name: str | None = None,
              checkpoint: str | None = None, checkpoint_step: int | None = None, wall_s: float | None = None,
              tokens: int | None = None, rerun_command: str | None = None, partial: bool = False,
              created: float | None = None) -> dict:
    """summary.json from prediction records. In generate mode the top-level numbers are those of
    the first temperature; every temperature gets its own entry in `per_temperature`."""
    choices = list(choices)
    groups = group_by_temperature(records)
    first = next(iter(groups.values()), [])
    head = _accuracy_block(first, choices)
    gold = [r.get("gold") for r in first]
    pred = [r.get("pred") if r.get("pred") is not None else EMPTY for r in first]
    warnings = degenerate_warnings(first, choices)
    degenerate = bool(warnings)
    on_gpu = bool(device and str(device).startswith("cuda"))
    if degenerate and on_gpu:
        hint = ("this eval ran on the GPU, where a broken inference stack gives exactly this pattern; "
                "re-run it on the CPU and compare")
        warnings.append(hint + (f": {rerun_command}" if rerun_command else " (labtui eval RUN --device cpu)"))
    per_temperature = {}
    if mode == "generate":
        for t, recs in groups.items():
            block = _accuracy_block(recs, choices)
            w = degenerate_warnings(recs, choices)
            per_temperature[_temp_key(t)] = {**block, "warnings": w}
            if recs is not first and w:
                warnings.extend(f"at temperature {t}: {x}" for x in w)
    if partial:
        warnings.insert(0, f"partial: stopped after {len(first)} examples")
    total = len(records)
    return {
        "n": head["n"],
        "accuracy": head["accuracy"],
        "ci": head["ci"],
        "macro_f1": stats.macro_f1(gold, pred, choices) if first else None,
        "confusion": stats.confusion_matrix(gold, pred, choices),
        "labels": choices,
        "errors": head["errors"],
        "pred_counts": dict(Counter(pred)),
        "gold_counts": dict(Counter(gold)),
        "tokens": tokens,
        store.TOKENS_PER_S: tokens / wall_s if tokens and wall_s else None,
        "examples_per_s": total / wall_s if wall_s else None,
        "wall_s": wall_s,
        "warnings": warnings,
        "degenerate": degenerate,
        "suggest_cpu_rerun": degenerate and on_gpu,
        "cpu_rerun_command": rerun_command if degenerate and on_gpu else None,
        "device": device,
        "device_name": device_name,
        "mode": mode,
        "checkpoint": checkpoint,
        store.CHECKPOINT_STEP: checkpoint_step,
        "per_temperature": per_temperature,
        "temperatures": [t for t in groups],
        "partial": partial,
        "created": created if created is not None else time.time(),
    }


# --- predictions from any source ----------------------------------------------------------------


def _read_json_file(path: Path) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise EvalNotFound(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EvalNotFound(f"{path}: not valid JSON ({e})") from None


def load_gold(path: str | Path) -> dict[str, str]:
    """Gold answers: PubMedQA's `test_ground_truth.json` {PMID: label}, its `ori_pqal.json`
    {PMID: {final_decision, ...}}, or a JSONL file with id and gold (or answer)."""
    path = Path(path)
    if path.suffix == ".jsonl":
        out = {}
        for r in _read_jsonl(path):
            label = r.get("gold", r.get("answer"))
            if "id" not in r or label is None:
                raise EvalNotFound(f"{path}: JSONL gold records need id and gold (or answer)")
            out[str(r["id"])] = _label(label)
        return out
    data = _read_json_file(path)
    if not isinstance(data, dict) or not data:
        raise EvalNotFound(f"{path}: expected a gold file like PubMedQA's test_ground_truth.json, {{PMID: label}}")
    out = {}
    for k, v in data.items():
        if isinstance(v, dict):
            if "final_decision" not in v:
                raise EvalNotFound(f"{path}: entry {k} has no final_decision; expected {{PMID: label}}")
            v = v["final_decision"]
        out[str(k)] = _label(v)
    return out


def _label(x: Any) -> str:
    return EMPTY if x is None else str(x).strip().lower()


def _read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        raise EvalNotFound(f"{path}: no such file")
    reader = store.JsonlReader(path)
    rows = reader.read_new()
    if reader.corrupt:
        raise EvalNotFound(f"{path}: {reader.corrupt} line(s) are not JSON objects")
    return rows


def _finish(records: dict[str, dict], gold: Mapping[str, str] | None, where: str) -> dict[str, dict]:
    if gold is not None:
        unknown = [i for i in records if i not in gold]
        if unknown:
            raise EvalNotFound(f"{where}: {len(unknown)} predicted id(s) are not in the gold file (e.g. {unknown[0]})")
        for i, r in records.items():
            r["gold"] = gold[i]
    for i, r in records.items():
        if r.get("gold") is None:
            raise EvalNotFound(f"{where}: example {i} has no gold answer; give the answers with --gold FILE")
        r["correct"] = r.get("pred") == r["gold"]
    return records


def load_predictions(source: str | Path | store.Run, gold: str | Path | Mapping[str, str] | None = None,
                     temperature: float | None = None) -> dict[str, dict]:
    """{id: record} from an eval dir, a run (its headline eval), a JSONL file with id/gold/pred,
    or a PubMedQA official file {PMID: label} (then `gold` is needed). Records of the first
    temperature unless `temperature` is given. `correct` is recomputed as pred == gold."""
    gold_map = load_gold(gold) if isinstance(gold, (str, Path)) else gold
    path = _source_path(source)
    if path.is_dir():
        path = _eval_dir(path)
        pred_file = path / PREDICTIONS_FILE
        if not pred_file.exists():
            raise EvalNotFound(f"{path}: no {PREDICTIONS_FILE} (is the eval still running, or did it fail? see its worker.log)")
        return _from_records(_read_jsonl(pred_file), gold_map, temperature, str(pred_file))
    if path.suffix == ".jsonl":
        return _from_records(_read_jsonl(path), gold_map, temperature, str(path))
    data = _read_json_file(path)
    if isinstance(data, dict) and all(isinstance(v, (str, type(None))) for v in data.values()):
        if gold_map is None:
            raise EvalNotFound(f"{path}: a PubMedQA-format prediction file {{PMID: label}} has no gold answers; "
                               f"add --gold test_ground_truth.json")
        records = {str(k): {"id": str(k), "pred": _label(v), "raw": v} for k, v in data.items()}
        return _finish(records, gold_map, str(path))
    if isinstance(data, list):
        return _from_records(data, gold_map, temperature, str(path))
    raise EvalNotFound(f"{path}: not a predictions file (JSONL with id/gold/pred, or {{PMID: label}} with --gold)")


def _from_records(rows: list[dict], gold: Mapping[str, str] | None, temperature: float | None, where: str) -> dict[str, dict]:
    if not rows:
        raise EvalNotFound(f"{where}: no predictions")
    groups = group_by_temperature(rows)
    if temperature is None:
        chosen = next(iter(groups.values()))
    else:
        match = [k for k in groups if k is not None and math.isclose(float(k), float(temperature))]
        if not match:
            have = ", ".join(_temp_key(k) for k in groups)
            raise EvalNotFound(f"{where}: no predictions at temperature {temperature} (it has {have})")
        chosen = groups[match[0]]
    records: dict[str, dict] = {}
    for n, r in enumerate(chosen, 1):
        if "id" not in r or "pred" not in r:
            raise EvalNotFound(f"{where}: record {n} needs id and pred")
        rec = dict(r)
        rec["id"] = str(r["id"])
        rec["pred"] = EMPTY if r["pred"] is None else str(r["pred"])
        if rec.get("gold") is not None:
            rec["gold"] = _label(rec["gold"])
        if rec["id"] in records:
            raise EvalNotFound(f"{where}: example id {rec['id']} appears twice")
        records[rec["id"]] = rec
    return _finish(records, gold, where)


# --- comparing two sources ----------------------------------------------------------------------


def source_name(source: Any) -> str:
    if isinstance(source, store.Run):
        return source.id
    p = Path(source)
    if is_eval_dir(p):
        run = (store.read_json(p / store.RUN_FILE, {}) or {}).get("run")
        return f"{run}/{p.name}" if run else p.name
    return p.name


def _labels_for(golds: set) -> list[str]:
    """The answer classes: yes, no, maybe, then any other gold answer, sorted."""
    seen = dict.fromkeys(["yes", "no", "maybe"])
    return [*seen, *sorted(x for x in golds - set(seen) if x)]


def compare_sources(a: Any, b: Any, gold: str | Path | Mapping[str, str] | None = None, method: str = "exact",
                    temperature: float | None = None, ci: str = "wald", flips: bool = False) -> dict:
    """compare_columns of two prediction sources (anything load_predictions takes, or {id: record}
    as it gives them). A run stands for its headline eval (headline_pair); an eval folder is read
    from its columns file when no gold file or temperature is given (nor `flips`). Raises
    stats.UnpairedError when the example ids differ. flips=True adds `flips`, the discordant examples
    (flipped_examples)."""
    if not isinstance(a, Mapping) and not isinstance(b, Mapping):
        a, b, _, _ = headline_pair(a, b)
    ca = cb = None
    if not flips and gold is None and temperature is None and not isinstance(a, Mapping) and not isinstance(b, Mapping):
        ca, cb = columns(a), columns(b)
    recs: list[Mapping[str, Mapping]] = []
    if ca is None or cb is None:
        gold_map = load_gold(gold) if isinstance(gold, (str, Path)) else gold
        recs = [x if isinstance(x, Mapping) else load_predictions(x, gold_map, temperature) for x in (a, b)]
        ca, cb = (Columns.from_records(r) for r in recs)
    result = compare_columns(ca, cb, source_name(a) if not isinstance(a, Mapping) else "A",
                             source_name(b) if not isinstance(b, Mapping) else "B", method, ci, flip_ids=flips)
    if flips:
        ids = result.pop("flip_ids")
        asked = {i for side in ids.values() for i in side}
        known = _questions(a, asked, gold)  # A's data set; B's for what it lacks
        if asked - set(known):
            known = {**_questions(b, asked - set(known), gold), **known}
        result["flips"] = {k: [flipped_example(recs[0][i], recs[1][i], known.get(i)) for i in ids[k]] for k in ids}
    return result


def _unpaired(e: Exception, n_a: int, n_b: int) -> stats.UnpairedError:
    return stats.UnpairedError(f"{e} (A has {n_a} examples, B has {n_b}: evaluate both with the same "
                               f"--n and --split)")


def _warn_gold(result: dict, count: int, first: str | None) -> None:
    if count:
        result["verdict"] += (f" Warning: the gold answers differ for {count} example(s) "
                              f"(e.g. {first}); were both evaluated on the same data?")


# --- predictions as columns: compare without parsing every record ----------------------------------


class Columns:
    """An eval's predictions as `load_predictions(eval_dir)` gives them (the first temperature,
    `correct` = pred == gold), kept as columns: ids in file order, and gold and pred as codes into
    `labels`."""

    def __init__(self, ids: list[str], labels: list[str], gold, pred):
        import numpy as np

        self.ids = ids
        self.labels = labels
        self.gold = np.asarray(gold, dtype=np.int32)
        self.pred = np.asarray(pred, dtype=np.int32)

    @classmethod
    def from_records(cls, records: Mapping[str, Mapping]) -> "Columns":
        table: dict[str, int] = {}
        ids, gold, pred = [], [], []
        for i, r in records.items():
            ids.append(i)
            gold.append(table.setdefault(r["gold"], len(table)))
            pred.append(table.setdefault(r["pred"], len(table)))
        return cls(ids, list(table), gold, pred)

    def recode(self, labels: list[str]):
        """(gold, pred) as codes into `labels`, which must hold every label of this set."""
        import numpy as np

        to = np.array([labels.index(x) for x in self.labels] or [0], dtype=np.int32)
        return to[self.gold], to[self.pred]

    def to_value(self) -> dict:
        """The columns as JSON values (the answers' codes in base64), for the cache."""
        import base64

        def b64(a) -> str:
            return base64.b64encode(a.astype("<i4").tobytes()).decode("ascii")

        return {"labels": self.labels, "ids": self.ids, "gold": b64(self.gold), "pred": b64(self.pred)}

    @classmethod
    def from_value(cls, d: Any) -> "Columns | None":
        """to_value's columns back, or None when `d` is not well-formed."""
        import base64

        import numpy as np

        try:
            gold = np.frombuffer(base64.b64decode(d["gold"]), dtype="<i4")
            pred = np.frombuffer(base64.b64decode(d["pred"]), dtype="<i4")
            ids, labels = d["ids"], d["labels"]
            n = len(ids)
            if not (isinstance(ids, list) and isinstance(labels, list) and len(gold) == len(pred) == n
                    and all(isinstance(x, str) for x in labels)
                    and (n == 0 or (0 <= min(gold.min(), pred.min()) and max(gold.max(), pred.max()) < len(labels)))):
                return None
            return cls(ids, labels, gold, pred)
        except (ValueError, KeyError, TypeError, AttributeError):
            return None


def _source_path(source: Any) -> Path:
    return source.path if isinstance(source, store.Run) else Path(source)


def _eval_dir(path: Path) -> Path:
    """A folder as given, or for a run folder its headline eval (EvalNotFound if it has none)."""
    if not is_eval_dir(path) and (path / store.RUN_FILE).exists():
        return Path(_headline_or_raise(store.Run(path))["path"])
    return path


def _headline_or_raise(run: store.Run, baseline: Any = None, against: str = "the baseline") -> dict:
    row = headline_eval(run, baseline, against)
    if row is None:
        raise EvalNotFound(f"run {run.id} has no completed evaluation; start one with `labtui eval {run.id}`")
    return row


def _run_of(source: Any) -> store.Run | None:
    """The run when a source is a run (or a run folder), else None (an eval folder, a file, records)."""
    if isinstance(source, store.Run):
        return source
    if isinstance(source, (str, Path)):
        p = Path(source)
        if p.is_dir() and not is_eval_dir(p) and (p / store.RUN_FILE).exists():
            return store.Run(p)
    return None


def headline_pair(a: Any, b: Any) -> tuple[Any, Any, dict | None, dict | None]:
    """Two comparison sources with each run replaced by its headline eval folder, chosen to pair with
    the other side (a given eval, or A's headline eval when both are runs): (a, b, headline row of
    a or None, headline row of b or None). EvalNotFound when a run has no completed eval."""
    ra, rb = _run_of(a), _run_of(b)
    ha = hb = None
    if ra is not None and rb is not None:
        ha = _headline_or_raise(ra)
        hb = _headline_or_raise(rb, ha, "A")
    elif ra is not None:
        ha = _headline_or_raise(ra, eval_row(Path(b)) if _is_eval_source(b) else None, "B")
    elif rb is not None:
        hb = _headline_or_raise(rb, eval_row(Path(a)) if _is_eval_source(a) else None, "A")
    return (Path(ha["path"]) if ha else a, Path(hb["path"]) if hb else b, ha, hb)


def _is_eval_source(x: Any) -> bool:
    return isinstance(x, (str, Path)) and Path(x).is_dir() and is_eval_dir(Path(x))


def columns_cache(eval_dir: Path) -> cache.Store | None:
    """The cache store of an eval's columns, `logs/.labtui-cache/columns/<run-id>/<eval-id>.json`, for
    an eval inside a workspace (logs/<run-id>/evals/<eval-id>/); None for one elsewhere (its columns
    are read for each compare)."""
    if eval_dir.parent.name != store.EVALS_DIR:
        return None
    return cache.Store(eval_dir.parents[2], f"columns/{eval_dir.parents[1].name}/{eval_dir.name}", COLUMNS_VERSION)


def columns(source: Any) -> Columns | None:
    """The columns of an eval directory (or of a run's headline eval), from the columns cache when
    it was made from this predictions.jsonl (its stamp), else read once and the cache (re)written.
    None for anything else (a JSONL or PubMedQA file: read those with load_predictions)."""
    path = _source_path(source)
    if not path.is_dir():
        return None
    try:
        path = _eval_dir(path)
    except EvalNotFound:  # a run without a finished eval: load_predictions says so
        return None
    if not is_eval_dir(path):
        return None
    key = cache.stamps([path / PREDICTIONS_FILE])
    if key[0] is None:
        return None
    kept = columns_cache(path)
    cached = Columns.from_value(kept.get("", key)) if kept is not None else None
    if cached is not None:
        return cached
    cols = Columns.from_records(load_predictions(path))
    if kept is not None:
        kept.put("", key, cols.to_value())
        kept.save()  # a read-only workspace: columns for this process only
    return cols


def compare_columns(ca: Columns, cb: Columns, name_a: str = "A", name_b: str = "B", method: str = "exact",
                    ci: str = "wald", flip_ids: bool = False) -> dict:
    """The one paired comparison of two evals' predictions (B minus A), paired by example id:
    stats.compare_paired of their correctness (pred == gold) plus, for display: name_a, name_b,
    labels (the answer classes), errors_a, errors_b, macro_f1_a, macro_f1_b, gold_mismatch (a
    warning in the verdict when the gold answers differ). ci: the difference's interval, "wald" or
    "bootstrap" (stats.compare_paired; `diff_ci_method` says which). flip_ids=True adds `flip_ids`, the ids of
    McNemar's discordant pairs in A's order: {"b": A right and B wrong, "c": A wrong and B right}.
    Raises stats.UnpairedError when the example ids differ."""
    import numpy as np

    if ca.ids != cb.ids:  # not the same examples in the same order
        if len(ca.ids) != len(cb.ids) or set(ca.ids) != set(cb.ids):
            try:
                stats.paired(dict.fromkeys(ca.ids, True), dict.fromkeys(cb.ids, True))
            except stats.UnpairedError as e:
                raise _unpaired(e, len(ca.ids), len(cb.ids)) from None
        pos = {i: k for k, i in enumerate(cb.ids)}
        order = np.fromiter((pos[i] for i in ca.ids), dtype=np.int64, count=len(ca.ids))
        cb = Columns(ca.ids, cb.labels, cb.gold[order], cb.pred[order])
    table = list(dict.fromkeys([*ca.labels, *cb.labels]))
    ga, pa = ca.recode(table)
    gb, pb = cb.recode(table)
    result = stats.compare_paired(ga == pa, gb == pb, method=method, ci=ci)
    labels = _labels_for({table[k] for k in np.unique(np.concatenate([ga, gb]))})
    mismatch = np.flatnonzero(ga != gb)
    result.update(
        name_a=name_a, name_b=name_b, labels=labels,
        errors_a=_error_counts_coded(ga, pa, table, labels),
        errors_b=_error_counts_coded(gb, pb, table, labels),
        macro_f1_a=stats.macro_f1_counts(_pair_counts(ga, pa, table), labels),
        macro_f1_b=stats.macro_f1_counts(_pair_counts(gb, pb, table), labels),
        gold_mismatch=int(mismatch.size),
    )
    _warn_gold(result, int(mismatch.size), ca.ids[mismatch[0]] if mismatch.size else None)
    if flip_ids:
        right_a, right_b = ga == pa, gb == pb
        result["flip_ids"] = {"b": [ca.ids[k] for k in np.flatnonzero(right_a & ~right_b)],
                              "c": [ca.ids[k] for k in np.flatnonzero(~right_a & right_b)]}
    return result


# --- the flipped examples: why B won (or lost) -------------------------------------------------------


def loglik_margin(record: Mapping) -> float | None:
    """Score mode: the gold answer's log-likelihood minus the best other choice's (`loglik` of a
    predictions record): positive when the example is right, and by how much; None without logliks
    (generate mode, a predictions file) or when the gold answer was not scored."""
    ll, gold = record.get("loglik"), record.get("gold")
    if not isinstance(ll, Mapping) or gold not in ll:
        return None
    try:
        others = [float(v) for k, v in ll.items() if k != gold]
        return float(ll[gold]) - max(others) if others else None
    except (TypeError, ValueError):
        return None


def flipped_example(rec_a: Mapping, rec_b: Mapping, question: str | None = None) -> dict:
    """One discordant example of a comparison, as `compare --flips` and the Compare screen list it:
    id, question (None when the data set cannot be read), gold (A's), pred_a, pred_b, margin_a, margin_b
    (loglik_margin; None outside score mode)."""
    return {"id": str(rec_a.get("id")), "question": question if question is not None else rec_a.get("question"),
            "gold": rec_a.get("gold"), "pred_a": rec_a.get("pred"), "pred_b": rec_b.get("pred"),
            "margin_a": loglik_margin(rec_a), "margin_b": loglik_margin(rec_b)}


def _questions(source: Any, ids: set[str], gold: Any = None) -> dict[str, str]:
    """{id: question} for `ids` from the data set an eval folder was evaluated on (its config.yaml's
    dataset, relative to its run.json's workspace: PubMedQA's ori_pqal.json QUESTION, or jsonl_qa's
    question), else from a --gold file in ori_pqal.json's format; {} when neither can be read (the
    hub format, a moved file, a predictions file)."""
    if not ids:
        return {}
    out: dict[str, str] = {}
    path = _source_path(source) if isinstance(source, (str, Path, store.Run)) else None
    if path is not None and path.is_dir() and is_eval_dir(path):
        ev = store.Run(path)
        ds = (ev.config() or store.Run(path.parents[1]).config()).get("dataset") or {}  # else the run's
        root = Path(str(ev.info().get("workspace") or path.parents[2].parent))
        data = resolve_path(ds.get("path"), root) if isinstance(ds.get("path"), str) else None
        if data is not None and ds.get("format") in ("pubmedqa", "jsonl_qa"):
            out = _questions_in(data, ds["format"], ids)
    if not out and isinstance(gold, (str, Path)) and Path(gold).suffix == ".json":
        out = _questions_in(Path(gold), "pubmedqa", ids)
    return out


def _questions_in(path: Path, fmt: str, ids: set[str]) -> dict[str, str]:
    try:
        if fmt == "pubmedqa":
            data = _read_json_file(path)
            items = data.items() if isinstance(data, dict) else ()
            return {str(k): str(v["QUESTION"]) for k, v in items
                    if str(k) in ids and isinstance(v, dict) and isinstance(v.get("QUESTION"), str)}
        out = {}
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):  # ids as the loader numbers lines without one
                if line.strip():
                    row = json.loads(line)
                    i = str(row.get("id", n)) if isinstance(row, dict) else None
                    if i in ids and isinstance(row.get("question"), str):
                        out[i] = row["question"]
        return out
    except (EvalNotFound, OSError, ValueError, AttributeError):
        return {}


def _pair_counts(gold, pred, table: list[str]) -> dict[tuple[str, str], int]:
    import numpy as np

    n = len(table)
    counts = np.bincount(gold.astype(np.int64) * n + pred, minlength=n * n)
    return {(table[k // n], table[k % n]): int(c) for k, c in enumerate(counts) if c}


def _error_counts_coded(gold, pred, table: list[str], labels: list[str]) -> dict[str, int]:
    counts: Counter = Counter()
    for (g, p), k in _pair_counts(gold, pred, table).items():
        counts[error_kind(g, p, labels)] += k
    return {k: counts.get(k, 0) for k in ERROR_KINDS}


# --- finding evals by reference ------------------------------------------------------------------


def all_evals(ws: store.Workspace) -> list[Path]:
    return [p for run in ws.iter_runs() for p in run.evals() if is_eval_dir(p)]


def find_eval(ws: store.Workspace, ref: str) -> Path:
    """An eval by `RUN/EVAL` (each a unique prefix), a full or unique-prefix eval id, or a path."""
    p = Path(ref)
    if p.is_dir() and is_eval_dir(p):
        return p.resolve()
    if "/" in ref and not p.exists():
        run_ref, _, eval_ref = ref.partition("/")
        try:
            run = ws.run(run_ref)
        except store.RunNotFound as e:
            raise EvalNotFound(str(e)) from None
        return _pick(run.evals(), eval_ref, f"run {run.id}")
    return _pick(all_evals(ws), ref, str(ws.logs))


def _pick(paths: list[Path], ref: str, where: str) -> Path:
    matches = store.matching(paths, ref, lambda p: p.name)
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise EvalNotFound(f"no eval '{ref}' in {where} (list them with `labtui evals`)")
    names = ", ".join(m.name for m in matches[:5])
    raise EvalNotFound(f"eval '{ref}' is ambiguous in {where}: {names}")


def resolve_ref(ws: store.Workspace, ref: str) -> Path | store.Run:
    """What `labtui compare` takes: a predictions file or eval folder (a Path), a run folder, run id
    (unique prefix, or `last`) (the store.Run: headline_pair or headline_eval picks its eval), `RUN/EVAL`,
    or an eval id (unique prefix)."""
    p = Path(ref)
    if p.exists():
        return _run_of(p.resolve()) or p.resolve()
    if "/" in ref:
        return find_eval(ws, ref)
    try:
        return ws.run(ref)
    except store.RunNotFound as run_err:
        try:
            return find_eval(ws, ref)
        except EvalNotFound as eval_err:
            if "ambiguous" in str(eval_err):  # several evals start so: say which
                raise
            raise EvalNotFound(f"'{ref}' is not a file, a run or an eval: {run_err}") from None


def resolve_with_why(ws: store.Workspace, ref: str, against: Any = None) -> tuple[Path, dict | None]:
    """resolve_ref with a run replaced by its headline eval (paired with `against` when given): the
    path, and the headline row (with `why`) when a run was resolved, else None."""
    src = resolve_ref(ws, ref)
    if isinstance(src, store.Run):
        row = _headline_or_raise(src, against)
        return Path(row["path"]), row
    return src, None


def resolve_source(ws: store.Workspace, ref: str, against: Any = None) -> Path:
    """resolve_with_why's path: a run becomes its headline eval folder."""
    return resolve_with_why(ws, ref, against)[0]
