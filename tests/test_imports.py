"""The import rule: what the TUI and the CLI read with never loads the training stack."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT

HEAVY = ("torch", "transformers", "peft", "trl", "datasets")
LIGHT_MODULES = ["labtui.engine.rundir.store", "labtui.engine.config.experiment", "labtui.engine.analysis.stats", "labtui.engine.cli.main", "labtui.engine.runtime.launcher", "labtui.engine.runtime.queue",
                 "labtui.engine.runtime.lifecycle", "labtui.engine.cli.lifecycle_cli", "labtui.engine.cli.runs", "labtui.engine.runtime.sysmon", "labtui.engine.runtime.supervisor"]


def loaded_after(statement: str) -> list[str]:
    code = f"{statement}; import sys; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    return out.stdout.split()


def test_light_engine_modules_import_no_training_stack():
    assert loaded_after("; ".join(f"import {m}" for m in LIGHT_MODULES)) == []


def test_cli_parser_imports_no_training_stack():
    assert loaded_after("from labtui.engine.cli.main import build_parser; build_parser()") == []


def test_engine_never_imports_textual():
    for path in (ROOT / "engine").glob("*.py"):
        text = path.read_text()
        assert "import textual" not in text and "from textual" not in text, path
