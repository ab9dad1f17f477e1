"""Tests for engine.stats, checked against hand arithmetic and independent
stdlib-only re-implementations (math.comb, math.erfc, statistics.NormalDist)."""
from __future__ import annotations

import math
import os
import sys
from statistics import NormalDist

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from labtui.engine.analysis import stats  # noqa: E402
from labtui.engine.analysis.stats import (  # noqa: E402
    DIFF_CI_METHOD,
    McNemarResult,
    UnpairedError,
    cohens_h,
    compare,
    confusion_matrix,
    detectable_difference,
    format_p,
    h_magnitude,
    macro_f1,
    mcnemar,
    paired,
    paired_diff_interval,
    required_n,
    significance_marks,
    wilson_interval,
)

pytestmark = pytest.mark.filterwarnings("error")  # any RuntimeWarning etc. fails a test

Z95 = NormalDist().inv_cdf(0.975)


# ---------- independent reference implementations ----------

def ref_wilson(k, n, z=Z95):
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = (z / (1 + z * z / n)) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def ref_exact_p(b, c):
    m = b + c
    if m == 0:
        return 1.0
    tail = sum(math.comb(m, i) for i in range(min(b, c) + 1)) / 2 ** m
    return min(1.0, 2 * tail)


def ref_chi2_p(b, c):
    if b + c == 0:
        return 1.0
    x = max(abs(b - c) - 1, 0) ** 2 / (b + c)
    return math.erfc(math.sqrt(x / 2))  # chi-square survival function, df = 1


def make_pairs(n, b, c, both_right=None):
    """Paired lists with exactly b (A right, B wrong) and c (A wrong, B right)."""
    both_right = n - b - c if both_right is None else both_right
    a, bb = [], []
    for i in range(n):
        if i < b:
            a.append(True)
            bb.append(False)
        elif i < b + c:
            a.append(False)
            bb.append(True)
        elif i < b + c + both_right:
            a.append(True)
            bb.append(True)
        else:
            a.append(False)
            bb.append(False)
    return a, bb


def as_maps(a, bb):
    return ({f"ex{i:05d}": v for i, v in enumerate(a)},
            {f"ex{i:05d}": v for i, v in enumerate(bb)})


# ---------- Wilson ----------

def test_wilson_published_8_of_10():
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=5e-5)
    assert hi == pytest.approx(0.9433, abs=5e-5)


@pytest.mark.parametrize("k,n", [(8, 10), (1, 3), (37, 50), (500, 1000), (3, 500)])
def test_wilson_matches_closed_formula(k, n):
    assert wilson_interval(k, n) == pytest.approx(ref_wilson(k, n), abs=1e-12)


def test_wilson_extremes_and_confidence():
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(Z95 ** 2 / (10 + Z95 ** 2))  # 0.2775
    assert hi == pytest.approx(0.2775, abs=5e-5)
    lo, hi = wilson_interval(10, 10)
    assert hi == 1.0 and lo == pytest.approx(0.7225, abs=5e-5)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    z99 = NormalDist().inv_cdf(0.995)
    assert wilson_interval(8, 10, 0.99) == pytest.approx(ref_wilson(8, 10, z99))
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


# ---------- McNemar ----------

@pytest.mark.parametrize("b,c", [(10, 60), (4, 9), (9, 4), (0, 5), (1, 0), (0, 0), (7, 7), (30, 45)])
def test_mcnemar_exact_and_chi2_match_reference(b, c):
    a, bb = make_pairs(b + c + 20, b, c)
    r = mcnemar(a, bb)
    assert isinstance(r, McNemarResult)
    assert (r.b, r.c, r.n, r.method) == (b, c, b + c + 20, "exact")
    assert r.p == pytest.approx(ref_exact_p(b, c), rel=1e-9, abs=1e-300)
    r2 = mcnemar(a, bb, method="chi2")
    assert r2.method == "chi2"
    assert r2.p == pytest.approx(ref_chi2_p(b, c), rel=1e-9, abs=1e-300)


def test_mcnemar_hand_values():
    # N=100, b=4, c=9: 2 * (C(13,0)+...+C(13,4)) / 2^13 = 2 * 1093 / 8192
    a, bb = make_pairs(100, 4, 9)
    assert mcnemar(a, bb).p == pytest.approx(2 * 1093 / 8192)
    # chi2: (|4-9|-1)^2 / 13 = 16/13
    assert mcnemar(a, bb, "chi2").p == pytest.approx(math.erfc(math.sqrt(16 / 13 / 2)))
    # story: N=500, b=10, c=60 is highly significant either way
    a, bb = make_pairs(500, 10, 60)
    assert mcnemar(a, bb).p < 0.001 and mcnemar(a, bb, "chi2").p < 0.001


