"""Bounded, downsampled metric series for the loss chart, and TensorBoard's debiased EMA.

A night of training logs up to millions of points; the chart shows a few hundred columns. A
`Series` keeps at most `capacity` buckets over x (step or seconds). Each bucket holds the
min/max envelope (so a spike is never averaged away), the mean, and the smoothed value at its
last point for every EMA weight, computed on the full stream before anything is dropped. When
x outgrows the buckets, neighbours merge pairwise and the bucket width doubles, so memory is
O(capacity) however long the run. Non-finite values (NaN/Inf losses) are not folded into the
numbers: they are counted per bucket, so the chart can mark those steps.

Pure Python (math only): the TUI imports it, the tests check it against hand-worked values.
`Series.extend_arrays` folds a long batch in with numpy (imported when first used): the same
buckets, sums and debiased EMA as one `add` per point, for loading a million-point history at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

from labtui.engine.analysis.smoothing import Ema, ema  # noqa: F401  (the chart's smoothing; tests import it here)

# Smoothing presets the `m` key cycles through: off, light, strong.
SMOOTHING = (0.0, 0.6, 0.95)
SMOOTHING_NAMES = ("off", "light", "strong")
BULK_MIN = 256  # `extend_arrays` batches shorter than this go point by point


@dataclass(frozen=True)
class Point:
    """One bucket as the chart sees it. `smooth[k]` is the EMA with the series' `weights[k]` at the
    bucket's last finite point; `bad` counts the NaN/Inf values that fell in the bucket."""

    x: float  # mean x of the bucket's points (finite and not)
    lo: float  # min, NaN if the bucket has only non-finite values
    hi: float  # max
    mean: float
    last: float
    smooth: tuple[float, ...]
    n: int  # finite values
    bad: int  # non-finite values
    x_last: float  # x of the last finite point
    bad_x: float  # x of the last non-finite point (NaN when none): where the chart marks it


class _Bucket:
    __slots__ = ("sx", "n_all", "n", "sum", "lo", "hi", "last", "last_x", "smooth", "bad", "bad_x")

    def __init__(self, nweights: int):
        self.sx = 0.0
        self.n_all = 0
        self.n = 0
        self.sum = 0.0
        self.lo = math.inf
        self.hi = -math.inf
        self.last = math.nan
        self.last_x = -math.inf
        self.smooth: list[float] = [math.nan] * nweights
        self.bad = 0
        self.bad_x = math.nan

    def merge(self, other: "_Bucket") -> None:
        """Fold `other` (the bucket to the right) into this one."""
        self.sx += other.sx
        self.n_all += other.n_all
        self.n += other.n
        self.sum += other.sum
        self.lo = min(self.lo, other.lo)
        self.hi = max(self.hi, other.hi)
        if other.n and other.last_x >= self.last_x:
            self.last, self.last_x, self.smooth = other.last, other.last_x, other.smooth
        self.bad += other.bad
        if other.bad:
            self.bad_x = other.bad_x


