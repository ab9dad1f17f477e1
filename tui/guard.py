"""The screen never dies of one bad record: a widget's drawing and the app's message handlers catch
what they raise, show it where it happened ("chart: could not draw: ..."), and log the traceback.

`guarded("run list")` wraps a handler or a drawing method; the app's `report_error` keeps the last
errors (`LabApp.errors`), writes each traceback to the TUI's log file (`log_path()`: $LABTUI_TUI_LOG,
else $XDG_STATE_HOME/labtui/tui.log, else ~/.local/state/labtui/tui.log) and the Textual log.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Callable, TypeVar

logger = logging.getLogger("labtui.tui")
F = TypeVar("F", bound=Callable)


def log_path() -> Path:
    given = os.environ.get("LABTUI_TUI_LOG")
    if given:
        return Path(given)
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(state) / "labtui" / "tui.log"


_handler: logging.Handler | None = None


def log_exception(where: str, exc: BaseException) -> str | None:
    """Write the traceback to the log file (opened on the first error); its path, or None when it
    cannot be written (a read-only home: the error is still shown on screen)."""
    global _handler
    path = log_path()
    if _handler is None or getattr(_handler, "baseFilename", None) != str(path.absolute()):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handler = logging.FileHandler(path, encoding="utf-8")
        except OSError:
            return None
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        if _handler is not None:
            logger.removeHandler(_handler)
            _handler.close()
        _handler = handler
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    logger.error("%s failed", where, exc_info=(type(exc), exc, exc.__traceback__))
    return str(path)


def describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def guarded(where: str, default=None) -> Callable[[F], F]:
    """Run the method; if it raises, `self.app.report_error(where, exc)` and return `default`."""

    def wrap(method: F) -> F:
        @functools.wraps(method)
        def guarded_method(self, *args, **kwargs):
            try:
                return method(self, *args, **kwargs)
            except Exception as e:  # noqa: BLE001  shown and logged, the app goes on
                report = getattr(self.app, "report_error", None)
                if report is not None:
                    report(where, e)
                else:
                    log_exception(where, e)
                return default

        return guarded_method  # type: ignore[return-value]

    return wrap
