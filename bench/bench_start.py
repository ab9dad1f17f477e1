"""Target 1: `labtui` to its first drawn dashboard with 1,000 runs in under 0.5 s; the app's import in
under 0.3 s, without torch in sys.modules.

Figures (each a fresh process, timed from the parent's Popen, so interpreter start-up counts):
  import_s        `import tui.app` in a fresh interpreter, timed inside it (perf_counter around the
                  import); `heavy` lists any of torch/transformers/peft/trl/datasets it loaded
  python_s        `python -c pass`: the interpreter's own start, the floor under every figure below
  dashboard_s     `labtui` (engine.cli.main with no command, via bench/tui_probe.py) until the
                  dashboard's first frame is painted (a 120x40 frame rendered to escape sequences):
                  the run list's first rows, the title counting all 1,000 runs
  all_rows_s      ... until all 1,000 rows are in the list and painted (the run list adds the rows
                  past the first screenful after the first frame, a chunk a frame)
  chart_s         ... until the selected run's loss chart is painted with its history too
  app_dashboard_s the same from `LabApp(workspace).run()` (what the CLI calls once it has parsed its
                  arguments), which leaves out the CLI's own imports
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import synth
from common import ROOT, Report, child_env, parser, wait_quiet

HERE = Path(__file__).resolve().parent


def probe(ws: Path, until: str, *extra: str, timeout: float = 180) -> dict:
    t0 = time.time()
    out = subprocess.run([sys.executable, str(HERE / "tui_probe.py"), str(ws), "--until", until, *extra],
                         capture_output=True, text=True, env=child_env(), timeout=timeout, cwd=str(ROOT))
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("PROBE ")), None)
    if line is None:
        raise RuntimeError(f"tui_probe failed ({out.returncode}):\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    data = json.loads(line[6:])
    data["since_popen"] = {k: v - t0 for k, v in data["marks"].items()}
    if data.get("timed_out"):
        raise RuntimeError(f"tui_probe timed out: {data['since_popen']}")
    return data


def median_phases(runs: list[dict]) -> dict:
    """Median seconds from Popen to each probe mark (imported, mounted, scan_start, scan_end, ...)."""
    import statistics

    keys = sorted({k for r in runs for k in r}, key=lambda k: statistics.median(r[k] for r in runs if k in r))
    return {k: round(statistics.median(r[k] for r in runs if k in r), 4) for k in keys}


def import_time() -> tuple[float, list[str]]:
    code = ("import time, sys; t = time.perf_counter(); import labtui.tui.app; d = time.perf_counter() - t; "
            "print(d, ' '.join(m for m in ('torch', 'transformers', 'peft', 'trl', 'datasets') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=child_env(), cwd=str(ROOT),
                         check=True)
    secs, _, heavy = out.stdout.strip().partition(" ")
    return float(secs), heavy.split()


def python_start() -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True, env=child_env())
    return time.perf_counter() - t


def main() -> None:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1000)
    args = ap.parse_args()
    n_runs = 30 if args.quick else args.runs
    repeats = 2 if args.quick else args.repeats
    ws = synth.workspace(n_runs, cache=args.cache)
    probe(ws, "dashboard")  # warm the page cache: every figure is a warm start
    wait_quiet(timeout=args.wait_quiet)
    rep = Report("start", args, f"TUI start with {n_runs:,} runs")
    imports, heavy, py, dash, all_rows, chart, app_dash, rss, phases = [], set(), [], [], [], [], [], [], []
    for _ in range(repeats):  # interleaved, so a burst of load hits every figure alike
        s, h = import_time()
        imports.append(s)
        heavy.update(h)
        py.append(python_start())
        d = probe(ws, "chart")
        dash.append(d["since_popen"]["dashboard"])
        chart.append(d["since_popen"]["chart"])
        if "all_rows" in d["since_popen"]:
            all_rows.append(d["since_popen"]["all_rows"])
        rss.append(d["peak_rss_mib"])
        phases.append(d["since_popen"])
        if d.get("runs") != n_runs:
            rep.note(f"the dashboard listed {d.get('runs')} runs, not {n_runs}")
        heavy.update(d.get("heavy_modules") or [])
        app_dash.append(probe(ws, "dashboard", "--entry", "app")["since_popen"]["dashboard"])
    rep.add("import_s", imports, "s", target=0.3, label="import labtui.tui.app (in-process)", heavy=sorted(heavy))
    rep.add("python_s", py, "s", label="python -c pass (interpreter floor)")
    rep.add("dashboard_s", dash, "s", target=0.5, label=f"labtui -> dashboard drawn, {n_runs:,} runs")
    if all_rows:
        rep.add("all_rows_s", all_rows, "s", label=f"labtui -> all {n_runs:,} rows in the list, painted")
    rep.add("chart_s", chart, "s", label="labtui -> selected run's chart drawn")
    rep.add("app_dashboard_s", app_dash, "s", label="LabApp.run() -> dashboard drawn")
    rep.add("peak_rss_mib", rss, "MiB", label="TUI peak RSS")
    rep.extra["heavy_modules"] = sorted(heavy)
    rep.extra["phases_s"] = median_phases(phases)
    if heavy:
        rep.note(f"training libraries imported by the TUI: {', '.join(sorted(heavy))}")
    rep.finish(args.out)


if __name__ == "__main__":
    main()
