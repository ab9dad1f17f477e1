"""The loss chart: train and eval loss against step or wall time, smoothed, envelope kept.

Draws the selected run's `TailSnapshot` with plotext: the raw min/max envelope faint (so a
spike is never hidden), the EMA-smoothed (or per-column mean) train loss on top, eval loss as
dots, and a red vertical line at every column that holds a NaN/Inf loss. Downsampled to the
plot's width on every draw; the snapshot itself is already bounded.
"""

from __future__ import annotations

import math

from textual.content import Content
from textual.reactive import reactive
from textual_plotext import PlotextPlot

from ..series import SMOOTHING, Point, downsample
from ..tail import TailSnapshot

Y_LABEL_COLS = 9  # what plotext's y ticks and frame take from the width, roughly
MAX_NAN_MARKS = 40

# 16-colour names (plotext maps them to the terminal's ANSI palette).
RAW = "gray"
TRAIN = "cyan"
EVAL = "magenta"
BAD = "red"


def time_unit(span_s: float) -> tuple[str, float]:
    if span_s >= 3 * 3600:
        return "h", 3600.0
    if span_s >= 180:
        return "min", 60.0
    return "s", 1.0


class LossChart(PlotextPlot):
    """Set `snapshot`; the keys of the dashboard flip `axis`, `smoothing` and `log_y`."""

    axis: reactive[str] = reactive("step")
    smoothing: reactive[int] = reactive(1)  # index into series.SMOOTHING
    log_y: reactive[bool] = reactive(False)
    snapshot: reactive[TailSnapshot | None] = reactive(None, always_update=True)
    placeholder: reactive[str] = reactive("loading…")  # what an empty chart says

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:  # noqa: A002
        super().__init__(id=id, classes=classes)
        self.theme = "clear"
        self._drawn_for: tuple | None = None
        self._rendered = None  # what the last draw built (plotext's build transforms its data in place)

    def watch_axis(self) -> None:
        self._changed()

    def watch_smoothing(self) -> None:
        self._changed()

    def watch_log_y(self) -> None:
        self._changed()

    def watch_snapshot(self) -> None:
        self._changed()

    def on_resize(self) -> None:
        self._changed()

    def _changed(self) -> None:
        self.border_title = self.title_text()
        self.refresh()

    def title_text(self) -> str:
        """`Loss t step m EMA 0.6 g lin │2 NaN ━train •eval`: the keys sit next to what they change."""
        snap = self.snapshot
        axis = self.axis
        if axis == "time":
            points = (snap.train.get("time") or snap.eval.get("time")) if snap else ()
            axis = f"time ({time_unit(max((p.x for p in points), default=0.0))[0]})"
        key = "[b $accent]{}[/]"
        weight = SMOOTHING[self.smoothing]
        bits = [
            "[b]Loss[/b]",
            f"{key.format('t')} {axis}",
            f"{key.format('m')} " + (f"EMA {weight:g}" if weight else "raw"),
            f"{key.format('g')} {'log' if self.log_y else 'lin'}",
        ]
        if snap and snap.bad_count:
            bits.append(f"[$error]│{snap.bad_count} NaN[/]")
        bits.append(f"[{TRAIN_STYLE}]━train[/] [{EVAL_STYLE}]•eval[/]")
        return " ".join(bits)

    def render(self):
        """The chart, built once per change: plotext's build log-transforms the figure's data in
        place, so building the same figure twice (a second frame) took the log of the logs. A chart
        that cannot be drawn says why, in the chart, and the app goes on."""
        key = (self.snapshot.version if self.snapshot else None, self.snapshot.run_id if self.snapshot else None,
               self.axis, self.smoothing, self.log_y, self.size, self.placeholder, self.app.theme)
        if key != self._drawn_for or self._rendered is None:
            self._drawn_for = key
            try:
                self.draw()
                self._rendered = super().render()
            except Exception as e:  # noqa: BLE001  shown in the chart, logged
                report = getattr(self.app, "report_error", None)
                line = report("chart", e) if report else f"chart: could not draw: {e}"
                self._rendered = Content.styled(line, "$error")
        return self._rendered

    def draw(self) -> None:
        plt = self.plt
        plt.clear_figure()
        plt.theme("clear")
        snap = self.snapshot
        train = list(snap.train.get(self.axis, ())) if snap else []
        evals = list(snap.eval.get(self.axis, ())) if snap else []
        if not train and not evals:
            plt.title("no loss logged yet" if snap else self.placeholder)
            plt.xticks([], [])
            plt.yticks([], [])
            return
        columns = max(8, (self.size.width - Y_LABEL_COLS) * 2)  # braille: two dots a cell
        xs_all = [p.x for p in train + evals]
        x_range = (min(xs_all), max(xs_all))
        train = downsample(train, columns, x_range)
        evals = downsample(evals, columns, x_range)
        scale = time_unit(x_range[1])[1] if self.axis == "time" else 1.0

        def ok(y: float) -> bool:
            return math.isfinite(y) and (y > 0 or not self.log_y)

        def line(points: list[Point], value) -> tuple[list[float], list[float]]:
            xs, ys = [], []
            for p in points:
                y = value(p)
                if p.n and ok(y):
                    xs.append(p.x / scale)
                    ys.append(y)
            return xs, ys

        # Raw data faint: the min/max envelope where columns hold several points, else the points.
        k = self.smoothing
        envelope = any(p.n and p.hi > p.lo for p in train)
        if envelope:
            for edge in (lambda p: p.hi, lambda p: p.lo):
                xs, ys = line(train, edge)
                if xs:
                    plt.plot(xs, ys, marker="braille", color=RAW)
        elif k:
            xs, ys = line(train, lambda p: p.mean)
            if xs:
                plt.plot(xs, ys, marker="braille", color=RAW)
        main = (lambda p: p.mean) if k == 0 else (lambda p: p.smooth[k])
        xs, ys = line(train, main)
        if xs:
            plt.plot(xs, ys, marker="braille", color=TRAIN)
        xs, ys = line(evals, lambda p: p.mean)
        if xs:
            plt.plot(xs, ys, marker="braille", color=EVAL)
            plt.scatter(xs, ys, marker="•", color=EVAL)
        bad = [p.bad_x / scale for p in train if p.bad][-MAX_NAN_MARKS:]
        for x in bad:
            plt.vline(x, BAD)
        if self.log_y:
            plt.yscale("log")


TRAIN_STYLE = "ansi_cyan"
EVAL_STYLE = "ansi_magenta"
