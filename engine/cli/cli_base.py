"""What every command module of the CLI shares (engine/cli/main.py, lifecycle_cli.py, eval_cli.py): the
workspace and the run named by the arguments, JSON output, and the error that means bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path

from labtui.engine.config.experiment import ConfigError
from labtui.engine.rundir import store


class UsageError(ConfigError):
    """Bad input: the message is printed as `labtui: error: ...` and the exit code is 2."""


def workspace_from(args) -> store.Workspace:
    root = args.workspace or os.environ.get("LABTUI_WORKSPACE") or os.getcwd()
    if not Path(root).is_dir():
        raise UsageError(f"workspace {root} is not a folder")
    return store.Workspace(root)


def get_run(ws: store.Workspace, ref: str) -> store.Run:
    try:
        return ws.run(ref)
    except store.RunNotFound as e:
        raise UsageError(str(e)) from None


def print_json(obj) -> None:
    """JSON on stdout, NaN/Inf as strings (store.jsonable); json escapes control characters in strings
    (`\\u001b`), so run data cannot reach the terminal raw through it."""
    print(json.dumps(store.jsonable(obj), indent=2, default=str))
