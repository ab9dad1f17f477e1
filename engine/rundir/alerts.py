"""Alerts: the records the watchdogs append to a run's `alerts.jsonl`, and the checks that need no worker.

One alert is one JSON line:
  {"kind": "nan_loss", "severity": "critical", "step": 6, "t": 1795316358.4,
   "message": "the loss is NaN at step 6", "hint": "lower training.learning_rate ...", "data": {...}}

Each alert fires once: `AlertLog.fire` writes a kind again only after `AlertLog.clear` saw the
condition go away (a resumed run does not repeat what it already raised). The training-side checks
live in engine/training/watchdog.py (run in the worker); the supervisor calls `SupervisorWatch.tick` every
heartbeat for the checks that only need the run directory and the machine: stalled, gpu_memory,
host_memory; and `after_run` when an evaluation ends, for degenerate_eval. Thresholds come from the
experiment's `engine.alerts` (ALERT_DEFAULTS: the keys and their defaults; engine/config's SCHEMA
validates them with the rest of the experiment). Light: no torch; the TUI and the CLI may import it.
"""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path
from typing import Any

from labtui.engine.rundir import ranks, store

# kind: (severity, what it means) - the list the docs and `engine.alerts.disable` / `stop_on` use
KINDS: dict[str, tuple[str, str]] = {
    "nan_loss": ("critical", "the loss (or the gradient norm) is NaN or Inf"),
    "loss_spike": ("warning", "the loss jumped far above its recent range"),
    "weights_frozen": ("critical", "the trainable weights did not change over several optimizer steps"),
    "grad_norm_zero": ("critical", "the gradient norm is exactly 0 in several logged steps in a row"),
    "no_trainable_params": ("critical", "the model has no parameter with requires_grad"),
    "nothing_to_learn": ("critical", "the loss is exactly 0, or no training example has a label left"),
    "examples_dropped": ("warning", "training examples were dropped because max_length cut off their answer"),
    "overfitting": ("warning", "eval loss rising for several evaluations while the train loss falls"),
    "stalled": ("critical", "no new step for a long time while the worker process is alive"),
    "gpu_memory": ("warning", "GPU memory above the threshold of the device"),
    "host_memory": ("critical", "host RAM close to exhaustion (the OOM killer is near)"),
    "degenerate_eval": ("warning", "an evaluation's predictions are degenerate (one answer, or unparseable)"),
}
SEVERITIES = ("critical", "warning", "info")
# computed by engine/training/watchdog.py in the worker; only these can stop a run (`stop_on`)
WORKER_KINDS = ("nan_loss", "loss_spike", "weights_frozen", "grad_norm_zero", "no_trainable_params",
                "nothing_to_learn", "examples_dropped", "overfitting")

# The experiment's `engine.alerts` keys and their defaults (docs/watchdogs.md explains each). The
# experiment schema (engine/config/experiment.py SCHEMA) declares each from here, its type from its
# default: a list of kinds, a whole number >= 1 (an int) or a number above 0 (a float).
ALERT_DEFAULTS: dict[str, Any] = {
    "disable": [],  # kinds never raised
    "stop_on": [],  # worker-side kinds that stop the run (checkpoint, then status failed with the reason)
    "spike_window": 20,  # loss_spike: the last N logged losses are the recent range
    "spike_mads": 10.0,  # ... a spike is above median + spike_mads * MAD of that range
    "spike_ratio": 2.0,  # ... and above spike_ratio * median
    "frozen_steps": 20,  # weights_frozen: optimizer steps between two fingerprints of the trainable weights
    "grad_zero_logs": 3,  # grad_norm_zero: logged steps in a row with grad_norm == 0
    "overfit_evals": 3,  # overfitting: evaluations in a row with a higher eval loss than the one before
    "stall_minutes": 20.0,  # stalled: minutes without a new step (or 10 usual step times, if longer)
    "gpu_memory_percent": 95.0,  # gpu_memory: NVML used / total of any GPU above this
    "host_memory_percent": 95.0,  # host_memory: (total - available) / total above this
}
MEMORY_HYSTERESIS = 5.0  # a memory alert clears once usage is this many points under its threshold


# --- settings ---------------------------------------------------------------------------------


