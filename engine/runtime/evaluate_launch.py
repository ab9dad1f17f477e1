"""Creating eval directories and starting them detached; the evaluation that follows training.

An eval is started like a run: `python -m labtui.engine.runtime.supervisor EVAL_DIR -- python -m labtui.engine.training.evaluate
EVAL_DIR`, in its own session, so it has the same states, stop and crash detection. Light: no torch.
"""

from __future__ import annotations

import re
import shlex
import sys
import time
from pathlib import Path

import yaml
from labtui.engine.analysis.evalstore import EVAL_FILE, EvalNotFound
from labtui.engine.config.experiment import DEFAULTS, ConfigError, check_field
from labtui.engine.rundir import store
from labtui.engine.runtime import launcher

# the `labtui eval` flag of each eval.json setting: a value given on the command line is named by its flag
FLAGS = {"n": "--n", "mode": "--mode", "device": "--device", "split": "--split", "temperatures": "--temperature",
         "batch_size": "--batch-size", "max_new_tokens": "--max-new-tokens", "dtype": "--dtype", "seed": "--seed"}
ADAPTER_DIR = "adapter"  # the final LoRA adapter the worker saves when training completes


def eval_defaults(cfg: dict) -> dict:
    """The experiment's `eval:` section over labtui's defaults."""
    return {**DEFAULTS["eval"], **(cfg.get("eval") or {})}


# --- checkpoints --------------------------------------------------------------------------------


def _step_of(path: Path) -> int:
    return int(path.name.split("-")[1])


def _say(line: str) -> None:
    print(f"labtui: {line}", file=sys.stderr, flush=True)


def resolve_checkpoint(run: store.Run, spec: str | int | None, note=_say) -> tuple[str, int | None]:
    """(checkpoint path, or "base"; its training step) for latest | best | STEP | base | a folder.

    latest: the newest *complete* checkpoints/checkpoint-N (`store.checkpoint_problem`), or the final
    `adapter/` when it is newer; best: the checkpoint of progress.json's best_step (lowest eval loss);
    STEP: checkpoint-STEP. A newer folder left incomplete by a kill during a save is skipped, and
    `note` is told which checkpoint is used and why ("checkpoint-40: checkpoint-80 is incomplete (...)").
    """
    spec = "latest" if spec in (None, "") else str(spec)
    if spec == "base":
        return "base", 0
    every = run.checkpoints()
    problems = {c: store.checkpoint_problem(c) for c in every}
    cps = [c for c in every if problems[c] is None]
    newest_ok = _step_of(cps[-1]) if cps else -1
    skipped = [f"{c.name} is incomplete ({problems[c]})" for c in every if problems[c] and _step_of(c) > newest_ok]
    adapter = run.file(ADAPTER_DIR)
    final_step = run.progress().get("step")
    have_adapter = (adapter / "adapter_config.json").exists() or (adapter / "config.json").exists()
    available = ", ".join(str(_step_of(c)) for c in cps) or "none"
    if have_adapter:
        available += f" (and the final adapter, step {final_step})"
    if spec == "latest":
        newest = cps[-1] if cps else None
        if have_adapter and (newest is None or adapter.stat().st_mtime >= newest.stat().st_mtime):
            return str(adapter), final_step
        if newest is None:
            why = f" ({'; '.join(skipped)})" if skipped else ""
            raise ConfigError(f"run {run.id} has no complete checkpoint yet{why}; evaluate the base model with --base, "
                              f"or wait for the first save (training.save_steps)")
        if skipped and note is not None:
            note(f"evaluating {newest.name}: {'; '.join(skipped)}")
        return str(newest), _step_of(newest)
    if spec == "best":
        best = run.progress().get("best_step")
        if best is None:
            raise ConfigError(f"run {run.id} recorded no eval loss, so it has no best checkpoint; use --checkpoint latest")
        return _by_step(run, int(best), every, problems, adapter if have_adapter else None, final_step, available, "best step ")
    if re.fullmatch(r"\d+", spec):
        return _by_step(run, int(spec), every, problems, adapter if have_adapter else None, final_step, available, "")
    p = Path(spec).expanduser()
    if p.is_dir() and ((p / "adapter_config.json").exists() or (p / "config.json").exists()):
        m = re.search(r"checkpoint-(\d+)$", p.name)
        if m and store.checkpoint_problem(p):
            raise ConfigError(f"--checkpoint {spec} is incomplete ({store.checkpoint_problem(p)}): a save cut short; "
                              f"complete steps of run {run.id}: {available}")
        return str(p.resolve()), int(m.group(1)) if m else None
    raise ConfigError(f"--checkpoint {spec}: expected latest, best, a step number or a checkpoint folder "
                      f"(steps of run {run.id}: {available})")


