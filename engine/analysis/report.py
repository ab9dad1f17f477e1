"""`labtui report`: the chosen runs' evaluations against the baseline, as a table ready to publish.

One row per evaluation (a run stands for its headline eval, evalstore.headline_eval, paired with the
baseline's as History and `labtui compare` pair them): accuracy with its 95% Wilson interval, the
difference from the baseline with its paired interval (Wald, or the paired bootstrap), McNemar's exact
p and the Holm-adjusted p over the family of comparisons in the report, Cohen's h, macro-F1, the error
kinds, the run's last losses, its duration and notes. `build` makes the report as plain data (what
`--format json` prints); `markdown`, `html` and `csv` render it. The figures are drawn by
report_figures (matplotlib, imported only there and only when drawing).
"""

from __future__ import annotations

import csv
import html as html_lib
import io
import math
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from labtui.engine.analysis import baseline as baseline_mark
from labtui.engine.analysis import evalstore, stats
from labtui.engine.config.experiment import ConfigError
from labtui.engine.rundir import fmt, store

FORMATS = ("md", "html", "csv", "json")
SUFFIX = {"md": ".md", "html": ".html", "csv": ".csv", "json": ".json"}
ERROR_NAMES = {"hedged_maybe": "hedged maybe", "yes_no_swap": "yes/no swap", "missed_maybe": "missed maybe"}
COLUMNS = ("experiment", "changed", "step", "N", "accuracy [95% CI]", "Δ points [95% CI]", "McNemar p",
           "Holm p", "Cohen's h", "macro-F1", "errors", "loss", "eval loss", "duration", "notes")
CSV_FIELDS = ("experiment", "run", "eval", "is_baseline", "changed", "changed_vs", "checkpoint_step", "n", "accuracy", "ci_low",
              "ci_high", "diff", "diff_ci_low", "diff_ci_high", "diff_ci_method", "mcnemar_p", "holm_p", "significant",
              "cohens_h", "macro_f1", "errors", "train_loss", "eval_loss", "duration_s", "notes", "not_comparable")


class ReportError(ConfigError):
    """Bad input for a report (no evaluations, an unusable reference): `labtui: error: ...`, exit 2."""


# --- choosing the evaluations -------------------------------------------------------------------------


def _run_of_eval(path: Path) -> store.Run | None:
    run_id = (store.read_json(path / store.RUN_FILE, {}) or {}).get("run")
    folder = path.parent.parent
    return store.Run(folder) if run_id and (folder / store.RUN_FILE).is_file() else None


def _eval_entry(path: Path, why: str) -> dict:
    row = dict(evalstore.eval_row(path))
    if not evalstore.finished(row):
        raise ReportError(f"eval {path.name} is not a completed evaluation ({row.get('status')}): a report takes "
                          f"completed evals (see `labtui evals`)")
    row.setdefault("why", why)
    return row


def _resolve(ws: store.Workspace, ref: str, base: Mapping | None) -> tuple[store.Run | None, dict]:
    """A run (its headline eval, paired with the baseline's) or an eval: (run, eval row)."""
    src = evalstore.resolve_ref(ws, ref)
    if isinstance(src, store.Run):
        row = evalstore.headline_eval(src, base)
        if row is None:
            raise ReportError(f"run {src.id} has no completed evaluation; start one with `labtui eval {src.id}`")
        return src, row
    path = Path(src)
    if not (path.is_dir() and evalstore.is_eval_dir(path)):
        raise ReportError(f"{ref} is a predictions file: a report takes runs and evaluations (`labtui compare` "
                          f"takes files)")
    return _run_of_eval(path), _eval_entry(path, "given")


def group_runs(ws: store.Workspace, group: str) -> list[store.Run]:
    """The runs of one group (a `labtui sweep`'s), oldest first; ReportError naming the groups there are
    when none has this name."""
    runs = sorted(ws.runs_in_group(group), key=store.creation_order)
    if not runs:
        names = sorted({g for r in ws.iter_runs() if isinstance(g := r.info().get("group"), str) and g})
        there = f"the groups here: {', '.join(names)}" if names else "no run here has a group (`labtui sweep` makes one)"
        raise ReportError(f"no runs in group {group!r} in {ws.logs}; {there}")
    return runs


