"""`labtui`: the command line. With no command it opens the TUI.

Exit codes: 0 ok, 1 the thing ran and failed, 2 bad input (config, file, run id, usage).
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import time
from pathlib import Path
from typing import Callable

from labtui.engine.cli import eval_cli, lifecycle_cli, notify_cli, sweep_cli
from labtui.engine.cli.cli_base import UsageError, get_run, print_json, workspace_from
from labtui.engine.config.experiment import ConfigError
from labtui.engine.rundir import fmt, ranks, store

# --- formatting -------------------------------------------------------------------------------


_p = fmt.printable  # every piece of run data printed as text goes through it: no terminal escapes


def _when(t) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if isinstance(t, (int, float)) else "-"


# --- commands ---------------------------------------------------------------------------------


def cmd_runs(args) -> int:
    ws = workspace_from(args)
    if args.watch:
        from labtui.engine.cli.watch import watch

        if args.json:
            raise UsageError("--watch prints a table (or a line per change); leave out --json")
        if not args.interval > 0:
            raise UsageError(f"--interval must be a number of seconds above 0, got {args.interval:g}")
        return watch(lambda: _runs_rows(ws, args), lambda rows, total: _runs_table(ws, args, rows, total), args.interval)
    rows, total = _runs_rows(ws, args)
    if args.json:
        print_json(rows)
        return 0
    for line in _runs_table(ws, args, rows, total):
        print(line)
    return 0


def _runs_rows(ws: store.Workspace, args) -> tuple[list[dict], int]:
    """`labtui runs`' rows (filtered by --status) and how many runs there are in all."""
    from labtui.engine.runtime import notify, queue

    queue.advance(ws)  # a queue whose managers were all killed moves on as soon as anybody looks
    _sync_slurm(ws)
    rows = sorted((r.summary() for r in ws.iter_runs()), key=lambda r: (r.get("created") or 0, r["id"]))
    notify.crashed_by_reader(ws, rows)  # a crash nobody recorded: its notification, once
    total = len(rows)
    if args.status:
        rows = [r for r in rows if r["status"] in args.status]
    return rows, total


def _runs_table(ws: store.Workspace, args, rows: list[dict], total: int) -> list[str]:
    if not rows:
        if total:  # runs there are, none with these statuses
            return [f"no {' or '.join(dict.fromkeys(args.status))} runs ({total} in all)"]
        return [f"no runs in {_p(ws.logs)} - start one with `labtui run experiments/demo-baseline.yaml`"]
    grouped = any(r.get("group") for r in rows)  # a GROUP column once a sweep's runs are listed
    steps = [f"{r['step'] or 0}/{r['max_steps'] or '?'}" for r in rows]
    wid = max(len("ID"), *(len(_p(r["id"])) for r in rows))  # as wide as the ids listed: 80 columns fit
    wstep = max(len("STEP"), *(len(s) for s in steps))
    lines = [(f"{'ID':<{wid}} {'STATUS':<10} {'STEP':>{wstep}} {'LOSS':>8} {'EVAL':>8}  {'AGE':<4}"
              + ("  GROUP" if grouped else "")).rstrip()]
    for r, step in zip(rows, steps):
        lines.append((f"{_p(r['id']):<{wid}} {_p(r['status']):<10} {step:>{wstep}} {fmt.num(r['train_loss']):>8} "
                      f"{fmt.num(r['eval_loss']):>8}  {fmt.age(r['created']):<4}"
                      + (f"  {_p(r.get('group') or '-')}" if grouped else "")).rstrip())
        if r.get("warning"):
            lines.append(f"{'':<{wid}} ! {_p(r['warning'])}")
    return lines


def _sync_slurm(ws: store.Workspace, runs: list[store.Run] | None = None) -> None:
    """Slurm runs' state.json in step with Slurm before anything is shown (slurm_runs.sync: one squeue
    for all of them; nothing happens where Slurm cannot be asked)."""
    from labtui.engine.runtime import slurm_runs

    slurm_runs.sync(ws, runs)


