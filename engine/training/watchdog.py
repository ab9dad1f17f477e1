"""The training watchdog: checks that run inside the worker and write alerts (engine/rundir/alerts.py).

`engine.worker` builds `Watchdog(run, cfg, cb)`, hands it the trainer (`on_trainer`) before training,
and LabtuiCallback calls `on_step_end`, `on_train_record` (each logged train record) and
`on_eval_record` (each evaluation). The checks:

  no_trainable_params  no parameter requires grad (checked before training; the run stops at once)
  nothing_to_learn     the training set is empty after preparation (every answer cut off by
                       max_length; the run stops at once), or the logged loss is exactly 0
  examples_dropped     the trainer dropped examples whose answer max_length cut off entirely
  nan_loss             a logged loss (or grad norm, outside fp16) is NaN or Inf
  loss_spike           a logged loss above median + spike_mads*MAD and spike_ratio*median of the last
                       spike_window logged losses
  grad_norm_zero       grad_norm exactly 0 in grad_zero_logs logged steps in a row
  weights_frozen       a fingerprint of the trainable weights (a fixed strided sample of each tensor)
                       unchanged over frozen_steps optimizer steps
  overfitting          eval loss higher than the evaluation before, overfit_evals times in a row, while
                       the mean train loss between evaluations fell

The best checkpoint (lowest eval loss among saved checkpoints) is recorded as the Trainer's
`state.best_model_checkpoint`, which keeps it from `save_total_limit` rotation, unless the user set
`metric_for_best_model` (then the Trainer chooses) or `save_total_limit: 1` (the newest is kept).
Kinds in `engine.alerts.stop_on` stop the run: the Trainer finishes the step, saves a checkpoint
(not for nan_loss: its weights are lost), and the run ends `failed` with a WatchdogStop error that
names the alert. In a multi-process run only world rank 0 checks and writes alerts; its stop is
`pending_stop` until LabtuiCallback has every rank agree on it at the next step end. torch is imported lazily, and
nothing here may take a run down: a check that fails is reported once in the log and skipped.
"""

from __future__ import annotations

import math
import os
import statistics
import sys
from collections import deque
from pathlib import Path
from typing import Sequence

from labtui.engine.rundir import store
from labtui.engine.rundir.alerts import ALERT_DEFAULTS, AlertLog, alert_settings, make_alert  # noqa: F401

FINGERPRINT_SAMPLES = 64  # elements sampled per trainable tensor
SPIKE_MIN_POINTS = 5


class WatchdogStop(RuntimeError):
    """The watchdog ended the run; the message names the alert (recorded as the run's error)."""


# --- pure checks ------------------------------------------------------------------------------


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _fmt(x) -> str:
    return f"{x:.4g}" if isinstance(x, (int, float)) else str(x)


def loss_spike(history: Sequence[float], loss: float, *, mads: float = ALERT_DEFAULTS["spike_mads"],
               ratio: float = ALERT_DEFAULTS["spike_ratio"], min_points: int = SPIKE_MIN_POINTS) -> dict | None:
    """{median, mad, limit} when `loss` is above median + mads*MAD and above ratio*median of `history`."""
    h = [v for v in history if _finite(v)]
    if len(h) < min_points or not _finite(loss):
        return None
    med = statistics.median(h)
    mad = statistics.median(abs(v - med) for v in h)
    limit = max(med + mads * mad, ratio * med)
    if loss > limit:
        return {"median": med, "mad": mad, "limit": limit}
    return None


def overfitting(evals: Sequence[tuple[int, float, float | None]], k: int) -> bool:
    """`evals`: (step, eval loss, mean train loss since the evaluation before). True when the eval loss
    rose k times in a row and the mean train loss fell over the same evaluations."""
    if len(evals) < k + 1:
        return False
    span = list(evals)[-(k + 1):]
    rising = all(b[1] > a[1] for a, b in zip(span, span[1:]))
    first, last = span[0][2], span[-1][2]
    return rising and first is not None and last is not None and last < first


def trainable_parameters(model) -> list:
    return [p for p in model.parameters() if p.requires_grad]


