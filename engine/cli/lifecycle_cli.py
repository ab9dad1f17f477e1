"""CLI commands for the run lifecycle: stop, resume, retry, queue."""

from __future__ import annotations

import sys

from labtui.engine.cli.cli_base import UsageError, get_run, print_json, workspace_from
from labtui.engine.rundir import store

# lifecycle (and through it the supervisor and psutil) is imported by the commands that use it:
# the parser of every `labtui` command, the dashboard's included, registers these.


def _ws_run(args):
    ws = workspace_from(args)
    return ws, get_run(ws, args.run)


def _guard(fn):
    def wrapped(args):
        from labtui.engine.runtime import lifecycle

        try:
            return fn(args)
        except (lifecycle.LifecycleError, ValueError) as e:
            raise UsageError(str(e)) from None

    return wrapped


@_guard
def cmd_stop(args) -> int:
    from labtui.engine.runtime import lifecycle

    _, run = _ws_run(args)
    print(lifecycle.stop(run, now=args.now))
    return 0


def _started(args, run: store.Run, message: str) -> int:
    """Print the run id (stdout) and what happened (stderr); with --foreground, wait for the run."""
    print(run.id)
    print(message, file=sys.stderr)
    if not args.foreground:
        return 0
    from labtui.engine.cli.runs import follow

    return follow(run)


def _outcome_line(out, command: str) -> str:
    """The engine's line, and for a run queued by the concurrency limit how to start it anyway."""
    if getattr(out, "started", True):
        return str(out)
    return f"{out}; use --now to start anyway (`{command} --now`)"


@_guard
def cmd_resume(args) -> int:
    from labtui.engine.runtime import lifecycle, slurm_runs

    ws, run = _ws_run(args)
    slurm_runs.sync(ws, [run])  # a Slurm job that ended without its supervisor recording it
    out = lifecycle.resume(run, ws, now=args.now)
    line = _outcome_line(out, f"labtui resume {run.id}")
    if out.started:
        line += f"; watch with `labtui logs {run.id} -f`"
    return _started(args, run, line)


@_guard
def cmd_retry(args) -> int:
    from labtui.engine.runtime import lifecycle

    ws, run = _ws_run(args)
    confirmed = args.yes
    command = lifecycle.script_command(run)
    if command is not None and not confirmed:
        if not (sys.stdin and sys.stdin.isatty()):
            raise lifecycle.LifecycleError(f"retrying {run.id} runs this command again: {command} - add --yes to run it "
                                           f"(there is no terminal to ask on)")
        print(f"retrying {run.id} runs this command again:\n  {command}", file=sys.stderr)
        try:
            answer = input("run it? [y/N] ")
        except EOFError:
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            print("not retried", file=sys.stderr)
            return 1
        confirmed = True
    out = lifecycle.retry(run, ws, now=args.now, confirmed=confirmed)
    return _started(args, out.run, _outcome_line(out, f"labtui retry {run.id}"))


@_guard
def cmd_queue(args) -> int:
    from labtui.engine.rundir.fmt import printable
    from labtui.engine.runtime import queue

    ws = workspace_from(args)
    if args.concurrency is not None:
        if args.concurrency < 1:
            raise ValueError("--concurrency must be at least 1")
        queue.set_concurrency(ws, args.concurrency)
    if args.cancel:
        run = get_run(ws, args.cancel)
        if not queue.cancel(ws, run):
            raise ValueError(f"{run.id} is not in the queue")
        print(f"{run.id}: removed from the queue", file=sys.stderr)
    for ref, delta, to in ((args.up, -1, None), (args.down, 1, None), (args.first, None, 0)):
        if ref:
            run = get_run(ws, ref)
            pos = queue.move(ws, run, delta=delta, to=to)
            print(f"{run.id}: now at position {pos + 1}", file=sys.stderr)
    queue.advance(ws)
    from labtui.engine.runtime import notify, slurm_runs

    slurm_runs.sync(ws)
    notify.reader_check(ws)  # a crash nobody recorded: its notification, once
    on_slurm = _slurm_rows(ws)
    live = [r for r in ws.iter_runs() if r.raw_state().get("status") in store.LIVE and r.state().get("status") in store.LIVE
            and r.raw_state().get("executor") != "slurm"]
    waiting = queue.queued(ws)
    if args.json:
        print_json({
            "concurrency": queue.concurrency(ws),
            "running": [r.id for r in live],
            "queued": [{"position": i + 1, "id": r.id, "experiment": r.info().get("experiment")} for i, r in enumerate(waiting)],
            "slurm": on_slurm,
        })
        return 0
    print(f"concurrency {queue.concurrency(ws)} (set with `labtui queue --concurrency N`)")
    for r in live:
        print(printable(f"  running  {r.id}"))  # run data: no terminal escapes
    for i, r in enumerate(waiting, 1):
        print(printable(f"  {i:>7}  {r.id}  {(r.info().get('description') or '')[:60]}"))
    if on_slurm:
        print("on Slurm (its queue; the concurrency above is for this machine)")
    for row in on_slurm:
        node = f" on {row['node']}" if row.get("node") else ""
        why = f"  {row['reason']}" if row.get("reason") and row["status"] == "queued" else ""
        print(printable(f"  {row['status']:<8} {row['id']}  job {row['job_id']} {row['state'] or '?'}{node}{why}"))
    if not live and not waiting and not on_slurm:
        print("  nothing running or queued")
    return 0


def _slurm_rows(ws: store.Workspace) -> list[dict]:
    """The Slurm runs (not evals) that have not ended, oldest first: id, status, job id, Slurm state,
    reason, node, every job id."""
    from labtui.engine.runtime import slurm_runs

    rows = []
    for r in sorted(slurm_runs.active_runs(ws), key=store.creation_order):
        if r.info().get("kind") == "eval":
            continue
        s = slurm_runs.slurm_info(r.raw_state())
        rows.append({"id": r.id, "status": r.state().get("status"), "job_id": s.get("job_id"), "state": s.get("state"),
                     "reason": s.get("reason"), "node": s.get("node"), "job_ids": s.get("job_ids") or []})
    return rows


def register(sub) -> None:
    p = sub.add_parser("stop", help="stop a run: checkpoint, then `stopped` (again, or --now: kill)")
    p.add_argument("run")
    p.add_argument("--now", action="store_true", help="SIGKILL at once (no checkpoint)")
    p.set_defaults(func=cmd_stop)

    p = sub.add_parser("resume", help="continue a stopped, failed or crashed run from its last complete checkpoint")
    p.add_argument("run")
    p.add_argument("--foreground", "-f", action="store_true")
    p.add_argument("--now", action="store_true", help="start even if the concurrency limit is reached (else it is queued)")
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser("retry", help="start a new run with the same config, linked to the old one")
    p.add_argument("run")
    p.add_argument("--foreground", "-f", action="store_true")
    p.add_argument("--now", action="store_true", help="start even if the concurrency limit is reached (else it is queued)")
    p.add_argument("--yes", "-y", action="store_true", help="run a command run's command again without asking")
    p.set_defaults(func=cmd_retry)

    p = sub.add_parser("queue", help="show the queue; cancel or move queued runs")
    p.add_argument("--cancel", metavar="RUN")
    p.add_argument("--up", metavar="RUN", help="move one place earlier")
    p.add_argument("--down", metavar="RUN", help="move one place later")
    p.add_argument("--first", metavar="RUN", help="move to the front")
    p.add_argument("--concurrency", type=int, help="how many runs may be live at once in this workspace")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_queue)
