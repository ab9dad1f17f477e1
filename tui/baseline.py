"""The baseline mark (engine.analysis.baseline: `logs/.labtui-baseline`, which `labtui report` reads too).

History compares every evaluated run against it (difference, McNemar p, Cohen's h).
"""

from __future__ import annotations

from labtui.engine.analysis.baseline import BASELINE_FILE, get, set  # noqa: F401 - the TUI's names for them