def run_detail(run: store.Run) -> dict:
    info = run.info()
    detail = run.summary()
    detail.update(
        config=run.config(),
        parent=info.get("parent"),
        parent_experiment=info.get("parent_experiment"),
        changed=info.get("changed") or {},
        run_dir=str(run.path),
        experiment_file=info.get("experiment_file"),
        command=info.get("command"),
        env=run.env(),
        checkpoints=[str(p) for p in run.checkpoints()],
        alerts=store.read_jsonl(run.file(store.ALERTS_FILE)),
        evals=[e.name for e in run.evals()],
        notes=run.notes(),
        skipped_records=store.skipped_records(run),
    )
    state = run.state()
    detail["error_where"] = state.get("error_where")
    detail["error_rank"] = store.as_whole(state.get("error_rank"))  # the rank that failed a multi-process run
    detail["launch"] = launch = ranks.launch_info(state, detail["config"])
    beats = ranks.read_ranks(run.path)
    single = launch["launcher"] == "python" and len(beats) <= 1
    detail["ranks"] = [] if single else [ranks.summary(r) for r in beats]
    raw = run.raw_state()
    detail["executor"] = "slurm" if raw.get("executor") == "slurm" else "local"
    detail["slurm"] = raw.get("slurm") if detail["executor"] == "slurm" else None
    return detail


def _rank_lines(d: dict) -> list[str]:
    """The `ranks` block of a multi-process run: how it was launched, the step skew and the straggler,
    then one line per rank (step, heartbeat age, status, device, host:pid, memory allocated/peak)."""
    if not d.get("ranks") and (d.get("launch") or {}).get("launcher", "python") == "python":
        return []
    beats = d.get("ranks") or []
    lines = [f"  launch      {ranks.launch_text(d['launch'])}"]
    skew, slow = ranks.step_skew(beats), ranks.straggler(beats)
    head = "no heartbeat yet" if not beats else f"{len(beats)} reporting" + (
        f", step skew {skew}" if skew is not None else "") + (f"; {slow.text()}" if slow else "")
    lines.append(f"  ranks       {head}")
    for r in beats:
        where = f"{r.get('host') or '?'}:{r.get('pid') if r.get('pid') is not None else '?'}"
        mark = "  <- slow" if slow and slow.rank == r["rank"] else ""
        lines.append(f"    rank {r['rank']:<3} step {r['step'] if r.get('step') is not None else '-':<6} "
                     f"heartbeat {fmt.age(r.get('heartbeat'))} ago  {r.get('status') or '?':<8} "
                     f"{r.get('device') or '-':<7} {where}  mem {ranks.mem_text(r)}{mark}")
    return lines


def _slurm_lines(d: dict) -> list[str]:
    """A Slurm run's job: id (and earlier ones), Slurm's state, the node, why it waits or how it ended."""
    s = d.get("slurm") if d.get("executor") == "slurm" else None
    if not isinstance(s, dict):
        return []
    earlier = [str(j) for j in s.get("job_ids") or [] if str(j) != str(s.get("job_id"))]
    job = f"job {s.get('job_id') or '?'}" + (f" on cluster {s['cluster']}" if s.get("cluster") else "")
    lines = [f"  slurm       {job}  {s.get('state') or '?'}" + (f"  node {s['node']}" if s.get("node") else "")
             + (f"  (earlier jobs: {', '.join(earlier)})" if earlier else "")]
    if s.get("reason"):
        lines.append(f"              {s['reason']}")
    lines.append(f"              asked {fmt.age(s.get('checked'))} ago; batch script {d['run_dir']}/job.sbatch, "
                 f"output slurm-{s.get('job_id') or '%j'}.out")
    return lines


