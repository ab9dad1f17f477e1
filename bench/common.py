"""What every benchmark shares: the machine it ran on, medians, the load average, the output.

Each benchmark prints a table and then its JSON (between `--- JSON ---` and `--- END ---`), and
writes the JSON to `bench/results/<name>.json` (or `--out DIR`). The JSON holds the date, the exact
command, the machine (CPU count and model, RAM, Python/torch/numpy/textual versions), the load
average before and after, and for each figure its median, every repeat, the target and whether it
was met. Nothing here imports torch (its version is read from the package metadata).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shlex
import statistics
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results"
QUIET_LOAD = 2.5  # the one-minute load average below which figures are worth recording


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _cpu_model() -> str:
    from labtui.engine.runtime.sysmon import cpu_name

    return cpu_name()


def _ram_gib() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine() -> dict:
    return {
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": _cpu_model(),
        "ram_gib": _ram_gib(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": _version("torch"),
        "numpy": _version("numpy"),
        "textual": _version("textual"),
        "transformers": _version("transformers"),
        "tensorboard": _version("tensorboard"),
        "gpu": False if not os.path.exists("/proc/driver/nvidia") else True,
        "bytecode_cache_in_timed_processes": True,
        "bytecode_cache_in_this_process": not sys.dont_write_bytecode,
    }


def wait_quiet(max_load: float = QUIET_LOAD, timeout: float = 0.0, log: Callable[[str], Any] = print) -> float:
    """Wait (up to `timeout` seconds) for the one-minute load average to drop below `max_load`."""
    deadline = time.time() + timeout
    load = os.getloadavg()[0]
    while load >= max_load and time.time() < deadline:
        log(f"[bench] load average {load:.2f} >= {max_load}: waiting...")
        time.sleep(min(15.0, max(1.0, deadline - time.time())))
        load = os.getloadavg()[0]
    return load


def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if unit in ("s",) and value < 1:
            return f"{value * 1000:.0f} ms"
        if abs(value) >= 100:
            return f"{value:,.0f}{(' ' + unit) if unit else ''}"
        return f"{value:.3g}{(' ' + unit) if unit else ''}"
    return f"{value}{(' ' + unit) if unit else ''}"


class Report:
    """One benchmark's figures. `add` one figure with all its repeats; `finish` prints and saves."""

    def __init__(self, name: str, args: argparse.Namespace | None = None, title: str = ""):
        self.name = name
        self.title = title or name
        self.args = args
        self.started = time.time()
        self.load_before = load_avg()
        self.results: list[dict] = []
        self.notes: list[str] = []
        self.extra: dict = {}

    def add(self, key: str, values: list[float] | float, unit: str, *, target: float | None = None,
            better: str = "lower", label: str = "", note: str = "", **extra: Any) -> dict:
        vals = [float(v) for v in (values if isinstance(values, (list, tuple)) else [values])]
        med = median(vals)
        met = None
        if target is not None and med is not None:
            met = med < target if better == "lower" else med > target
        row = {"key": key, "label": label or key, "median": med, "unit": unit, "repeats": len(vals),
               "values": [round(v, 6) for v in vals], "min": min(vals) if vals else None,
               "max": max(vals) if vals else None, "target": target,
               "target_text": None if target is None else f"{'<' if better == 'lower' else '>'} {fmt(float(target), unit)}",
               "met": met, "note": note, **extra}
        self.results.append(row)
        return row

    def note(self, text: str) -> None:
        self.notes.append(text)

    def as_dict(self) -> dict:
        return {
            "benchmark": self.name,
            "title": self.title,
            "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv]),
            "machine": machine(),
            "load_before": self.load_before,
            "load_after": load_avg(),
            "wall_s": round(time.time() - self.started, 2),
            "results": self.results,
            "notes": self.notes,
            **self.extra,
        }

    def table(self) -> str:
        rows = [("figure", "median", "repeats", "min..max", "target", "met")]
        for r in self.results:
            span = f"{fmt(r['min'], r['unit'])}..{fmt(r['max'], r['unit'])}" if r["repeats"] > 1 else ""
            met = {True: "yes", False: "NO", None: ""}[r["met"]]
            rows.append((r["label"], fmt(r["median"], r["unit"]), str(r["repeats"]), span, r["target_text"] or "", met))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
                 for row in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def finish(self, out: str | os.PathLike | None = None) -> dict:
        data = self.as_dict()
        m = data["machine"]
        print(f"\n== {self.title} ==  {data['date']}")
        print(f"   {m['cpu_count']} x {m['cpu_model']}, {m['ram_gib']} GiB RAM, Python {m['python']}, "
              f"torch {m['torch']}; load average {data['load_before']} -> {data['load_after']}")
        print(self.table())
        for n in self.notes:
            print(f"   note: {n}")
        print("--- JSON ---")
        print(json.dumps(data, indent=1))
        print("--- END ---")
        folder = Path(out) if out else RESULTS
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{self.name}.json").write_text(json.dumps(data, indent=1) + "\n")
        return data


def parser(description: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--repeats", type=int, default=5, help="repeats per figure (the median is reported)")
    ap.add_argument("--quick", action="store_true", help="small sizes and few repeats: checks that it runs")
    ap.add_argument("--out", help="folder for the JSON results (default bench/results)")
    ap.add_argument("--cache", help="folder for generated data (default $LABTUI_BENCH_CACHE or a temp folder)")
    ap.add_argument("--wait-quiet", type=float, default=0.0, metavar="S",
                    help=f"wait up to S seconds for the load average to drop below {QUIET_LOAD} first")
    return ap


def _status_kib(field: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return float(line.split()[1])
    except OSError:
        pass
    return None


def peak_rss_mib() -> float:
    """This process's peak RSS (VmHWM: unlike ru_maxrss it does not inherit the parent's peak)."""
    kib = _status_kib("VmHWM")
    if kib is None:
        import resource

        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024.0


def rss_mib() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return peak_rss_mib()


def child_env(**extra: str) -> dict:
    """The environment of the processes a benchmark times: as a user's shell has it, with Python's
    bytecode cache on (PYTHONDONTWRITEBYTECODE, set in some sandboxes, would make every start
    compile labtui's own modules again: about 0.1 s for the TUI, more for the CLI)."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.update(extra)
    return env
