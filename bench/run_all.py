"""Runs every benchmark (each in its own process) and prints one summary table: `make bench`.

    .venv/bin/python bench/run_all.py [--quick] [--repeats N] [--only start,history] [--wait-quiet S]

Each benchmark prints its own table and JSON and writes bench/results/<name>.json; this script
then prints every figure that has a target (target, median, met) and writes bench/results/all.json.
Synthetic data is generated once into $LABTUI_BENCH_CACHE (default: a temp folder) and reused.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from common import RESULTS, ROOT, child_env, fmt, load_avg, machine, wait_quiet

BENCHES = ["start", "huge_run", "history", "overhead", "eval", "eval_wide", "stats", "bootstrap"]
# benchmarks that are another run of a script: name -> (script, its extra arguments)
VARIANTS = {"eval_wide": ("eval", ["--model", "wide", "--n", "200"])}
HERE = Path(__file__).resolve().parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, few repeats: checks that everything runs")
    ap.add_argument("--repeats", type=int, help="repeats per figure (each benchmark has its own default)")
    ap.add_argument("--only", help=f"comma-separated subset of: {', '.join(BENCHES)}")
    ap.add_argument("--out", help="folder for the JSON results (default bench/results)")
    ap.add_argument("--cache", help="folder for generated data")
    ap.add_argument("--wait-quiet", type=float, default=0.0, metavar="S",
                    help="before each benchmark, wait up to S seconds for the load average to drop below 2.5")
    args = ap.parse_args()
    names = args.only.split(",") if args.only else BENCHES
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        ap.error(f"unknown benchmark(s): {', '.join(unknown)}")
    out = Path(args.out) if args.out else RESULTS
    results, failed = {}, []
    t0 = time.time()
    for name in names:
        script, extra = VARIANTS.get(name, (name, []))
        cmd = [sys.executable, str(HERE / f"bench_{script}.py"), *extra]
        for flag, value in (("--repeats", args.repeats), ("--out", args.out), ("--cache", args.cache)):
            if value is not None:
                cmd += [flag, str(value)]
        if args.quick:
            cmd.append("--quick")
        if args.wait_quiet:
            cmd += ["--wait-quiet", str(args.wait_quiet)]
        print(f"\n[bench] {' '.join(Path(c).name if i < 2 else c for i, c in enumerate(cmd))}", flush=True)
        proc = subprocess.run(cmd, env=child_env(), cwd=str(ROOT))
        path = out / f"{name}.json"
        if proc.returncode or not path.exists():
            failed.append(name)
            continue
        results[name] = json.loads(path.read_text())
    summary = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine(), "load_after": load_avg(),
               "wall_s": round(time.time() - t0, 1), "failed": failed, "benchmarks": results}
    out.mkdir(parents=True, exist_ok=True)
    (out / "all.json").write_text(json.dumps(summary, indent=1) + "\n")
    print("\n== labtui benchmarks: figures with a target ==")
    width = max([len(r["label"]) for b in results.values() for r in b["results"] if r["target"] is not None] or [10])
    for name, data in results.items():
        for r in data["results"]:
            if r["target"] is None:
                continue
            met = {True: "met", False: "MISSED", None: ""}[r["met"]]
            print(f"{name:<9} {r['label']:<{width}}  {fmt(r['median'], r['unit']):>14}  target {r['target_text']:<14} {met}")
    if failed:
        print(f"failed: {', '.join(failed)}")
    _ = wait_quiet
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