def not_evaluated_why(run: store.Run) -> str:
    """Why a run has no completed evaluation to report, in a few words: `queued`, `evaluation running`..."""
    evals = [e for e in evalstore.list_evals(run) if e.get("purpose") != "parity"]
    live = [e for e in evals if e.get("status") in store.LIVE]
    if live:
        return f"evaluation {live[-1].get('status')}"
    status = run.state().get("status") or "?"
    if status == "completed":
        return f"trained, evaluation {evals[-1].get('status')}" if evals else "trained, not evaluated"
    return str(status)


def choose(ws: store.Workspace, refs: Iterable[str] = (), baseline: str | None = None, group: str | None = None
           ) -> tuple[tuple[store.Run | None, dict] | None, list[tuple[store.Run | None, dict]], str, list[dict]]:
    """(the baseline's (run, eval row) or None, the chosen (run, eval row)s, a note on the baseline, the runs
    skipped: [{run, why}]).

    refs: runs (their headline evals) and evals; none: every run with a completed eval, oldest first.
    group: the runs of that group instead (those without a completed eval are skipped, and said so).
    baseline: a run or an eval; None: the workspace's baseline mark (History's), when it has an eval."""
    note = ""
    base = None
    if baseline:
        base = _resolve(ws, baseline, None)
    else:
        marked = baseline_mark.get(ws)
        if marked:
            try:
                marked_run = ws.run(marked)
            except store.RunNotFound:
                note = f"the baseline mark names run {marked}, which is gone"
            else:
                marked_row = evalstore.headline_eval(marked_run)
                if marked_row is None:
                    note = f"the baseline {marked} has no completed evaluation"
                else:
                    base = (marked_run, marked_row)
        else:
            note = "no baseline: mark one in History (b) or pass --baseline RUN"
    base_row = base[1] if base else None
    chosen: list[tuple[store.Run | None, dict]] = []
    skipped: list[dict] = []
    refs = list(refs)
    if group is not None:
        members = group_runs(ws, group)
        for each in members:
            headline = evalstore.headline_eval(each, base_row)
            if headline is not None:
                chosen.append((each, headline))
            else:
                skipped.append({"run": each.id, "why": not_evaluated_why(each)})
        if not chosen:
            raise ReportError(f"none of the {len(members)} run(s) of group {group!r} has a completed evaluation yet: "
                              + ", ".join(f"{s['run']} ({s['why']})" for s in skipped))
    elif refs:
        chosen = [_resolve(ws, ref, base_row) for ref in refs]
    else:
        for each in sorted(ws.iter_runs(), key=store.creation_order):
            headline = evalstore.headline_eval(each, base_row)
            if headline is not None:
                chosen.append((each, headline))
    if not chosen and base is None:
        raise ReportError(f"no completed evaluations in {ws.logs}: evaluate a run first (`labtui eval RUN`)")
    seen = {str(base_row["path"])} if base_row else set()
    unique: list[tuple[store.Run | None, dict]] = []
    for run, row in chosen:
        if str(row["path"]) not in seen:
            seen.add(str(row["path"]))
            unique.append((run, row))
    return base, unique, note, skipped


# --- the report as data ----------------------------------------------------------------------------------


def _last(records: list[dict], kind: str, key: str) -> float | None:
    for rec in reversed(records):
        if rec.get("kind") == kind:
            v = store.as_finite(rec.get(key))
            if v is not None:
                return v
    return None


