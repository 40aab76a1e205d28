"""Mann-Whitney U (sweepbench.stats) against published values and brute-force enumeration."""
from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import pytest

from sweepbench.stats import _u_counts, mann_whitney_u


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
