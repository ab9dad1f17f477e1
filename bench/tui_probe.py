"""Runs the real `labtui` (labtui.main.main with no command) in this process and times it.

Started by the TUI benchmarks in a fresh subprocess; prints one JSON line (`PROBE {...}`) with
absolute `time.time()` marks, which the parent turns into durations from its own `Popen` call
(so interpreter start-up counts). The app draws into a terminal driver whose output goes nowhere
(a real frame is rendered to escape sequences at the given size, then dropped).

Marks: exec (first line of this file runs), imported (labtui.main and tui.app imported), mounted,
dashboard (the first frame with the run list painted: its first rows, the title counting every run),
all_rows (every run added to the list and painted; a long list gets its first rows before the first
frame and the rest right after it), chart (the selected run's loss chart painted with
its whole history), history_pushed / history (the History table painted: with every
comparison, or, when many are still to compute, its rows first) / history_full (with every
comparison), overlay (with --mark A,B,..: the runs marked one after another, as `space` does, once
the dashboard is painted; the loss chart painted with every marked run caught up; the last of those
draws' own time is `overlay_draw_ms`), ingest_* (see --ingest). `--until ingest` appends to the run it selects:
bench_huge_run.py puts the run back afterwards; by hand, use a copy of the data set.
"""

from __future__ import annotations

import time