def _run_fields(run: store.Run | None, now: float) -> dict:
    if run is None:
        return {"run": None, "experiment": None, "group": None, "changed": {}, "changed_vs": None, "train_loss": None,
                "eval_loss": None, "duration_s": None, "notes": "", "run_dir": None}
    info, state = run.info(), run.state()
    history = store.metrics_history(run)
    started = store.as_finite(state.get("started"))
    ended = store.as_finite(state.get("ended"))
    return {
        "run": run.id, "experiment": info.get("experiment") or run.id, "group": info.get("group") or None,
        "changed": store.as_changed(info.get("changed")) or {},
        "changed_vs": "parent" if store.as_changed(info.get("changed")) else None,
        "train_loss": _last(history, "train", "loss"), "eval_loss": _last(history, "eval", "eval_loss"),
        "duration_s": ((ended or now) - started) if started else None,
        "notes": run.notes().strip(), "run_dir": str(run.path),
    }


def _row(run: store.Run | None, ev: Mapping, now: float, is_baseline: bool) -> dict:
    summary = evalstore.read_summary(Path(ev["path"]))
    step = "base" if ev.get("checkpoint") == "base" else store.as_whole(ev.get(store.CHECKPOINT_STEP))
    row = {**_run_fields(run, now), "eval": ev["id"], "eval_dir": str(ev["path"]), "is_baseline": is_baseline,
           "evaluated": evalstore.eval_settings_text(ev), "checkpoint_step": step, "n": ev.get("n"),
           "accuracy": ev.get("accuracy"), "ci": list(ev["ci"]) if ev.get("ci") else None,
           "macro_f1": summary.get("macro_f1"), "errors": dict(summary.get("errors") or {}),
           "labels": list(summary.get("labels") or []), "confusion": summary.get("confusion") or {},
           "diff": None, "diff_ci": None, "diff_ci_method": None, "mcnemar_p": None, "holm_p": None,
           "significant": None, "cohens_h": None, "b": None, "c": None, "verdict": "", "not_comparable": None}
    if row["experiment"] is None:
        row["experiment"] = ev.get("run") or ev["id"]
    row["label"] = label(row)
    return row


def label(row: Mapping) -> str:
    """The row's name in the table and the figures: the experiment, or for a run of a group `GROUP·tail`
    (a sweep's runs share their experiment), as the run list and History name it."""
    if row.get("group") and row.get("run"):
        return fmt.run_label(str(row["run"]), row.get("experiment"), row["group"])
    return str(row.get("experiment") or "-")


def build(ws: store.Workspace, refs: Iterable[str] = (), baseline: str | None = None, ci: str = "wald",
          now: float | None = None, group: str | None = None) -> dict:
    """The report as JSON-able data: {created, workspace, group, family, ci_method, note, skipped, rows}.
    group: the runs of that group against the baseline, the Holm family being exactly their comparisons.
    Raises ReportError (or evalstore.EvalNotFound) for bad references and when there is nothing to report."""
    if ci not in stats.DIFF_CI_METHODS:
        raise ReportError(f"unknown interval {ci!r} (use wald or bootstrap)")
    now = time.time() if now is None else now
    base, chosen, note, skipped = choose(ws, refs, baseline, group)
    rows = []
    if base is not None:
        rows.append(_row(base[0], base[1], now, True))
    base_dir = Path(base[1]["path"]) if base else None
    for run, ev in chosen:
        row = _row(run, ev, now, False)
        if base is not None:
            _compare_into(row, base[1], base_dir, ev, ci)
            if not row["changed"] and run is not None and base[0] is not None and run.path != base[0].path:
                row.update(changed=_config_changes(base[0], run), changed_vs="baseline")
        rows.append(row)
    compared = [r for r in rows if r["mcnemar_p"] is not None]
    for r, adjusted in zip(compared, stats.holm([r["mcnemar_p"] for r in compared])):
        r["holm_p"] = adjusted
        r["significant"] = adjusted is not None and adjusted < stats.ALPHA
    base_name = rows[0]["label"] if base else None
    if base:
        text = (f"{len(compared)} comparison{'' if len(compared) == 1 else 's'} vs ★ {base_name} baseline, Holm"
                + (f", group {group}" if group is not None else ""))
    else:
        text = note if group is None else f"group {group}: {note}"
    family = {"size": len(compared), "method": "holm", "baseline_run": base[1].get("run") if base else None,
              "baseline_eval": base[1]["id"] if base else None, "group": group, "text": text}
    return {"created": now, "workspace": str(ws.root), "group": group, "family": family,
            "ci_method": stats.bootstrap_method() if ci == "bootstrap" else stats.DIFF_CI_METHOD,
            "note": note, "skipped": skipped, "rows": rows}


