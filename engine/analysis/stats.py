"""Statistics for comparing two evaluated models on the same examples.

Pure functions (stdlib, and numpy for counting). Accuracies and differences are
fractions in [0, 1]; "points" in verdict text are percentage points. Every
difference is **B minus A**: positive means B is better.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, Mapping, Sequence

# Standard library only, but for numpy, imported where it is used: every `labtui` command (the TUI
# too) imports this module through the CLI's parser, and History compares a thousand evals at once.
# The normal quantile, the binomial tail and the chi-square survival function are closed forms or
# short sums here (checked against scipy in tests/test_stats.py); importing scipy.stats for them
# took most of a second.

ALPHA = 0.05                  # significance level used by compare()
POWER = 0.8                   # power used for detectable differences in compare()
DEFAULT_DISCORDANT_RATE = 0.2  # assumed psi when no discordant rate is known
DIFF_CI_METHOD = "Wald (paired)"
EMPTY_COL = "(empty)"
UNPARSEABLE_COL = "(unparseable)"


class UnpairedError(ValueError):
    """The two prediction sets do not cover the same example ids."""


@dataclass(frozen=True)
class McNemarResult:
    """b: A right & B wrong; c: A wrong & B right; n: pairs; p: two-sided p-value."""
    b: int
    c: int
    n: int
    method: str
    p: float


def _z(confidence: float) -> float:
    return _norm_ppf(1.0 - (1.0 - confidence) / 2.0)


def _norm_ppf(q: float) -> float:
    """Standard normal quantile (Wichura's AS241, as scipy.stats.norm.ppf, to ~1e-16)."""
    return NormalDist().inv_cdf(q)


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials; n == 0 gives (0.0, 1.0)."""
    if n <= 0:
        return (0.0, 1.0)
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    z = _z(confidence)
    p = k / n
    denom = 1.0 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    lo = 0.0 if k == 0 else max(0.0, center - half)   # exact at the extremes
    hi = 1.0 if k == n else min(1.0, center + half)
    return (lo, hi)


def _discordant(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> tuple[int, int, int]:
    if len(correct_a) != len(correct_b):
        raise ValueError(
            f"paired results must have equal lengths, got {len(correct_a)} and {len(correct_b)}")
    import numpy as np

    a = np.asarray(correct_a, dtype=bool)
    bb = np.asarray(correct_b, dtype=bool)
    b = int(np.count_nonzero(a & ~bb))
    c = int(np.count_nonzero(~a & bb))
    return b, c, int(a.size)


def _count_true(values: Sequence[bool]) -> int:
    import numpy as np

    return int(np.count_nonzero(np.asarray(values, dtype=bool)))


def _mcnemar_p(b: int, c: int, method: str) -> float:
    if method not in ("exact", "chi2"):
        raise ValueError(f"unknown McNemar method {method!r} (use 'exact' or 'chi2')")
    m = b + c
    if m == 0:
        return 1.0
    if method == "exact":
        return min(1.0, 2.0 * _binom_half_cdf(min(b, c), m))
    stat = max(abs(b - c) - 1, 0) ** 2 / m
    return min(1.0, math.erfc(math.sqrt(stat / 2.0)))  # chi-square survival function, 1 degree of freedom


def _binom_half_cdf(k: int, m: int) -> float:
    """P(X <= k) for X ~ Binomial(m, 1/2): the exact McNemar tail (scipy.stats.binom.cdf(k, m, 0.5)
    to about 1e-12 relative at m = 500, 1e-9 at m = 100,000). Sums C(m, i) / 2^m from i = k down,
    each term from the one before, until the rest cannot change the sum."""
    if k < 0:
        return 0.0
    if k >= m:
        return 1.0
    log_first = math.lgamma(m + 1) - math.lgamma(k + 1) - math.lgamma(m - k + 1) - m * math.log(2.0)
    total, term = 0.0, 1.0
    for i in range(k, -1, -1):
        total += term
        term *= i / (m - i + 1)  # C(m, i-1) / C(m, i)
        if term < 1e-17 * total:
            break
    return min(1.0, math.exp(log_first + math.log(total)))


def mcnemar(correct_a: Sequence[bool], correct_b: Sequence[bool],
            method: str = "exact") -> McNemarResult:
    """McNemar's test on paired per-example correctness.

    "exact": two-sided binomial test on the discordant pairs,
    p = min(1, 2 * BinomCDF(min(b, c); b + c, 0.5)).
    "chi2": continuity-corrected chi-square, max(|b - c| - 1, 0)^2 / (b + c), df = 1.
    With no discordant pairs (b + c == 0) p is 1.0. Unequal lengths raise ValueError.
    """
    b, c, n = _discordant(correct_a, correct_b)
    return McNemarResult(b=b, c=c, n=n, method=method, p=_mcnemar_p(b, c, method))


def paired(pred_a: Mapping[str, bool], pred_b: Mapping[str, bool]
           ) -> tuple[list[str], list[bool], list[bool]]:
    """Align two {example_id: correct} maps; returns (sorted ids, A values, B values).

    Raises UnpairedError if the id sets differ.
    """
    if pred_a.keys() != pred_b.keys():
        only_a = sorted(set(pred_a) - set(pred_b))
        only_b = sorted(set(pred_b) - set(pred_a))

        def show(ids: list[str]) -> str:
            head = ", ".join(repr(i) for i in ids[:3])
            return head + (", ..." if len(ids) > 3 else "") if ids else "none"

        raise UnpairedError(
            f"the two runs were not evaluated on the same examples: {len(only_a)} id(s) "
            f"only in A ({show(only_a)}), {len(only_b)} id(s) only in B ({show(only_b)}). "
            "McNemar's test needs the same examples in both runs; an unpaired test on "
            "paired data would be wrong. Re-evaluate both on the same example set.")
    ids = sorted(pred_a)
    return ids, [bool(pred_a[i]) for i in ids], [bool(pred_b[i]) for i in ids]


def cohens_h(p1: float, p2: float) -> float:
    """Cohen's h effect size, 2*asin(sqrt(p2)) - 2*asin(sqrt(p1)).

    Sign convention: positive when p2 (B) > p1 (A). Inputs are clipped to [0, 1].
    """
    p1 = min(1.0, max(0.0, float(p1)))
    p2 = min(1.0, max(0.0, float(p2)))
    return 2.0 * math.asin(math.sqrt(p2)) - 2.0 * math.asin(math.sqrt(p1))


def _diff_interval(b: int, c: int, n: int, confidence: float) -> tuple[float, float, float]:
    if n <= 0:
        return (0.0, -1.0, 1.0)
    diff = (c - b) / n
    se = math.sqrt(max(0.0, (b + c) - (c - b) ** 2 / n)) / n
    z = _z(confidence)
    return (diff, max(-1.0, diff - z * se), min(1.0, diff + z * se))


def paired_diff_interval(correct_a: Sequence[bool], correct_b: Sequence[bool],
                         confidence: float = 0.95) -> tuple[float, float, float]:
    """(diff, lo, hi) for diff = acc_b - acc_a on paired data (method: DIFF_CI_METHOD).

    Wald interval: diff = (c - b)/n, se = sqrt((b + c) - (c - b)^2/n) / n, bounds
    clipped to [-1, 1]. With no discordant pairs the interval collapses to (0, 0);
    that is a known weakness of Wald intervals, not a claim of certainty.
    n == 0 returns (0.0, -1.0, 1.0): nothing is known about the difference.
    """
    b, c, n = _discordant(correct_a, correct_b)
    return _diff_interval(b, c, n, confidence)


BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_CHUNK = 2_000_000  # resampled indices drawn at once: 16 MB of int64, whatever N and resamples are
DIFF_CI_METHODS = ("wald", "bootstrap")


def bootstrap_method(resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> str:
    """How a bootstrap interval was made, in words (compare's and report's `diff_ci_method`)."""
    return f"paired bootstrap ({resamples:,} resamples, seed {seed})"


def paired_bootstrap_interval(correct_a: Sequence[bool], correct_b: Sequence[bool], resamples: int = BOOTSTRAP_RESAMPLES,
                              seed: int = 0, confidence: float = 0.95) -> tuple[float, float, float]:
    """(diff, lo, hi) for diff = acc_b - acc_a: the percentile interval of the difference over
    `resamples` resamples of the example pairs with replacement (numpy's default_rng(seed): the
    same inputs give the same interval). Vectorised: the per-example differences (-1, 0, +1) are
    summed over resampled indices drawn in chunks of about BOOTSTRAP_CHUNK, so N = 10,000 with
    10,000 resamples needs ~16 MB at a time (bench/bench_bootstrap.py times it).
    n == 0 returns (0.0, -1.0, 1.0), as paired_diff_interval does."""
    import numpy as np

    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"paired results must have equal lengths, got {a.size} and {b.size}")
    n = int(a.size)
    if n == 0:
        return (0.0, -1.0, 1.0)
    if resamples < 1:
        raise ValueError(f"need at least one resample, got {resamples}")
    d = b.astype(np.int8) - a.astype(np.int8)
    rng = np.random.default_rng(seed)
    sums = np.empty(resamples, dtype=np.int64)
    rows = max(1, BOOTSTRAP_CHUNK // n)
    for start in range(0, resamples, rows):
        k = min(rows, resamples - start)
        idx = rng.integers(0, n, size=(k, n))
        sums[start:start + k] = d[idx].sum(axis=1, dtype=np.int64)
    tail = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(sums / n, [tail, 1.0 - tail])
    return (float(d.sum()) / n, float(lo), float(hi))


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values, in the input's order (statsmodels' multipletests(method="holm")[1]).

    The family is the p-values present: a None or NaN stays as it is and is not counted. Sorted
    ascending, the i-th (from 0) of m is multiplied by m - i, made non-decreasing (running maximum)
    and capped at 1.
    """
    present = [(p, k) for k, p in enumerate(pvalues) if p is not None and not math.isnan(p)]
    out: list[float | None] = list(pvalues)
    m = len(present)
    running = 0.0
    for i, (p, k) in enumerate(sorted(present)):
        running = max(running, min(1.0, (m - i) * p))
        out[k] = running
    return out


def _connor_n(delta: float, psi: float, z_a: float, z_b: float) -> float:
    return (z_a * math.sqrt(psi) + z_b * math.sqrt(max(0.0, psi - delta * delta))) ** 2 / (delta * delta)


def _psi(discordant_rate: float | None) -> float:
    psi = DEFAULT_DISCORDANT_RATE if not discordant_rate else float(discordant_rate)
    if not 0.0 < psi <= 1.0:
        raise ValueError(f"discordant_rate must be in (0, 1], got {discordant_rate}")
    return psi


def required_n(delta: float, discordant_rate: float | None = None,
               alpha: float = 0.05, power: float = 0.8) -> int:
    """Examples needed for a two-sided McNemar test to detect |delta| with `power`.

    Connor (1987): n = (z_{1-a/2} sqrt(psi) + z_{power} sqrt(psi - delta^2))^2 / delta^2,
    psi = discordant proportion (None or 0 -> DEFAULT_DISCORDANT_RATE = 0.2).
    Requires 0 < |delta| <= psi (a difference cannot exceed the discordant rate).
    """
    psi = _psi(discordant_rate)
    d = abs(float(delta))
    if not 0.0 < d <= psi:
        raise ValueError(f"need 0 < |delta| <= discordant rate ({psi}), got {delta}")
    return math.ceil(_connor_n(d, psi, _z(1 - alpha), _norm_ppf(power)) - 1e-9)


def detectable_difference(n: int, discordant_rate: float | None = None,
                          alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest accuracy difference a two-sided paired McNemar test on n examples
    detects with the given power (Connor 1987 formula, see required_n, inverted
    for delta with brentq on (0, psi]).

    psi = discordant_rate; None or 0 assumes DEFAULT_DISCORDANT_RATE = 0.2.
    Returns float('inf') when even delta = psi (every discordant pair favouring
    one model) would not be detectable with n examples (including n <= 0).
    """
    psi = _psi(discordant_rate)
    if n <= 0:
        return math.inf
    z_a, z_b = _z(1 - alpha), _norm_ppf(power)
    if _connor_n(psi, psi, z_a, z_b) > n:
        return math.inf
    # _connor_n decreases in d: bisect for the d where it falls to n, to 1e-12 (as brentq did)
    lo, hi = psi * 1e-12, psi
    while hi - lo > 1e-12 + 1e-12 * lo:
        mid = (lo + hi) / 2.0
        if _connor_n(mid, psi, z_a, z_b) > n:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2.0


def _is_empty(p: object) -> bool:
    return p is None or (isinstance(p, str) and not p.strip())


def macro_f1(gold: Sequence[str | None], pred: Sequence[str | None], labels: Sequence[str]) -> float:
    """Unweighted mean F1 over `labels`.

    Labels with neither gold nor predicted examples are left out of the mean.
    A prediction outside `labels` ("", "unparseable", ...) is a miss for its gold
    class and a false positive for none. Returns 0.0 if no label is left.
    """
    if len(gold) != len(pred):
        raise ValueError(f"gold and pred lengths differ: {len(gold)} vs {len(pred)}")
    return macro_f1_counts(Counter(zip(gold, pred)), labels)


def macro_f1_counts(pairs: Mapping[tuple[Any, Any], int], labels: Sequence[str]) -> float:
    """`macro_f1` from counts of (gold, pred) pairs."""
    gold_n: Counter = Counter()
    pred_n: Counter = Counter()
    for (g, p), k in pairs.items():
        gold_n[g] += k
        pred_n[p] += k
    f1s = []
    for lab in dict.fromkeys(labels):
        tp = pairs.get((lab, lab), 0)
        fn, fp = gold_n[lab] - tp, pred_n[lab] - tp
        if tp + fn + fp == 0:
            continue
        f1s.append(2 * tp / (2 * tp + fn + fp))
    return float(sum(f1s) / len(f1s)) if f1s else 0.0


def confusion_matrix(gold: Sequence[str | None], pred: Sequence[str | None], labels: Sequence[str]
                     ) -> dict[str, dict[str, int]]:
    """Counts as {gold: {pred: count}}; every row has the same columns.

    Rows and columns are `labels` in order (zeros included). Predictions outside
    `labels` go to an extra "(empty)" column (None / blank string) or an
    "(unparseable)" column (anything else); these columns appear only if used.
    Gold values outside `labels` get extra rows (sorted) so no count is lost.
    """
    if len(gold) != len(pred):
        raise ValueError(f"gold and pred lengths differ: {len(gold)} vs {len(pred)}")
    labs = list(dict.fromkeys(labels))
    known = set(labs)
    pairs: Counter = Counter()
    for (g, p), k in Counter(zip(gold, pred)).items():
        col = p if p in known else (EMPTY_COL if _is_empty(p) else UNPARSEABLE_COL)
        pairs[(g, col)] += k
    used = {col for _, col in pairs}
    cols = labs + [x for x in (EMPTY_COL, UNPARSEABLE_COL) if x in used]
    rows = labs + sorted({str(g) for g, _ in pairs if g not in known})
    return {r: {col: pairs.get((r, col), 0) for col in cols} for r in rows}


def format_p(p: float) -> str:
    """"< 0.001" below 0.001, otherwise three significant digits ("0.0123", "0.310")."""
    if p < 0.001:
        return "< 0.001"
    return f"{p:#.3g}"


def significance_marks(p: float) -> str:
    """"***" p < 0.001, "**" p < 0.01, "*" p < 0.05, else ""."""
    return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else ""


def h_magnitude(h: float) -> str:
    """Cohen's labels for |h|: < 0.2 negligible, < 0.5 small, < 0.8 medium, else large."""
    a = abs(h)
    return "negligible" if a < 0.2 else "small" if a < 0.5 else "medium" if a < 0.8 else "large"


def _p_phrase(p: float) -> str:
    s = format_p(p)
    return f"p {s}" if s.startswith("<") else f"p = {s}"


def compare(correct_a: Mapping[str, bool], correct_b: Mapping[str, bool],
            method: str = "exact") -> dict:
    """Full paired comparison of two {example_id: correct} maps (B minus A).

    Keys: n, acc_a, acc_b, ci_a, ci_b (95% Wilson), b, c, mcnemar_p, mcnemar_method,
    cohens_h, diff, diff_ci, diff_ci_method, significant (p < ALPHA),
    detectable_diff (fraction; from the observed discordant rate, or 0.2 when there
    are no discordant pairs; may be inf for tiny n), verdict (one line).
    Raises UnpairedError when the id sets differ.
    """
    _, a, bb = paired(correct_a, correct_b)
    return compare_paired(a, bb, method)


def compare_paired(a: Sequence[bool], bb: Sequence[bool], method: str = "exact", ci: str = "wald") -> dict:
    """`compare` of two aligned sequences of correctness (the same example at each position).
    ci: the difference's interval, "wald" (DIFF_CI_METHOD) or "bootstrap" (paired_bootstrap_interval)."""
    if ci not in DIFF_CI_METHODS:
        raise ValueError(f"unknown interval {ci!r} (use 'wald' or 'bootstrap')")
    b, c, n = _discordant(a, bb)
    ka = _count_true(a) if n else 0
    kb = ka - b + c
    acc_a, acc_b = (ka / n, kb / n) if n else (0.0, 0.0)
    p = _mcnemar_p(b, c, method)
    h = cohens_h(acc_a, acc_b)
    diff, lo, hi = _diff_interval(b, c, n, 0.95)
    ci_method = DIFF_CI_METHOD
    if ci == "bootstrap":
        _, lo, hi = paired_bootstrap_interval(a, bb)
        ci_method = bootstrap_method()
    significant = p < ALPHA
    detectable = detectable_difference(n, (b + c) / n if n else None, ALPHA, POWER)

    if n == 0:
        verdict = "No examples to compare."
    elif significant:
        head = "B is better than A" if diff > 0 else "A is better than B"
        note = "" if diff > 0 else "B \u2212 A; "  # say which way round a negative is
        verdict = (f"{head}: {diff * 100:+.1f} points ({note}95% CI {lo * 100:+.1f} to "
                   f"{hi * 100:+.1f}), McNemar {method} {_p_phrase(p)}, "
                   f"Cohen's h {h:.2f} ({h_magnitude(h)})")
    elif math.isinf(detectable):
        verdict = (f"No significant difference ({_p_phrase(p)}); with N={n} no difference "
                   f"could be detected with {POWER:.0%} power \u2014 evaluate on more examples.")
    else:
        tail = ("evaluate on more examples." if detectable >= 0.01
                else "a real difference, if any, is probably smaller than that.")
        x = detectable * 100
        pts = f"{x:.0f}" if x >= 9.5 else f"{x:.1f}"
        verdict = (f"No significant difference ({_p_phrase(p)}); with N={n} a difference of "
                   f"about {pts} points would be needed to be detected with "
                   f"{POWER:.0%} power \u2014 {tail}")
    return {
        "n": n, "acc_a": acc_a, "acc_b": acc_b,
        "ci_a": list(wilson_interval(ka, n)), "ci_b": list(wilson_interval(kb, n)),
        "b": b, "c": c, "mcnemar_p": p, "mcnemar_method": method,
        "cohens_h": h, "diff": diff, "diff_ci": [lo, hi], "diff_ci_method": ci_method,
        "significant": significant, "detectable_diff": detectable, "verdict": verdict,
    }