def alert_settings(cfg: dict | None) -> dict:
    """ALERT_DEFAULTS with the experiment's `engine.alerts` over them. The loader validated them and
    fills every key; an old run's config.yaml may lack some (or the section): those keys get the
    default, and a key this version does not know is ignored."""
    given = ((cfg or {}).get("engine") or {}).get("alerts") or {}
    out = dict(ALERT_DEFAULTS)
    if isinstance(given, dict):
        out.update({k: v for k, v in given.items() if k in ALERT_DEFAULTS and v is not None})
    return out


# --- records ----------------------------------------------------------------------------------


def make_alert(kind: str, message: str, hint: str = "", *, step: int | None = None,
               severity: str | None = None, data: dict | None = None, t: float | None = None) -> dict:
    severity = severity or KINDS.get(kind, ("warning", ""))[0]
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, got {severity!r}")
    return {"kind": kind, "severity": severity, "step": None if step is None else int(step),
            "t": time.time() if t is None else float(t), "message": message, "hint": hint,
            "data": store.jsonable(dict(data or {}))}


def read_alerts(run: store.Run) -> list[dict]:
    return [a for a in store.read_jsonl(run.file(store.ALERTS_FILE)) if isinstance(a.get("kind"), str)]


def write_alert(run: store.Run, kind: str, message: str, hint: str = "", **fields: Any) -> dict:
    """Append one alert unconditionally (AlertLog.fire is the de-duplicating way)."""
    alert = make_alert(kind, message, hint, **fields)
    store.append_jsonl(run.file(store.ALERTS_FILE), alert)
    return alert


def alert_key(alert: dict) -> str:
    """What de-duplication compares: the kind, or kind:eval for an evaluation's alert."""
    data = alert.get("data") or {}
    if alert.get("kind") == "degenerate_eval" and data.get("eval_id"):
        return f"degenerate_eval:{data['eval_id']}"
    return str(alert.get("kind"))


class AlertLog:
    """Writes each alert once per episode: `fire` again only after `clear` saw the condition go away.

    Keys raised earlier in alerts.jsonl (by this process before a restart, or a resumed run) count
    as still active, so a resumed run does not repeat them until their condition clears.
    """

    def __init__(self, run: store.Run, disabled=(), echo: bool = False):
        self.run = run
        self.disabled = set(disabled or ())
        self.echo = echo
        self.active: set[str] = {alert_key(a) for a in read_alerts(run)}

    def fire(self, alert: dict) -> dict | None:
        key = alert_key(alert)
        if alert["kind"] in self.disabled or key in self.active:
            return None
        self.active.add(key)
        store.append_jsonl(self.run.file(store.ALERTS_FILE), alert)
        if self.echo:
            print(f"[labtui] alert {alert['kind']} ({alert['severity']}) at step {alert['step']}: "
                  f"{alert['message']}", flush=True)
        return alert

    def clear(self, key: str) -> None:
        self.active.discard(key)


# --- checks that need no worker ---------------------------------------------------------------


def _minutes(s: float) -> str:
    return f"{s / 60:.1f} min" if s < 3600 else f"{s / 3600:.1f} h"


def _process_status(pid: int | None) -> str | None:
    try:
        import psutil

        return psutil.Process(pid).status() if pid else None
    except Exception:
        return None


def stall_check(run: store.Run, now: float | None = None, settings: dict | None = None) -> dict | None:
    """`stalled` when training started, has not ended, its process is alive, and no new step was
    recorded for `stall_minutes` (or ten usual step times, when that is longer). Counted from the
    start of training: loading the model and preparing the data are not covered."""
    now = time.time() if now is None else now
    settings = settings or alert_settings(run.config())
    progress = run.progress()
    if not progress.get("started") or progress.get("result"):
        return None
    state = run.state(now)
    if state.get("status") not in store.LIVE:
        return None
    last = progress.get("updated") or progress.get("started")
    if not isinstance(last, (int, float)):
        return None
    limit = float(settings["stall_minutes"]) * 60.0
    steps_per_s = progress.get("steps_per_s")
    if isinstance(steps_per_s, (int, float)) and steps_per_s > 0:
        limit = max(limit, 10.0 / steps_per_s)
    idle = now - last
    if idle < limit:
        return None
    step = progress.get("step")
    pid = state.get("pid")
    status = _process_status(pid)
    since = time.strftime("%H:%M:%S", time.localtime(last))
    message = f"no new step for {_minutes(idle)} (step {step}, last progress at {since}) while the worker is alive"
    if status == "stopped":
        message += f"; the worker process {pid} is suspended (SIGSTOP or Ctrl-Z)"
        hint = f"resume it with `kill -CONT {pid}`"
    else:
        hint = (f"see where it waits with `py-spy dump --pid {pid}`: a deadlock, a stuck data loader (try "
                "training.dataloader_num_workers: 0) or a hung NCCL collective (NCCL_DEBUG=INFO); if a long "
                "evaluation or checkpoint save is expected, raise engine.alerts.stall_minutes")
    return make_alert("stalled", message, hint, step=step, t=now,
                      data={"idle_s": round(idle, 1), "last_progress": last, "pid": pid, "process_status": status,
                            "threshold_s": round(limit, 1)})