def _config_changes(base: store.Run, run: store.Run) -> dict:
    """{key: [baseline's value, run's value]} of the resolved configs (engine.config.diff), the name left out:
    what changed for a run that records no change against a parent."""
    from labtui.engine.config.diff import config_diff

    a, b = base.config(), run.config()
    if not a or not b:
        return {}
    return {d["key"]: [d["a"], d["b"]] for d in config_diff(a, b) if d["key"] != "name"}


def _compare_into(row: dict, base_ev: Mapping, base_dir: Path | None, ev: Mapping, ci: str) -> None:
    why = evalstore.comparability(ev, base_ev)
    if why:
        row["not_comparable"] = why
        return
    try:
        res = evalstore.compare_sources(base_dir, Path(ev["path"]), ci=ci)
    except stats.UnpairedError:
        row["not_comparable"] = "different examples"
        return
    row.update(diff=res["diff"], diff_ci=list(res["diff_ci"]), diff_ci_method=res["diff_ci_method"],
               mcnemar_p=res["mcnemar_p"], cohens_h=res["cohens_h"], b=res["b"], c=res["c"], verdict=res["verdict"])


# --- text of the cells -----------------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.1f}%"


def accuracy_text(row: Mapping) -> str:
    ci = row.get("ci")
    return _pct(row.get("accuracy")) + (f" [{ci[0] * 100:.1f}, {ci[1] * 100:.1f}]" if ci else "")


def diff_text(row: Mapping) -> str:
    if row.get("is_baseline"):
        return "baseline"
    if row.get("diff") is None:
        return f"- ({row['not_comparable']})" if row.get("not_comparable") else "-"
    lo, hi = row["diff_ci"]
    return f"{row['diff'] * 100:+.1f} [{lo * 100:+.1f}, {hi * 100:+.1f}]"


def p_text(p: float | None, marks: bool = False) -> str:
    if p is None:
        return "-"
    return (stats.format_p(p) + (" " + stats.significance_marks(p) if marks and stats.significance_marks(p) else ""))


def errors_text(errors: Mapping[str, int]) -> str:
    parts = [f"{ERROR_NAMES.get(k, k)} {v}" for k, v in errors.items() if k != "correct" and v]
    return ", ".join(parts) or "none"


def step_text(step: Any) -> str:
    return "-" if step is None else str(step)


def cells(row: Mapping) -> list[str]:
    """The row's cells in COLUMNS' order, as text (the Holm column carries the significance marks)."""
    h = row.get("cohens_h")
    f1 = row.get("macro_f1")
    return [
        ("★ " if row.get("is_baseline") else "") + label(row),
        changed_text(row, 100) or "-",
        step_text(row.get("checkpoint_step")),
        "-" if row.get("n") is None else str(row["n"]),
        accuracy_text(row),
        diff_text(row),
        p_text(row.get("mcnemar_p")),
        p_text(row.get("holm_p"), marks=True),
        "-" if h is None else f"{h:+.3f}",
        "-" if f1 is None else f"{f1:.3f}",
        errors_text(row.get("errors") or {}),
        fmt.num(row.get("train_loss")),
        fmt.num(row.get("eval_loss")),
        fmt.duration(row.get("duration_s")),
        (row.get("notes") or "").splitlines()[0] if row.get("notes") else "",
    ]


