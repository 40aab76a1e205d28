"""Mann-Whitney U (sweepbench.stats) against published values and brute-force enumeration."""
from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import pytest

from sweepbench.stats import _u_counts, mann_whitney_u, stratified_u_test


def test_r_wilcox_test_example():
    # R's ?wilcox.test (Hollander & Wolfe): W = 35, one-sided p = 0.1272, so two-sided 0.2544 (exact).
    x = [0.80, 0.83, 1.89, 1.04, 1.45, 1.38, 1.91, 1.64, 0.73, 1.46]
    y = [1.15, 0.88, 0.90, 0.74, 1.21]
    result = mann_whitney_u(x, y)
    assert result.u == 35 and result.method == "exact"
    assert result.p_value == pytest.approx(2 * 0.1272, abs=1e-4)


def test_scipy_documentation_example_exact_and_normal():
    # SciPy's mannwhitneyu docs: U1 = 17, exact p = 0.1111..., asymptotic p = 0.11134688653314041.
    males, females = [19, 22, 16, 29, 24], [20, 11, 17, 12]
    exact = mann_whitney_u(males, females, method="exact")
    normal = mann_whitney_u(males, females, method="normal")
    assert exact.u == 17 and exact.p_value == pytest.approx(1 / 9, rel=1e-12)
    assert normal.p_value == pytest.approx(0.11134688653314041, rel=1e-9)


# Published two-tailed critical values of U for n1 = n2 = n (largest U with p <= alpha).
CRITICAL_U = {0.05: {5: 2, 6: 5, 7: 8, 8: 13, 9: 17, 10: 23}, 0.01: {5: 0, 6: 2, 7: 4, 8: 7, 9: 11, 10: 16}}


@pytest.mark.parametrize("alpha", sorted(CRITICAL_U))
def test_critical_values_table(alpha):
    for n, critical in CRITICAL_U[alpha].items():
        assert _p_for_u(n, critical) <= alpha < _p_for_u(n, critical + 1), (n, critical)


def _p_for_u(n: int, u: int) -> float:
    """p of two samples of size n with U(x, y) = u, built by interleaving ranks (no ties)."""
    # Start with x entirely below y (U = 0) and move x's largest element up one rank at a time.
    ranks_x = list(range(n))
    for _ in range(u):
        i = max(k for k in range(n) if ranks_x[k] + 1 not in ranks_x and ranks_x[k] + 1 < 2 * n)
        ranks_x[i] += 1
    ranks_y = [r for r in range(2 * n) if r not in ranks_x]
    result = mann_whitney_u(ranks_x, ranks_y)
    assert result.u == u
    return result.p_value


def test_exact_distribution_matches_enumeration():
    m, n = 4, 6
    counts = np.zeros(m * n + 1)
    for chosen in combinations(range(m + n), m):  # x's ranks; y holds the rest
        y = [r for r in range(m + n) if r not in chosen]
        counts[int(mann_whitney_u(list(chosen), y, method="normal").u)] += 1
    np.testing.assert_array_equal(np.asarray(_u_counts(m, n)), counts)


def test_tie_corrected_variance_matches_permutation_variance():
    # Under H0 every split of the pooled values is equally likely; the normal approximation's tie-corrected
    # variance must equal the exact variance of U over all splits.
    pooled = np.array([1, 1, 2, 3, 3, 3, 4, 5, 5, 6], dtype=float)
    m = 4
    us = []
    for chosen in combinations(range(len(pooled)), m):
        rest = [i for i in range(len(pooled)) if i not in chosen]
        us.append(mann_whitney_u(pooled[list(chosen)], pooled[rest], method="normal").u)
    n, total = len(pooled) - m, len(pooled)
    _, t = np.unique(pooled, return_counts=True)
    formula = m * n / 12 * ((total + 1) - np.sum(t**3 - t) / (total * (total - 1)))
    assert np.var(us) == pytest.approx(formula, rel=1e-12)
    x, y = pooled[:m], pooled[m:]
    result = mann_whitney_u(x, y)
    assert result.method == "normal"  # ties force the approximation
    z = (abs(result.u - m * n / 2) - 0.5) / math.sqrt(formula)
    assert result.p_value == pytest.approx(math.erfc(z / math.sqrt(2)), rel=1e-12)


def test_normal_approximation_close_to_exact_for_moderate_n():
    rng = np.random.default_rng(7)
    for _ in range(10):
        x, y = rng.normal(0, 1, 15), rng.normal(0.8, 1, 15)
        exact, normal = mann_whitney_u(x, y, method="exact"), mann_whitney_u(x, y, method="normal")
        assert abs(exact.p_value - normal.p_value) < 0.01


def test_symmetry_identical_samples_and_errors():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=7), rng.normal(size=9)
    a, b = mann_whitney_u(x, y), mann_whitney_u(y, x)
    assert a.u + b.u == 7 * 9 and a.p_value == pytest.approx(b.p_value)
    same = mann_whitney_u([5.0] * 8, [5.0] * 8)
    assert same.p_value == 1.0 and same.u == 32
    with pytest.raises(ValueError):
        mann_whitney_u([], [1.0])
    with pytest.raises(ValueError):
        mann_whitney_u([1.0, 1.0], [1.0, 2.0], method="exact")


