"""Target 3: `labtui runs --json` and the History screen with 1,000 runs, each with an eval, under 1 s.

The workspace: 1,000 finished runs, each with one completed 500-example score-mode evaluation, the
oldest marked as the baseline (so History compares 999 evaluations with it: difference, McNemar p,
Cohen's h).
  runs_json_s        `labtui runs --json` in a fresh process, to its last byte of output
  runs_json_inproc_s the same work in-process: Run.summary() of every run, JSON-encoded
  history_s          in `labtui` (bench/tui_probe.py), from `h` (the History screen pushed, right after
                     the dashboard is drawn) to the table painted with every row, the comparisons
                     cached from an earlier session (logs/.labtui-cache/history.json): the usual case
  history_cold_s     the same with no cache at all (the first History after 1,000 new evaluations):
                     every eval's columns read and every comparison computed; the table is painted
                     with its rows first, then again with the comparisons
  history_cold_full_s  ... until the comparisons are painted too
  history_nobase_s   the same with no baseline marked (no comparisons), warm
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import synth
from bench_start import probe
from common import ROOT, Report, child_env, parser, wait_quiet

HISTORY_CACHE = ".labtui-cache/history.json"
BASELINE = ".labtui-baseline"


def history_time(ws, *, cold: bool = False, full: list | None = None) -> tuple[float, int]:
    if cold:
        try:
            os.unlink(ws / "logs" / HISTORY_CACHE)
        except FileNotFoundError:
            pass
    d = probe(ws, "history", timeout=600)
    t = d["since_popen"]
    if full is not None:
        full.append(t["history_full"] - t["history_pushed"])
    return t["history"] - t["history_pushed"], d.get("history_rows")


def main() -> None:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--cold-repeats", type=int, default=2)
    args = ap.parse_args()
    n_runs = 30 if args.quick else args.runs
    repeats = 2 if args.quick else args.repeats
    ws = synth.workspace(n_runs, cache=args.cache)
    history_time(ws)  # warm the page cache and the history cache
    wait_quiet(timeout=args.wait_quiet)
    rep = Report("history", args, f"History with {n_runs:,} evaluated runs")

    cli, inproc = [], []
    from labtui.engine.rundir import store

    for _ in range(repeats):
        t = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "labtui", "--workspace", str(ws), "runs", "--json"],
                             capture_output=True, text=True, env=child_env(), cwd=str(ROOT), check=True)
        cli.append(time.perf_counter() - t)
        rows = json.loads(out.stdout)
        t = time.perf_counter()
        json.dumps([r.summary() for r in store.Workspace(ws).iter_runs()], indent=2, default=str)
        inproc.append(time.perf_counter() - t)
    rep.add("runs_json_s", cli, "s", target=1.0, label=f"labtui runs --json, {len(rows):,} runs (fresh process)")
    rep.add("runs_json_inproc_s", inproc, "s", label="  Run.summary() x all + JSON, in-process")

    warm, rows_seen = [], None
    for _ in range(repeats):
        s, rows_seen = history_time(ws)
        warm.append(s)
    rep.add("history_s", warm, "s", target=1.0, label=f"History screen, baseline set, {rows_seen} rows (warm cache)")
    cold, cold_full = [], []
    for _ in range(max(1, args.cold_repeats if not args.quick else 1)):
        cold.append(history_time(ws, cold=True, full=cold_full)[0])
    rep.add("history_cold_s", cold, "s", target=1.0, label="History screen, baseline set, no cache (first ever): rows")
    rep.add("history_cold_full_s", cold_full, "s", label="  ... and every comparison painted")
    base = ws / "logs" / BASELINE
    saved = base.read_text() if base.exists() else None
    nobase = []
    try:
        if base.exists():
            base.unlink()
        for _ in range(repeats):
            nobase.append(history_time(ws)[0])
    finally:
        if saved is not None:
            base.write_text(saved)
    rep.add("history_nobase_s", nobase, "s", target=1.0, label="History screen, no baseline")
    rep.extra["evals"] = n_runs
    rep.extra["examples_per_eval"] = 500
    rep.finish(args.out)


if __name__ == "__main__":
    main()