def changed_text(row: Mapping, width: int | None = None) -> str:
    """`lora.r 4→16` (vs the run's parent), or `vs baseline: lr 2e-3→5e-5` for a run without a parent diff."""
    text = fmt.changed_summary(row.get("changed"))
    if text and row.get("changed_vs") == "baseline":
        text = "vs baseline: " + text
    return fmt.clip(text, width) if width else text


def header_line(report: Mapping) -> str:
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(report["created"]))
    return f"{report['family']['text']} · difference intervals: {report['ci_method']} · {when}"


def paragraph(row: Mapping) -> str:
    """One paragraph on one row, in sentences (the markdown and html reports)."""
    exp = row.get("experiment")
    name = row.get("label") or exp
    of = f"experiment {exp}, " if name != exp else ""  # a group's row: lr-sweep·9d63 (experiment demo-baseline, ...)
    name = f"{name} ({of}{row.get('run') or '-'}, eval {row['eval']})"
    bits = [f"evaluated at {row['evaluated']}", f"accuracy {accuracy_text(row)} (95% Wilson)"]
    if row.get("macro_f1") is not None:
        bits.append(f"macro-F1 {row['macro_f1']:.3f}")
    text = f"{name}: " + "; ".join(bits) + "."
    if row.get("changed"):
        text += f" Changed vs its {row.get('changed_vs') or 'parent'}: {fmt.changed_summary(row['changed'])}."
    if row.get("is_baseline"):
        text += " This is the baseline every other row is compared with."
    elif row.get("diff") is not None:
        text += (f" Against the baseline: {diff_text(row)} points ({row['diff_ci_method']} 95% CI), McNemar exact "
                 f"p {p_text(row['mcnemar_p'])}, Holm-adjusted p {p_text(row['holm_p'])}"
                 f" ({'significant' if row['significant'] else 'not significant'} at {stats.ALPHA:g} after Holm), "
                 f"Cohen's h {row['cohens_h']:+.3f} ({stats.h_magnitude(row['cohens_h'])}); b = {row['b']}, c = {row['c']}.")
    elif row.get("not_comparable"):
        text += f" Not compared with the baseline: {row['not_comparable']}."
    text += f" Errors: {errors_text(row.get('errors') or {})}."
    losses = [f"{k} {fmt.num(row.get(key))}" for k, key in (("train loss", "train_loss"), ("eval loss", "eval_loss"))
              if row.get(key) is not None]
    if losses or row.get("duration_s") is not None:
        text += f" Last {', '.join(losses) or 'loss -'}; trained in {fmt.duration(row.get('duration_s'))}."
    if row.get("notes"):
        text += " Notes: " + " ".join(row["notes"].split()) + "."
    return fmt.printable(text)


# --- markdown, html, csv ---------------------------------------------------------------------------------


def _md_cell(text: str) -> str:
    return fmt.printable(" ".join(str(text).split())).replace("|", "\\|")


def markdown(report: Mapping, figures: Sequence[Mapping] = ()) -> str:
    """A table and one paragraph per row; the figures as images by file name (written next to it)."""
    out = ["# labtui report", "", header_line(report), ""]
    out.append("| " + " | ".join(COLUMNS) + " |")
    out.append("|" + "|".join("---" for _ in COLUMNS) + "|")
    out += ["| " + " | ".join(_md_cell(c) for c in cells(r)) + " |" for r in report["rows"]]
    out += ["", "McNemar p: exact, two-sided; Holm p: adjusted over the family above (* < 0.05, ** < 0.01, "
            "*** < 0.001). Δ: the row minus the baseline, in percentage points.", "", "## Runs", ""]
    for r in report["rows"]:
        out += [paragraph(r), ""]
    if figures:
        out += ["## Figures", ""]
        for f in figures:
            out += [f"![{_md_cell(f['title'])}]({f['files']['png']})", "", f"*{_md_cell(f['caption'])}*", ""]
    return "\n".join(out).rstrip() + "\n"