MARKS: dict[str, float] = {"exec": time.time()}

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from pathlib import Path  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("workspace")
    ap.add_argument("--until", choices=("dashboard", "chart", "history", "ingest", "overlay"), default="dashboard")
    ap.add_argument("--select", help="run id to select once the list is drawn (default: the dashboard's choice)")
    ap.add_argument("--mark", default="", help="run ids, comma-separated, to mark on the dashboard (--until overlay)")
    ap.add_argument("--size", default="120x40")
    ap.add_argument("--no-index", action="store_true", help="read metrics.jsonl as JSON even where an index exists")
    ap.add_argument("--ingest-rate", type=int, default=10_000)
    ap.add_argument("--ingest-seconds", type=float, default=10.0)
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--entry", choices=("cli", "app"), default="cli",
                    help="cli: labtui.main.main([]), as the `labtui` command; app: LabApp(workspace).run(), "
                         "what the CLI calls once it has parsed its arguments")
    args = ap.parse_args()
    width, height = (int(x) for x in args.size.split("x"))

    if args.entry == "cli":
        import labtui.main
    import labtui.tui.app
    MARKS["imported"] = time.time()
    heavy = [m for m in ("torch", "transformers", "peft", "trl", "datasets") if m in sys.modules]

    from common import rss_mib
    from labtui.tui import tail as tail_mod
    from labtui.tui.screens.dashboard import DashboardScreen
    from labtui.tui.screens.history import HistoryScreen
    from labtui.tui.widgets.loss_chart import LossChart
    from textual.drivers.headless_driver import HeadlessDriver

    if args.no_index:
        tail_mod.INDEX_MIN_BYTES = tail_mod.INDEX_BATCH_BYTES = 1 << 62

    class NullTerminal(HeadlessDriver):
        """Renders frames like a terminal driver (escape sequences and all), writes them nowhere."""

        @property
        def is_headless(self) -> bool:
            return False

    info: dict = {"heavy_modules": heavy, "refresh_ms": [], "run_data_ms": [], "latency_ms": [], "polls": []}
    App = labtui.tui.app.LabApp
    state = {"app": None, "posted": {}, "done": False, "writer": None}

    def mark(name: str, **extra) -> None:
        if name not in MARKS:
            MARKS[name] = time.time()
            info.update(extra)
        check_done()

    def check_done() -> None:
        app = state["app"]
        need = {"dashboard": ["dashboard"], "chart": ["dashboard", "chart"],
                "history": ["dashboard", "history", "history_full"], "overlay": ["dashboard", "overlay"], "ingest": ["dashboard", "chart", "ingest_done"]}[args.until]
        if not state["done"] and all(k in MARKS for k in need):
            state["done"] = True
            app.call_later(app.exit)

    # --- hooks into the real app --------------------------------------------------------------
    orig_init = App.__init__

    def init(self, *a, **kw):
        orig_init(self, *a, **kw)
        state["app"] = self
        self.driver_class = NullTerminal
        monitor = self.monitor
        post = monitor.post

        def timed_post(message):
            if type(message).__name__ == "RunsScanned" and "scanned" not in MARKS:
                MARKS["scanned"] = time.time()
            snap = getattr(message, "snapshot", None)
            if snap is not None:
                state["posted"][snap.version] = time.time()
            return post(message)

        monitor.post = timed_post
        poll = monitor._poll_selected

        def timed_poll():
            t = time.perf_counter()
            poll()
            if "ingest_start" in MARKS and "ingest_done" not in MARKS:
                info["polls"].append((time.perf_counter() - t) * 1000)

        monitor._poll_selected = timed_poll
        scan = monitor.scanner.scan

        def timed_scan():
            MARKS.setdefault("scan_start", time.time())
            rows = scan()
            MARKS.setdefault("scan_end", time.time())
            return rows

        monitor.scanner.scan = timed_scan

    App.__init__ = init

    orig_run = App.run

    def run(self, *a, **kw):
        kw["size"] = (width, height)
        return orig_run(self, *a, **kw)

    App.run = run

    orig_mount = App.on_mount

    def on_mount(self):
        MARKS["mounted"] = time.time()
        self.set_timer(args.timeout, lambda: (info.update(timed_out=True), self.exit()))
        return orig_mount(self)

    App.on_mount = on_mount

    from labtui.tui.widgets import run_list as run_list_mod

    orig_fill = run_list_mod.fill

    def fill(table, count, row, around=0):
        def timed_row(i):
            if i == count - 1:  # the list's last row is being added: painted at the next refresh
                table.call_after_refresh(lambda: MARKS.setdefault("all_rows", time.time()))
            return row(i)

        return orig_fill(table, count, timed_row, around)

    run_list_mod.fill = fill

    orig_scanned = App.on_runs_scanned

    def on_runs_scanned(self, message):
        MARKS.setdefault("scan_handler", time.time())
        orig_scanned(self, message)
        MARKS.setdefault("scan_handled", time.time())
        if message.rows and "dashboard" not in MARKS:
            n = len(message.rows)

            def painted():
                mark("dashboard", runs=n)
                if args.select and self.selected_id != args.select:
                    self.select_run(args.select)
                    if isinstance(self.screen, DashboardScreen):
                        self.screen._runs_changed()
                if args.until == "overlay" and isinstance(self.screen, DashboardScreen):
                    for run_id in filter(None, args.mark.split(",")):
                        self.select_run(run_id)
                        self.screen.action_mark()
                if args.until == "history":
                    MARKS["history_pushed"] = time.time()
                    self.push_screen(HistoryScreen())

            self.call_after_refresh(painted)

    App.on_runs_scanned = on_runs_scanned

    orig_run_data = App.on_run_data

    def on_run_data(self, message):
        t = time.perf_counter()
        orig_run_data(self, message)
        snap = message.snapshot
        info["run_data_ms"].append((time.perf_counter() - t) * 1000)
        posted = state["posted"].get(snap.version)

        def painted():
            if posted is not None and "ingest_start" in MARKS and "ingest_done" not in MARKS:
                info["latency_ms"].append((time.time() - posted) * 1000)
            if snap.caught_up and snap.train_count and (not args.select or snap.run_id == args.select):
                if "chart" not in MARKS:
                    info.update(train_count=snap.train_count, indexed=getattr(self.monitor.tail(snap.run_id), "indexed_records", None),
                                chart_drawn=self.screen.query_one(LossChart)._drawn_for is not None
                                if isinstance(self.screen, DashboardScreen) else None)
                    mark("chart")
                    if args.until == "ingest":
                        start_ingest(self, snap.run_id)
                else:
                    maybe_done(self)

        self.call_after_refresh(painted)

    App.on_run_data = on_run_data

    from textual.screen import Screen

    orig_timer = Screen._on_timer_update

    def on_timer_update(self):
        what = sorted({type(w).__name__ for w in self._dirty_widgets}) + (["layout"] if self._layout_required else [])
        t = time.perf_counter()
        orig_timer(self)
        if "ingest_start" in MARKS and "ingest_done" not in MARKS:
            ms = (time.perf_counter() - t) * 1000
            info["refresh_ms"].append(ms)
            info.setdefault("refresh_detail", []).append((round(ms, 1), what))

    Screen._on_timer_update = on_timer_update

    orig_loaded = HistoryScreen._loaded

    def loaded(self, version, rows, comparing=False):
        orig_loaded(self, version, rows, comparing)
        if self.loaded and "history" not in MARKS:
            self.call_after_refresh(lambda: mark("history", history_rows=len(rows)))
        if self.loaded and not comparing and "history_full" not in MARKS:
            self.call_after_refresh(lambda: mark("history_full"))

    HistoryScreen._loaded = loaded

    def maybe_done(app) -> None:
        """Ingest is done when the writer has ended and the drawn snapshot holds all it wrote."""
        snap = app.snapshot
        if "ingest_writer_done" not in MARKS or snap is None or "ingest_done" in MARKS:
            return
        tail = app.monitor.tail(snap.run_id)
        if tail is not None and snap.metrics_offset >= tail.metrics.size():
            info.update(ingest_final_count=snap.train_count, writer_out=state.get("writer_out"),
                        final_rss_mib=rss_mib())
            mark("ingest_done")

    def start_ingest(app, run_id: str) -> None:
        run_dir = app.workspace.logs / run_id
        MARKS["ingest_start"] = time.time()
        proc = subprocess.Popen([sys.executable, str(HERE / "ingest_writer.py"), str(run_dir),
                                 "--rate", str(args.ingest_rate), "--seconds", str(args.ingest_seconds)],
                                stdout=subprocess.PIPE, text=True)
        state["writer"] = proc

        def wait():
            out, _ = proc.communicate()
            state["writer_out"] = json.loads(out.strip().splitlines()[-1]) if out.strip() else None
            MARKS["ingest_writer_done"] = time.time()
            app.monitor.wake()
            app.call_from_thread(app.set_interval, 0.05, lambda: maybe_done(app))

        threading.Thread(target=wait, daemon=True).start()

    orig_draw, orig_render = LossChart.draw, LossChart.render

    def draw(self):
        self._probe_drew = True
        return orig_draw(self)

    def render(self):
        """Times a render that drew (plotext's draw calls and its build), for overlay_draw_ms."""
        self._probe_drew = False
        t = time.perf_counter()
        out = orig_render(self)
        ms = (time.perf_counter() - t) * 1000
        marked = [run_id for run_id, _, _ in self.marked]
        snaps = [self.overlay.get(run_id) for run_id in marked]
        if (self._probe_drew and args.until == "overlay" and marked and "overlay" not in MARKS
                and len(self.drawn) == len(marked) and all(s is not None and s.caught_up for s in snaps)):
            extra = {"overlay_draw_ms": ms, "overlay_runs": [{k: d[k] for k in ("run_id", "train", "eval")} for d in self.drawn],
                     "overlay_train_counts": [s.train_count for s in snaps]}
            self.call_after_refresh(lambda: mark("overlay", **extra))
        return out

    LossChart.draw, LossChart.render = draw, render
    os.environ.pop("LABTUI_THEME", None)
    if args.entry == "cli":
        labtui.main.main(["--workspace", args.workspace])
    else:
        from labtui.engine.rundir import store

        labtui.tui.app.LabApp(workspace=store.Workspace(args.workspace)).run()
    if state["writer"] is not None and state["writer"].poll() is None:
        state["writer"].kill()
    from common import peak_rss_mib

    info.update(rss_mib=rss_mib(), peak_rss_mib=peak_rss_mib(), torch_loaded_at_end="torch" in sys.modules,
                posted={str(v): t for v, t in state["posted"].items()})
    print("PROBE " + json.dumps({"marks": MARKS, **info}), flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
