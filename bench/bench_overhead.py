"""Target 4: the engine's monitoring costs under 1% of step time.

One process trains the demo's tiny Llama (engine.worker.build_trainer on experiments/
demo-baseline.yaml: transformers.Trainer, LoRA, the same seed and data every time; evaluation and
checkpoints off; a loss record every step, labtui's worst case) in interleaved blocks:
  bare        no labtui callback
  monitored   LabtuiCallback (metrics.jsonl + metrics.idx + progress.json, its GPU memory sampler
              thread) and the machine sampler (engine.sysmon.Sampler, which the supervisor runs in
              its own process) in a thread of this one, at the experiment's intervals
  watchdog    monitored + engine.watchdog.Watchdog, as engine.worker wires it (when present)
Each block times steps 10..N with a callback present in every arm; the figure is the median over
blocks of steps/s(monitored) / steps/s(bare) of the same block. Then the per-call cost of each
piece in microseconds, on real TrainingArguments/TrainerState objects, which divided by the step
time gives the overhead without the noise of whole training runs.
"""

from __future__ import annotations

import contextlib
import io
import os
import statistics
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

import synth  # noqa: E402
from common import ROOT, Report, parser, wait_quiet  # noqa: E402

WARMUP = 10


def make_run(ws_root: Path, cfg: dict, name: str):
    import yaml
    from labtui.engine.rundir import store

    ws = store.Workspace(ws_root)
    return ws.create_run(name, {"experiment": name, "kind": "train", "workspace": str(ws.root)},
                         config_text=yaml.safe_dump(cfg, sort_keys=False))


def quiet() -> None:
    import warnings

    import datasets
    import transformers

    warnings.filterwarnings("ignore")
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()


def train_block(ws_root: Path, cfg: dict, arm: str, steps: int) -> dict:
    from labtui.engine.rundir import store
    from labtui.engine.runtime import sysmon
    from labtui.engine.training.callback import LabtuiCallback
    from labtui.engine.training.worker import build_trainer
    from transformers import TrainerCallback

    quiet()
    run = make_run(ws_root, cfg, f"overhead-{arm}")
    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter())

    stop = threading.Event()
    sampler_thread = None
    eng = cfg["engine"]
    if arm == "bare":
        cb = Clock()
        with contextlib.redirect_stdout(io.StringIO()):
            trainer = build_trainer(run, cfg, ws_root, cb)
    else:
        cb = LabtuiCallback(run.path, sample_interval=float(eng.get("sample_interval") or 5), handle_sigterm=False)
        with contextlib.redirect_stdout(io.StringIO()):
            trainer = build_trainer(run, cfg, ws_root, cb)
        trainer.add_callback(Clock())
        if arm == "watchdog":
            from labtui.engine.training.watchdog import Watchdog

            wd = Watchdog(run, cfg, cb)
            cb.watchdog = wd
            with contextlib.redirect_stdout(io.StringIO()):
                wd.on_trainer(trainer)
        interval = float(eng.get("heartbeat_interval") or 5)

        def machine():  # the supervisor's loop (engine/runtime/supervisor.py), here in a thread
            s = sysmon.Sampler(os.getpid(), run.path)
            w = store.JsonlWriter(run.file(store.SYSTEM_FILE))
            while not stop.wait(interval):
                w.write(s.sample())
            w.close()

        sampler_thread = threading.Thread(target=machine, daemon=True)
        sampler_thread.start()
    try:
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):  # the Trainer prints each log
            trainer.train()
    finally:
        stop.set()
        if sampler_thread:
            sampler_thread.join()
        if arm != "bare":
            cb.finish("completed")
    span = times[-1] - times[WARMUP - 1]
    return {"steps_per_s": (len(times) - WARMUP) / span, "step_ms": span / (len(times) - WARMUP) * 1000,
            "steps": len(times)}


