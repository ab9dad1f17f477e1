"""The shape of the installed package: one `labtui` namespace, and import contracts that bite.

The contracts themselves live in pyproject.toml ([tool.importlinter]); `make lint` checks them on the
tree. Here they are checked on a real install of the tree in a temporary folder, once as it is and
once with a forbidden import planted, so a contract that stopped meaning anything would fail here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def py(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(cwd), timeout=120)


def test_one_labtui_namespace_and_nothing_named_engine_or_tui(tmp_path):
    probe = py("import importlib.util as u, sys\n"
               "print(u.find_spec('engine'), u.find_spec('tui'))\n"
               "import labtui, labtui.engine.rundir.store, labtui.tui.app\n"
               "print('torch' in sys.modules)\n"
               "from labtui import LabtuiCallback\n"
               "print(LabtuiCallback.__module__)\n", tmp_path)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.split("\n")[:3] == ["None None", "False", "labtui.engine.training.callback"]


def test_the_checkouts_folders_do_not_import_as_engine_or_tui():
    """From the checkout itself (the current folder is on sys.path) engine/ and tui/ are folders of
    labtui, not packages of their own: importing them by the old names says what to import."""
    probe = py("import engine", ROOT)
    assert probe.returncode != 0 and "import labtui.engine, not engine" in probe.stderr
    probe = py("import tui.app", ROOT)
    assert probe.returncode != 0 and "import labtui.tui, not tui" in probe.stderr
    assert py("import labtui.engine.rundir.store, labtui.tui.app", ROOT).returncode == 0


def test_python_m_labtui_is_the_command(tmp_path):
    out = subprocess.run([sys.executable, "-m", "labtui", "--workspace", str(tmp_path), "runs"], capture_output=True,
                         text=True, cwd=str(tmp_path), timeout=120)
    assert out.returncode == 0, out.stderr
    assert "no runs" in out.stdout + out.stderr


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The tree installed for real (not editable) into a folder: what lint-imports reads."""
    if not LINT_IMPORTS.exists():
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    target = tmp_path_factory.mktemp("lint") / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target",
                    str(target), str(ROOT)], check=True, capture_output=True, timeout=300)
    return target


def lint(site: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", str(ROOT / "pyproject.toml")], capture_output=True,
                          text=True, cwd=str(site), timeout=300, env=dict(os.environ, NO_COLOR="1"))


def test_the_import_contracts_hold(installed):
    out = lint(installed)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "BROKEN" not in out.stdout


@pytest.mark.parametrize("module, planted, contract", [
    ("engine/rundir/store.py", "import labtui.tui.app", "the engine never imports the TUI"),
    ("engine/runtime/queue.py", "import torch", "only training and evaluation import torch"),
    ("tui/format.py", "from labtui.engine.training import worker", "the TUI never reaches the training side"),
    ("engine/rundir/fmt.py", "import textual", "only the TUI imports textual"),
    ("engine/rundir/store.py", "def _later():\n    from labtui.engine.runtime import queue", "the engine's layers"),
    ("engine/rundir/fmt.py", "def _later():\n    from . import store", "no import cycles"),
])
def test_each_contract_catches_its_violation(installed, tmp_path, module, planted, contract):
    site = tmp_path / "site"
    shutil.copytree(installed, site)
    path = site / "labtui" / module
    path.write_text(path.read_text() + "\n\n" + planted + "\n")
    out = lint(site)
    assert out.returncode != 0
    broken = [line for line in out.stdout.splitlines() if "BROKEN" in line or contract in line]
    assert any(contract in line for line in broken), out.stdout
