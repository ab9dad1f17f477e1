"""Holm-Bonferroni adjusted p-values against statsmodels, and the paired bootstrap interval of the
accuracy difference (seeded, near the Wald interval for a large N, holding the observed difference)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from labtui.engine.analysis import stats
from statsmodels.stats.multitest import multipletests


@pytest.mark.parametrize("pvalues", [
    [0.01],
    [0.01, 0.04, 0.03, 0.005],
    [0.2, 0.2, 0.2, 0.01, 0.01],  # ties
    [1e-8, 0.5, 0.049, 0.051, 0.9, 0.0, 1.0],
    list(np.random.default_rng(3).uniform(0, 0.2, size=40)),
])
def test_holm_equals_statsmodels(pvalues):
    expected = multipletests(pvalues, method="holm")[1]
    assert stats.holm(pvalues) == pytest.approx(list(expected), abs=1e-15)


def test_holm_leaves_missing_values_out_of_the_family():
    got = stats.holm([0.01, None, 0.04, math.nan, 0.03])
    expected = multipletests([0.01, 0.04, 0.03], method="holm")[1]
    assert got[1] is None and math.isnan(got[3])
    assert [got[0], got[2], got[4]] == pytest.approx(list(expected))
    assert stats.holm([]) == [] and stats.holm([None]) == [None]


def _pairs(n: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    a = rng.random(n) < 0.7
    b = np.where(rng.random(n) < 0.2, ~a, a)
    return a, b


def test_bootstrap_interval_is_seeded_holds_the_difference_and_is_near_wald_for_large_n():
    a, b = _pairs(5000)
    first = stats.paired_bootstrap_interval(a, b, resamples=4000, seed=0)
    assert stats.paired_bootstrap_interval(a, b, resamples=4000, seed=0) == first
    assert stats.paired_bootstrap_interval(a, b, resamples=4000, seed=1) != first
    diff, lo, hi = first
    assert diff == pytest.approx(b.mean() - a.mean())
    assert lo < diff < hi
    _, wlo, whi = stats.paired_diff_interval(a, b)
    assert lo == pytest.approx(wlo, abs=0.003) and hi == pytest.approx(whi, abs=0.003)


def test_bootstrap_edge_cases_and_compare_says_which_interval():
    assert stats.paired_bootstrap_interval([], []) == (0.0, -1.0, 1.0)
    assert stats.paired_bootstrap_interval([True, False], [True, False], resamples=50) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError):
        stats.paired_bootstrap_interval([True], [True, False])
    a, b = _pairs(400, seed=2)
    wald = stats.compare_paired(a, b)
    boot = stats.compare_paired(a, b, ci="bootstrap")
    assert wald["diff_ci_method"] == stats.DIFF_CI_METHOD
    assert boot["diff_ci_method"] == "paired bootstrap (10,000 resamples, seed 0)"
    assert boot["diff_ci"] == pytest.approx(list(stats.paired_bootstrap_interval(a, b)[1:]))
    assert boot["diff"] == wald["diff"] and boot["mcnemar_p"] == wald["mcnemar_p"]
    with pytest.raises(ValueError):
        stats.compare_paired(a, b, ci="exact")