def _by_step(run, step, cps, problems, adapter, final_step, available, what) -> tuple[str, int]:
    for c in cps:
        if _step_of(c) == step:
            if problems.get(c) and not (adapter is not None and final_step == step):
                raise ConfigError(f"run {run.id}: {c.name} is incomplete ({problems[c]}), a save cut short; "
                                  f"complete steps: {available}")
            if not problems.get(c):
                return str(c), step
    if adapter is not None and final_step == step:
        return str(adapter), step
    raise ConfigError(f"run {run.id} has no checkpoint for {what}{step} (older ones are deleted after "
                      f"training.save_total_limit); available steps: {available}")


# --- creating an eval -----------------------------------------------------------------------------


def settings_from(cfg: dict, **given) -> dict:
    """eval.json's settings: what was given (None = the experiment's `eval:` default), each checked
    against the experiment schema (engine.config.check_field): a bad value is refused with the same
    words as in an experiment file, named by its flag when it was given (`--split must be one of ...`)."""
    d = eval_defaults(cfg)
    s = {k: (given.get(k) if given.get(k) is not None else d.get(k)) for k in FLAGS}
    if isinstance(s["temperatures"], (list, tuple)):
        s["temperatures"] = list(s["temperatures"]) or [0.0]
    elif s["temperatures"] is None:
        s["temperatures"] = [0.0]
    for key, flag in FLAGS.items():
        # a GPU by its index (cuda:1, one of several) is checked as cuda
        value = "cuda" if key == "device" and isinstance(s[key], str) and re.fullmatch(r"cuda:\d+", s[key]) else s[key]
        err = check_field(f"eval.{key}", value)
        if err:
            raise ConfigError(flag + err[len(f"eval.{key}"):] if given.get(key) is not None else err)
    s["temperatures"] = [float(t) for t in s["temperatures"]]
    if s["mode"] == "score" and s["temperatures"] != [0.0] and given.get("temperatures"):
        raise ConfigError("--temperature is for --mode generate; score mode is deterministic")
    s["purpose"] = given.get("purpose") or "eval"
    return s


def create_eval(run: store.Run | None, settings: dict, *, checkpoint: str | int | None = "latest",
                workspace: str | Path | None = None, config: dict | None = None,
                argv: list[str] | None = None, experiment: str | None = None, holder: store.Run | None = None) -> store.Run:
    """Make `logs/<run-id>/evals/<eval-id>/` with run.json, eval.json, config.yaml and state "queued".

    `run` is the evaluated training run (None for a base model straight from an experiment file:
    then `holder` is the folder that keeps the eval and `config` the experiment's config)."""
    home = run or holder
    if home is None:
        raise ValueError("create_eval needs a run or a holder")
    cfg = config if config is not None else home.config()
    if not cfg.get("model", {}).get("model_name_or_path"):
        raise ConfigError(f"run {home.id} has no experiment config (it was started from a command), so labtui "
                          f"does not know its model; evaluate an experiment run")
    if run is None or settings.get("base"):
        cp_path, cp_step = "base", 0
    else:
        cp_path, cp_step = resolve_checkpoint(run, checkpoint)
    ws_root = str(workspace or home.info().get("workspace") or home.path.parent.parent)
    tag = "parity" if settings.get("purpose") == "parity" else settings["mode"]
    path = store.new_run_dir(home.file(store.EVALS_DIR), f"{tag}-{settings['device']}")
    eval_id = path.name
    now = time.time()
    ev = store.Run(path)
    store.atomic_write_json(path / store.RUN_FILE, {
        "id": eval_id, "kind": "eval", "run": run.id if run is not None else None,
        "experiment": experiment or (home.info().get("experiment")), "workspace": ws_root,
        "created": now, "command": argv or [],
    })
    full = {**settings, "checkpoint": cp_path, "checkpoint_spec": "base" if cp_path == "base" else str(checkpoint or "latest"),
            store.CHECKPOINT_STEP: cp_step, "choices": list(cfg.get("task", {}).get("choices") or ["yes", "no", "maybe"]),
            "created": now}
    full.pop("base", None)
    store.atomic_write_json(path / EVAL_FILE, full)
    store.atomic_write_text(path / store.CONFIG_FILE, yaml.safe_dump(cfg, sort_keys=False))
    store.atomic_write_json(path / store.STATE_FILE, {"status": "queued", "created": now, "updated": now})
    return ev


