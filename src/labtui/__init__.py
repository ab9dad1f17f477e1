"""labtui: a terminal control room for long fine-tuning runs.

The installed package maps the repository's top-level folders (pyproject.toml `package-dir`):
`labtui.engine` is `engine/` (everything but the screen), `labtui.tui` is `tui/` (the Textual app).

Public API: `from labtui import LabtuiCallback` (a transformers TrainerCallback; imported on first
use, so `import labtui` stays free of torch), and `python -m labtui` (the `labtui` command).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["LabtuiCallback", "__version__"]

if TYPE_CHECKING:
    from labtui.engine.training.callback import LabtuiCallback


def __getattr__(name: str) -> Any:
    if name == "LabtuiCallback":
        from labtui.engine.training.callback import LabtuiCallback

        return LabtuiCallback
    raise AttributeError(f"module 'labtui' has no attribute {name!r}")
