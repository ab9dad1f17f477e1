"""Resume, retry and "start now" from the TUI, asking first where the CLI would need a flag.

The engine decides (engine.queue.start_or_queue); this only asks the two questions the CLI asks
with `--now` and `--yes`: when the workspace's concurrency is reached, queue the run or start it
anyway; and before a retry runs a command run's command again, show the command.
"""

from __future__ import annotations

from typing import Callable

from labtui.engine import fmt, store

from . import engine_api


def _ask(app, question: str, choices: list[tuple[str, str, object]], detail: str, then: Callable[[object], None]) -> None:
    from .screens.confirm import Choose

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
    """The `r` key: resume the run, asking first when the concurrency limit is reached."""
    ws = screen.app.workspace
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
