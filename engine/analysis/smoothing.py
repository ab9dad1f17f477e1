"""TensorBoard's debiased exponential moving average: the TUI's loss chart (tui/series.py) and the
report's loss figure (report_figures.py) smooth with it. Pure Python (math only)."""

from __future__ import annotations

import math
from typing import Iterable


def ema(values: Iterable[float], weight: float) -> list[float]:
    """TensorBoard's debiased exponential moving average (its `smoothing` slider).

    last = last * w + (1 - w) * v;  smoothed = last / (1 - w ** n)  where n counts finite points.
    Non-finite values pass through unchanged and do not enter the average. weight 0 is the raw
    series. (TensorBoard also returns a constant series unsmoothed; the debiased EMA of a
    constant is that constant anyway.)
    """
    out = []
    smoother = Ema(weight)
    for v in values:
        out.append(smoother.update(v))
    return out


class Ema:
    """The streaming form of `ema`: one point at a time, O(1) memory."""

    __slots__ = ("weight", "last", "count")

    def __init__(self, weight: float):
        if not 0.0 <= weight < 1.0:
            raise ValueError(f"EMA weight must be in [0, 1), got {weight}")
        self.weight = weight
        self.last = 0.0
        self.count = 0

    def update(self, value: float) -> float:
        if not math.isfinite(value):
            return value
        w = self.weight
        self.last = self.last * w + (1.0 - w) * value
        self.count += 1
        return self.last / (1.0 - w**self.count) if w else self.last
