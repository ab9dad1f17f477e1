"""The `labtui` command: the CLI (labtui.engine.cli.main), and the dashboard (labtui.tui) when no command
is given or `labtui demo` opens it. The one place that joins the two halves: the engine never imports
the TUI (an import-linter contract in pyproject.toml checks it)."""

from __future__ import annotations

from labtui.engine.rundir import store


def open_dashboard(workspace: store.Workspace, note: str | None = None) -> int:
    from labtui.tui.app import main as dashboard

    return dashboard(workspace, note=note)


def main(argv: list[str] | None = None) -> int:
    from labtui.engine.cli.main import main as cli

    return cli(argv, open_tui=open_dashboard)


if __name__ == "__main__":
    raise SystemExit(main())