def rank_stall_check(run: store.Run, now: float | None = None, settings: dict | None = None) -> dict | None:
    """`stalled` naming one rank of a multi-process run (ranks/<rank>.json) that stopped while the
    others wait: its heartbeat aged while theirs stay fresh, or it is the lowest step and has not
    finished a step for the same limit as `stall_check` (`stall_minutes`, or ten usual step times).
    None for a single-process run, or when nothing names one rank (`stall_check` covers the run)."""
    now = time.time() if now is None else now
    if not ranks.ranks_dir(run.path).is_dir():
        return None
    settings = settings or alert_settings(run.config())
    progress = run.progress()
    if progress.get("result") or run.state(now).get("status") not in store.LIVE:
        return None
    limit = float(settings["stall_minutes"]) * 60.0
    steps_per_s = progress.get("steps_per_s")
    if isinstance(steps_per_s, (int, float)) and steps_per_s > 0:
        limit = max(limit, 10.0 / steps_per_s)
    every = ranks.read_ranks(run.path, now)
    found = ranks.stalled_rank(every, now, limit)
    if found is None:
        return None
    rec = next(r for r in every if r["rank"] == found.rank)
    pid = rec.get("pid")
    status = _process_status(pid) if rec.get("host") == socket.gethostname() else None
    message = found.message()
    where = f" on {found.host}" if found.host else ""
    if status == "stopped":
        message += f"; its process {pid} is suspended (SIGSTOP or Ctrl-Z)"
        hint = f"resume it with `kill -CONT {pid}`" + (f" on {found.host}" if found.host else "")
    else:
        hint = (f"see where rank {found.rank} waits with `py-spy dump --pid {pid or '<its pid>'}`{where}: a stuck "
                "data loader (try training.dataloader_num_workers: 0), uneven data across ranks, or a hung collective "
                "(NCCL_DEBUG=INFO); its log is in ranks/torchrun/")
    return make_alert("stalled", message, hint, step=progress.get("step"), t=now,
                      data={"rank": found.rank, "host": found.host, "pid": pid, "rank_step": found.step,
                            "others_step": found.others_step, "idle_s": round(found.idle_s, 1),
                            "frozen": found.frozen, "process_status": status, "threshold_s": round(limit, 1)})


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f}"


