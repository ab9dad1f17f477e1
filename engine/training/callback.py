"""`LabtuiCallback`: streams a Hugging Face Trainer's metrics into a labtui run directory.

labtui's own worker uses it, and any script with a `transformers.Trainer` or `trl.SFTTrainer`
adds it with one line:

    from labtui.engine.training.callback import LabtuiCallback
    trainer.add_callback(LabtuiCallback())

Started by `labtui run -- python my_train.py`, it writes into that run (the launcher sets
LABTUI_RUN_DIR); started by hand, it creates a new run in the workspace (LABTUI_WORKSPACE or
the current directory).
"""

from __future__ import annotations

import math
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

from labtui.engine.rundir import store
from transformers import TrainerCallback

PROGRESS_EVERY_S = 2.0


class LatestWriter:
    """Runs write jobs in order of submission, where only the newest matters (progress.json is
    replaced whole): `submit` hands a job to a background thread, so a slow fsync never stalls a
    training step; `run_now` runs one in the caller's thread and drops the job waiting, which it
    supersedes. A job submitted earlier never runs after a later one."""

    def __init__(self, name: str = "labtui-progress"):
        self.name = name
        self._cond = threading.Condition()
        self._io = threading.Lock()
        self._pending: tuple[int, object] | None = None
        self._seq = 0
        self._done = 0
        self._closed = False
        self._thread: threading.Thread | None = None
        self.errors = 0

    def submit(self, job) -> None:
        with self._cond:
            self._seq += 1
            self._pending = (self._seq, job)
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
                self._thread.start()
            self._cond.notify()

    def run_now(self, job) -> None:
        with self._cond:
            self._seq += 1
            seq = self._seq
            self._pending = None
        self._run(seq, job, raise_errors=True)

    def close(self) -> None:
        """Run what is waiting, then stop the thread."""
        with self._cond:
            self._closed = True
            pending, self._pending = self._pending, None
            self._cond.notify()
        if pending is not None:
            self._run(*pending)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self, seq: int, job, raise_errors: bool = False) -> None:
        with self._io:
            if seq <= self._done:
                return
            self._done = seq
            try:
                job()
            except OSError:
                self.errors += 1
                if raise_errors:
                    raise

    def _loop(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._closed:
                    self._cond.wait()
                if self._pending is None:
                    return
                seq, job = self._pending
                self._pending = None
            self._run(seq, job)


class LabtuiCallback(TrainerCallback):
    def __init__(self, run_dir: str | os.PathLike | None = None, *, empty_cache_every: int = 0,
                 sample_interval: float = 5.0, handle_sigterm: bool = True, watchdog=None):
        run_dir = run_dir or os.environ.get("LABTUI_RUN_DIR")
        self.own_run = run_dir is None
        if run_dir is None:
            run_dir = self._create_run()
        self.run = store.Run(Path(run_dir))
        # metrics.jsonl plus its binary index metrics.idx (readers load a long history from the index)
        self.metrics = store.IndexedJsonlWriter(self.run.file(store.METRICS_FILE),
                                                self.run.file(store.METRICS_INDEX_FILE))
        self.lock = threading.Lock()
        self.empty_cache_every = empty_cache_every
        self.sample_interval = sample_interval
        self.watchdog = watchdog
        self.stop_requested = False
        self.progress = self.run.progress()
        self.progress.pop("result", None)
        self._last_progress_write = 0.0
        self._progress_writer = LatestWriter()
        self._last_log_t: float | None = None
        self._last_log_tokens = 0
        self._last_log_step = 0
        self._t0 = time.time()
        self._tokens0 = 0
        self._step0 = 0
        self._sampler: threading.Thread | None = None
        self._stop_sampler = threading.Event()
        if handle_sigterm and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_sigterm)

    # --- set-up -------------------------------------------------------------------------------

    @staticmethod
    def _create_run() -> Path:
        ws = store.Workspace(os.environ.get("LABTUI_WORKSPACE") or os.getcwd())
        # one name everywhere: the experiment is the same slug the run id carries (byo_train.py -> byo-train)
        script = store.slugify(Path(sys.argv[0]).stem if sys.argv and sys.argv[0] else "script")
        run = ws.create_run(script, {
            "experiment": script, "kind": "script", "command": [sys.executable, *sys.argv],
            "description": f"started by hand: {' '.join(sys.argv)}", "workspace": str(ws.root),
        })
        now = time.time()
        run.update_state(status="running", pid=os.getpid(), pid_start=store.process_start_time(os.getpid()),
                         host=socket.gethostname(), started=now, heartbeat=now)
        return run.path

    def _on_sigterm(self, signum, frame) -> None:
        # finish the current step, save a checkpoint, then stop (see on_step_end)
        self.stop_requested = True

    # --- records ------------------------------------------------------------------------------

    def write(self, record: dict) -> None:
        with self.lock:
            self.metrics.write(record)

    def write_progress(self, force: bool = False) -> None:
        """progress.json, replaced atomically: at most every PROGRESS_EVERY_S seconds from a
        background thread (its fsync can take a quarter of a second on a busy disk), at once
        and in this thread when `force`d (start, eval, checkpoint, end)."""
        now = time.time()
        if not force and now - self._last_progress_write < PROGRESS_EVERY_S:
            return
        self._last_progress_write = now
        self.progress["updated"] = now
        text = store.dumps(self.progress)
        path = self.run.file(store.PROGRESS_FILE)

        def job() -> None:
            store.atomic_write_text(path, text)
            if self.own_run:
                self.run.update_state(heartbeat=now)

        if force:
            self._progress_writer.run_now(job)
        else:
            self._progress_writer.submit(job)

    def _latest_checkpoint(self, args) -> str | None:
        cp = self.run.latest_checkpoint() if Path(args.output_dir) == self.run.file(store.CHECKPOINTS_DIR) else None
        if cp is None:
            out = Path(args.output_dir)
            cps = sorted(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]) if p.name.split("-")[-1].isdigit() else -1)
            cp = cps[-1] if cps else None
        return str(cp) if cp else None

    # --- Trainer events -----------------------------------------------------------------------

    def on_train_begin(self, args, state, control, **kwargs):
        self._t0 = self._last_log_t = time.time()
        self._tokens0 = self._last_log_tokens = int(getattr(state, "num_input_tokens_seen", 0) or 0)
        self._step0 = self._last_log_step = state.global_step
        self.progress.update(step=state.global_step, max_steps=state.max_steps, status="running")
        self.progress.setdefault("started", self._t0)
        self.write({"kind": "start", "t": self._t0, "step": state.global_step, "max_steps": state.max_steps,
                    "resumed": state.global_step > 0})
        self.write_progress(force=True)
        if self.sample_interval and self._sampler is None:
            self._sampler = threading.Thread(target=self._sample_memory, name="labtui-memory", daemon=True)
            self._sampler.start()

    def on_step_end(self, args, state, control, **kwargs):
        n = self.empty_cache_every
        if n and state.global_step % n == 0:
            _empty_cache()
        if self.watchdog is not None:
            self.watchdog.on_step_end(args, state, control, **kwargs)
        if self.stop_requested:
            control.should_save = True
            control.should_training_stop = True
        self.progress["step"] = state.global_step
        self.write_progress()

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = dict(logs or {})
        now = time.time()
        step = state.global_step
        if "loss" in logs:
            tokens = int(getattr(state, "num_input_tokens_seen", 0) or 0)
            dt = max(now - (self._last_log_t or now), 1e-9)
            dsteps = step - self._last_log_step
            batch = args.per_device_train_batch_size * args.gradient_accumulation_steps * max(1, args.world_size)
            elapsed = max(now - self._t0, 1e-9)
            rec = {
                "kind": "train", "t": now, "step": step, "max_steps": state.max_steps,
                "epoch": logs.get("epoch", state.epoch), "loss": _f(logs.get("loss")),
                "grad_norm": _f(logs.get("grad_norm")), "learning_rate": _f(logs.get("learning_rate")),
                "tokens": tokens,
                store.TOKENS_PER_S: (tokens - self._last_log_tokens) / dt if tokens else None,
                "tokens_per_s_avg": (tokens - self._tokens0) / elapsed if tokens else None,
                "samples_per_s": dsteps * batch / dt,
                "steps_per_s": dsteps / dt,
                "elapsed": now - self.progress.get("started", self._t0),
            }
            extra = {k: _f(v) for k, v in logs.items() if k not in rec and k != "total_flos" and isinstance(v, (int, float))}
            rec.update(extra)
            self.write(rec)
            self._last_log_t, self._last_log_tokens, self._last_log_step = now, tokens, step
            self.progress.update(step=step, max_steps=state.max_steps, epoch=rec["epoch"], train_loss=rec["loss"],
                                 grad_norm=rec["grad_norm"], learning_rate=rec["learning_rate"], tokens=tokens,
                                 tokens_per_s=rec[store.TOKENS_PER_S], tokens_per_s_avg=rec["tokens_per_s_avg"],
                                 samples_per_s=rec["samples_per_s"], steps_per_s=rec["steps_per_s"], last_log_t=now)
            if self.watchdog is not None:
                self.watchdog.on_train_record(rec)
            self.write_progress()
        if "eval_loss" in logs:
            rec = {"kind": "eval", "t": now, "step": step, "eval_loss": _f(logs["eval_loss"])}
            rec.update({k: _f(v) for k, v in logs.items() if k.startswith("eval_") and k != "eval_loss" and isinstance(v, (int, float))})
            self.write(rec)
            best = self.progress.get("best_eval_loss")
            if rec["eval_loss"] is not None and math.isfinite(rec["eval_loss"]) and (best is None or rec["eval_loss"] < best):
                self.progress.update(best_eval_loss=rec["eval_loss"], best_step=step)
            self.progress["eval_loss"] = rec["eval_loss"]
            if self.watchdog is not None:
                self.watchdog.on_eval_record(rec)
            self.write_progress(force=True)
        if "train_loss" in logs:  # the end-of-training summary (transformers adds train_runtime to every log)
            self.write({"kind": "summary", "t": now, "step": step, **{k: _f(v) for k, v in logs.items() if isinstance(v, (int, float))}})

    def on_save(self, args, state, control, **kwargs):
        cp = self._latest_checkpoint(args)
        self.progress["checkpoint"] = cp
        self.write({"kind": "checkpoint", "t": time.time(), "step": state.global_step, "path": cp})
        self.write_progress(force=True)

    def on_train_end(self, args, state, control, **kwargs):
        self._stop_sampler.set()
        self.progress["step"] = state.global_step
        if self.own_run:
            status = "stopped" if self.stop_requested else "completed"
            self.finish(status)
        else:
            self.write_progress(force=True)

    def finish(self, status: str, error: str | None = None, where: str | None = None) -> None:
        """Record the final result (the supervisor folds it into state.json)."""
        now = time.time()
        self.progress["result"] = {"status": status, "error": error, "error_where": where, "ended": now}
        self.write({"kind": "end", "t": now, "step": self.progress.get("step"), "status": status, "error": error})
        self.write_progress(force=True)
        if self.own_run:
            self.run.update_state(status=status, ended=now, error=error, error_where=where, heartbeat=now)
        self._progress_writer.close()
        self.metrics.close()

    # --- memory sampler -----------------------------------------------------------------------

    def _sample_memory(self) -> None:
        try:
            import torch
        except ImportError:
            return
        if not torch.cuda.is_available():
            return
        while not self._stop_sampler.wait(self.sample_interval):
            try:
                devices = []
                for i in range(torch.cuda.device_count()):
                    devices.append({
                        "index": i, "allocated": torch.cuda.memory_allocated(i),
                        "reserved": torch.cuda.memory_reserved(i), "peak": torch.cuda.max_memory_allocated(i),
                    })
                self.write({"kind": "memory", "t": time.time(), "devices": devices})
            except Exception:
                return


def _empty_cache() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:
        pass


def _f(x):
    if x is None:
        return None
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def hostname() -> str:
    return socket.gethostname()