def test_smallest_p_for_six_against_six():
    # Why compare needs >= 6 samples a side: complete separation gives p = 2 / C(12, 6).
    result = mann_whitney_u(np.arange(6.0), np.arange(6.0) + 10)
    assert result.p_value == pytest.approx(2 / 924)


# scipy 1.17.1 `scipy.stats.mannwhitneyu(x, y, method=...)` on these samples (computed once in a scratch venv;
# scipy is not a dependency). Columns: U of x, exact p (None: ties, scipy's exact ignores them), asymptotic p.
SCIPY_CASES = [
    ([1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12], 0.0, 0.0021645021645021645, 0.005074868097940253),
    ([10.1, 10.4, 9.8, 10.0, 10.3, 9.9], [10.2, 10.6, 10.5, 10.7, 9.7, 10.8], 8.0, 0.13203463203463203,
     0.12820527503039147),
    ([100.2, 99.1, 101.5, 98.7, 100.9, 99.8, 100.4, 101.1], [91.0, 90.2, 92.3, 89.5, 91.7, 90.8, 92.9, 90.1], 64.0,
     0.0001554001554001554, 0.0009391056991171899),
    ([3.1, 4.7, 2.2, 5.9, 4.4, 3.8, 5.1], [4.0, 6.2, 5.5, 6.8, 4.9, 7.1, 5.7, 6.0, 3.5], 13.0, 0.0548951048951049,
     0.05673822137519344),
    ([5, 5, 6, 7, 7, 7, 8, 9], [6, 7, 8, 8, 9, 9, 10, 10], 13.0, None, 0.04842697674105796),
]


@pytest.mark.parametrize("x, y, u, exact_p, normal_p", SCIPY_CASES)
def test_against_scipy(x, y, u, exact_p, normal_p):
    auto = mann_whitney_u(x, y)
    assert auto.u == u
    assert mann_whitney_u(x, y, method="normal").p_value == pytest.approx(normal_p, rel=1e-9)
    if exact_p is None:
        assert auto.method == "normal"  # ties: the normal approximation with tie-corrected variance
    else:
        assert auto.method == "exact" and auto.p_value == pytest.approx(exact_p, rel=1e-12)


def test_large_samples_use_the_normal_approximation():
    x, y = np.arange(25.0), np.arange(25.0) + 3.5
    result = mann_whitney_u(x, y)
    assert result.method == "normal" and 0 < result.p_value < 1


def test_stratified_one_stratum_is_the_plain_test():
    x, y = [10.1, 10.4, 9.8, 10.0, 10.3, 9.9], [10.2, 10.6, 10.5, 10.7, 9.7, 10.8]
    one = stratified_u_test([(x, y)])
    assert one.u == 8.0 and one.p_value == pytest.approx(mann_whitney_u(x, y, method="normal").p_value, rel=1e-12)


def test_stratified_null_moments_match_enumeration():
    # Under H0 the labels are exchangeable within each stratum only; the sum of U's mean and variance over every
    # relabelling must equal the formula the test uses (strata of different scale never compared to each other).
    strata = [np.array([1.0, 2.0, 2.0, 5.0, 7.0]), np.array([100.0, 101.0, 103.0, 104.0, 104.0, 110.0])]
    sizes = [2, 3]  # x's share of each stratum
    sums = []
    for a in combinations(range(5), sizes[0]):
        for b in combinations(range(6), sizes[1]):
            pairs = [(s[list(c)], np.delete(s, list(c))) for s, c in zip(strata, (a, b))]
            sums.append(sum(mann_whitney_u(x, y, method="normal").u for x, y in pairs))
    result_variance = 0.0
    for s, m in zip(strata, sizes):
        n, total = len(s) - m, len(s)
        _, t = np.unique(s, return_counts=True)
        result_variance += m * n / 12 * ((total + 1) - np.sum(t**3 - t) / (total * (total - 1)))
    assert np.mean(sums) == pytest.approx(sum(m * (len(s) - m) / 2 for s, m in zip(strata, sizes)))
    assert np.var(sums) == pytest.approx(result_variance, rel=1e-12)


def test_stratified_detects_a_shift_rows_alone_cannot():
    # 12 rows of 6 samples with 5% noise and a 4% shift: no row is significant at 0.01, the curve is.
    rng = np.random.default_rng(1)
    speeds = (1000.0, 800.0, 600.0, 400.0)
    strata = [(s * (1 + 0.05 * rng.standard_normal(6)), 0.96 * s * (1 + 0.05 * rng.standard_normal(6)))
              for s in speeds for _ in range(3)]
    assert min(mann_whitney_u(x, y).p_value for x, y in strata) > 0.01
    assert stratified_u_test(strata).p_value < 0.01
    assert stratified_u_test([(x, x) for x, _ in strata]).p_value == pytest.approx(1.0)
    with pytest.raises(ValueError):
        stratified_u_test([])