def test_mcnemar_no_and_single_discordant_pair():
    a, bb = make_pairs(50, 0, 0)
    assert mcnemar(a, bb).p == 1.0 and mcnemar(a, bb, "chi2").p == 1.0
    a, bb = make_pairs(50, 0, 1)
    assert mcnemar(a, bb).p == 1.0            # 2 * 0.5 = 1
    assert mcnemar(a, bb, "chi2").p == 1.0    # |0-1|-1 = 0 -> statistic 0


def test_mcnemar_errors():
    with pytest.raises(ValueError, match="equal lengths"):
        mcnemar([True, False], [True])
    with pytest.raises(ValueError, match="method"):
        mcnemar([True], [False], method="fisher")


# ---------- pairing ----------

def test_paired_sorts_and_aligns():
    ids, a, b = paired({"z": True, "a": False, "m": True}, {"m": False, "z": True, "a": True})
    assert ids == ["a", "m", "z"]
    assert a == [False, True, True] and b == [True, False, True]


def test_paired_mismatch_message():
    a = {f"q{i}": True for i in range(10)}
    b = {f"q{i}": True for i in range(5)} | {"x1": False, "x2": True}
    with pytest.raises(UnpairedError) as info:
        paired(a, b)
    msg = str(info.value)
    assert isinstance(info.value, ValueError)
    assert "5 id(s) only in A" in msg and "2 id(s) only in B" in msg
    assert "'q5', 'q6', 'q7', ..." in msg and "q8" not in msg   # at most 3 examples
    assert "'x1', 'x2'" in msg
    assert "McNemar" in msg and "unpaired" in msg
    with pytest.raises(UnpairedError):
        compare(a, b)


# ---------- effect size and difference interval ----------

def test_cohens_h_and_sign():
    assert cohens_h(0.5, 0.75) == pytest.approx(math.pi / 6)   # 2pi/3 - pi/2
    assert cohens_h(0.75, 0.5) == pytest.approx(-math.pi / 6)  # B worse -> negative
    assert cohens_h(0.0, 1.0) == pytest.approx(math.pi)
    assert cohens_h(0.3, 0.3) == 0.0


def test_paired_diff_interval_hand_values():
    a, bb = make_pairs(500, 10, 60)
    diff, lo, hi = paired_diff_interval(a, bb)
    se = math.sqrt(70 - 50 ** 2 / 500) / 500          # sqrt(65)/500
    assert diff == pytest.approx(0.1)
    assert (lo, hi) == pytest.approx((0.1 - Z95 * se, 0.1 + Z95 * se))
    assert DIFF_CI_METHOD == "Wald (paired)"


def test_paired_diff_interval_edges():
    assert paired_diff_interval([], []) == (0.0, -1.0, 1.0)
    assert paired_diff_interval([True] * 5, [True] * 5) == (0.0, 0.0, 0.0)
    diff, lo, hi = paired_diff_interval([True], [False])     # N=1: se = 0
    assert (diff, lo, hi) == (-1.0, -1.0, -1.0)
    diff, lo, hi = paired_diff_interval(*make_pairs(4, 0, 3))   # would exceed 1 unclipped
    assert -1.0 <= lo <= diff <= hi <= 1.0


# ---------- power ----------

def ref_connor_n(delta, psi, alpha=0.05, power=0.8):
    za, zb = NormalDist().inv_cdf(1 - alpha / 2), NormalDist().inv_cdf(power)
    return (za * math.sqrt(psi) + zb * math.sqrt(psi - delta ** 2)) ** 2 / delta ** 2


def test_required_n_matches_connor_formula():
    assert required_n(0.1, 0.2) == math.ceil(ref_connor_n(0.1, 0.2))
    assert required_n(-0.05, 0.3, alpha=0.01, power=0.9) == math.ceil(
        ref_connor_n(0.05, 0.3, 0.01, 0.9))
    assert required_n(0.1, None) == required_n(0.1, 0.2)
    with pytest.raises(ValueError):
        required_n(0.3, 0.2)      # cannot exceed discordant rate
    with pytest.raises(ValueError):
        required_n(0.0, 0.2)


@pytest.mark.parametrize("n", [50, 100, 500, 1000, 5000, 100_000])
@pytest.mark.parametrize("psi", [0.05, 0.2, 0.5])
def test_detectable_difference_inverts_required_n(n, psi):
    d = detectable_difference(n, psi)
    if math.isinf(d):
        assert ref_connor_n(psi, psi) > n
        return
    assert 0 < d <= psi
    assert ref_connor_n(d, psi) == pytest.approx(n, rel=1e-6)
    assert abs(required_n(d, psi) - n) <= 1


