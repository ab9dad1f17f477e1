"""The loss chart: train and eval loss against step, wall time or tokens seen, smoothed, envelope kept.

Draws the selected run's `TailSnapshot` with plotext: the raw min/max envelope faint (so a
spike is never hidden), the EMA-smoothed (or per-column mean) train loss on top, eval loss as
dots, and a red vertical line at every column that holds a NaN/Inf loss. Downsampled to the
plot's width on every draw; the snapshot itself is already bounded.

With runs marked (`marked`, their snapshots in `overlay`) it draws those instead, each in its
own colour of `PALETTE` (16-colour safe; red stays the NaN marker): its envelope in the plain
colour, its train line in the bright one, its eval losses as dots, and a legend (experiment·id)
under the chart. The tokens axis is the step axis carried through the run's (step, tokens seen)
pairs (series.remap).
"""

from __future__ import annotations

import math

from labtui.engine.rundir.fmt import printable
from textual.content import Content
from textual.reactive import reactive
from textual_plotext import PlotextPlot

from .. import format as fmt
from ..series import SMOOTHING, Point, downsample, remap
from ..tail import TailSnapshot

Y_LABEL_COLS = 9  # what plotext's y ticks and frame take from the width, roughly
MAX_NAN_MARKS = 40

# 16-colour names (plotext maps them to the terminal's ANSI palette).
RAW = "gray"
TRAIN = "cyan"
EVAL = "magenta"
BAD = "red"
AXES = ("step", "time", "tokens")  # what `t` cycles through
# A marked run's colours: (train line, envelope, legend style). Bright/plain pairs of the ANSI hues
# other than red; plotext's "orange" is ANSI colour 3, the terminal's yellow.
PALETTE = (("cyan+", "cyan", "ansi_bright_cyan"), ("orange+", "orange", "ansi_bright_yellow"),
           ("green+", "green", "ansi_bright_green"), ("magenta+", "magenta", "ansi_bright_magenta"),
           ("blue+", "blue", "ansi_bright_blue"), ("white", "gray+", "ansi_bright_white"))


def time_unit(span_s: float) -> tuple[str, float]:
    if span_s >= 3 * 3600:
        return "h", 3600.0
    if span_s >= 180:
        return "min", 60.0
    return "s", 1.0


def tokens_unit(span: float) -> tuple[str, float]:
    if span >= 3e9:
        return "B", 1e9
    if span >= 3e6:
        return "M", 1e6
    if span >= 3e3:
        return "k", 1e3
    return "", 1.0


def short_label(label: str, width: int) -> str:
    """`experiment·id` in `width` columns, the id's tail kept (it tells runs of one experiment apart)."""
    label = printable(label)
    if len(label) <= width:
        return label
    head, _, tail = label.rpartition("·")
    if not head or len(tail) + 2 > width:
        return fmt.clip(label, width)
    return fmt.clip(head, width - len(tail) - 1) + "·" + tail


def axis_points(snap: TailSnapshot | None, kind: str, axis: str) -> list[Point]:
    """`snap`'s train or eval points (`kind`) on the x axis `axis`: by step, by seconds since the
    run's first record, or by tokens seen (the step axis remapped; [] when no tokens were counted)."""
    if snap is None:
        return []
    series = snap.train if kind == "train" else snap.eval
    if axis == "tokens":
        return remap(series.get("step", ()), snap.tokens_at)
    return list(series.get(axis, ()))


def axis_unit(axis: str, x_max: float) -> tuple[str, float]:
    """(unit name, divisor) of the x axis: `min` and 60 for 15 minutes of wall time, `M` and 1e6 for tokens."""
    if axis == "time":
        return time_unit(x_max)
    if axis == "tokens":
        return tokens_unit(x_max)
    return "", 1.0


