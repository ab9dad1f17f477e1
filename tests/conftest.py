"""Shared fixtures: the offline demo assets (built once per session) and throwaway workspaces."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from labtui.engine.rundir import store

ROOT = Path(__file__).resolve().parent.parent
SHARED_PUBMEDQA = ROOT.parent / "shared" / "data" / "pubmedqa"

# Tests run workers on 2 cores next to pytest itself; keep each worker to one thread.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


@pytest.fixture(scope="session")
def demo_assets(tmp_path_factory) -> Path:
    """A folder holding demo/ (tiny model + synthetic data), built once for the whole session."""
    from labtui.engine.training import demo

    root = tmp_path_factory.mktemp("demo-assets")
    demo.prepare(root, log=lambda m: None)
    return root / demo.DEMO_DIR


@pytest.fixture
def workspace(tmp_path, demo_assets) -> store.Workspace:
    """A fresh workspace with the demo assets (symlinked, read-only use) and the shipped experiments."""
    (tmp_path / "demo").symlink_to(demo_assets)
    shutil.copytree(ROOT / "experiments", tmp_path / "experiments")
    return store.Workspace(tmp_path)


@pytest.fixture(autouse=True)
def _tui_log_of_its_own(tmp_path_factory, monkeypatch) -> None:
    """The TUI's error log ($LABTUI_TUI_LOG, else under $HOME) kept per test, outside the user's home: tests
    running side by side (pytest-xdist) share no file."""
    monkeypatch.setenv("LABTUI_TUI_LOG", str(tmp_path_factory.mktemp("tui-log") / "tui.log"))


@pytest.fixture
def anyio_backend() -> str:
    """The async TUI tests (App.run_test) run on asyncio."""
    return "asyncio"


@pytest.fixture
def ws(tmp_path, monkeypatch) -> store.Workspace:
    """An empty workspace (logs/ made), and the TUI's error log kept inside the test's folder. A test
    module may define its own `ws`."""
    monkeypatch.setenv("LABTUI_TUI_LOG", str(tmp_path / "tui.log"))
    w = store.Workspace(tmp_path / "ws")
    w.logs.mkdir(parents=True)
    return w


def labtui(ws: store.Workspace | Path, *args: str, timeout: float = 300, check: bool = False, **kw) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess against a workspace."""
    root = ws.root if isinstance(ws, store.Workspace) else Path(ws)
    env = dict(os.environ, LABTUI_WORKSPACE=str(root))
    env.update(kw.pop("env", {}))
    proc = subprocess.run([sys.executable, "-m", "labtui", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=str(root), stdin=subprocess.DEVNULL, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"labtui {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def wait_for(run: store.Run, statuses=store.FINAL, timeout: float = 240, poll: float = 0.25) -> dict:
    """Wait until the run's (derived) status is one of `statuses`; fail with its log if it never is."""
    deadline = time.time() + timeout
    state = {}
    while time.time() < deadline:
        state = run.state()
        if state.get("status") in statuses:
            return state
        time.sleep(poll)
    log = "\n".join(store.tail_lines(run.file(store.LOG_FILE), 40))
    raise AssertionError(f"{run.id} still {state.get('status')} after {timeout}s\n{log}")


def fast_overrides(steps: int = 20) -> list[str]:
    """--set flags that make a demo experiment finish in a few seconds."""
    return ["--set", f"training.max_steps={steps}", "--set", "training.logging_steps=2",
            "--set", f"training.save_steps={steps // 2}", "--set", f"training.eval_steps={steps // 2}"]


def pytest_collection_modifyitems(config, items):
    """Every test that needs the tiny demo model (the `demo_assets` fixture, or `workspace` built on it)
    builds or starts a model: it is `e2e`, so `make test-fast` (-m "not e2e") leaves it out."""
    for item in items:
        if "demo_assets" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.e2e)


class Server:
    """An HTTP server on a free localhost port that keeps every POSTed JSON body: what a real apprise
    `json://127.0.0.1:PORT/` URL (`.url`) sends a notification to (tests/test_notify.py)."""

    def __init__(self):
        got: list[dict] = []
        self.got = got

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                got.append(json.loads(body or b"{}"))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"json://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def wait(self, n: int, timeout: float = 30) -> list[dict]:
        deadline = time.time() + timeout
        while len(self.got) < n and time.time() < deadline:
            time.sleep(0.1)
        assert len(self.got) >= n, f"{len(self.got)} of {n} notifications arrived: {self.got}"
        return list(self.got)

    def titled(self, word: str) -> list[dict]:
        return [m for m in self.got if word in m.get("title", "")]


@pytest.fixture
def server():
    s = Server()
    yield s
    s.httpd.shutdown()