def create_base_holder(ws: store.Workspace, exp, argv: list[str] | None = None) -> store.Run:
    """A run folder of kind "base" for the base model of an experiment file: nothing is trained, it
    only keeps the evaluation (the baseline row of the history)."""
    info = {
        "experiment": f"{exp.name}", "experiment_file": str(exp.path), "kind": "base",
        "description": f"base model of {exp.name} ({exp.config['model']['model_name_or_path']}), no adapter",
        "parent": None, "changed": {}, "command": argv or [], "workspace": str(ws.root),
    }
    holder = ws.create_run(f"{exp.name}-base", info, yaml.safe_dump(exp.config, sort_keys=False))
    now = time.time()
    holder.update_state(status="completed", started=now, ended=now, error=None)
    return holder


def worker_command(ev: store.Run) -> list[str]:
    return [sys.executable, "-m", "labtui.engine.training.evaluate", str(ev.path)]


def start_eval(ev: store.Run):
    """Start the eval's supervisor detached; returns at once (the Popen of the supervisor)."""
    return launcher.start(ev, command=worker_command(ev))


def wait(ev: store.Run, poll: float = 1.0, timeout: float | None = None) -> dict:
    """Block until the eval reaches a final state (crashes are detected from dead processes)."""
    deadline = None if timeout is None else time.time() + timeout
    while True:
        state = ev.state()
        if state.get("status") in store.FINAL:
            return state
        if deadline is not None and time.time() > deadline:
            return state
        time.sleep(poll)


def rerun_command(ev_run_id: str | None, settings: dict, experiment_file: str | None = None) -> str:
    """The `labtui eval` line that repeats an eval on the CPU (offered when GPU output looks broken)."""
    target = ev_run_id or experiment_file or "RUN"
    parts = ["labtui", "eval", target, "--device", "cpu", "--mode", settings.get("mode", "score")]
    cp = settings.get("checkpoint_spec")
    if settings.get("checkpoint") == "base":
        parts.append("--base")
    elif cp:
        parts += ["--checkpoint", str(settings.get(store.CHECKPOINT_STEP) if cp == "latest" and settings.get(store.CHECKPOINT_STEP) is not None else cp)]
    if settings.get("n") is not None:
        parts += ["--n", str(settings["n"])]
    if settings.get("mode") == "generate":
        parts += ["--temperature", *[str(t) for t in settings.get("temperatures") or [0.0]]]
    return shlex.join(parts)


# --- after training -------------------------------------------------------------------------------


def on_run_end(run: store.Run, state: dict) -> None:
    """Called by the supervisor when a run ends: with `eval.after_training: true` and a completed
    run, start its evaluation and wait for it, so a queued next run does not compete for the GPU."""
    info = run.info()
    if info.get("kind") not in (None, "train"):
        return
    if state.get("status") != "completed":
        return
    cfg = run.config()
    if not eval_defaults(cfg).get("after_training"):
        return
    try:
        ev = create_eval(run, settings_from(cfg), checkpoint="latest", argv=["eval.after_training"])
    except (ConfigError, EvalNotFound) as e:
        print(f"[labtui] evaluation after training not started: {e}", flush=True)
        return
    print(f"[labtui] evaluation after training: {ev.id}", flush=True)
    start_eval(ev)
    launcher.wait_started(ev)
    final = wait(ev, poll=1.0)
    print(f"[labtui] evaluation {ev.id}: {final.get('status')}"
          + (f" - {final['error']}" if final.get("error") else ""), flush=True)