def _error_lines(d: dict) -> list[str]:
    """The error, then where: one `at file:line` on the same line, or a traceback (a rank's root
    cause) indented under it."""
    where = d.get("error_where") or ""
    if "\n" not in where.strip():
        return [f"  error       {d['error']}" + (f"  at {where}" if where else "")]
    return [f"  error       {d['error']}", "  traceback"] + [f"    {ln}" for ln in where.rstrip().splitlines()]


def _eval_lines(run: store.Run) -> list[str]:
    """One line per evaluation of the run: id, what it evaluated (checkpoint step, N, mode, device),
    its accuracy or how far it got; the headline eval (the one History and compare use) marked."""
    from labtui.engine.analysis import evalstore

    rows = evalstore.list_evals(run)
    if not rows:
        return []
    top = evalstore.headline_eval(run)
    lines = []
    for row in rows:
        acc = row.get("accuracy")
        if row.get("status") == "completed" and isinstance(acc, (int, float)):
            result = f"accuracy {acc:.3f}"
        elif row.get("status") in store.LIVE:
            done, total = row.get("done"), row.get("total")
            result = f"{row.get('status')} {done if isinstance(done, int) else '?'}/{total if isinstance(total, int) else '?'}"
        elif row.get("status") == "completed":
            result = "completed, no accuracy recorded"
        else:
            result = str(row.get("status") or "?") + (f": {row['error']}" if row.get("error") else "")
        purpose = " (parity check)" if row.get("purpose") == "parity" else ""
        mark = ""
        if top and top.get("id") == row.get("id"):
            mark = f"  headline ({top['why']})" if top.get("why") else "  headline"
        lines.append(f"  eval        {row.get('id')}  {evalstore.eval_settings_text(row)}{purpose}  {result}{mark}")
    return lines


def cmd_show(args) -> int:
    ws = workspace_from(args)
    run = get_run(ws, args.run)
    _sync_slurm(ws, [run])
    d = run_detail(run)
    from labtui.engine.runtime import notify

    notify.crashed_by_reader(ws, [d])  # a crash nobody recorded: its notification, once
    if args.json:
        print_json(d)
        return 0
    lines = [f"{d['id']}  [{d['status']}]",
             f"  experiment  {d['experiment']}  ({d.get('experiment_file') or '-'})"]
    if d.get("group"):
        lines.append(f"  group       {d['group']}  (`labtui report --group {d['group']}`)")
    if d.get("description"):
        lines.append(f"  hypothesis  {d['description']}")
    if d.get("error"):
        lines += _error_lines(d)
    if d.get("warning"):
        lines.append(f"  warning     {d['warning']}")
    lines.append(f"  step        {d['step']}/{d['max_steps'] or '?'}   epoch {fmt.num(d.get('epoch'), 3)}")
    lines.append(f"  train loss  {fmt.num(d['train_loss'])}   best eval loss {fmt.num(d['eval_loss'])}"
                 + (f" (step {d['best_step']})" if d.get("best_step") is not None else ""))
    if d.get(store.TOKENS_PER_S):
        tps = d[store.TOKENS_PER_S]
        lines.append(f"  tokens/s    {tps:.0f}" if isinstance(tps, (int, float)) else f"  tokens/s    {fmt.num(tps)}")
    dur = (d["ended"] or time.time()) - d["started"] if d.get("started") else None
    lines.append(f"  created     {_when(d['created'])}   duration {fmt.duration(dur)}")
    if d.get("parent") or d.get("parent_experiment"):
        lines.append(f"  parent      {d.get('parent') or d.get('parent_experiment')}")
    for key, (old, new) in (d.get("changed") or {}).items():
        lines.append(f"    {key}: {old!r} -> {new!r}")
    lines += _rank_lines(d)
    lines += _slurm_lines(d)
    if d.get("checkpoint"):
        lines.append(f"  checkpoint  {d['checkpoint']}")
    for a in d.get("alerts") or []:
        lines.append(f"  alert       [{a.get('severity')}] step {a.get('step')}: {a.get('message')}")
    skipped = {name: n for name, n in (d.get("skipped_records") or {}).items() if n}
    if skipped:
        lines.append("  skipped     " + ", ".join(f"{n} unreadable record(s) in {name}" for name, n in skipped.items()))
    lines += _eval_lines(run)
    if d.get("notes", "").strip():
        lines.append("  notes")
        lines += [f"    {ln}" for ln in d["notes"].rstrip().splitlines()]
    lines.append(f"  run dir     {d['run_dir']}")
    for line in lines:
        print(_p(line))
    return 0


