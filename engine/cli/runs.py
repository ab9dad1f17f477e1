"""`labtui run` and `labtui demo`: validate, create runs, start or queue them, follow in the foreground."""

from __future__ import annotations

import sys
from pathlib import Path

from labtui.engine.cli.follow import follow_progress, progress_head, slurm_refresh
from labtui.engine.config.experiment import ConfigError, Experiment, check_files, load_experiment
from labtui.engine.rundir import fmt, store
from labtui.engine.runtime import launcher, queue
from labtui.engine.training import demo
from labtui.engine.training.libcheck import validate_with_libraries

DEMO_EXPERIMENTS = ("demo-baseline.yaml", "demo-tuned.yaml", "demo-sft.yaml")


def _uses_demo_assets(cfg: dict) -> bool:
    values = [cfg["model"].get("model_name_or_path") or "", cfg["dataset"].get("path") or "", cfg["dataset"].get("test_split") or ""]
    return any(str(v).replace("./", "").startswith(demo.DEMO_DIR + "/") for v in values)


def load_and_validate(ws: store.Workspace, path: str | Path, overrides: list[str], log=print) -> Experiment:
    """Everything that can be checked before a run exists; raises ConfigError (exit 2)."""
    exp = load_experiment(path, overrides)
    if _uses_demo_assets(exp.config) and not demo.is_prepared(ws.root):
        log("building the offline demo model and data (once, about 20 s)...")
        demo.prepare(ws.root, log=log)
    check_files(exp.config, ws.root, str(path))
    from labtui.engine.training.data import check_splits

    check_splits(exp.config, ws.root)  # labels within task.choices, no empty split (not the hub format)
    validate_with_libraries(exp.config, str(path))
    return exp


def cmd_run(ws: store.Workspace, args) -> int:
    if args.script:
        if args.files or args.set:
            raise ConfigError("give either experiment files or a command after --, not both")
        if getattr(args, "slurm", False):
            raise ConfigError("--slurm submits experiment files; a command after -- runs on this machine")
        run = launcher.create_script_run(ws, args.script, args.argv, name=args.name)
        return _start_or_queue([run], args)
    if not args.files:
        raise ConfigError("labtui run needs an experiment file (e.g. experiments/demo-baseline.yaml) or `-- COMMAND`")
    overrides = [*args.set, "launch.executor=slurm"] if getattr(args, "slurm", False) else args.set
    exps = [load_and_validate(ws, f, overrides, log=lambda m: print(m, file=sys.stderr)) for f in args.files]
    runs = [launcher.create_training_run(ws, exp, args.argv) for exp in exps]
    from labtui.engine.runtime import slurm_runs

    on_slurm = [r for r in runs if slurm_runs.is_slurm(r)]
    local = [r for r in runs if r not in on_slurm]
    rc = _submit(on_slurm, args) if on_slurm else 0
    if local:
        rc = max(rc, _start_or_queue(local, args))
    return rc


def _submit(runs: list[store.Run], args) -> int:
    """Runs with `launch.executor: slurm` go to Slurm: several files, or --queue, are chained (each
    job starts after the one before ends, however it ends: `--dependency=afterany:`); one run, or
    --now, is submitted on its own. Slurm queues them; the workspace's concurrency does not apply."""
    from labtui.engine.runtime import slurm, slurm_runs

    chain = not getattr(args, "now", False) and (args.queue or len(runs) > 1)
    prev = None
    for i, run in enumerate(runs):
        print(run.id)
        try:
            job = slurm_runs.submit(run, dependency=f"afterany:{prev}" if chain and prev else None)
        except slurm.SlurmError as e:
            print(f"labtui: error: {run.id}: {fmt.printable(str(e))}", file=sys.stderr)
            for rest in runs[i + 1:]:
                rest.update_state(status="stopped", error=f"not submitted: Slurm refused {run.id}, which it was to follow")
            return 1
        after = f", after job {prev}" if chain and prev else ""
        print(f"  {run.id}: submitted to Slurm as job {job}{after} ({run.file(slurm.SBATCH_FILE)})", file=sys.stderr)
        prev = job
    if args.foreground:
        return follow_many(runs)
    print(f"watch with `labtui` or `labtui runs` (Slurm's state and reason), `labtui logs {runs[-1].id} -f`",
          file=sys.stderr)
    return 0


def _start_or_queue(runs: list[store.Run], args) -> int:
    """Several files, or --queue: all join the queue. One run: it starts if the workspace's concurrency
    allows (queue.start_or_queue decides, as for resume, retry and the TUI), else it is queued and the
    message says why; --now starts it (or them) anyway."""
    from labtui.engine.runtime import queue

    ws = store.Workspace(runs[0].info()["workspace"])
    now = bool(getattr(args, "now", False))
    if not now and (args.queue or len(runs) > 1):
        for run in runs:
            queue.enqueue(ws, run)
            print(run.id)
        started = queue.advance(ws)
        if args.foreground:
            return follow_many(runs)
        for run in runs:
            print(f"  {run.id}: {'started' if run.id in started else 'queued'}", file=sys.stderr)
        return 0
    why = ""
    for run in runs:
        started, why = queue.start_or_queue(ws, run, now=now)
        print(run.id)
    if args.foreground:
        return follow_many(runs)
    if not started:
        print(f"queued: {why}; use --now to start anyway (`labtui run --now ...`)", file=sys.stderr)
        return 0
    print(f"started detached; watch with `labtui` or `labtui logs {runs[0].id} -f`", file=sys.stderr)
    return 0