class Series:
    """x/y points folded into at most `capacity` buckets of width `width` (a power of two times
    `base_width`). x should be >= 0 (steps, seconds since the start); smaller values count as 0."""

    def __init__(self, capacity: int = 512, weights: Sequence[float] = SMOOTHING, base_width: float = 1.0):
        if capacity < 2:
            raise ValueError("capacity must be at least 2")
        self.capacity = capacity
        self.weights = tuple(weights)
        self.width = float(base_width)
        self.count = 0  # every value seen, finite or not
        self.bad = 0  # non-finite values seen
        self.y_lo = math.inf
        self.y_hi = -math.inf
        self._emas = [Ema(w) for w in self.weights]
        self._buckets: dict[int, _Bucket] = {}
        self._x_max = -math.inf  # no x added so far is larger (an upper bound after `truncate`)

    def __len__(self) -> int:
        return len(self._buckets)

    def add(self, x: float, y: float) -> None:
        x = max(0.0, float(x))
        y = float(y)
        index = int(x // self.width)
        while index >= self.capacity:
            self._halve()
            index = int(x // self.width)
        b = self._buckets.get(index)
        if b is None:
            b = self._buckets[index] = _Bucket(len(self.weights))
        if x > self._x_max:
            self._x_max = x
        self.count += 1
        b.sx += x
        b.n_all += 1
        if not math.isfinite(y):
            self.bad += 1
            b.bad += 1
            b.bad_x = x
            return
        smooth = [e.update(y) for e in self._emas]
        b.n += 1
        b.sum += y
        if y < b.lo:
            b.lo = y
        if y > b.hi:
            b.hi = y
        if x >= b.last_x:
            b.last, b.last_x, b.smooth = y, x, smooth
        if y < self.y_lo:
            self.y_lo = y
        if y > self.y_hi:
            self.y_hi = y

    def extend(self, points: Iterable[tuple[float, float]]) -> None:
        for x, y in points:
            self.add(x, y)

    def extend_arrays(self, xs, ys) -> None:
        """`add` every (x, y) in order, with numpy: the same result as the loop (sums may differ in
        the last bits) when x never decreases and starts at or after every x added before; any
        other batch, and a short one, goes through `add`."""
        import numpy as np

        x = np.maximum(np.asarray(xs, dtype=np.float64), 0.0)
        y = np.asarray(ys, dtype=np.float64)
        if x.shape != y.shape or x.ndim != 1:
            raise ValueError("xs and ys must be 1-d and of the same length")
        if x.size < BULK_MIN or not np.isfinite(x[-1]) or x[0] < self._x_max or bool(np.any(x[1:] < x[:-1])):
            for a, b in zip(x.tolist(), y.tolist()):
                self.add(a, b)
            return
        while int(x[-1] // self.width) >= self.capacity:
            self._halve()
        n = x.size
        idx = (x // self.width).astype(np.int64)
        starts = np.flatnonzero(np.r_[True, idx[1:] != idx[:-1]])
        fin = np.isfinite(y)
        pos = np.arange(n)
        sx = np.add.reduceat(x, starts)
        n_all = np.diff(np.r_[starts, n])
        nf = np.add.reduceat(fin.astype(np.int64), starts)
        sums = np.add.reduceat(np.where(fin, y, 0.0), starts)
        lo = np.minimum.reduceat(np.where(fin, y, np.inf), starts)
        hi = np.maximum.reduceat(np.where(fin, y, -np.inf), starts)
        last_pos = np.maximum.reduceat(np.where(fin, pos, -1), starts)
        bad_pos = np.maximum.reduceat(np.where(fin, -1, pos), starts)
        finite_at = np.flatnonzero(fin)
        values = y[finite_at]
        with_last = last_pos >= 0
        ranks = np.searchsorted(finite_at, last_pos[with_last])  # rank of each bucket's last point
        smooth = [self._ema_bulk(e, values, ranks) for e in self._emas]
        k = 0
        for j, index in enumerate(idx[starts].tolist()):
            b = _Bucket(len(self.weights))
            b.sx = float(sx[j])
            b.n_all = int(n_all[j])
            b.n = int(nf[j])
            if b.n:
                b.sum = float(sums[j])
                b.lo = float(lo[j])
                b.hi = float(hi[j])
                b.last = float(y[last_pos[j]])
                b.last_x = float(x[last_pos[j]])
                b.smooth = [float(s[k]) for s in smooth]
                k += 1
            b.bad = b.n_all - b.n
            if b.bad:
                b.bad_x = float(x[bad_pos[j]])
            old = self._buckets.get(index)
            if old is None:
                self._buckets[index] = b
            else:
                old.merge(b)
        self.count += n
        self.bad += n - values.size
        if values.size:
            self.y_lo = min(self.y_lo, float(values.min()))
            self.y_hi = max(self.y_hi, float(values.max()))
        self._x_max = float(x[-1])

    @staticmethod
    def _ema_bulk(e: Ema, values, ranks):
        """Debiased EMA of the finite `values` after each position in `ranks`, continuing `e`'s
        state, and `e` moved on past all of them: last_j = w^(j+1) last + (1-w) sum_k w^(j-k) v_k,
        summed over the terms above 1e-30 of the largest."""
        import numpy as np

        m = values.size
        w = e.weight
        if m == 0:
            return np.empty(0)
        if w == 0.0:
            e.last = float(values[-1])
            e.count += m
            return values[ranks]
        width = min(m, int(math.ceil(-69.1 / math.log(w))))  # w ** width < 1e-30
        powers = w ** np.arange(width, dtype=np.float64)

        def at(r):
            cols = r[:, None] - np.arange(width)[None, :]
            window = np.where(cols >= 0, values[np.clip(cols, 0, None)], 0.0)
            return (1.0 - w) * (window @ powers) + w ** (r + 1.0) * e.last

        lasts = at(np.r_[ranks, m - 1].astype(np.int64))
        out = lasts[:-1] / (1.0 - w ** (e.count + ranks + 1.0))
        e.last = float(lasts[-1])
        e.count += m
        return out

    def truncate(self, x: float) -> None:
        """Forget what lies past `x` (a resumed run redoes those steps): every bucket that starts
        after it. The bucket holding `x` itself is kept whole, so the error is one bucket at most."""
        cut = int(max(0.0, float(x)) // self.width)
        self._x_max = min(self._x_max, (cut + 1) * self.width)
        for index in [i for i in self._buckets if i > cut]:
            b = self._buckets.pop(index)
            self.count -= b.n_all
            self.bad -= b.bad
        finite = [b for b in self._buckets.values() if b.n]
        self.y_lo = min((b.lo for b in finite), default=math.inf)
        self.y_hi = max((b.hi for b in finite), default=-math.inf)

    def _halve(self) -> None:
        merged: dict[int, _Bucket] = {}
        for index in sorted(self._buckets):
            b = self._buckets[index]
            target = merged.get(index // 2)
            if target is None:
                merged[index // 2] = b
            else:
                target.merge(b)
        self._buckets = merged
        self.width *= 2

    def points(self) -> list[Point]:
        """Every bucket, in x order."""
        out = []
        for index in sorted(self._buckets):
            b = self._buckets[index]
            x = b.sx / b.n_all
            if b.n:
                out.append(Point(x, b.lo, b.hi, b.sum / b.n, b.last, tuple(b.smooth), b.n, b.bad, b.last_x, b.bad_x))
            else:
                nan = math.nan
                out.append(Point(x, nan, nan, nan, nan, (nan,) * len(self.weights), 0, b.bad, nan, b.bad_x))
        return out


def downsample(points: Sequence[Point], n: int, x_range: tuple[float, float] | None = None) -> list[Point]:
    """Re-bucket `points` into at most `n` equal x-intervals, keeping the envelope.

    lo/hi are the min/max over the merged buckets, mean is weighted by counts, last/smooth come
    from the rightmost finite bucket, bad counts add up. With n >= len(points) nothing changes.
    """
    if n <= 0 or not points:
        return []
    if len(points) <= n:
        return list(points)
    x0, x1 = x_range if x_range else (points[0].x, points[-1].x)
    span = (x1 - x0) or 1.0
    groups: dict[int, list[Point]] = {}
    for p in points:
        i = min(n - 1, max(0, int((p.x - x0) / span * n)))
        groups.setdefault(i, []).append(p)
    return [_merge(groups[i]) for i in sorted(groups)]


def _merge(ps: list[Point]) -> Point:
    if len(ps) == 1:
        return ps[0]
    finite = [p for p in ps if p.n]
    n_all = sum(p.n + p.bad for p in ps)
    x = sum(p.x * (p.n + p.bad) for p in ps) / n_all if n_all else ps[-1].x
    bad = sum(p.bad for p in ps)
    bad_x = max((p.bad_x for p in ps if p.bad), default=math.nan)
    if not finite:
        nan = math.nan
        return Point(x, nan, nan, nan, nan, ps[-1].smooth, 0, bad, nan, bad_x)
    n = sum(p.n for p in finite)
    right = finite[-1]
    return Point(
        x=x,
        lo=min(p.lo for p in finite),
        hi=max(p.hi for p in finite),
        mean=sum(p.mean * p.n for p in finite) / n,
        last=right.last,
        smooth=right.smooth,
        n=n,
        bad=bad,
        x_last=right.x_last,
        bad_x=bad_x,
    )


def remap(points: Sequence[Point], table: Sequence[tuple[float, float]]) -> list[Point]:
    """`points` with x (and x_last, bad_x) carried through the piecewise-linear map `table` of
    (x, new x) pairs, x increasing: the step axis turned into tokens seen. Before the first pair
    the map goes through (0, 0); past the last it goes on at the last pair's average rate. The
    map never decreases, so buckets keep their order and downsampling after it is unchanged."""
    if not table:
        return []
    xs = [0.0] + [x for x, _ in table] if table[0][0] > 0 else [x for x, _ in table]
    ys = [0.0] + [y for _, y in table] if table[0][0] > 0 else [y for _, y in table]
    last_x, last_y = xs[-1], ys[-1]
    rate = last_y / last_x if last_x > 0 else 0.0

    def at(x: float) -> float:
        if not math.isfinite(x):
            return x
        if x >= last_x:
            return last_y + (x - last_x) * rate
        lo, hi = 0, len(xs)  # the first pair past x (bisect_right)
        while lo < hi:
            mid = (lo + hi) // 2
            if x < xs[mid]:
                hi = mid
            else:
                lo = mid + 1
        i = lo
        if i == 0:
            return ys[0]
        x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
        return y0 + (y1 - y0) * (x - x0) / (x1 - x0) if x1 > x0 else y1

    return [Point(at(p.x), p.lo, p.hi, p.mean, p.last, p.smooth, p.n, p.bad, at(p.x_last), at(p.bad_x)) for p in points]