HTML_STYLE = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:0.85em}th,td{border:1px solid #ccc;padding:4px 6px;text-align:left}
th{background:#f3f3f3}tr.baseline{background:#fff8dc}figure{margin:1.5em 0}figcaption{font-size:0.9em;color:#555}
svg{max-width:100%;height:auto}"""


def html(report: Mapping, figures: Sequence[Mapping] = ()) -> str:
    """One self-contained page: the table, the paragraphs, the figures as inline SVG (no external file)."""
    e = html_lib.escape
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8"><title>labtui report</title>',
           f"<style>{HTML_STYLE}</style></head><body>", "<h1>labtui report</h1>", f"<p>{e(header_line(report))}</p>",
           "<table><thead><tr>" + "".join(f"<th>{e(c)}</th>" for c in COLUMNS) + "</tr></thead><tbody>"]
    for r in report["rows"]:
        cls = ' class="baseline"' if r.get("is_baseline") else ""
        out.append(f"<tr{cls}>" + "".join(f"<td>{e(fmt.printable(c))}</td>" for c in cells(r)) + "</tr>")
    out += ["</tbody></table>", "<p><small>McNemar p: exact, two-sided; Holm p: adjusted over the family above "
            "(* &lt; 0.05, ** &lt; 0.01, *** &lt; 0.001). Δ: the row minus the baseline, in percentage points.</small></p>",
            "<h2>Runs</h2>"]
    out += [f"<p>{e(paragraph(r))}</p>" for r in report["rows"]]
    if figures:
        out.append("<h2>Figures</h2>")
        for f in figures:
            out.append(f"<figure>{f['svg']}<figcaption>{e(f['caption'])}</figcaption></figure>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _num(x: Any) -> Any:
    return "" if x is None or (isinstance(x, float) and not math.isfinite(x)) else x


def csv_text(report: Mapping) -> str:
    """One line per row, raw numbers (fractions, not percentages), for scripts."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    for r in report["rows"]:
        ci, dci = r.get("ci") or [None, None], r.get("diff_ci") or [None, None]
        w.writerow({
            "experiment": r.get("experiment"), "run": r.get("run") or "", "eval": r["eval"],
            "is_baseline": r["is_baseline"], "changed": fmt.changed_summary(r.get("changed")),
            "changed_vs": r.get("changed_vs") or "",
            "checkpoint_step": _num(r.get("checkpoint_step")), "n": _num(r.get("n")), "accuracy": _num(r.get("accuracy")),
            "ci_low": _num(ci[0]), "ci_high": _num(ci[1]), "diff": _num(r.get("diff")), "diff_ci_low": _num(dci[0]),
            "diff_ci_high": _num(dci[1]), "diff_ci_method": r.get("diff_ci_method") or "",
            "mcnemar_p": _num(r.get("mcnemar_p")), "holm_p": _num(r.get("holm_p")), "significant": _num(r.get("significant")),
            "cohens_h": _num(r.get("cohens_h")), "macro_f1": _num(r.get("macro_f1")),
            "errors": ";".join(f"{k}={v}" for k, v in (r.get("errors") or {}).items()),
            "train_loss": _num(r.get("train_loss")), "eval_loss": _num(r.get("eval_loss")),
            "duration_s": _num(r.get("duration_s")), "notes": fmt.printable(r.get("notes") or ""),
            "not_comparable": r.get("not_comparable") or "",
        })
    return buf.getvalue()


def render(report: Mapping, form: str, figures: Sequence[Mapping] = ()) -> str:
    """The report in one of FORMATS (json: the data, with the figures' files and sizes)."""
    if form == "md":
        return markdown(report, figures)
    if form == "html":
        return html(report, figures)
    if form == "csv":
        return csv_text(report)
    if form == "json":
        import json

        data = dict(report, figures=[{k: v for k, v in f.items() if k != "svg"} for f in figures])
        return json.dumps(store.jsonable(data), indent=2, default=str) + "\n"
    raise ReportError(f"unknown format {form!r} (use {', '.join(FORMATS)})")