def per_call(ws_root: Path, cfg: dict, n: int) -> dict[str, float]:
    """Microseconds per call of each monitoring piece, on the real Trainer objects."""
    from labtui.engine.rundir import store
    from labtui.engine.runtime import sysmon
    from labtui.engine.training.callback import LabtuiCallback
    from transformers import TrainerControl, TrainerState, TrainingArguments

    run = make_run(ws_root, cfg, "overhead-calls")
    args = TrainingArguments(output_dir=str(run.file("checkpoints")), per_device_train_batch_size=16,
                             report_to="none", use_cpu=True)
    state, control = TrainerState(), TrainerControl()
    state.max_steps = 10**9
    cb = LabtuiCallback(run.path, sample_interval=0, handle_sigterm=False)
    out = {}

    def timed(key: str, fn, count: int) -> None:
        t = time.perf_counter()
        for _ in range(count):
            fn()
        out[key] = (time.perf_counter() - t) / count * 1e6

    def step_end():
        state.global_step += 1
        cb.on_step_end(args, state, control)

    def log():
        state.global_step += 1
        state.num_input_tokens_seen += 4096
        cb.on_log(args, state, control, logs={"loss": 1.2345, "grad_norm": 0.5, "learning_rate": 3e-4, "epoch": 0.5})

    cb.on_train_begin(args, state, control)
    writes, handed = [], []
    for _ in range(10 if n < 1000 else 40):  # spaced like the real ones (every 2 s), not back to back
        time.sleep(0.05)
        t = time.perf_counter()
        cb.write_progress(force=True)  # start, eval, checkpoint, end: written in the training thread
        writes.append((time.perf_counter() - t) * 1e6)
        time.sleep(0.05)
        cb._last_progress_write = 0.0  # due: the periodic write, every PROGRESS_EVERY_S
        t = time.perf_counter()
        cb.write_progress()  # handed to the writer thread
        handed.append((time.perf_counter() - t) * 1e6)
    out["progress_write_us"] = statistics.median(writes)
    out["progress_write_max_us"] = max(writes)
    out["progress_periodic_us"] = statistics.median(handed)
    out["progress_periodic_max_us"] = max(handed)
    timed("on_step_end_us", step_end, n)
    timed("on_log_us", log, n)
    try:
        from labtui.engine.training.watchdog import Watchdog

        cb.watchdog = Watchdog(run, cfg, cb)
        timed("on_log_with_watchdog_us", log, n)
        cb.watchdog = None
    except ImportError:
        pass
    cb.finish("completed")
    rec = {"kind": "train", "t": time.time(), "step": 1, "max_steps": 1000, "epoch": 0.1, "loss": 1.2345,
           "grad_norm": 0.5, "learning_rate": 3e-4, "tokens": 4096, "tokens_per_s": 16000.0,
           "tokens_per_s_avg": 16000.0, "samples_per_s": 16.0, "steps_per_s": 1.0, "elapsed": 1.0}
    plain = store.JsonlWriter(run.file("plain.jsonl"))
    timed("jsonl_write_us", lambda: plain.write(rec), n)
    plain.close()
    indexed = store.IndexedJsonlWriter(run.file("indexed.jsonl"))
    timed("indexed_write_us", lambda: indexed.write(rec), n)
    indexed.close()
    s = sysmon.Sampler(os.getpid(), run.path)
    timed("machine_sample_us", s.sample, max(5, n // 200))
    return out


def main() -> None:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=120, help="optimizer steps per block")
    ap.add_argument("--blocks", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a shared machine)")
    args = ap.parse_args()
    steps = 30 if args.quick else args.steps
    blocks = 1 if args.quick else args.blocks
    import torch

    torch.set_num_threads(args.threads)
    from labtui.engine.config.experiment import load_experiment

    ws_root = synth.demo_workspace(cache=args.cache)
    cfg = load_experiment(ws_root / "experiments" / "demo-baseline.yaml").config
    cfg["training"].update(max_steps=steps, logging_steps=1, eval_strategy="no", save_strategy="no",
                           report_to="none")
    try:
        import labtui.engine.training.watchdog  # noqa: F401

        arms = ["bare", "monitored", "watchdog"]
    except ImportError:
        arms = ["bare", "monitored"]
    train_block(ws_root, cfg, "bare", min(steps, 30))  # warm-up: imports, tokenisation caches
    wait_quiet(timeout=args.wait_quiet)
    rep = Report("overhead", args, "Monitoring overhead: tiny-model training with and without labtui")
    per_arm: dict[str, list[dict]] = {a: [] for a in arms}
    for b in range(blocks):
        order = arms if b % 2 == 0 else arms[::-1]  # ABC CBA ...: drift hits every arm alike
        for arm in order:
            per_arm[arm].append(train_block(ws_root, cfg, arm, steps))
    step_ms = statistics.median(r["step_ms"] for r in per_arm["bare"])
    rep.add("bare_steps_per_s", [r["steps_per_s"] for r in per_arm["bare"]], "steps/s", better="higher",
            label="bare training, steps/s")
    rep.add("step_ms", [r["step_ms"] for r in per_arm["bare"]], "ms", label="  step time")
    for arm in arms[1:]:
        ratios = [m["steps_per_s"] / b["steps_per_s"] for m, b in zip(per_arm[arm], per_arm["bare"])]
        rep.add(f"{arm}_steps_per_s", [r["steps_per_s"] for r in per_arm[arm]], "steps/s", better="higher",
                label=f"{arm}, steps/s")
        rep.add(f"{arm}_ratio", ratios, "x", target=0.99 if arm == "monitored" else None, better="higher",
                label=f"  {arm} / bare (same block), median")
    calls = per_call(ws_root, cfg, 300 if args.quick else 5000)
    for key, us in calls.items():
        rep.add(key, [us], "us", label=f"per call: {key[:-3]}")
    rep.note("progress_write: progress.json replaced atomically with an fsync in the training thread, as at "
             "the start, an eval, a checkpoint and the end; progress_periodic: the write due every 2 s, which "
             "the training thread hands to the callback's writer thread; medians and maxima over spaced writes")
    from labtui.engine.training.callback import PROGRESS_EVERY_S

    per_step_us = calls["on_step_end_us"] + calls["on_log_us"]
    per_step_us += calls["progress_periodic_us"] * min(1.0, step_ms / 1000 / PROGRESS_EVERY_S)
    rep.add("callback_share_pct", [per_step_us / (step_ms * 1000) * 100], "%", target=1.0,
            label="callback per step / step time (progress.json every 2 s included)")
    interval = float(cfg["engine"].get("heartbeat_interval") or 5)
    rep.add("sampler_share_pct", [calls["machine_sample_us"] / (interval * 1e6) * 100], "%", target=1.0,
            label=f"machine sampler / {interval:g} s interval")
    if "on_log_with_watchdog_us" in calls:
        rep.add("watchdog_share_pct", [(calls["on_step_end_us"] + calls["on_log_with_watchdog_us"]) / (step_ms * 1000) * 100],
                "%", label="callback + watchdog loss checks per step / step time")
    rep.extra.update(torch_threads=torch.get_num_threads(), steps_per_block=steps, blocks=blocks,
                     logging_steps=1, arms=arms, experiment="experiments/demo-baseline.yaml")
    rep.note("the watchdog's weight fingerprints (every frozen_steps optimizer steps) are in the training "
             "arms, not in the per-call figures")
    rep.finish(args.out)
    _ = ROOT, sys


if __name__ == "__main__":
    main()