def follow_many(runs: list[store.Run]) -> int:
    rc = 0
    for run in runs:
        rc = max(rc, follow(run))
    return rc


def follow(run: store.Run, out=sys.stderr) -> int:
    """Wait for a run, drawing a progress bar; Ctrl-C asks it to stop (checkpoint, then `stopped`)."""

    from labtui.engine.runtime.lifecycle import stop

    state = follow_progress(run, lambda st, prog: progress_line(run.id, st, prog), stop, refresh=slurm_refresh(run),
                            worth_a_line=lambda _, prog: prog.get("step", 0) % 10 == 0,
                            stopping=", saving a checkpoint", poll_s=0.5, out=out)
    if state is None:
        return 130
    out.write(fmt.printable(f"{run.id}: {state.get('status')}" + (f" - {state['error']}" if state.get("error") else "")) + "\n")
    return 0 if state.get("status") == "completed" else 1


def progress_line(run_id: str, state: dict, prog: dict) -> str:
    """One line of `run -f`: the store's readers give `state` and `prog` their types (`store.clean`);
    the run's own text (its id, an odd status) is made printable."""
    step, total = prog.get("step") or 0, prog.get("max_steps") or 0
    loss = prog.get("train_loss")
    tps = prog.get("tokens_per_s_avg")
    eta = ""
    if total and step and prog.get("started") and prog.get("updated"):
        rate = step / max(prog["updated"] - prog["started"], 1e-9)
        eta = f" ETA {int((total - step) / rate)}s" if rate > 0 else ""
    parts = [progress_head(run_id, state.get("status"), step, total)]
    if loss is not None:
        parts.append(f"loss {loss:.4g}")
    if prog.get("best_eval_loss") is not None:
        parts.append(f"eval {prog['best_eval_loss']:.4g}")
    if tps:
        parts.append(f"{tps:.0f} tok/s")
    return " ".join(parts) + eta


DEMO_REUSED = ("queued", "starting", "running", "completed")


def existing_demo_runs(ws: store.Workspace) -> dict[str, store.Run]:
    """{experiment name: the newest run of it} for demo runs that are queued, running or completed
    with no overrides: what `labtui demo` reuses instead of queueing the same runs again."""
    names = {Path(f).stem for f in DEMO_EXPERIMENTS}
    found: dict[str, tuple[float, store.Run]] = {}
    for run in ws.iter_runs():
        info = run.info()
        name = info.get("experiment")
        if name not in names or info.get("kind") != "train" or info.get("overrides"):
            continue
        if run.state().get("status") not in DEMO_REUSED:
            continue
        created = info.get("created") if isinstance(info.get("created"), (int, float)) else 0.0
        if name not in found or created >= found[name][0]:
            found[name] = (created, run)
    return {name: run for name, (_, run) in found.items()}


def cmd_demo(ws: store.Workspace, args) -> int:
    demo.prepare(ws.root, log=lambda m: print(m, file=sys.stderr))
    if args.prepare_only:
        return 0
    exp_dir = ws.experiments if ws.experiments.is_dir() else store.SHIPPED_EXPERIMENTS
    files = [exp_dir / name for name in DEMO_EXPERIMENTS]
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise ConfigError(f"demo experiment files not found: {', '.join(missing)}")
    reuse = {} if getattr(args, "again", False) else existing_demo_runs(ws)
    todo = [f for f in files if f.stem not in reuse]
    exps = [load_and_validate(ws, f, []) for f in todo]
    new = [launcher.create_training_run(ws, exp, ["labtui", "demo"]) for exp in exps]
    for run in new:
        queue.enqueue(ws, run)
    queue.advance(ws)
    runs = []
    for f in files:
        if f.stem in reuse:
            run = reuse[f.stem]
            print(f"{run.id}: already here ({run.state().get('status')}), not queued again", file=sys.stderr)
        else:
            run = new.pop(0)
        runs.append(run)
        print(run.id)
    if reuse:
        print("the demo runs above are reused; `labtui demo --again` queues fresh ones", file=sys.stderr)
    open_tui = args.open_tui  # handed in by the `labtui` command (labtui.main); None from engine.cli alone
    if args.no_tui or open_tui is None or not sys.stdin.isatty() or not sys.stdout.isatty():
        return follow_many(runs)
    note = None
    if reuse:  # said on the dashboard too: the lines above are hidden while it is open
        note = (f"{len(reuse)} of the demo runs are already here ({', '.join(sorted(reuse))}): not queued again. "
                "`labtui demo --again` queues fresh ones.")
    return open_tui(ws, note=note)