def cmd_logs(args) -> int:
    ws = workspace_from(args)
    run = get_run(ws, args.run)
    _sync_slurm(ws, [run])
    path = run.file(store.LOG_FILE)
    if not args.follow:  # each line as a terminal shows it: a progress bar's last state, no escapes
        for line in store.tail_lines(path, args.lines, max_bytes=max(64_000, args.lines * 400)):
            print(_p(line))
        return 0
    from labtui.engine.cli.follow import follow_log

    try:
        def finished() -> bool:
            _sync_slurm(ws, [run])  # a Slurm job that ended without its supervisor recording it
            return run.state().get("status") in store.FINAL

        follow_log(path, args.lines, finished)
    except KeyboardInterrupt:
        return 0
    return 0


def cmd_diff(args) -> int:
    """Two runs' resolved configs: only the keys that differ, with both values (config.diff)."""
    from labtui.engine.config import diff

    ws = workspace_from(args)
    run_a, run_b = get_run(ws, args.a), get_run(ws, args.b)
    try:
        d = diff.runs_diff(run_a, run_b)
    except diff.NoConfig as e:
        raise UsageError(str(e)) from None
    if args.json:
        print_json(d)
        return 0
    print(_p(f"A  {d['a']}\nB  {d['b']}"))
    rows = d["differences"]
    if not rows:
        print("no differences")
        return 0
    cells = [(r["key"], diff.side_text(r, diff.A), diff.side_text(r, diff.B)) for r in rows]
    wk = max(3, *(len(k) for k, _, _ in cells))
    wa = min(40, max(1, *(len(a) for _, a, _ in cells)))
    print(f"{len(rows)} key{'s' if len(rows) != 1 else ''} differ")
    print(f"{'KEY':<{wk}}  {'A':<{wa}}  B")
    for key, a, b in cells:
        print(_p(f"{key:<{wk}}  {a:<{wa}}  {b}"))
    return 0


def cmd_run(args) -> int:
    from labtui.engine.cli import runs as runs_mod

    ws = workspace_from(args)
    return runs_mod.cmd_run(ws, args)


def cmd_demo(args) -> int:
    from labtui.engine.cli import runs as runs_mod

    ws = workspace_from(args)
    return runs_mod.cmd_demo(ws, args)


def cmd_tui(args) -> int:
    ws = workspace_from(args)
    if args.open_tui is None:
        raise UsageError("the dashboard opens from the `labtui` command (labtui.main), not from the engine's CLI alone")
    return args.open_tui(ws)


