"""Per-rank heartbeats of a multi-process run: `logs/<run-id>/ranks/<rank>.json`.

Every rank of a torchrun / accelerate run (world rank 0 included) replaces its own small JSON file
atomically, at least every `RANK_HEARTBEAT_S` seconds and whenever its step changes; nobody else writes
it, so no locks. Readers (the supervisor's watch, `labtui show`, the TUI) read them all with
`read_ranks`, which adds the age of each heartbeat and a derived `status`. torchrun's own per-rank
logs (`--log-dir`) live beside them in `ranks/torchrun/`. A single-process run has no `ranks/` folder.

A heartbeat record (`RANK_FIELDS`):
  rank, local_rank, world_size  world rank, rank on its node, number of ranks
  host, pid, pid_start          where it runs, and the process's start time (store.process_start_time)
  step, step_time               the global step the rank has finished, and when `step` last changed
  time                          when this heartbeat was written (epoch seconds)
  device                        "cpu", "cuda:0", ...
  mem_allocated, mem_reserved, mem_peak   torch.cuda bytes on that device; null on the CPU
  state                         "running" | "stopping" | "done" | "failed"
Nothing here imports torch or textual.
"""

from __future__ import annotations

import os
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from labtui.engine.rundir import store

RANKS_DIR = "ranks"
TORCHRUN_LOG_DIR = "torchrun"  # ranks/torchrun/: torchrun's --log-dir output
# how often a rank rewrites its heartbeat even when its step does not change (a thread of the worker)
RANK_HEARTBEAT_S = 5.0
# a live rank whose heartbeat is older than this is frozen (SIGSTOP, a hang that holds the GIL) or dead
RANK_STALE_S = 30.0

STATES = ("running", "stopping", "done", "failed")
# the derived status read_ranks adds: a rank's own state, or one of these when the file tells otherwise
STALE = "stale"  # its state says live but its heartbeat has aged past RANK_STALE_S
GONE = "gone"  # its state says live but its process (on this host) no longer exists

RANK_FIELDS: dict[str, Callable[[Any], Any]] = {
    "rank": store.as_whole, "local_rank": store.as_whole, "world_size": store.as_whole, "host": store.as_text,
    "pid": store.as_whole, "pid_start": store.as_finite, "step": store.as_whole, "step_time": store.as_finite,
    "time": store.as_finite, "device": store.as_text, "mem_allocated": store.as_real,
    "mem_reserved": store.as_real, "mem_peak": store.as_real, "state": store.as_text,
}
_RANK_FILE = re.compile(r"^(0|[1-9][0-9]{0,5})\.json$")


