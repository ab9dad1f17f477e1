"""Starting runs, evaluations and parity checks: the engine's CLI in a subprocess.

The TUI never imports torch, transformers, peft or trl; validating an experiment does, so the
`labtui run` / `eval` / `parity` commands run as child processes. They print the new ids on
stdout and, for bad input, exit 2 with a one-line message on stderr, which the TUI shows as is.
The runs they start are detached (their own session), so quitting the TUI never stops them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass


def cli_argv(workspace: str | os.PathLike, *args: str) -> list[str]:
    return [sys.executable, "-m", "labtui", "--workspace", str(workspace), *args]


def run_argv(workspace, experiment_file, overrides: list[str] = (), queue: bool = False) -> list[str]:
    args = ["run", str(experiment_file)]
    for item in overrides:
        args += ["--set", item]
    if queue:
        args.append("--queue")
    return cli_argv(workspace, *args)


def eval_argv(workspace, run_id: str, *, device: str, mode: str, n: int | None, checkpoint: str,
              temperatures: list[float] = ()) -> list[str]:
    args = ["eval", run_id, "--device", device, "--mode", mode, "--checkpoint", str(checkpoint)]
    if n:
        args += ["--n", str(n)]
    if mode == "generate" and temperatures:
        args += ["--temperature", *(f"{t:g}" for t in temperatures)]
    return cli_argv(workspace, *args)


def parity_argv(workspace, run_id: str) -> list[str]:
    return cli_argv(workspace, "parity", run_id)


def display(argv: list[str]) -> str:
    """The command as the user would type it: `labtui eval RUN --device cpu ...`."""
    args = list(argv[3:])
    if args[:1] == ["--workspace"]:
        args = args[2:]
    return " ".join(["labtui", *args])


@dataclass(frozen=True)
class CliResult:
    argv: tuple[str, ...]
    rc: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.rc == 0

    @property
    def ids(self) -> list[str]:
        """The ids the command printed (one per line on stdout)."""
        return [ln.strip() for ln in self.stdout.splitlines() if ln.strip() and " " not in ln.strip()]

    @property
    def message(self) -> str:
        """The error line to show: the CLI's `labtui: error: ...` without the prefix, or the last line."""
        lines = [ln.strip() for ln in self.stderr.splitlines() if ln.strip()]
        for ln in reversed(lines):
            if ln.startswith("labtui: error:"):
                return ln[len("labtui: error:"):].strip()
        if lines:
            return lines[-1]
        return f"exited with status {self.rc}" if self.rc else ""


def run_cli(argv: list[str], cwd: str | os.PathLike | None = None, timeout: float = 900) -> CliResult:
    """Run a CLI command to completion (call it from a worker thread, never the UI thread)."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode("utf-8", "replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        return CliResult(tuple(argv), 124, out, f"timed out after {timeout:.0f}s")
    except OSError as e:
        return CliResult(tuple(argv), 127, "", f"cannot start {argv[0]}: {e.strerror}")
    return CliResult(tuple(argv), proc.returncode, proc.stdout, proc.stderr)
