"""The benchmarks still run against the code they measure (small sizes; no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

BENCH = ROOT / "bench"


def run(*args: str, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_a_benchmark_prints_a_table_and_json_with_the_machine(tmp_path):
    out = run(str(BENCH / "bench_stats.py"), "--quick", "--cache", str(tmp_path / "cache"), "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr[-2000:]
    assert "--- JSON ---" in out.stdout and "compare_sources" in out.stdout
    data = json.loads((tmp_path / "stats.json").read_text())
    assert {"date", "command", "machine", "load_before", "load_after", "results"} <= set(data)
    assert {"cpu_count", "cpu_model", "ram_gib", "python", "torch"} <= set(data["machine"])
    row = next(r for r in data["results"] if r["key"] == "compare_s")
    assert row["repeats"] == len(row["values"]) >= 1 and row["target"] == 0.5 and row["median"] > 0
    assert data["result"]["n"] == 2000


def small_workspace(tmp_path) -> str:
    code = ("import sys; sys.path.insert(0, 'bench'); import synth; "
            f"print(synth.workspace(4, eval_n=20, cache={str(tmp_path)!r}, log=lambda m: None))")
    return run("-c", code).stdout.strip().splitlines()[-1]


def probe(ws: str, *args: str) -> dict:
    out = run(str(BENCH / "tui_probe.py"), ws, *args, "--timeout", "60")
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("PROBE ")), None)
    assert line, out.stderr[-3000:]
    return json.loads(line[6:])


def test_the_tui_probe_sees_the_dashboard_and_the_chart(tmp_path):
    ws = small_workspace(tmp_path)
    data = probe(ws, "--until", "chart")
    assert not data.get("timed_out")
    assert {"exec", "imported", "mounted", "dashboard", "chart"} <= set(data["marks"])
    assert data["runs"] == 4 and data["train_count"] > 0 and data["heavy_modules"] == []


def test_the_tui_probe_sees_three_marked_runs_overlaid(tmp_path):
    """bench_huge_run's overlay figure: the runs marked as `space` marks them, the chart drawn with each
    one's train line and eval dots."""
    ws = small_workspace(tmp_path)
    ids = sorted(p.name for p in (Path(ws) / "logs").glob("2*"))[:3]
    data = probe(ws, "--until", "overlay", "--mark", ",".join(ids))
    assert not data.get("timed_out") and {"dashboard", "overlay"} <= set(data["marks"])
    assert [r["run_id"] for r in data["overlay_runs"]] == ids
    assert all(r["train"] > 0 and r["eval"] > 0 for r in data["overlay_runs"]), data["overlay_runs"]
    assert data["overlay_draw_ms"] > 0 and data["heavy_modules"] == []
