"""Target 2: a run with 1,000,000 metric records drawn in under 1 s with the TUI under 300 MB; then
10,000 new records a second ingested with every screen refresh under 50 ms. Side by side with
TensorBoard's EventAccumulator (size_guidance 0: keep every point) loading the same losses.

Figures:
  open_s          `labtui` started on a workspace holding the run (bench/tui_probe.py, fresh process)
                  until the run's loss chart is painted with all 1,000,000 records folded in
  open_rss_mib    the TUI process's peak RSS by then
  overlay_open_s  the same on a workspace with that run and two small ones (synth.huge_overlay), the
                  three marked one after another on the dashboard (`space`), until the loss chart
                  is painted with all three caught up (the big run's 1,000,000 records folded in)
  overlay_draw_ms that last chart's render on the UI thread (the three runs downsampled, plotext's
                  draw and build)
  load_s          labtui's loader alone: tui.tail.RunTail polled until caught up (fresh process,
                  index used), the part that is comparable with EventAccumulator.Reload()
  load_jsonl_s    the same loader reading metrics.jsonl as JSON (what every version before the index
                  did, and what a run without metrics.idx still gets), once: the "before" figure
  tb_load_s       EventAccumulator(dir, size_guidance={"scalars": 0}).Reload() on the same train and
                  eval losses written by torch.utils.tensorboard.SummaryWriter (fresh process)
  tb_ratio        tb_load_s / load_s (how many times faster labtui loads the same scalars)
  ingest_*        with the chart drawn, a stand-in worker (bench/ingest_writer.py, another process)
                  appends 10,000 records a second for 10 s; refresh_ms is the UI thread's time per
                  screen refresh (Screen._on_timer_update: layout, the chart's plotext draw, the
                  compositor) while it runs, latency_ms the time from the monitor posting a snapshot
                  to that snapshot painted, poll_ms the monitor thread's time per tick
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import synth
from bench_start import median_phases, probe
from common import ROOT, Report, child_env, parser, wait_quiet

LOADER = """
import json, sys, time
t = time.perf_counter()
from labtui.tui import tail as tail_mod
from labtui.tui.tail import RunTail
if sys.argv[2] == "jsonl":
    tail_mod.INDEX_MIN_BYTES = tail_mod.INDEX_BATCH_BYTES = 1 << 62
t1 = time.perf_counter()
tail = RunTail(sys.argv[1])
while True:
    tail.poll()
    if tail.caught_up:
        break
snap = tail.snapshot()
t2 = time.perf_counter()
from common import peak_rss_mib
print(json.dumps({"import_s": t1 - t, "load_s": t2 - t1, "train_count": snap.train_count,
                  "eval_count": snap.eval_count, "indexed": tail.indexed_records, "peak_rss_mib": peak_rss_mib()}))
"""

TB_LOADER = """
import json, sys, time
t = time.perf_counter()
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
t1 = time.perf_counter()
acc = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0})
acc.Reload()
train = acc.Scalars("train/loss")
ev = acc.Scalars("eval/loss")
t2 = time.perf_counter()
from common import peak_rss_mib
print(json.dumps({"import_s": t1 - t, "load_s": t2 - t1, "train_count": len(train), "eval_count": len(ev),
                  "peak_rss_mib": peak_rss_mib()}))