def test_detectable_difference_monotone_and_defaults():
    ds = [detectable_difference(n) for n in (100, 200, 400, 1000, 10_000)]
    assert all(x > y for x, y in zip(ds, ds[1:]))
    assert detectable_difference(100) == detectable_difference(100, 0.2)
    assert detectable_difference(100, 0) == detectable_difference(100, 0.2)
    assert math.isinf(detectable_difference(5))
    assert math.isinf(detectable_difference(0))
    # smaller discordant rate -> smaller detectable difference at the same n
    assert detectable_difference(1000, 0.05) < detectable_difference(1000, 0.3)


# ---------- classification metrics ----------

def test_macro_f1_missing_class_and_empty_prediction():
    labels = ["pos", "neg", "neu"]          # "neu": no gold, no pred -> excluded
    gold = ["pos", "pos", "neg", "neg", "neg", "neg"]
    pred = ["pos", "", "neg", "neg", "pos", "unparseable"]
    # pos: tp=1 fp=1 fn=1 -> 0.5 ; neg: tp=2 fp=0 fn=2 -> 4/6
    assert macro_f1(gold, pred, labels) == pytest.approx((0.5 + 2 / 3) / 2)


def test_macro_f1_more_cases():
    assert macro_f1(["a", "b"], ["a", "b"], ["a", "b"]) == 1.0
    # class predicted but never gold is included (F1 = 0 for it)
    assert macro_f1(["a", "a"], ["a", "b"], ["a", "b", "c"]) == pytest.approx((2 / 3 + 0) / 2)
    assert macro_f1([], [], ["a"]) == 0.0
    with pytest.raises(ValueError):
        macro_f1(["a"], [], ["a"])


def test_confusion_matrix_extra_columns():
    labels = ["pos", "neg"]
    gold = ["pos", "pos", "neg", "neg", "neg", "pos"]
    pred = ["pos", "", "neg", "maybe?", "pos", "   "]
    cm = confusion_matrix(gold, pred, labels)
    assert cm == {
        "pos": {"pos": 1, "neg": 0, "(empty)": 2, "(unparseable)": 0},
        "neg": {"pos": 1, "neg": 1, "(empty)": 0, "(unparseable)": 1},
    }
    assert list(cm["pos"]) == ["pos", "neg", "(empty)", "(unparseable)"]


def test_confusion_matrix_clean_and_unknown_gold():
    cm = confusion_matrix(["a", "b", "zz"], ["a", "a", "b"], ["a", "b"])
    assert cm == {"a": {"a": 1, "b": 0}, "b": {"a": 1, "b": 0}, "zz": {"a": 0, "b": 1}}


# ---------- formatting ----------

def test_formatting_helpers():
    assert format_p(0.0004) == "< 0.001"
    assert format_p(0.31234) == "0.312"
    assert format_p(0.04567) == "0.0457"
    assert format_p(1.0) == "1.00"
    assert [significance_marks(p) for p in (0.0005, 0.005, 0.03, 0.05, 0.5)] == \
        ["***", "**", "*", "", ""]
    assert [h_magnitude(h) for h in (0.1, -0.3, 0.6, -0.9, 0.2, 0.5, 0.8)] == \
        ["negligible", "small", "medium", "large", "small", "medium", "large"]


# ---------- compare ----------

KEYS = {"n", "acc_a", "acc_b", "ci_a", "ci_b", "b", "c", "mcnemar_p", "mcnemar_method",
        "cohens_h", "diff", "diff_ci", "diff_ci_method", "significant", "detectable_diff",
        "verdict"}


def assert_sane(r):
    assert set(r) == KEYS
    nums = [r["acc_a"], r["acc_b"], *r["ci_a"], *r["ci_b"], r["mcnemar_p"], r["cohens_h"],
            r["diff"], *r["diff_ci"]]
    assert all(math.isfinite(x) for x in nums)
    assert not math.isnan(r["detectable_diff"])
    assert isinstance(r["ci_a"], list) and isinstance(r["diff_ci"], list)
    assert "nan" not in r["verdict"].lower()


def test_compare_story_significant():
    r = compare(*as_maps(*make_pairs(500, 10, 60, both_right=300)))
    assert_sane(r)
    assert (r["n"], r["b"], r["c"]) == (500, 10, 60)
    assert r["acc_a"] == pytest.approx(310 / 500) and r["acc_b"] == pytest.approx(360 / 500)
    assert r["ci_a"] == pytest.approx(ref_wilson(310, 500))
    assert r["mcnemar_p"] < 0.001 and r["significant"] is True
    assert r["diff"] == pytest.approx(0.1)
    assert r["cohens_h"] == pytest.approx(cohens_h(0.62, 0.72))
    assert r["diff_ci_method"] == "Wald (paired)" and r["mcnemar_method"] == "exact"
    assert r["verdict"].startswith("B is better than A: +10.0 points (95% CI +6.8 to +13.2)")
    assert "McNemar exact p < 0.001" in r["verdict"] and "Cohen's h 0.21 (small)" in r["verdict"]


