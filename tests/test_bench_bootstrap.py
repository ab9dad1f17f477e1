"""bench/bench_bootstrap.py still runs against stats.paired_bootstrap_interval (small sizes; no time asserted)."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT


def test_the_bootstrap_benchmark_runs_quick_and_records_its_interval(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_bootstrap.py"), "--quick", "--out", str(tmp_path)],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    data = json.loads((tmp_path / "bootstrap.json").read_text())
    rows = {r["key"]: r for r in data["results"]}
    assert set(rows) == {"bootstrap_s", "compare_s", "wald_s"} and rows["bootstrap_s"]["target"] == 1.0
    res = data["result"]
    assert res["n"] == 1000 and res["resamples"] == 1000
    lo, hi = res["bootstrap_ci"]
    assert lo <= res["diff"] <= hi and abs(lo - res["wald_ci"][0]) < 0.01  # the two intervals nearly agree here
