"""What a run's keys do on any screen (the dashboard, run detail, Launch): why a key cannot act on a
run now (`why_disabled`), running an engine call off the UI thread and saying how it went
(`call_engine`), and resume, retry and "start now", asking first where the CLI would need a flag.

The engine decides (engine.queue.start_or_queue); this only asks the two questions the CLI asks
with `--now` and `--yes`: when the workspace's concurrency is reached, queue the run or start it
anyway; and before a retry runs a command run's command again, show the command.
"""

from __future__ import annotations

from typing import Callable

from labtui.engine.rundir import fmt, store

from .. import engine_api
from .. import format as tui_format
from .confirm import Choose

STOPPABLE = ("starting", "running")
RESUMABLE = ("stopped", "failed", "crashed")


def _ask(app, question: str, choices: list[tuple[str, str, object]], detail: str, then: Callable[[object], None]) -> None:
    app.push_screen(Choose(question, choices, detail), lambda value: value is not None and then(value))


def slot_question(app, what: str, then: Callable[[str], None], full: str | None = None) -> None:
    """then("free") at once when a slot is free; else ask, then then("queue") or then("now") (start anyway)."""
    full = full if full is not None else engine_api.slots_full(app.workspace)
    if full is None:
        then("free")
        return
    _ask(app, f"{what}: the concurrency limit is reached", [("q", "queue it", "queue"), ("n", "start anyway", "now")],
         f"{full}. Queued, it starts when a slot is free; started anyway, it runs next to them "
         f"(on a GPU that may run out of memory).", then)


def resume(screen, run: store.Run) -> None:
    """The `r` key: resume the run, asking first when the concurrency limit is reached (a Slurm run
    is submitted to Slurm again, which queues it: this machine's limit is not asked)."""
    ws = screen.app.workspace
    row = screen.app.row(run.id)
    if row is not None and row.on_slurm:
        screen.engine_call(f"resume {run.id}", engine_api.resume, run, ws, now=True)
        return
    slot_question(screen.app, f"Resume {run.id}",
                  lambda how: screen.engine_call(f"resume {run.id}", engine_api.resume, run, ws, now=how == "now"))


def retry(screen, run: store.Run) -> None:
    """The `R` key: retry as a new run; a command run shows its command and asks, whatever the slots."""
    app, ws = screen.app, screen.app.workspace

    def go(now: bool) -> None:
        screen.engine_call(f"retry {run.id}", engine_api.retry, run, ws, now=now, confirmed=True)

    command = engine_api.script_command(run)
    if command is None:
        slot_question(app, f"Retry {run.id}", lambda how: go(how == "now"))
        return
    full = engine_api.slots_full(ws)
    shown = fmt.printable(command)
    if full is None:
        _ask(app, f"Retry {run.id}? It runs this command again:", [("y", "run it", "go")], shown,
             lambda v: go(False))
    else:
        _ask(app, f"Retry {run.id}? It runs this command again:", [("q", "queue it", "queue"), ("n", "run it now anyway", "now")],
             f"{shown}\nThe concurrency limit is reached: {full}.", lambda v: go(v == "now"))


def why_disabled(action: str, row, baseline_id: str | None = None) -> str | None:
    """Why a run action cannot run on `row` now (the dashboard's selected run, the detail screen's run)."""
    needs_run = ("stop", "resume", "retry", "evaluate", "log", "detail", "baseline", "compare", "cancel_queued",
                 "move_queued")
    if action not in needs_run:
        return None
    if row is None:
        return "no run selected (n starts one)"
    name = tui_format.short_id(row.id, row.experiment)
    # a Slurm run: no pid here is needed (its job runs on a node); a queued one is a pending job, which
    # stop (and c) cancels; Slurm orders its own queue
    slurm_queued = row.status == "queued" and getattr(row, "on_slurm", False)
    if action == "move_queued" and slurm_queued:
        return f"{name} waits in Slurm's queue (job {row.slurm.get('job_id') if row.slurm else '?'}): Slurm orders it"
    if action == "stop" and row.status not in STOPPABLE and not slurm_queued:
        return f"{name} is {row.status}: only a starting or running run can be stopped"
    if action == "resume" and row.status not in RESUMABLE:
        if row.status in STOPPABLE or row.status == "queued":
            return f"{name} is {row.status}: there is nothing to resume"
        return f"{name} is {row.status}: resume continues a stopped, failed or crashed run (R retries it as a new run)"
    if action == "retry" and not row.final:
        return f"{name} is {row.status}: retry starts a finished run again as a new run"
    if action == "compare":
        if not baseline_id:
            return "no baseline yet: select a run and press b to mark it as the baseline"
        if row.id == baseline_id:
            return f"{name} is the baseline: select another run to compare with it"
    if action in ("cancel_queued", "move_queued") and row.status != "queued":
        return f"{name} is {row.status}: only a queued run can be cancelled or moved in the queue"
    return None


def call_engine(app, what: str, fn, *args, **kwargs) -> None:
    """Run a lifecycle/queue call (in a worker thread) and report how it went."""
    try:
        result = fn(*args, **kwargs)
    except Exception as e:  # the engine's message is meant for the user
        app.call_from_thread(app.notify, fmt.printable(f"{type(e).__name__}: {e}" if not str(e) else str(e)),
                             title=fmt.printable(f"{what} failed"), markup=False,
                             severity="error", timeout=15)
        return
    if isinstance(result, str):
        message = result  # engine.lifecycle.stop says what it did
    elif getattr(result, "id", None):
        message = f"{what}: {result.id}"
    else:
        message = f"{what}: done"
    app.call_from_thread(app.notify, fmt.printable(message), markup=False)
    if getattr(result, "id", None):
        app.call_from_thread(app.select_run, result.id)  # a retry is a new run: show it
    app.call_from_thread(app.refresh_now)
