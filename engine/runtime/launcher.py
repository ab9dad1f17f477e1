"""Creating runs and starting them detached. Used by the CLI and the TUI; imports nothing heavy.

A run is started as `python -m labtui.engine.runtime.supervisor RUN_DIR -- python -m labtui.engine.training.worker RUN_DIR` in a
new session with stdin closed and output appended to the run's log, so closing the terminal, a
dropped SSH connection, or quitting the TUI never stops it.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import yaml
from labtui.engine.config.experiment import Experiment
from labtui.engine.rundir import store


def create_training_run(ws: store.Workspace, exp: Experiment, argv: list[str] | None = None,
                        parent: str | None = None, status: str = "queued") -> store.Run:
    cfg = exp.config
    parent_name = exp.parent_config.get("name") if exp.parent_config else None
    info = {
        "experiment": exp.name,
        "experiment_file": str(exp.path),
        "chain": [str(p) for p in exp.chain],
        "description": cfg.get("description") or "",
        "kind": "train",
        "parent": parent,
        "parent_experiment": parent_name,
        "changed": exp.changed,
        "overrides": exp.overrides,
        "command": argv or [],
        "workspace": str(ws.root),
    }
    run = ws.create_run(exp.name, info, yaml.safe_dump(cfg, sort_keys=False))
    if status != "queued":
        run.update_state(status=status)
    return run


def create_script_run(ws: store.Workspace, command: list[str], argv: list[str] | None = None,
                      name: str | None = None) -> store.Run:
    name = name or store.slugify(_script_name(command))  # the name its id carries, everywhere
    info = {
        "experiment": name, "kind": "script", "description": shlex.join(command), "parent": None,
        "changed": {}, "script_command": command, "command": argv or [], "workspace": str(ws.root),
        "cwd": os.getcwd(),
    }
    return ws.create_run(name, info, None)


def _script_name(command: list[str]) -> str:
    for part in command[1:]:
        if part.endswith(".py") or "/" in part:
            return Path(part).stem
    return Path(command[0]).name


def worker_command(run: store.Run, resume: bool = False) -> list[str]:
    info = run.info()
    if info.get("kind") == "script":
        return list(info["script_command"])
    return [sys.executable, "-m", "labtui.engine.training.worker", str(run.path), *(["--resume"] if resume else [])]


def start(run: store.Run, resume: bool = False, command: list[str] | None = None) -> subprocess.Popen:
    """Start the run's supervisor detached; returns at once."""
    command = command or worker_command(run, resume)
    run.update_state(status="starting", supervisor_pid=None, pid=None, error=None, ended=None, queued=False,
                     queued_resume=None)
    cwd = run.info().get("workspace")
    if not (isinstance(cwd, str) and os.path.isdir(cwd)):  # a run folder copied from another machine
        cwd = str(home_workspace(run))
    log = open(run.file(store.LOG_FILE), "ab")
    try:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        proc = subprocess.Popen(
            [sys.executable, "-m", "labtui.engine.runtime.supervisor", str(run.path), "--", *command],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            close_fds=True, cwd=cwd, env=env,
        )
    finally:
        log.close()
    _children.append(proc)
    _reap()
    return proc


def home_workspace(run: store.Run) -> Path:
    """The workspace a run folder lives in (`WS/logs/RUN`, an eval `WS/logs/RUN/evals/EVAL`), whatever its
    run.json says: a folder copied from elsewhere names a workspace that may not exist here."""
    return run.path.parents[3] if run.path.parent.name == store.EVALS_DIR else run.path.parent.parent


_children: list[subprocess.Popen] = []


def _reap() -> None:
    """Long-lived callers (the TUI) collect exited supervisors so no zombies pile up."""
    for p in list(_children):
        if p.poll() is not None:
            _children.remove(p)


def wait_started(run: store.Run, timeout: float = 20.0) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        st = run.raw_state()
        if st.get("status") not in ("queued", "starting") or st.get("supervisor_pid"):
            return st
        time.sleep(0.1)
    return run.raw_state()

