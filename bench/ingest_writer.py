"""A stand-in training worker for the ingest benchmark: appends metric records to a run at a fixed rate.

`python bench/ingest_writer.py RUN_DIR --rate 10000 --seconds 10` marks the run `running` with this
process's pid (so readers see it live), then every 10 ms appends rate/100 train records (an eval every
1,000 steps) through engine.store.IndexedJsonlWriter, as LabtuiCallback does, and rewrites
progress.json every 2 s. Prints one JSON line: records written, seconds, achieved rate.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from labtui.engine.rundir import store  # noqa: E402
from synth import _train_record  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir")
    ap.add_argument("--rate", type=int, default=10_000)
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    run = store.Run(Path(args.run_dir))
    got = store.read_metrics_index(run.file(store.METRICS_FILE))
    step, t_prev = 0, time.time()
    if got is not None:
        entries, _ = got
        train = entries[(entries["kind"] & store.KIND_MASK) == 1]
        if len(train):
            step = int(train["step"][-1])
    me = os.getpid()
    now = time.time()
    run.update_state(status="running", pid=me, pid_start=store.process_start_time(me), supervisor_pid=None,
                     host=socket.gethostname(), heartbeat=now, ended=None, exit_code=None)
    progress = run.progress()
    progress.pop("result", None)
    w = store.IndexedJsonlWriter(run.file(store.METRICS_FILE), run.file(store.METRICS_INDEX_FILE))
    rng = random.Random(5)
    per_tick = max(1, args.rate // 100)
    t0 = time.time()
    written, tokens, next_progress, tick = 0, 0, t0, 0
    max_steps = step + int(args.rate * args.seconds) + 1000
    while True:
        tick += 1
        due = t0 + tick * 0.01
        if due > t0 + args.seconds:
            break
        for _ in range(per_tick):
            step += 1
            tokens += 4096
            t = time.time()
            w.write(_train_record(rng, step, max_steps, t, t0, tokens))
            written += 1
            if step % 1000 == 0:
                w.write({"kind": "eval", "t": t, "step": step, "eval_loss": 0.5})
                written += 1
        now = time.time()
        if now >= next_progress:
            progress.update(step=step, max_steps=max_steps, train_loss=0.5, updated=now, status="running")
            store.atomic_write_text(run.file(store.PROGRESS_FILE), store.dumps(progress))
            next_progress = now + 2.0
        if due > now:
            time.sleep(due - now)
    w.close()
    elapsed = time.time() - t0
    _ = t_prev
    print(json.dumps({"records": written, "seconds": round(elapsed, 3), "rate": round(written / elapsed, 1),
                      "last_step": step}))


if __name__ == "__main__":
    main()