"""


def run_json(code: str, *args: str, timeout: float = 1800) -> dict:
    env = child_env()
    env["PYTHONPATH"] = str(ROOT / "bench")  # its own helpers (synth, common); labtui is installed
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env,
                         cwd=str(ROOT), timeout=timeout)
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


class Restore:
    """Puts the run back as generated after an ingest appended to it (the data set is shared)."""

    def __init__(self, run_dir: Path):
        self.files = {p: p.stat().st_size for p in (run_dir / "metrics.jsonl", run_dir / "metrics.idx")}
        self.json = {p: p.read_bytes() for p in (run_dir / "state.json", run_dir / "progress.json")}

    def __enter__(self):
        return self

    def __exit__(self, *exc):

        for p, size in self.files.items():
            os.truncate(p, size)
        for p, data in self.json.items():
            p.write_bytes(data)


def main() -> None:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--ingest-rate", type=int, default=10_000)
    ap.add_argument("--ingest-seconds", type=float, default=10.0)
    ap.add_argument("--tb-repeats", type=int, default=3)
    ap.add_argument("--no-tensorboard", action="store_true")
    ap.add_argument("--no-before", action="store_true", help="skip the JSON-only loader figure")
    args = ap.parse_args()
    n = 20_000 if args.quick else args.records
    repeats = 2 if args.quick else args.repeats
    ws = synth.huge_run(n, cache=args.cache)
    run_dir = next((ws / "logs").glob("2*"))
    tb = None if args.no_tensorboard else synth.tensorboard_events(n, cache=args.cache) / "tb"
    probe(ws, "chart")  # warm the page cache (the file is read from memory in every figure)
    wait_quiet(timeout=args.wait_quiet)
    rep = Report("huge_run", args, f"A run with {n:,} metric records")
    size_mb = (run_dir / "metrics.jsonl").stat().st_size / 1e6
    rep.extra["metrics_jsonl_mb"] = round(size_mb, 1)
    rep.extra["metrics_idx_mb"] = round((run_dir / "metrics.idx").stat().st_size / 1e6, 1)

    opened, rss, loads, load_rss, phases = [], [], [], [], []
    count = None
    for _ in range(repeats):
        d = probe(ws, "chart", "--select", run_dir.name)
        opened.append(d["since_popen"]["chart"])
        phases.append(d["since_popen"])
        rss.append(d["peak_rss_mib"])
        count = d.get("train_count")
        r = run_json(LOADER, str(run_dir), "index")
        loads.append(r["load_s"])
        load_rss.append(r["peak_rss_mib"])
    rep.add("open_s", opened, "s", target=1.0, label=f"labtui -> chart drawn, {n:,} records ({size_mb:.0f} MB)")
    rep.add("open_rss_mib", rss, "MiB", target=300, label="  TUI peak RSS")
    rep.add("load_s", loads, "s", label="  loader alone (RunTail, index)")
    rep.extra["train_points"] = count
    rep.extra["open_phases_s"] = median_phases(phases)
    ov = synth.huge_overlay(n, cache=args.cache)
    others = sorted(p.name for p in (ov / "logs").glob("2*") if p.name != run_dir.name)
    marks = ",".join([*others, run_dir.name])  # the big run marked last: it stays selected
    overlay, overlay_draw, overlay_rss = [], [], []
    for _ in range(repeats):
        d = probe(ov, "overlay", "--mark", marks)
        overlay.append(d["since_popen"]["overlay"])
        overlay_draw.append(d["overlay_draw_ms"])
        overlay_rss.append(d["peak_rss_mib"])
        rep.extra["overlay_runs"] = d["overlay_runs"]
    rep.add("overlay_open_s", overlay, "s", target=1.0,
            label=f"labtui -> {len(others) + 1} marked runs drawn, one of {n:,} records")
    rep.add("overlay_draw_ms", overlay_draw, "ms", label="  that chart's render (UI thread)")
    rep.add("overlay_rss_mib", overlay_rss, "MiB", target=300, label="  TUI peak RSS")
    if not args.no_before:
        r = run_json(LOADER, str(run_dir), "jsonl")
        rep.add("load_jsonl_s", [r["load_s"]], "s", label="  loader reading JSONL only (before)")
        rep.add("load_jsonl_rss_mib", [r["peak_rss_mib"]], "MiB", label="  its peak RSS")

    if tb is not None:
        tbs, tb_rss = [], []
        for _ in range(max(1, 1 if args.quick else args.tb_repeats)):
            r = run_json(TB_LOADER, str(tb))
            tbs.append(r["load_s"])
            tb_rss.append(r["peak_rss_mib"])
            rep.extra["tb_points"] = {"train": r["train_count"], "eval": r["eval_count"]}
        rep.add("tb_load_s", tbs, "s", label="TensorBoard EventAccumulator.Reload()")
        rep.add("tb_rss_mib", tb_rss, "MiB", label="  its peak RSS")
        med = sorted(tbs)[len(tbs) // 2] / sorted(loads)[len(loads) // 2]
        rep.add("tb_ratio", [med], "x", better="higher", label="  TensorBoard load / labtui load")
        rep.add("tb_open_ratio", [sorted(tbs)[len(tbs) // 2] / sorted(opened)[len(opened) // 2]], "x",
                better="higher", label="  TensorBoard load / labtui start-to-chart")

    refresh, latency, polls, run_data, rates, final_rss, behind = [], [], [], [], [], [], []
    for _ in range(max(1, repeats // 2 if not args.quick else 1)):
        with Restore(run_dir):
            d = probe(ws, "ingest", "--select", run_dir.name, "--ingest-rate", str(args.ingest_rate),
                      "--ingest-seconds", str(2.0 if args.quick else args.ingest_seconds),
                      timeout=600)
        refresh += d["refresh_ms"]
        latency += d["latency_ms"]
        polls += d["polls"]
        run_data += d["run_data_ms"]
        w = d.get("writer_out") or {}
        rates.append(w.get("rate", 0.0))
        final_rss.append(d.get("final_rss_mib") or d["peak_rss_mib"])
        since = d["since_popen"]
        behind.append(since["ingest_done"] - since["ingest_writer_done"])
    rep.add("ingest_rate", rates, "records/s", better="higher", target=args.ingest_rate * 0.95,
            label="ingest: records written per second")
    for key, xs, label, target in (("refresh_ms", refresh, "screen refresh (UI thread)", 50.0),
                                   ("latency_ms", latency, "snapshot posted -> painted", None),
                                   ("poll_ms", polls, "monitor tick (reads + folds new records)", None)):
        row = rep.add(key, xs, "ms", target=target, label=f"  {label}, median", p95=pct(xs, 0.95), max_=max(xs) if xs else None)
        if xs:
            rep.add(key + "_p95", [pct(xs, 0.95)], "ms", target=target, label=f"  {label}, p95")
        _ = row
    rep.add("ingest_caught_up_s", behind, "s", label="  writer done -> last record painted")
    rep.add("ingest_rss_mib", final_rss, "MiB", target=300, label="  TUI RSS after the ingest")
    rep.finish(args.out)


if __name__ == "__main__":
    main()