def memory_check(system_record: dict, thresholds: dict | None = None) -> list[dict]:
    """gpu_memory / host_memory alerts from one system.jsonl sample (sysmon.Sampler.sample)."""
    th = {**ALERT_DEFAULTS, **(thresholds or {})}
    out = []
    t = system_record.get("t")
    hot = []
    for g in system_record.get("gpus") or []:
        used, total = g.get("mem_used"), g.get("mem_total")
        if not used or not total:
            continue
        pct = 100.0 * used / total
        if pct > th["gpu_memory_percent"]:
            hot.append({"index": g.get("index"), "name": g.get("name"), "mem_used": used, "mem_total": total,
                        "percent": round(pct, 1)})
    if hot:
        desc = ", ".join(f"GPU {g['index']} ({g['name']}) {g['percent']:.0f}% ({_gib(g['mem_used'])}/"
                         f"{_gib(g['mem_total'])} GiB)" for g in hot)
        out.append(make_alert(
            "gpu_memory", f"GPU memory above {th['gpu_memory_percent']:g}%: {desc}",
            "an out-of-memory error is near: lower training.per_device_train_batch_size (raise "
            "gradient_accumulation_steps to keep the effective batch), set training.gradient_checkpointing: true "
            "or shorten task.max_length; NVML counts what PyTorch keeps cached, compare with the run's reserved memory",
            t=t, data={"gpus": hot, "threshold": th["gpu_memory_percent"]}))
    pct = system_record.get("ram_percent")
    if isinstance(pct, (int, float)) and pct > th["host_memory_percent"]:
        used, total = system_record.get("ram_used") or 0, system_record.get("ram_total") or 0
        out.append(make_alert(
            "host_memory", f"host RAM {pct:.0f}% used ({_gib(used)}/{_gib(total)} GiB): the OOM killer is near",
            "lower training.dataloader_num_workers, the dataset held in memory or the batch size, or stop other "
            "programs on this machine",
            t=t, data={"ram_percent": pct, "ram_used": used, "ram_total": total,
                       "proc_rss": system_record.get("proc_rss"), "threshold": th["host_memory_percent"]}))
    return out