class LossChart(PlotextPlot):
    """Set `snapshot`; the keys of the dashboard flip `axis`, `smoothing` and `log_y`."""

    axis: reactive[str] = reactive("step")
    smoothing: reactive[int] = reactive(1)  # index into series.SMOOTHING
    log_y: reactive[bool] = reactive(False)
    snapshot: reactive[TailSnapshot | None] = reactive(None, always_update=True)
    placeholder: reactive[str] = reactive("loading…")  # what an empty chart says
    marked: reactive[tuple[tuple[str, str, int], ...]] = reactive(())  # (run id, legend label, PALETTE slot)
    overlay: reactive[dict[str, TailSnapshot]] = reactive(dict, always_update=True)  # marked run id -> snapshot

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:  # noqa: A002
        super().__init__(id=id, classes=classes)
        self.theme = "clear"
        self._drawn_for: tuple | None = None
        self._rendered = None  # what the last draw built (plotext's build transforms its data in place)
        self.drawn: list[dict] = []  # what the last draw plotted, a dict per run (tests and the legend read it)

    def watch_axis(self) -> None:
        self._changed()

    def watch_smoothing(self) -> None:
        self._changed()

    def watch_log_y(self) -> None:
        self._changed()

    def watch_snapshot(self) -> None:
        self._changed()

    def watch_marked(self) -> None:
        self._changed()

    def watch_overlay(self) -> None:
        self._changed()

    def on_resize(self) -> None:
        self._changed()

    def _changed(self) -> None:
        self.border_title = self.title_text()
        self.border_subtitle = self.legend_text()
        self.set_class(self.border_subtitle is not None, "-legend")  # a bottom border that shows the legend
        self.refresh()

    def shown(self) -> list[tuple[str, str, int, TailSnapshot | None]]:
        """The runs the chart draws: the marked ones (run id, label, colour slot, snapshot or None
        while it loads); none when no run is marked (the selected run is drawn)."""
        return [(run_id, label, slot, self.overlay.get(run_id)) for run_id, label, slot in self.marked]

    def legend_text(self) -> Content | None:
        """`━ demo-a·37df ━ demo-b·9c01`: each marked run in its colour (labels as plain text); None
        with none marked."""
        parts: list = []
        shown = self.shown()
        room = (self.size.width or 80) - 4  # the bottom border, less its corners
        fit = max(6, room // max(1, len(shown)) - 3) if sum(len(label) + 3 for _, label, _, _ in shown) > room else 0
        for _, label, slot, snap in shown:
            note = "" if snap is not None else " …"
            if snap is not None and self.axis == "tokens" and not snap.tokens_at:
                note = " (no tokens)"
            label = short_label(label, fit) if fit else printable(label)
            parts += [" " if parts else "", (f"━ {label}", PALETTE[slot % len(PALETTE)][2]), note]
        return Content.assemble(*parts) if parts else None

    def title_text(self) -> str:
        """`Loss t step m EMA 0.6 g lin │2 NaN ━train •eval`: the keys sit next to what they change."""
        shown = self.shown()
        snaps = [s for *_, s in shown if s is not None] if shown else [self.snapshot] if self.snapshot else []
        axis = self.axis
        if axis in ("time", "tokens"):
            x_max = max((p.x for snap in snaps for kind in ("train", "eval") for p in axis_points(snap, kind, axis)),
                        default=0.0)
            unit = axis_unit(axis, x_max)[0]
            axis = f"{axis} ({unit})" if unit else axis
        key = "[b $accent]{}[/]"
        weight = SMOOTHING[self.smoothing]
        bits = [
            "[b]Loss[/b]",
            f"{key.format('t')} {axis}",
            f"{key.format('m')} " + (f"EMA {weight:g}" if weight else "raw"),
            f"{key.format('g')} {'log' if self.log_y else 'lin'}",
        ]
        bad = sum(s.bad_count for s in snaps)
        if bad:
            bits.append(f"[$error]│{bad} NaN[/]")
        if shown:
            bits.append(f"│{len(shown)} marked ━train •eval")
        else:
            bits.append(f"[{TRAIN_STYLE}]━train[/] [{EVAL_STYLE}]•eval[/]")
        return " ".join(bits)

    def render(self):
        """The chart, built once per change: plotext's build log-transforms the figure's data in
        place, so building the same figure twice (a second frame) took the log of the logs. A chart
        that cannot be drawn says why, in the chart, and the app goes on."""
        key = (self.snapshot.version if self.snapshot else None, self.snapshot.run_id if self.snapshot else None,
               tuple((run_id, slot, snap.version if snap else None) for run_id, _, slot, snap in self.shown()),
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
        self.drawn = []
        axis = self.axis
        shown = self.shown()
        if shown:  # the marked runs, each in its colours
            runs = [(run_id, label, PALETTE[slot % len(PALETTE)], snap) for run_id, label, slot, snap in shown
                    if snap is not None]
        else:  # the selected run
            snap = self.snapshot
            runs = [(snap.run_id, "", None, snap)] if snap else []
        data = [(run_id, label, colours, snap, axis_points(snap, "train", axis), axis_points(snap, "eval", axis))
                for run_id, label, colours, snap in runs]
        if not any(train or evals for *_, train, evals in data):
            if not runs:
                plt.title("loading the marked runs…" if shown else self.placeholder)
            elif axis == "tokens" and not any(snap.tokens_at for *_, snap, _, _ in data):
                plt.title("no tokens counted yet: t switches the axis")
            else:
                plt.title("no loss logged yet")
            plt.xticks([], [])
            plt.yticks([], [])
            return
        columns = max(8, (self.size.width - Y_LABEL_COLS) * 2)  # braille: two dots a cell
        xs_all = [p.x for *_, train, evals in data for p in train + evals]
        x_range = (min(xs_all), max(xs_all))
        scale = axis_unit(axis, x_range[1])[1]
        bad: list[float] = []
        for run_id, label, colours, snap, train, evals in data:
            train = downsample(train, columns, x_range)
            evals = downsample(evals, columns, x_range)
            counts = self._draw_run(train, evals, colours, scale)
            bad += [p.bad_x / scale for p in train if p.bad]
            self.drawn.append({"run_id": run_id, "label": label, "color": colours[0] if colours else TRAIN, **counts})
        for x in sorted(bad)[-MAX_NAN_MARKS:]:
            plt.vline(x, BAD)
        if self.log_y:
            plt.yscale("log")

    def _draw_run(self, train: list[Point], evals: list[Point], colours: tuple[str, str, str] | None,
                  scale: float) -> dict:
        """One run's envelope, train line and eval losses; `colours` None: the selected run alone
        (gray envelope, cyan train, magenta eval line and dots). Returns the number of points drawn."""
        plt = self.plt

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

        main_colour, raw_colour = colours[:2] if colours else (TRAIN, RAW)
        # Raw data faint: the min/max envelope where columns hold several points, else the points.
        k = self.smoothing
        envelope = any(p.n and p.hi > p.lo for p in train)
        if envelope:
            for edge in (lambda p: p.hi, lambda p: p.lo):
                xs, ys = line(train, edge)
                if xs:
                    plt.plot(xs, ys, marker="braille", color=raw_colour)
        elif k:
            xs, ys = line(train, lambda p: p.mean)
            if xs:
                plt.plot(xs, ys, marker="braille", color=raw_colour)
        main = (lambda p: p.mean) if k == 0 else (lambda p: p.smooth[k])
        xs, ys = line(train, main)
        if xs:
            plt.plot(xs, ys, marker="braille", color=main_colour)
        n_train = len(xs)
        xs, ys = line(evals, lambda p: p.mean)
        if xs:
            if colours is None:
                plt.plot(xs, ys, marker="braille", color=EVAL)
                plt.scatter(xs, ys, marker="•", color=EVAL)
            else:  # dots only: a line per run would double the lines to tell apart
                plt.scatter(xs, ys, marker="•", color=main_colour)
        return {"train": n_train, "eval": len(xs)}


TRAIN_STYLE = "ansi_cyan"
EVAL_STYLE = "ansi_magenta"
