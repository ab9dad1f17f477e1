"""`LabtuiCallback`: streams a Hugging Face Trainer's metrics into a labtui run directory.

labtui's own worker uses it, and any script with a `transformers.Trainer` or `trl.SFTTrainer`
adds it with one line:

    from labtui.engine.training.callback import LabtuiCallback
    trainer.add_callback(LabtuiCallback())

Started by `labtui run -- python my_train.py`, it writes into that run (the launcher sets
LABTUI_RUN_DIR); started by hand, it creates a new run in the workspace (LABTUI_WORKSPACE or
the current directory).

Under torchrun / accelerate (RANK, LOCAL_RANK, WORLD_SIZE set, more than one process) world rank 0
alone writes metrics.jsonl, progress.json and the result; every rank writes its heartbeat
(ranks/<rank>.json, engine/rundir/ranks.py) at each step end and from a background thread. A stop
(SIGTERM to a rank, or the run's stop.json) and a watchdog stop (seen on rank 0 alone) are agreed at
every step end with an all-reduce of a small tensor, so all ranks save the same checkpoint and stop
at the same step: a flag acted on by one rank alone would leave the others waiting in a collective.
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

from labtui.engine.rundir import ranks, store
from labtui.engine.runtime.supervisor import STOP_FILE
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
        self.rank, self.local_rank, self.world_size = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0), _env_int("WORLD_SIZE", 1)
        self.distributed = self.world_size > 1
        self.is_main = self.rank == 0
        # metrics.jsonl plus its binary index metrics.idx (readers load a long history from the index); rank 0's
        self.metrics = store.IndexedJsonlWriter(self.run.file(store.METRICS_FILE),
                                                self.run.file(store.METRICS_INDEX_FILE)) if self.is_main else None
        self.lock = threading.Lock()
        self.empty_cache_every = empty_cache_every
        self.sample_interval = sample_interval
        self.watchdog = watchdog
        self.stop_requested = False  # the decision to stop (under DDP: only as the ranks agreed it)
        self._stop_asked = False  # SIGTERM seen by this rank; under DDP it counts at the next agreement
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
        # this rank's heartbeat (multi-process runs): written by a LatestWriter, newest wins
        self.watchdog_stopped = False  # a watchdog stop agreed by every rank (rank 0 alone saw the alert)
        self._beat = {"step": None, "step_time": None, "state": "running", "device": "cpu"}
        self._beat_writer = LatestWriter("labtui-heartbeat") if self.distributed else None
        self._pid_start = store.process_start_time(os.getpid()) if self.distributed else None
        if self.distributed:  # the rank is visible (pid, host, alive) while it loads the model
            self._beat["device"] = _default_device(self.local_rank)
            self.heartbeat(force=True)
            self._start_sampler()
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
        # finish the current step, save a checkpoint, then stop (see on_step_end). Under DDP the signal only
        # feeds the next all-reduce: a rank that acted on a SIGTERM landing after that step's all-reduce would
        # stop alone and leave the others waiting in the next collective forever.
        self._stop_asked = True
        if not self.distributed:
            self.stop_requested = True

    # --- records ------------------------------------------------------------------------------

    def write(self, record: dict) -> None:
        if self.metrics is None:  # not world rank 0
            return
        with self.lock:
            self.metrics.write(record)

    def write_progress(self, force: bool = False) -> None:
        """progress.json, replaced atomically: at most every PROGRESS_EVERY_S seconds from a
        background thread (its fsync can take a quarter of a second on a busy disk), at once
        and in this thread when `force`d (start, eval, checkpoint, end)."""
        now = time.time()
        if not self.is_main or (not force and now - self._last_progress_write < PROGRESS_EVERY_S):
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
        device = getattr(args, "device", None)
        self._beat["device"] = "cpu" if getattr(device, "type", "cpu") == "cpu" else str(device)
        self.heartbeat(state.global_step, force=True)  # multi-process runs only
        if self.sample_interval:
            self._start_sampler()

    def _start_sampler(self) -> None:
        if self._sampler is None:
            self._sampler = threading.Thread(target=self._sample_memory, name="labtui-memory", daemon=True)
            self._sampler.start()

    def on_step_end(self, args, state, control, **kwargs):
        n = self.empty_cache_every
        if n and state.global_step % n == 0:
            freed = _empty_cache(self._beat["device"])
            if freed is not None and self.is_main:  # CUDA only: what the cache held before and after
                self.write({"kind": "empty_cache", "t": time.time(), "step": state.global_step, **freed})
        if self.watchdog is not None:
            self.watchdog.on_step_end(args, state, control, **kwargs)
        if self.distributed:
            self._agree_on_stop(args, control)
            self.heartbeat(state.global_step)
        if self.stop_requested:
            control.should_save = True
            control.should_training_stop = True
        self.progress["step"] = state.global_step
        self.write_progress()

    def _agree_on_stop(self, args, control) -> None:
        """Every rank learns at this step end whether any rank was asked to stop (SIGTERM, stop.json) and
        whether rank 0's watchdog stops the run (1: with a checkpoint, 2: without, for a NaN loss): the
        MAX all-reduce of [stop, watchdog] over the ranks, on this rank's device."""
        local_stop = self._stop_asked or self.stop_requested or self.run.file(STOP_FILE).exists()
        pending = getattr(self.watchdog, "pending_stop", None) if self.watchdog is not None else None
        local_wd = 0 if pending is None else 2 if pending.get("kind") == "nan_loss" else 1
        stop, wd = all_reduce_max([int(local_stop), local_wd], getattr(args, "device", None))
        if wd:
            self.watchdog_stopped = True
            control.should_training_stop = True
            control.should_save = wd == 1
        if stop:
            self.stop_requested = True
        if stop or wd:
            self._beat["state"] = "stopping"

    def heartbeat(self, step: int | None = None, force: bool = False) -> None:
        """This rank's ranks/<rank>.json (multi-process runs only), written in the background: at each new
        step, at state changes (`force`), and every few seconds from the sampler thread."""
        if self._beat_writer is None:
            return
        now = time.time()
        if step is not None and step != self._beat["step"]:
            self._beat.update(step=step, step_time=now)
        elif not force and step is not None:
            return
        rec = {"rank": self.rank, "local_rank": self.local_rank, "world_size": self.world_size, "host": socket.gethostname(),
               "pid": os.getpid(), "pid_start": self._pid_start, "step": self._beat["step"],
               "step_time": self._beat["step_time"], "time": now, "device": self._beat["device"],
               **_device_memory(self._beat["device"]), "state": self._beat["state"]}
        self._beat_writer.submit(lambda: ranks.write_heartbeat(self.run.path, rec))

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
        self.heartbeat(state.global_step, force=True)
        if self.own_run:
            status = "stopped" if self.stop_requested else "completed"
            self.finish(status)
        else:
            self.write_progress(force=True)

    def finish(self, status: str, error: str | None = None, where: str | None = None) -> None:
        """Record the final result (the supervisor folds it into state.json)."""
        now = time.time()
        if self._beat_writer is not None:
            self._beat["state"] = "failed" if status == "failed" else "done"
            self.heartbeat(force=True)
            self._beat_writer.close()
        if not self.is_main:
            return
        self.progress["result"] = {"status": status, "error": error, "error_where": where, "ended": now}
        self.write({"kind": "end", "t": now, "step": self.progress.get("step"), "status": status, "error": error})
        self.write_progress(force=True)
        if self.own_run:
            self.run.update_state(status=status, ended=now, error=error, error_where=where, heartbeat=now)
        self._progress_writer.close()
        self.metrics.close()

    # --- memory sampler -----------------------------------------------------------------------

    def _sample_memory(self) -> None:
        """Every sample_interval: the CUDA memory record (rank 0) and, in a multi-process run, this rank's
        heartbeat (at least every ranks.RANK_HEARTBEAT_S: a rank stuck in a step still says so)."""
        try:
            import torch
        except ImportError:
            return
        cuda = torch.cuda.is_available() and self.is_main and bool(self.sample_interval)
        if not (cuda or self.distributed):
            return
        interval = self.sample_interval or ranks.RANK_HEARTBEAT_S
        if self.distributed:
            interval = min(interval, ranks.RANK_HEARTBEAT_S)
        while not self._stop_sampler.wait(interval):
            if self.distributed:
                self.heartbeat(force=True)
            if not cuda:
                if not self.distributed:
                    return
                continue
            try:
                devices = []
                for i in range(torch.cuda.device_count()):
                    devices.append({
                        "index": i, "allocated": torch.cuda.memory_allocated(i),
                        "reserved": torch.cuda.memory_reserved(i), "peak": torch.cuda.max_memory_allocated(i),
                    })
                self.write({"kind": "memory", "t": time.time(), "devices": devices})
            except Exception:
                cuda = False


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def all_reduce_max(values: list[int], device=None) -> list[int]:
    """The element-wise maximum of `values` over every rank (a tiny tensor on this rank's device: NCCL
    wants CUDA, gloo the CPU); `values` unchanged when no process group is running."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return list(values)
    t = torch.tensor(values, dtype=torch.int32, device=device or "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [int(v) for v in t.tolist()]


def _default_device(local_rank: int) -> str:
    """The device the Trainer will give this rank: cuda:<local rank> where CUDA is, else the CPU."""
    try:
        import torch

        return f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    except Exception:
        return "cpu"


def _device_memory(device: str) -> dict:
    """torch.cuda's allocated / reserved / peak bytes on `device` ("cuda:N"); nulls on the CPU."""
    out: dict = {"mem_allocated": None, "mem_reserved": None, "mem_peak": None}
    if not device.startswith("cuda"):
        return out
    try:
        import torch

        out.update(mem_allocated=torch.cuda.memory_allocated(device), mem_reserved=torch.cuda.memory_reserved(device),
                   mem_peak=torch.cuda.max_memory_allocated(device))
    except Exception:
        pass
    return out


def _empty_cache(device: str = "cpu") -> dict | None:
    """torch.cuda.empty_cache(), with `device`'s reserved bytes before and after (None on the CPU)."""
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        on = device if device.startswith("cuda") else None
        before = torch.cuda.memory_reserved(on)
        torch.cuda.empty_cache()
        return {"device": device, "reserved_before": before, "reserved_after": torch.cuda.memory_reserved(on),
                "allocated": torch.cuda.memory_allocated(on)}
    except Exception:
        return None


def _f(x):
    if x is None:
        return None
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def hostname() -> str:
    return socket.gethostname()