def test_compare_story_not_significant():
    r = compare(*as_maps(*make_pairs(100, 4, 9)))
    assert_sane(r)
    assert r["significant"] is False
    assert r["mcnemar_p"] == pytest.approx(2 * 1093 / 8192)
    assert r["detectable_diff"] == pytest.approx(detectable_difference(100, 13 / 100))
    assert r["verdict"].startswith("No significant difference (p = 0.267); with N=100")
    assert "evaluate on more examples" in r["verdict"]
    assert "80% power" in r["verdict"]


def test_compare_a_better_and_chi2():
    r = compare(*as_maps(*make_pairs(500, 60, 10)), method="chi2")
    assert r["verdict"].startswith("A is better than B: -10.0 points (B \u2212 A; 95% CI")
    assert r["mcnemar_method"] == "chi2" and "McNemar chi2" in r["verdict"]
    assert r["cohens_h"] < 0


@pytest.mark.parametrize("n,b,c", [(1, 0, 0), (1, 1, 0), (1, 0, 1), (20, 0, 0), (20, 1, 0),
                                   (20, 0, 1), (0, 0, 0)])
def test_compare_edge_cases(n, b, c):
    r = compare(*as_maps(*make_pairs(n, b, c)))
    assert_sane(r)
    assert (r["n"], r["b"], r["c"]) == (n, b, c)
    assert r["mcnemar_p"] == 1.0 and r["significant"] is False


def test_compare_all_correct_and_all_wrong():
    for val in (True, False):
        r = compare({str(i): val for i in range(30)}, {str(i): val for i in range(30)})
        assert_sane(r)
        assert r["acc_a"] == r["acc_b"] == float(val)
        assert r["diff"] == 0.0 and r["mcnemar_p"] == 1.0
        # no discordant pairs -> detectable difference uses psi = 0.2
        assert r["detectable_diff"] == detectable_difference(30, 0.2)


def test_compare_large_counts():
    rng = np.random.default_rng(7)
    a = rng.random(100_000) < 0.70
    bb = rng.random(100_000) < 0.74
    ma = {f"id{i}": bool(x) for i, x in enumerate(a)}
    mb = {f"id{i}": bool(x) for i, x in enumerate(bb)}
    r = compare(ma, mb)
    assert_sane(r)
    assert r["n"] == 100_000
    assert r["b"] == int(np.sum(a & ~bb)) and r["c"] == int(np.sum(~a & bb))
    assert r["acc_a"] == pytest.approx(a.mean()) and r["acc_b"] == pytest.approx(bb.mean())
    assert r["significant"] is True


def test_module_does_not_import_torch():
    with open(stats.__file__, encoding="utf-8") as fh:
        src = fh.read()
    assert "import torch" not in src and "transformers" not in src


# ---------- the closed forms against scipy (the reference, not imported by engine.stats) ----------

@pytest.mark.parametrize("b,c", [(13, 125), (0, 138), (250, 250), (40, 61), (4_900, 5_100), (49_700, 50_300),
                                 (20_000, 21_000), (3, 100_000)])
def test_exact_and_chi2_mcnemar_equal_scipy_at_any_size(b, c):
    sps = pytest.importorskip("scipy.stats")
    exact = stats._mcnemar_p(b, c, "exact")
    assert exact == pytest.approx(min(1.0, 2 * sps.binom.cdf(min(b, c), b + c, 0.5)), rel=1e-8, abs=1e-300)
    assert exact == pytest.approx(sps.binomtest(b, b + c, 0.5).pvalue, rel=1e-8, abs=1e-300)
    stat = max(abs(b - c) - 1, 0) ** 2 / (b + c)
    assert stats._mcnemar_p(b, c, "chi2") == pytest.approx(sps.chi2.sf(stat, 1), rel=1e-9, abs=1e-300)


@pytest.mark.parametrize("n,psi", [(100, None), (500, 0.276), (500, 0.05), (100_000, 0.3), (30, 0.9)])
def test_detectable_difference_equals_scipy_brentq(n, psi):
    optimize = pytest.importorskip("scipy.optimize")
    p = stats._psi(psi)
    z_a, z_b = NormalDist().inv_cdf(0.975), NormalDist().inv_cdf(0.8)
    if stats._connor_n(p, p, z_a, z_b) > n:
        assert detectable_difference(n, psi) == math.inf
        return
    ref = optimize.brentq(lambda d: stats._connor_n(d, p, z_a, z_b) - n, p * 1e-12, p, xtol=1e-12, rtol=1e-12)
    assert detectable_difference(n, psi) == pytest.approx(ref, abs=1e-11)


def test_engine_stats_does_not_import_scipy():
    import subprocess
    code = "import sys, labtui.engine.analysis.stats as s; s.compare({'a': True}, {'a': False}); print('scipy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.stdout.strip() == "False"
