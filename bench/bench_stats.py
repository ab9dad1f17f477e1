"""Target 6: compare two 100,000-example prediction sets in under 0.5 s.

Figures (two eval dirs of score-mode predictions, as engine.evaluate writes them):
  compare_s       engine.evalstore.compare_sources(A, B): what `labtui compare` and the TUI's Compare
                  screen call (in-process, modules already imported): read both evals' columns
                  (logs/.labtui-cache/columns/, which the eval worker writes when it completes), pair
                  them, McNemar (exact), Cohen's h, intervals, error kinds, macro-F1
  no_columns_s    the same for evals without a columns file (made by an older labtui): both
                  predictions.jsonl parsed, then the columns written for the next time
  load_s          reading one side's records (evalstore.load_predictions: what every compare cost
                  before the columns file, and what the --gold / --temperature options still read)
  stats_s         engine.stats.compare on the two {id: correct} maps
  cli_s           `labtui compare A B --json` end to end in a fresh process (Python and scipy start-up
                  included), for reference
"""

from __future__ import annotations

import subprocess
import sys
import time

import synth
from common import Report, child_env, parser, wait_quiet


def main() -> None:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    args = ap.parse_args()
    n = 2_000 if args.quick else args.n
    repeats = 2 if args.quick else args.repeats
    a, b = synth.prediction_sets(n, cache=args.cache)
    wait_quiet(timeout=args.wait_quiet)
    rep = Report("stats", args, f"Statistics: compare of two {n:,}-example prediction sets")

    from labtui.engine.analysis import evalstore, stats

    evalstore.compare_sources(a, b)  # warm the page cache and imports
    total, cold, load, st = [], [], [], []
    for _ in range(repeats):
        for side in (a, b):
            evalstore.columns_cache(side).path.unlink(missing_ok=True)
        t = time.perf_counter()
        evalstore.compare_sources(a, b)
        cold.append(time.perf_counter() - t)
        t = time.perf_counter()
        res = evalstore.compare_sources(a, b)
        total.append(time.perf_counter() - t)
        t = time.perf_counter()
        ra = evalstore.load_predictions(a)
        load.append(time.perf_counter() - t)
        rb = evalstore.load_predictions(b)
        ca = {i: r["correct"] for i, r in ra.items()}
        cb = {i: r["correct"] for i, r in rb.items()}
        t = time.perf_counter()
        stats.compare(ca, cb)
        st.append(time.perf_counter() - t)
    rep.add("compare_s", total, "s", target=0.5, label=f"compare_sources, {n:,} vs {n:,} examples")
    rep.add("no_columns_s", cold, "s", label="  the same, evals without a columns file")
    rep.add("load_s", load, "s", label="  reading one side's records")
    rep.add("stats_s", st, "s", label="  engine.stats.compare on {id: correct} maps")
    cli = []
    for _ in range(max(1, repeats // 2)):
        t = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "labtui", "--workspace", str(a.parents[3]), "compare",
                              str(a), str(b), "--json"], capture_output=True, text=True, env=child_env())
        cli.append(time.perf_counter() - t)
        if out.returncode:
            rep.note(f"labtui compare failed: {out.stderr.strip()[-300:]}")
    rep.add("cli_s", cli, "s", label="labtui compare --json (fresh process)")
    rep.extra["result"] = {k: res.get(k) for k in ("n", "acc_a", "acc_b", "diff", "b", "c", "mcnemar_p", "cohens_h")}
    rep.finish(args.out)


if __name__ == "__main__":
    main()