def fingerprint(params: list, samples: int = FINGERPRINT_SAMPLES):
    """A few elements of each tensor at fixed strided positions, as one float32 vector (or None)."""
    import torch

    parts = []
    with torch.no_grad():
        for p in params:
            n = p.numel()
            if n == 0:  # sharded away (ZeRO-3, FSDP)
                continue
            flat = p.detach().reshape(-1)
            if n > samples:
                idx = torch.linspace(0, n - 1, samples, device=flat.device).long()
                flat = flat.index_select(0, idx)
            parts.append(flat.float())
        if not parts:
            return None
        dev = parts[0].device
        return torch.cat([x.to(dev) for x in parts]).clone()


# --- the watchdog -----------------------------------------------------------------------------


class Watchdog:
    def __init__(self, run: store.Run, cfg: dict, cb=None):
        self.run = run
        self.cfg = cfg or {}
        self.cb = cb
        self.settings = alert_settings(cfg)
        self.stop_on = set(self.settings.get("stop_on") or ())
        # world rank 0 alone writes alerts (RANK is set by torchrun / accelerate)
        self.log = AlertLog(run, disabled=self.settings.get("disable"), echo=True) \
            if os.environ.get("RANK", "0") == "0" else _NoAlerts()
        self.pending_stop: dict | None = None  # a stop the ranks have still to agree on (multi-process)
        self.trainer = None
        self._args = self._state = self._control = None
        self._events = False
        self._training = False
        self.stop_alert: dict | None = None
        self._warned: set[str] = set()
        # train records
        self.losses: deque = deque(maxlen=int(self.settings["spike_window"]))
        self.zero_grads: list[int] = []
        self.last_lr = self.last_grad = None
        self._window: list[float] = []  # train losses since the last evaluation
        # evaluations
        self.evals: list[tuple[int, float, float | None]] = []
        self.best: tuple[int, float] | None = None  # lowest eval loss (step, loss)
        self.best_checkpoint: tuple[int, float, str] | None = None  # among saved checkpoints
        # weights
        self._params: list | None = None
        self._fp = None
        self._fp_step = 0

    # --- plumbing ---------------------------------------------------------------------------

    def _guard(self, name: str, fn, *a, **kw):
        try:
            return fn(*a, **kw)
        except WatchdogStop:
            raise
        except Exception as e:  # never take the run down
            if name not in self._warned:
                self._warned.add(name)
                print(f"[labtui] watchdog: {name} check failed and is skipped: {type(e).__name__}: {e}",
                      file=sys.stderr, flush=True)

    def _ctl(self):
        return getattr(self.trainer, "control", None) or self._control

    def _st(self):
        return getattr(self.trainer, "state", None) or self._state

    def _ar(self):
        return getattr(self.trainer, "args", None) or self._args

    def fire(self, kind: str, message: str, hint: str, step: int | None, data: dict | None = None) -> dict | None:
        state = self._st()
        if state is not None and not getattr(state, "is_world_process_zero", True):
            return None
        alert = make_alert(kind, message, hint, step=step, data=data)
        written = self.log.fire(alert)
        if kind in self.stop_on and self.stop_alert is None:
            self._stop(alert)
        return written

    def clear(self, kind: str) -> None:
        self.log.clear(kind)

    def _stop(self, alert: dict) -> None:
        self.stop_alert = alert
        control = self._ctl()
        if not (self._training and self._events and control is not None):
            raise WatchdogStop(stop_message(alert, by_config=True))
        if getattr(self.cb, "distributed", False):
            self.pending_stop = alert  # every rank stops at the next step end (LabtuiCallback._agree_on_stop)
            return
        control.should_training_stop = True
        control.should_save = alert["kind"] != "nan_loss"  # NaN weights are not worth a checkpoint

    # --- hooks --------------------------------------------------------------------------------

    def on_trainer(self, trainer) -> None:
        """Before training: the trainer as built (model, datasets, arguments)."""
        self.trainer = trainer
        try:
            trainer.add_callback(_events_callback(self))
            self._events = True
        except Exception as e:
            print(f"[labtui] watchdog: cannot follow the trainer's events ({e}); stop_on stops at once", file=sys.stderr)
        self._guard("parameters", self._check_params, trainer.model, 0)
        self._guard("dataset", self._check_dataset, trainer)

    def on_train_begin(self, args, state, control, **kwargs) -> None:
        self._args, self._state, self._control = args, state, control
        self._training = True
        model = kwargs.get("model")
        if model is None:
            model = getattr(self.trainer, "model", None)
        if model is not None:
            self._guard("parameters", self._check_params, model, state.global_step)
            self._guard("weights", self._rebase, model, state.global_step)
        self._guard("best checkpoint", self._seed_best, args, state)

    def on_step_end(self, args, state, control, **kwargs) -> None:
        self._args, self._state, self._control = args, state, control
        self._training = True
        model = kwargs.get("model")
        if model is None:
            return
        if self._params is None:  # no on_train_begin (a trainer the worker did not hand over)
            self._guard("parameters", self._check_params, model, state.global_step)
            self._guard("weights", self._rebase, model, state.global_step)
        elif state.global_step - self._fp_step >= int(self.settings["frozen_steps"]):
            self._guard("weights", self._check_weights, state.global_step)

    def on_train_record(self, rec: dict) -> None:
        self._guard("loss", self._check_train, rec)

    def on_eval_record(self, rec: dict) -> None:
        self._guard("eval", self._check_eval, rec)

    def on_train_end(self, args, state, control, **kwargs) -> None:
        self._training = False
        if self.stop_alert is not None:
            raise WatchdogStop(stop_message(self.stop_alert, by_config=True))

    # --- checks -------------------------------------------------------------------------------

    def _check_params(self, model, step: int) -> None:
        params = trainable_parameters(model)
        if params:
            self._params = params
            self.clear("no_trainable_params")
            return
        lora = self.cfg.get("lora") or {}
        if lora.get("inference_mode"):
            hint = "remove lora.inference_mode: true - it creates the adapters frozen (requires_grad False)"
        elif self.cfg.get("lora") is not None:
            hint = "check lora.target_modules and lora.layers_to_transform, and that nothing freezes the adapters"
        else:
            hint = "something froze the whole model (requires_grad_(False)); unfreeze the layers to train"
        total = sum(p.numel() for p in model.parameters())
        alert = make_alert("no_trainable_params", f"the model has no trainable parameters: all {total:,} have "
                           "requires_grad False, so training cannot update anything", hint, step=step,
                           data={"parameters": total})
        self.log.fire(alert)
        raise WatchdogStop(stop_message(alert))

    def _check_dataset(self, trainer) -> None:
        """Examples the trainer dropped while preparing the data (TRL drops those whose every label
        max_length cut off: a `filter`, which leaves the rows before it in `dataset.data`)."""
        max_length = getattr(trainer.args, "max_length", None)
        hint = f"raise task.max_length (now {max_length}) or shorten the prompt (task.max_context_chars, the template)"
        dropped = {}
        for split in ("train", "eval"):
            ds = getattr(trainer, f"{split}_dataset", None)
            try:
                kept = len(ds)
                before = ds.data.num_rows if getattr(ds, "_indices", None) is not None else kept
            except Exception:  # none, an iterable dataset, a dict of eval sets...
                continue
            if split == "train" and kept == 0:
                what = (f"all {before} training examples were dropped: max_length {max_length} cuts off every answer, "
                        "so no label is left to learn from") if before else "the training set is empty after preparation"
                alert = make_alert("nothing_to_learn", what, hint, step=0,
                                   data={"split": split, "kept": kept, "before": before, "max_length": max_length})
                self.log.fire(alert)
                raise WatchdogStop(stop_message(alert))
            if before > kept:
                dropped[split] = {"kept": kept, "before": before}
        if dropped:
            parts = [f"{d['before'] - d['kept']} of {d['before']} {split} examples ({100.0 * (d['before'] - d['kept']) / d['before']:.0f}%)"
                     for split, d in dropped.items()]
            self.fire("examples_dropped", f"{' and '.join(parts)} were dropped: max_length {max_length} cuts off "
                      "their whole answer", hint, step=0, data={**dropped, "max_length": max_length})

    def _check_train(self, rec: dict) -> None:
        step, loss, grad = rec.get("step"), rec.get("loss"), rec.get("grad_norm")
        self.last_lr, self.last_grad = rec.get("learning_rate"), grad
        args = self._ar()
        fp16 = bool(getattr(args, "fp16", False))  # the loss scaler skips steps with inf gradients on purpose
        lr = self.last_lr
        lr_text = _fmt(lr)
        # NaN / Inf
        bad_loss = loss is not None and not _finite(loss)
        bad_grad = grad is not None and not _finite(grad) and not fp16
        if bad_loss or bad_grad:
            what = f"the loss is {loss}" if bad_loss else f"the gradient norm is {grad} (loss {_fmt(loss)})"
            self.fire("nan_loss", f"{what} at step {step}",
                      f"lower training.learning_rate (now {lr_text}), keep training.max_grad_norm clipping on, "
                      "prefer bf16 to fp16, and check the data around this step; resume from a checkpoint before it",
                      step, {"loss": loss, "grad_norm": grad, "learning_rate": lr})
        else:
            self.clear("nan_loss")
        # exactly zero
        if loss == 0.0:
            self.fire("nothing_to_learn", f"the loss is exactly 0 at step {step}: no label is left to learn from",
                      "check that max_length does not cut off the answers (task.max_length) and that the labels are "
                      "not all masked (-100)", step, {"loss": loss})
        elif loss is not None:
            self.clear("nothing_to_learn")
        # spike
        if _finite(loss):
            window = int(self.settings["spike_window"])
            spike = loss_spike(self.losses, loss, mads=float(self.settings["spike_mads"]),
                               ratio=float(self.settings["spike_ratio"]), min_points=min(SPIKE_MIN_POINTS, window))
            if spike:
                self.fire("loss_spike", f"the loss jumped to {loss:.4g} at step {step} (recent median "
                          f"{spike['median']:.4g}, limit {spike['limit']:.4g})",
                          f"lower training.learning_rate (now {lr_text}) or raise warmup; check the batch at this "
                          "step for broken or very long examples", step, {"loss": loss, **spike})
            else:
                self.clear("loss_spike")
            self.losses.append(loss)
            self._window.append(loss)
        # zero gradients
        if grad == 0.0:
            self.zero_grads.append(step)
            k = int(self.settings["grad_zero_logs"])
            if len(self.zero_grads) >= k:
                self.fire("grad_norm_zero", f"grad_norm is exactly 0 in {len(self.zero_grads)} logged steps in a row "
                          f"(since step {self.zero_grads[0]}): no gradient reaches the trainable weights",
                          self._frozen_hint(), step, {"since_step": self.zero_grads[0], "logged_steps": len(self.zero_grads)})
        elif grad is not None:
            self.zero_grads = []
            self.clear("grad_norm_zero")

    def _frozen_hint(self) -> str:
        lora = self.cfg.get("lora") or {}
        if isinstance(lora.get("lora_dropout"), (int, float)) and lora["lora_dropout"] >= 1.0:
            return "lora.lora_dropout is 1.0: every input to the adapters is dropped, so they get no gradient; use 0.0-0.1"
        if self.last_lr == 0.0:
            return "the learning rate is 0: check training.learning_rate and the warmup/scheduler"
        if self.last_grad == 0.0:
            return ("no gradient reaches the trainable weights: check that lora.target_modules are used in the "
                    "forward pass and that nothing detaches them (inference mode, torch.no_grad)")
        return ("the updates round away: adapters in bf16/fp16 lose updates smaller than their precision - keep "
                "trainable weights in float32 or raise training.learning_rate")

    def _rebase(self, model, step: int) -> None:
        self._params = trainable_parameters(model)
        self._fp, self._fp_step = fingerprint(self._params), step

    def _check_weights(self, step: int) -> None:
        import torch

        fp = fingerprint(self._params)
        if fp is not None and self._fp is not None and fp.shape == self._fp.shape and torch.equal(fp, self._fp):
            n = sum(p.numel() for p in self._params)
            self.fire("weights_frozen", f"the trainable weights ({len(self._params)} tensors, {n:,} parameters) did "
                      f"not change from step {self._fp_step} to step {step}", self._frozen_hint(), step,
                      {"since_step": self._fp_step, "tensors": len(self._params), "parameters": n,
                       "learning_rate": self.last_lr, "grad_norm": self.last_grad})
        else:
            self.clear("weights_frozen")
        self._fp, self._fp_step = fp, step

    def _seed_best(self, args, state) -> None:
        """A resumed run: the best checkpoint recorded before counts."""
        path = getattr(state, "best_model_checkpoint", None)
        if not path or getattr(args, "metric_for_best_model", None) or not Path(path).is_dir():
            return
        step = int(Path(path).name.rsplit("-", 1)[-1])
        loss = next((h.get("eval_loss") for h in getattr(state, "log_history", []) or []
                     if h.get("step") == step and "eval_loss" in h), None)
        if _finite(loss):
            self.best_checkpoint = (step, loss, path)

    def _keep_best(self, step: int, loss: float) -> None:
        args, state, control = self._ar(), self._st(), self._ctl()
        if args is None or state is None or getattr(args, "metric_for_best_model", None):
            return  # the Trainer chooses the best checkpoint itself
        if getattr(args, "save_total_limit", None) == 1:
            return  # with one checkpoint the Trainer would keep the best, not the newest a resume needs
        path = Path(args.output_dir) / f"checkpoint-{step}"
        saving = control is not None and control.should_save and state.global_step == step
        if not (saving or path.is_dir()):
            return  # no checkpoint of this step
        if self.best_checkpoint is None or loss < self.best_checkpoint[1]:
            self.best_checkpoint = (step, loss, str(path))
            state.best_model_checkpoint = str(path)  # the Trainer's rotation never deletes it
            if self.cb is not None:
                self.cb.progress["best_checkpoint"] = str(path)

    def _check_eval(self, rec: dict) -> None:
        step, loss = rec.get("step"), rec.get("eval_loss")
        window, self._window = self._window, []
        if not _finite(loss):
            return
        train_avg = sum(window) / len(window) if window else None
        self.evals.append((step, loss, train_avg))
        if self.best is None or loss < self.best[1]:
            self.best = (step, loss)
        self._keep_best(step, loss)
        k = int(self.settings["overfit_evals"])
        if overfitting(self.evals, k):
            span = self.evals[-(k + 1):]
            best = self.best_checkpoint
            kept = (f"checkpoint-{best[0]} (eval loss {best[1]:.4g}), kept from save_total_limit deletion"
                    if best else "no checkpoint was saved at the best evaluation")
            self.fire("overfitting",
                      f"eval loss rose {k} evaluations in a row ({span[0][1]:.4g} at step {span[0][0]} -> {loss:.4g} "
                      f"at step {step}) while the train loss fell ({span[0][2]:.4g} -> {span[-1][2]:.4g})",
                      f"the best checkpoint is {kept}; stop here, or lower training.learning_rate or lora.r, add "
                      "lora_dropout / weight_decay, or train on more data",
                      step, {"best_step": self.best[0], "best_eval_loss": self.best[1],
                             "best_checkpoint": best[2] if best else None,
                             "evals": [{"step": s, "eval_loss": e, "train_loss": t} for s, e, t in span]})
        elif len(self.evals) >= 2 and loss <= self.evals[-2][1]:
            self.clear("overfitting")


class _NoAlerts:
    """The AlertLog of a rank other than 0: fires and clears nothing."""

    def fire(self, alert: dict) -> dict | None:
        return None

    def clear(self, key: str) -> None:
        pass


def stop_message(alert: dict, by_config: bool = False) -> str:
    """One line for the run's error: the alert, its step, and what to do."""
    why = "engine.alerts.stop_on" if by_config else "training cannot proceed"
    return f"{alert['kind']} at step {alert['step']} ({why}): {alert['message']}; {alert['hint']}"


def _events_callback(watchdog: Watchdog):
    """A TrainerCallback forwarding the events LabtuiCallback does not (train begin and end)."""
    from transformers import TrainerCallback

    class WatchdogEvents(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            watchdog._guard("train begin", watchdog.on_train_begin, args, state, control, **kwargs)

        def on_train_end(self, args, state, control, **kwargs):
            watchdog.on_train_end(args, state, control, **kwargs)

    return WatchdogEvents()