# --- parser -----------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """Usage errors as every other bad input: one `labtui: error: ...` line, exit code 2."""

    def error(self, message: str):
        self.exit(2, f"labtui: error: {fmt.printable(message)} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="labtui", description="A terminal control room for long fine-tuning runs. With no command, opens the dashboard.")
    ap.add_argument("--workspace", "-w", help="folder with experiments/ and logs/ (default: $LABTUI_WORKSPACE or the current folder)")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("run", help="start runs from experiment files, or any command after --")
    p.add_argument("files", nargs="*", help="experiment files (several are queued, one after another)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key, e.g. training.learning_rate=5e-5")
    p.add_argument("--foreground", "-f", action="store_true", help="wait for the run and show a progress bar (Ctrl-C stops it)")
    p.add_argument("--queue", "-q", action="store_true", help="add to the queue instead of starting now")
    p.add_argument("--now", action="store_true", help="start even if the concurrency limit is reached (else it is queued)")
    p.add_argument("--name", help="a name for a bring-your-own command run")
    p.add_argument("--slurm", action="store_true", help="submit to Slurm (= --set launch.executor=slurm; several "
                   "files or --queue: chained, one after another)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("runs", help="list runs")
    p.add_argument("--json", action="store_true")
    p.add_argument("--status", action="append", choices=store.STATUSES, metavar="STATUS",
                   help=f"only runs with this status (repeatable): {', '.join(store.STATUSES)}")
    p.add_argument("--watch", action="store_true", help="keep the table up to date (a terminal: redrawn in place; "
                   "else one line per change) until Ctrl-C")
    p.add_argument("--interval", type=float, default=2.0, metavar="S", help="seconds between two looks with --watch (default 2)")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("show", help="one run in detail")
    p.add_argument("run", help="run id, unique prefix, or 'last'")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("logs", help="a run's log")
    p.add_argument("run")
    p.add_argument("-f", "--follow", action="store_true", help="follow until the run ends")
    p.add_argument("-n", "--lines", type=int, default=50)
    p.set_defaults(func=cmd_logs)

    p = sub.add_parser("demo", help="build the offline demo (tiny model + synthetic data), queue the demo runs, open the dashboard")
    p.add_argument("--no-tui", action="store_true", help="follow the runs in the terminal instead of opening the dashboard")
    p.add_argument("--prepare-only", action="store_true", help="only build the demo model and data")
    p.add_argument("--again", action="store_true", help="queue three fresh demo runs even when the demo runs are already queued, running or done")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("diff", help="two runs' resolved configs: the keys that differ, with both values")
    p.add_argument("a", help="run id, unique prefix, or 'last'")
    p.add_argument("b", help="run id, unique prefix, or 'last'")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_diff)

    lifecycle_cli.register(sub)  # stop, resume, retry, queue
    eval_cli.register(sub)  # eval, evals, compare, export-predictions, parity, doctor
    from labtui.engine.cli import report_cli

    report_cli.register(sub)  # report [RUN|EVAL ...] --format md|html|csv|json -o PATH
    notify_cli.register(sub)  # notify [--test]
    sweep_cli.register(sub)  # sweep FILE --grid KEY=V1,V2
    return ap


def main(argv: list[str] | None = None, open_tui: Callable[..., int] | None = None) -> int:
    """The CLI. `open_tui(workspace, note=None) -> exit status` opens the dashboard: handed in by the
    `labtui` command (labtui.main), so that the engine never imports the TUI."""
    argv = list(sys.argv[1:] if argv is None else argv)
    full = ["labtui", *argv]
    script = []
    if "--" in argv:  # `labtui run -- python train.py --lr 5e-5`: everything after -- is the command
        i = argv.index("--")
        argv, script = argv[:i], argv[i + 1:]
    ap = build_parser()
    args = ap.parse_args(argv)
    args.script = script
    args.argv = full
    args.open_tui = open_tui
    if script and args.command != "run":
        ap.error("a command after -- is only for `labtui run -- COMMAND`")
    try:
        if args.command is None:
            return cmd_tui(args)
        return args.func(args)
    except (UsageError, ConfigError) as e:
        print(f"labtui: error: {fmt.printable(str(e))}", file=sys.stderr)  # it may quote run data
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except (PermissionError, OSError) as e:  # a read-only workspace: reading commands work, writing ones stop here
        if e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        print(f"labtui: error: {_permission_line(e)}", file=sys.stderr)
        return 2


def _permission_line(e: OSError) -> str:
    name = e.filename or "the workspace"
    target = Path(str(name))
    writable = os.access(target if target.exists() else target.parent, os.W_OK)
    if e.errno == errno.EROFS or not writable:
        return f"{name} is not writable ({e.strerror}); this command changes the workspace"
    return f"{name}: {e.strerror}"


if __name__ == "__main__":
    sys.exit(main())