def ranks_dir(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / RANKS_DIR


def heartbeat_path(run_dir: str | os.PathLike, rank: int) -> Path:
    """`<run>/ranks/<rank>.json`."""
    return ranks_dir(run_dir) / f"{int(rank)}.json"


def write_heartbeat(run_dir: str | os.PathLike, rec: dict) -> None:
    """Replace rank `rec["rank"]`'s heartbeat file atomically (creating `ranks/` when needed)."""
    rank = store.as_whole(rec.get("rank"))
    if rank is None or rank < 0:
        raise ValueError(f"a heartbeat needs a world rank >= 0, not {rec.get('rank')!r}")
    path = heartbeat_path(run_dir, rank)
    path.parent.mkdir(parents=True, exist_ok=True)
    store.atomic_write_json(path, rec)


def _state(rec: dict) -> str:
    """The rank's own state; an unknown one reads as running."""
    state = rec.get("state")
    return state if isinstance(state, str) and state in STATES else "running"


def _status(rec: dict, age: float | None, host: str, check_pids: bool) -> str:
    state = _state(rec)
    if state in ("done", "failed"):
        return state
    if check_pids and rec.get("host") == host and rec.get("pid") is not None \
            and not store.process_alive(rec.get("pid"), rec.get("pid_start")):
        return GONE
    if age is None or age > RANK_STALE_S:
        return STALE
    return state


def read_ranks(run_dir: str | os.PathLike, now: float | None = None, check_pids: bool = True) -> list[dict]:
    """Every rank's heartbeat, sorted by rank: the record's fields (`RANK_FIELDS`, a field of the wrong
    type left out) plus `heartbeat_age` (seconds since `time`, None when unknown) and `status` (the
    rank's `state`, or `stale` / `gone`, see above). Only files named `<int>.json` count; a file that
    is not a JSON object, or whose `rank` disagrees with its name, is skipped. With `check_pids`, a
    live rank on this host whose process is gone reads as `gone`. [] when there is no `ranks/` folder."""
    folder = ranks_dir(run_dir)
    try:
        names = [e.name for e in os.scandir(folder) if _RANK_FILE.match(e.name)]
    except OSError:
        return []
    now = time.time() if now is None else now
    host = socket.gethostname()
    out = []
    for name in names:
        raw = store.read_json(folder / name)
        if not isinstance(raw, dict):
            continue
        rec = store.clean(raw, RANK_FIELDS)
        rank = int(name[:-5])
        if rec.get("rank", rank) != rank:
            continue
        rec["rank"] = rank
        t = rec.get("time")
        rec["heartbeat_age"] = max(0.0, now - t) if t is not None else None
        rec["status"] = _status(rec, rec["heartbeat_age"], host, check_pids)
        out.append(rec)
    out.sort(key=lambda r: r["rank"])
    return out


def at(recs: list[dict] | tuple[dict, ...], now: float) -> list[dict]:
    """`read_ranks`' records with `heartbeat_age` and the age-dependent `status` (`stale`) worked out
    again for `now`: a reader that keeps records while the clock moves on (the TUI draws ages long
    after it read the files). A `gone` found by the process check, `done` and `failed` stay."""
    out = []
    for rec in recs:
        t = rec.get("time")
        age = max(0.0, now - t) if t is not None else None
        status = rec.get("status")
        if status not in (GONE, "done", "failed"):
            status = STALE if age is None or age > RANK_STALE_S else _state(rec)
        out.append({**rec, "heartbeat_age": age, "status": status})
    return out


def _live(ranks: list[dict]) -> list[dict]:
    return [r for r in ranks if r.get("status") in ("running", "stopping", STALE) and r.get("step") is not None]


def step_skew(ranks: list[dict]) -> int | None:
    """Steps between the most and the least advanced live rank; None with fewer than two such ranks."""
    steps = [r["step"] for r in _live(ranks)]
    return max(steps) - min(steps) if len(steps) >= 2 else None


@dataclass(frozen=True)
class Straggler:
    rank: int
    host: str | None
    step: int
    behind: int  # steps behind the most advanced rank
    lead_step: int  # the most advanced rank's step

    def text(self) -> str:
        """`rank 1 slow: 3 steps behind`."""
        return f"rank {self.rank} slow: {self.behind} step{'s' if self.behind != 1 else ''} behind"


STRAGGLER_WAIT_S = 10.0  # a rank one step behind is a straggler once the others have waited this long


def _waited(rec: dict) -> float:
    """How long `rec`'s rank has been at its step, as of now (its heartbeat's time plus its age)."""
    t, st, age = rec.get("time"), rec.get("step_time"), rec.get("heartbeat_age")
    if not isinstance(t, (int, float)) or not isinstance(st, (int, float)):
        return 0.0
    return t + (age if isinstance(age, (int, float)) else 0.0) - st


def straggler(ranks: list[dict], min_behind: int = 2, wait_s: float = STRAGGLER_WAIT_S) -> Straggler | None:
    """The live rank the others wait for: the lowest step, at least `min_behind` behind the most
    advanced one, or one step behind while the most advanced rank has waited `wait_s` seconds at its
    step (in lockstep DDP the ranks are often one step apart for a moment: that is no straggler);
    among several at that step the one whose step is oldest (`step_time`). None when every live rank
    is at the same step (or fewer than two are live)."""
    live = _live(ranks)
    if len(live) < 2:
        return None
    lead = max(r["step"] for r in live)
    low = min(r["step"] for r in live)
    if lead == low:
        return None
    if lead - low < max(1, min_behind) and max(_waited(r) for r in live if r["step"] == lead) < wait_s:
        return None
    behind = [r for r in live if r["step"] == low]
    slow = min(behind, key=lambda r: (r.get("step_time") if r.get("step_time") is not None else float("-inf"),
                                      r["rank"]))
    return Straggler(rank=slow["rank"], host=slow.get("host"), step=low, behind=lead - low, lead_step=lead)


@dataclass(frozen=True)
class StalledRank:
    rank: int
    host: str | None
    step: int | None
    idle_s: float  # how long the rank has not finished a step (or not written a heartbeat)
    others_step: int | None  # the step the other live ranks are at (the most advanced)
    frozen: bool  # True: its heartbeat aged while the others' stayed fresh; False: its step did not advance

    def message(self) -> str:
        """`rank 1 on host h has not finished a step for 12 min (others at step 40 wait)`."""
        where = f"rank {self.rank}" + (f" on host {self.host}" if self.host else "")
        mins = self.idle_s / 60
        span = f"{mins:.0f} min" if mins >= 1 else f"{self.idle_s:.0f} s"
        others = f" (others at step {self.others_step} wait)" if self.others_step is not None else ""
        if self.frozen:
            return f"{where} has not written a heartbeat for {span}{others}"
        return f"{where} has not finished a step for {span}{others}"


def stalled_rank(ranks: list[dict], now: float, after_s: float) -> StalledRank | None:
    """A rank that stopped while the others wait, idle for at least `after_s` seconds: either its
    heartbeat has aged past `after_s` while some other live rank's heartbeat is fresh (the process is
    frozen or hangs holding the GIL), or it is the straggler (lowest step) and has not finished a step
    for `after_s` while another rank is ahead. None for a single rank, or when every rank is equally
    stuck (nothing names one rank; the run-wide `stalled` check covers that)."""
    live = _live(ranks)
    if len(live) < 2:
        return None
    lead = max(r["step"] for r in live)
    fresh = [r for r in live if r.get("heartbeat_age") is not None and r["heartbeat_age"] < min(after_s, RANK_STALE_S)]
    aged = [r for r in live if r.get("heartbeat_age") is None or r["heartbeat_age"] >= after_s]
    if fresh and aged:
        r = max(aged, key=lambda r: (r["heartbeat_age"] if r.get("heartbeat_age") is not None else float("inf")))
        idle = r["heartbeat_age"] if r.get("heartbeat_age") is not None else after_s
        others = max(o["step"] for o in live if o is not r)
        return StalledRank(rank=r["rank"], host=r.get("host"), step=r["step"], idle_s=idle, others_step=others,
                           frozen=True)
    slow = straggler(live, wait_s=0.0)  # its own idle time decides below
    if slow is None:
        return None
    rec = next(r for r in live if r["rank"] == slow.rank)
    t = rec.get("step_time")
    if t is None:
        return None
    idle = now - t
    if idle < after_s:
        return None
    return StalledRank(rank=slow.rank, host=slow.host, step=slow.step, idle_s=idle, others_step=lead, frozen=False)


def device_index(device: str | None) -> int | None:
    """The GPU index of a torch device string: `cuda:1` -> 1, `cuda` -> 0; None for the CPU or unknown."""
    if not isinstance(device, str) or not device.startswith("cuda"):
        return None
    _, _, idx = device.partition(":")
    return int(idx) if idx.isdigit() else 0 if not idx else None


def summary(rec: dict) -> dict:
    """The fields `labtui show --json` lists per rank."""
    return {"rank": rec.get("rank"), "host": rec.get("host"), "pid": rec.get("pid"), "step": rec.get("step"),
            "heartbeat": rec.get("time"), "heartbeat_age": rec.get("heartbeat_age"), "status": rec.get("status"),
            "device": rec.get("device"), "mem_allocated": rec.get("mem_allocated"),
            "mem_reserved": rec.get("mem_reserved"), "mem_peak": rec.get("mem_peak")}


LAUNCHERS = ("python", "torchrun", "accelerate")
SINGLE_PROCESS = {"launcher": "python", "nproc": 1, "accelerate_config": None, "command": None}


def launch_info(state: dict | None, config: dict | None) -> dict:
    """How the run was (or will be) started: state.json's `launch` (written at launch, with the resolved
    number of processes), else the config's `launch` section (`nproc` None while `auto` is unresolved),
    else a single Python process. Keys: launcher, nproc, accelerate_config, command."""
    given = (state or {}).get("launch")
    if isinstance(given, dict) and isinstance(given.get("launcher"), str):
        nproc = store.as_whole(given.get("nproc"))
        out = {"launcher": given["launcher"], "nproc": nproc, "accelerate_config": store.as_text(given.get("accelerate_config")),
               "command": store.as_texts(given.get("command"))}
        nnodes = store.as_whole(given.get("nnodes"))
        if nnodes is not None and nnodes > 1:  # a multi-node Slurm run: nproc is per node
            out["nnodes"] = nnodes
        return out
    section = (config or {}).get("launch")
    if isinstance(section, dict) and isinstance(section.get("launcher"), str):
        launcher = section["launcher"]
        nproc = store.as_whole(section.get("nproc_per_node"))
        if launcher == "python":
            nproc = 1
        return {"launcher": launcher, "nproc": nproc, "accelerate_config": store.as_text(section.get("accelerate_config")),
                "command": None}
    return dict(SINGLE_PROCESS)


def launch_text(launch: dict) -> str:
    """`torchrun, 2 processes`, `accelerate (zero2), 8 processes`, `python, 1 process`, and for a
    multi-node run `torchrun, 2 nodes x 4 processes (8 ranks)`."""
    n = launch.get("nproc")
    procs = "? processes" if n is None else f"{n} process{'es' if n != 1 else ''}"
    nodes = launch.get("nnodes")
    if isinstance(nodes, int) and nodes > 1:
        procs = f"{nodes} nodes x {procs}" + (f" ({nodes * n} ranks)" if n is not None else "")
    preset = f" ({launch['accelerate_config']})" if launch.get("accelerate_config") else ""
    return f"{launch.get('launcher')}{preset}, {procs}"


def mem_text(rec: dict) -> str:
    """`1.2G/3.4G`, `950M/1.2G` (torch memory allocated / peak) or `-` on the CPU."""
    alloc, peak = rec.get("mem_allocated"), rec.get("mem_peak")
    if alloc is None and peak is None:
        return "-"
    return f"{_size(alloc)}/{_size(peak)}"


def _size(x: float | None) -> str:
    if x is None:
        return "?"
    return f"{x / 2**30:.1f}G" if x >= 2**30 else f"{x / 2**20:.0f}M"
