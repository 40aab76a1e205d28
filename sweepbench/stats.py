"""Two-sided Mann-Whitney U test (Wilcoxon rank-sum), the significance half of `compare`'s regression gate.

Why not a t-test: benchmark timings are skewed (a few slow outliers from page faults, clock changes), and the U test
only uses the order of the samples. Exact p-values come from counting arrangements of the pooled samples (small n, no
ties); otherwise the normal approximation with tie-corrected variance and a continuity correction is used, as in
R's ``wilcox.test`` and SciPy's ``mannwhitneyu(method="asymptotic")``.

``stratified_u_test`` is the same test over several strata at once (compare's rows): the sum of the per-stratum U
statistics against its null mean and variance (each stratum's tie-corrected variance; strata are independent), as
in van Elteren's stratified rank-sum test with equal weights per U. It asks whether x is shifted against y across the
whole curve while comparing samples only within their own row, so rows of different speed never mix.

Dimension legend: m = len(x), n = len(y), N = m + n.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

EXACT_MAX_TOTAL = 40  # exact counts up to C(40, 20) ~ 1.4e11 stay exact in float64 (< 2**53)


@dataclass(frozen=True)
class MannWhitneyResult:
    u: float  # U of the first sample: pairs (x_i, y_j) with x_i > y_j, ties counting 1/2
    p_value: float  # two-sided
    method: str  # "exact" or "normal"


def mann_whitney_u(x, y, method: str = "auto") -> MannWhitneyResult:
    """Two-sided Mann-Whitney U test of ``x`` against ``y``; ``method`` is "auto", "exact" or "normal"."""
    x = np.asarray(x, dtype=np.float64).ravel()  # [m]
    y = np.asarray(y, dtype=np.float64).ravel()  # [n]
    m, n = len(x), len(y)
    if m == 0 or n == 0:
        raise ValueError("mann_whitney_u needs at least one sample on each side")
    if method not in ("auto", "exact", "normal"):
        raise ValueError(f"unknown method {method!r}")
    diff = x[:, None] - y[None, :]  # [m, n]
    u = float(np.sum(diff > 0) + 0.5 * np.sum(diff == 0))
    _, tie_sizes = np.unique(np.concatenate([x, y]), return_counts=True)  # [distinct values]
    has_ties = bool(np.any(tie_sizes > 1))
    if method == "exact" and has_ties:
        raise ValueError("the exact distribution assumes no ties; use method='normal'")
    if method == "exact" or (method == "auto" and not has_ties and m + n <= EXACT_MAX_TOTAL):
        return MannWhitneyResult(u, _exact_two_sided_p(u, m, n), "exact")
    return MannWhitneyResult(u, _normal_two_sided_p(u, m, n, tie_sizes), "normal")


def _exact_two_sided_p(u: float, m: int, n: int) -> float:
    counts = np.asarray(_u_counts(m, n))  # [m*n + 1] arrangements giving U = 0..m*n
    lower_tail = counts[: int(math.floor(min(u, m * n - u))) + 1].sum()  # the distribution is symmetric
    return min(1.0, 2.0 * float(lower_tail) / float(counts.sum()))


@lru_cache(maxsize=256)
def _u_counts(m: int, n: int) -> tuple[float, ...]:
    """Number of orderings of m x's and n y's for each U (no ties).

    Recurrence on the largest pooled value: if it is an x it beats all n y's (U gains n), else it is a y (U gains 0):
    count(m, n, u) = count(m-1, n, u-n) + count(m, n-1, u).
    """
    if m == 0 or n == 0:
        return (1.0,)
    with_x_last = np.zeros(m * n + 1)
    with_x_last[n:] = _u_counts(m - 1, n)
    with_y_last = np.zeros(m * n + 1)
    with_y_last[: (m * (n - 1)) + 1] = _u_counts(m, n - 1)
    return tuple(with_x_last + with_y_last)


def stratified_u_test(strata) -> MannWhitneyResult:
    """Two-sided test over ``strata`` = [(x_1, y_1), ...]: U = sum of U(x_i, y_i), normal approximation."""
    u = mean = variance = 0.0
    for x, y in strata:
        x = np.asarray(x, dtype=np.float64).ravel()  # [m_i]
        y = np.asarray(y, dtype=np.float64).ravel()  # [n_i]
        if len(x) == 0 or len(y) == 0:
            raise ValueError("stratified_u_test needs at least one sample on each side of every stratum")
        u += mann_whitney_u(x, y, method="normal").u
        mean += len(x) * len(y) / 2.0
        variance += _null_variance(len(x), len(y), np.unique(np.concatenate([x, y]), return_counts=True)[1])
    if mean == 0:
        raise ValueError("stratified_u_test needs at least one stratum")
    return MannWhitneyResult(u, _two_sided_normal(u, mean, variance), "normal")


def _null_variance(m: int, n: int, tie_sizes: np.ndarray) -> float:
    """Variance of U under H0 with the tie correction (0 when the pooled samples are all equal)."""
    total = m + n
    if total < 2:
        return 0.0
    tie_term = float(np.sum(tie_sizes.astype(np.float64) ** 3 - tie_sizes))
    return m * n / 12.0 * ((total + 1) - tie_term / (total * (total - 1)))


def _two_sided_normal(u: float, mean: float, variance: float) -> float:
    if variance <= 0:  # every value identical: no evidence of any difference
        return 1.0
    z = max(0.0, abs(u - mean) - 0.5) / math.sqrt(variance)  # 0.5 = continuity correction
    return min(1.0, math.erfc(z / math.sqrt(2.0)))


def _normal_two_sided_p(u: float, m: int, n: int, tie_sizes: np.ndarray) -> float:
    return _two_sided_normal(u, m * n / 2.0, _null_variance(m, n, tie_sizes))