class SupervisorWatch:
    """The reader-side checks, called by the supervisor on every heartbeat (engine/runtime/supervisor.py).

    Never raises: a failing check is printed to the run's log and the run goes on.
    """

    def __init__(self, run: store.Run):
        self.run = run
        self._warned = False
        try:
            self.settings = alert_settings(run.config())
            self.log = AlertLog(run, disabled=self.settings.get("disable"), echo=True)
            self.enabled = (run.info().get("kind") or "train") != "eval"
        except Exception as e:
            self.enabled = False
            print(f"[labtui] alert checks are off: {type(e).__name__}: {e}", file=sys.stderr, flush=True)

    def tick(self, sample: dict | None = None, now: float | None = None) -> None:
        if not self.enabled:
            return
        try:
            # a multi-process run names the rank that stopped when it can; else the run-wide check
            alert = rank_stall_check(self.run, now, self.settings) or stall_check(self.run, now, self.settings)
            if alert is not None:
                self.log.fire(alert)
            else:
                self.log.clear("stalled")
            if sample:
                fired = {a["kind"]: a for a in memory_check(sample, self.settings)}
                lowered = {k: self.settings[k] - MEMORY_HYSTERESIS for k in ("gpu_memory_percent", "host_memory_percent")}
                still = {a["kind"] for a in memory_check(sample, {**self.settings, **lowered})}
                for kind in ("gpu_memory", "host_memory"):
                    if kind in fired:
                        self.log.fire(fired[kind])
                    elif kind not in still:
                        self.log.clear(kind)
        except Exception as e:  # a watchdog must never take the run down
            if not self._warned:
                self._warned = True
                print(f"[labtui] alert checks failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)


# --- evaluations ------------------------------------------------------------------------------

EVAL_SUMMARY_FILE = "summary.json"  # written by the evaluation worker (engine/analysis/evalstore.py)


def degenerate_eval_check(eval_dir: Path) -> dict | None:
    """`degenerate_eval` from an evaluation's summary.json (its `degenerate` flag and warnings)."""
    eval_dir = Path(eval_dir)
    summary = store.read_json(eval_dir / EVAL_SUMMARY_FILE, {}) or {}
    if not summary.get("degenerate"):
        return None
    warnings = [w for w in summary.get("warnings") or [] if isinstance(w, str)]
    first = next((w for w in warnings if w.startswith("degenerate")), warnings[0] if warnings else "degenerate output")
    if summary.get("suggest_cpu_rerun"):
        hint = "this eval ran on the GPU: re-run it on the CPU and compare" + (
            f" ({summary['cpu_rerun_command']})" if summary.get("cpu_rerun_command") else "")
    else:
        hint = ("the model answers one class (or nothing usable): check the checkpoint against the base model, "
                "the prompt template and task.choices")
    return make_alert("degenerate_eval", f"evaluation {eval_dir.name}: {first}", hint,
                      step=summary.get(store.CHECKPOINT_STEP),
                      data={"eval_id": eval_dir.name, "warnings": warnings, "device": summary.get("device"),
                            "accuracy": summary.get("accuracy"), "pred_counts": summary.get("pred_counts")})


def after_run(run: store.Run, state: dict | None = None) -> None:
    """Called by the supervisor when its run ends: an evaluation with a degenerate summary raises
    `degenerate_eval` in the training run it evaluated (logs/<run>/evals/<eval-id>/)."""
    if (run.info().get("kind") or "") != "eval":
        return
    parent = store.Run(run.path.parent.parent)
    if not parent.file(store.RUN_FILE).exists():
        return
    alert = degenerate_eval_check(run.path)
    if alert is not None:
        AlertLog(parent, disabled=alert_settings(parent.config()).get("disable")).fire(alert)


# --- alerts that a later state superseded -------------------------------------------------------


def superseded_by(alert: dict, *, status: str | None = None, step: Any = None, progress_t: Any = None,
                  evals: Any = (), system: dict | None = None) -> str | None:
    """Why `alert` no longer describes the run, in words, or None while it still does. Pure: the run's
    later state is given: its `status`, last logged `step` and time (`progress_t`), its evaluations
    (`evals`: rows as engine.evalstore.eval_row gives them) and its latest machine sample (`system`).

    - degenerate_eval: a later completed eval (a later checkpoint, or made after the alert) is not degenerate;
    - stalled: training logged a later step (or progress after the alert), or the run ended;
    - gpu_memory / host_memory: a later sample is under the alert's threshold less MEMORY_HYSTERESIS.
    Other kinds describe something that happened (a spike, a NaN) and stay as they are.
    """
    kind = alert.get("kind")
    a_step, a_t = store.as_finite(alert.get("step")), store.as_finite(alert.get("t"))
    if kind == "degenerate_eval":
        own = (alert.get("data") or {}).get("eval_id") if isinstance(alert.get("data"), dict) else None
        later = []
        for row in evals or ():
            if not isinstance(row, dict) or row.get("id") == own or row.get("purpose") == "parity":
                continue
            if row.get("status") != "completed" or row.get("degenerate") or store.as_finite(row.get("accuracy")) is None:
                continue
            r_step, r_t = store.as_finite(row.get(store.CHECKPOINT_STEP)), store.as_finite(row.get("created"))
            if (a_step is not None and r_step is not None and r_step > a_step) or (
                    a_t is not None and r_t is not None and r_t > a_t):
                later.append(row)
        if later:
            row = max(later, key=lambda r: (store.as_finite(r.get(store.CHECKPOINT_STEP)) or -1, store.as_finite(r.get("created")) or 0))
            where = f"checkpoint {int(row[store.CHECKPOINT_STEP])}" if store.as_finite(row.get(store.CHECKPOINT_STEP)) is not None \
                else str(row.get("id"))
            return f"a later eval ({where}) is not degenerate: accuracy {float(row['accuracy']):.3f}"
        return None
    if kind == "stalled":
        s, t = store.as_finite(step), store.as_finite(progress_t)
        if s is not None and a_step is not None and s > a_step:
            return f"training moved on: step {int(s)}"
        if t is not None and a_t is not None and t > a_t:
            return "training logged progress since"
        if status in store.FINAL:
            return f"the run ended ({status})"
        return None
    if kind in ("gpu_memory", "host_memory"):
        if not isinstance(system, dict) or a_t is None or (store.as_finite(system.get("t")) or 0) <= a_t:
            return None
        raw = alert.get("data")
        data = raw if isinstance(raw, dict) else {}
        key = "gpu_memory_percent" if kind == "gpu_memory" else "host_memory_percent"
        threshold = store.as_finite(data.get("threshold")) or ALERT_DEFAULTS[key]
        lowered = threshold - MEMORY_HYSTERESIS
        try:
            still = {a["kind"] for a in memory_check(system, {key: lowered})}
        except (TypeError, ValueError, KeyError):  # a malformed sample says nothing
            return None
        if kind not in still:
            return f"memory back under {lowered:g}%"
        return None
    return None


def with_superseded(alerts: Any, **state: Any) -> list[tuple[dict, str | None]]:
    """Each alert (records that are not objects are left out) with `superseded_by(alert, **state)`."""
    return [(a, superseded_by(a, **state)) for a in alerts or () if isinstance(a, dict)]
