"""Tests for companion.confidence: the bounds against hand computations and plain loops, their
coverage on problems with a known mean, and every bad input."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from companion.confidence import (
    HCOPEBound,
    empirical_bernstein_lower_bound,
    hcope_lower_bound,
    hcope_split_bound,
    hcope_threshold,
    hoeffding_lower_bound,
    interval_coverage,
    normal_interval,
    normal_lower_bound,
)

SETTINGS = settings(max_examples=60, derandomize=True, deadline=None)
Z_TOL = 4.0  # statistical checks allow 4 Monte Carlo standard errors


def hcope_loop(x, c, delta):
    """Theorem 1 of Thomas et al. (2015) as printed: one pass, raw sums, no NumPy."""
    n = len(x)
    S = sum_z = sum_z2 = 0.0
    for xi, ci in zip(x, c, strict=True):
        z = min(xi, ci) / ci
        S += 1.0 / ci
        sum_z += z
        sum_z2 += z * z
    log_term = math.log(2.0 / delta)
    root = math.sqrt(max(0.0, 2.0 * log_term / (n - 1) * (n * sum_z2 - sum_z**2)))
    return sum_z / S - 7.0 * n * log_term / (3.0 * (n - 1)) / S - root / S


# --- the formulas ------------------------------------------------------------------------------


def test_hcope_hand_computed_case():
    # x = (0, 1, 2, 4), c = 2: Y/c = (0, 1/2, 1, 1), S = 1/2 * 4 = 2, sum Y/c = 5/2,
    # sum (Y/c)^2 = 9/4, so n sum (Y/c)^2 - (sum Y/c)^2 = 9 - 25/4 = 11/4. With delta = 2/e^2,
    # ln(2/delta) = 2: L = (5/2 - 7*4*2/9 - sqrt(2*2/3 * 11/4)) / 2 = 5/4 - 28/9 - sqrt(11/3)/2.
    expected = 5 / 4 - 28 / 9 - math.sqrt(11 / 3) / 2
    assert hcope_lower_bound([0.0, 1.0, 2.0, 4.0], 2.0, 2 / math.e**2) == pytest.approx(
        expected, rel=1e-13)


def test_hcope_per_value_thresholds_hand_computed():
    # x = (1, 3), c = (2, 1): Y/c = (1/2, 1), S = 3/2, sum = 3/2,
    # n sum sq - sum^2 = 2 * 5/4 - 9/4 = 1/4.
    # delta = 2/e: ln(2/delta) = 1, so L = (3/2 - 14/3 - sqrt(2 * 1/4)) / (3/2).
    expected = (1.5 - 14 / 3 - math.sqrt(0.5)) / 1.5
    got = hcope_lower_bound([1.0, 3.0], [2.0, 1.0], 2 / math.e)
    assert got == pytest.approx(expected, rel=1e-13)


@SETTINGS
@given(arrays(np.float64, st.integers(2, 60), elements=st.floats(0, 1e6)),
       st.floats(1e-3, 1e4), st.floats(0.001, 0.999), st.integers(0, 2**32 - 1))
def test_hcope_matches_a_plain_loop(x, scale, delta, seed):
    c = scale * np.random.default_rng(seed).uniform(0.1, 10.0, size=x.size)
    got = hcope_lower_bound(x, c, delta)
    want = hcope_loop(x.tolist(), c.tolist(), delta)
    assert got == pytest.approx(want, rel=1e-9, abs=1e-9 * (1 + abs(want)))


@SETTINGS
@given(arrays(np.float64, st.integers(2, 60), elements=st.floats(0, 100)), st.floats(0.01, 200),
       st.floats(0.001, 0.999))
def test_one_threshold_is_empirical_bernstein_of_the_truncated_terms(x, c, delta):
    assert hcope_lower_bound(x, c, delta) == pytest.approx(
        empirical_bernstein_lower_bound(np.minimum(x, c), c, delta), rel=1e-9, abs=1e-9)
    assert hcope_lower_bound(x, c, delta) == hcope_lower_bound(x, np.full(x.size, c), delta)


def test_hcope_thresholds_above_every_value_change_only_the_range_term():
    x = np.array([0.3, 0.9, 0.1, 0.5, 0.7])
    n, log_term = x.size, math.log(2 / 0.1)
    for c in (1.0, 10.0):
        spread = math.sqrt(2 * x.var(ddof=1) * log_term / n)
        expected = x.mean() - spread - 7 * c * log_term / (3 * (n - 1))
        assert hcope_lower_bound(x, c, 0.1) == pytest.approx(expected, rel=1e-12)


def test_empirical_bernstein_and_hoeffding_by_hand():
    x = [0.2, 0.4, 0.6, 0.8]          # mean 1/2, sample variance 1/15
    L = math.log(2 / 0.05)
    eb = 0.5 - math.sqrt(2 * (1 / 15) * L / 4) - 7 * 2.0 * L / 9
    assert empirical_bernstein_lower_bound(x, 2.0, 0.05) == pytest.approx(eb, rel=1e-13)
    assert hoeffding_lower_bound(x, 2.0, 0.05) == pytest.approx(
        0.5 - 2.0 * math.sqrt(math.log(20) / 8), rel=1e-13)


def test_normal_interval_and_lower_bound_values():
    lo, hi = normal_interval(1.0, 0.1, level=0.95)
    assert (lo, hi) == pytest.approx((1 - 0.1959964, 1 + 0.1959964), abs=1e-7)
    assert normal_lower_bound(1.0, 0.1, delta=0.05) == pytest.approx(1 - 0.1644854, abs=1e-7)
    # the one-sided bound at delta is the lower end of the two-sided interval of level 1 - 2 delta
    assert normal_lower_bound(2.0, 0.3, 0.1) == pytest.approx(normal_interval(2.0, 0.3, 0.8)[0])
    lo, hi = normal_interval(np.array([0.0, 1.0]), np.array([1.0, 0.0]))
    assert lo.shape == (2,) and hi[1] == lo[1] == 1.0
    assert isinstance(normal_lower_bound(1.0, 0.1, 0.05), float)


def test_interval_coverage_counts():
    cov = interval_coverage([0.0, 0.5, 1.2, -1.0], [1.0, 2.0, 3.0, 0.2], truth=1.0)
    assert (cov.rate, cov.below, cov.above, cov.n) == (0.5, 0.25, 0.25, 4)
    assert cov.se == pytest.approx(math.sqrt(0.25 / 4))
    one_sided = interval_coverage([0.1, 0.3, 0.9, 1.1, 2.0], np.inf, truth=1.0)
    assert (one_sided.rate, one_sided.above, one_sided.below) == (0.6, 0.4, 0.0)


# --- the threshold and the split ---------------------------------------------------------------


def predicted_bound(x_pre, c, n_post, delta):
    """The bound the paper predicts for D_post from D_pre, for one threshold (test's own copy)."""
    y = np.minimum(x_pre, c)
    L = math.log(2 / delta)
    return y.mean() - 7 * c * L / (3 * (n_post - 1)) - math.sqrt(2 * L * y.var(ddof=1) / n_post)


@pytest.mark.parametrize("seed", range(5))
def test_threshold_maximises_the_predicted_bound(seed):
    rng = np.random.default_rng(seed)
    x_pre = rng.lognormal(0.0, 1.5, size=50)
    n_post, delta = 950, 0.05
    c_star = hcope_threshold(x_pre, n_post, delta)
    grid = np.geomspace(1e-3, 10 * x_pre.max(), 20_000)
    best = max(predicted_bound(x_pre, c, n_post, delta) for c in grid)
    assert 0 < c_star <= x_pre.max()
    assert predicted_bound(x_pre, c_star, n_post, delta) >= best - 1e-3 * abs(best)


def test_threshold_truncates_an_outlier_and_keeps_clean_data():
    c = hcope_threshold([0.5, 0.5, 1.0, 1.0, 40.0], n_post=95, delta=0.05)
    assert 1.0 < c < 40.0
    # identical values: the variance is 0 for every c up to the value, the mean rises, so c = value
    assert hcope_threshold([2.0, 2.0, 2.0], n_post=50, delta=0.05) == 2.0
    assert hcope_threshold([0.0, 0.0, 0.0], n_post=50, delta=0.05) == 1.0   # no scale: c = 1


def test_split_sizes_and_the_bound_on_the_second_part():
    x = np.random.default_rng(3).exponential(size=200)
    r = hcope_split_bound(x, 0.05)
    assert isinstance(r, HCOPEBound) and (r.n_pre, r.n_post) == (10, 190)
    assert r.threshold == hcope_threshold(x[:10], 190, 0.05)
    assert r.bound == hcope_lower_bound(x[10:], r.threshold, 0.05) == float(r)
    assert hcope_split_bound(x[:10], 0.05).n_pre == 2                  # at least two to choose c
    assert hcope_split_bound(x, 0.05, pre_fraction=0.25).n_pre == 50


# --- coverage on problems with a known mean ----------------------------------------------------

# Each problem: a sampler of (repetitions, n) arrays, its mean, and the range b (None: unbounded).
PROBLEMS = {
    # heavy right tail, like importance-weighted returns: lognormal, mean e^{1.125}
    "lognormal": (lambda rng, shape: rng.lognormal(0.0, 1.5, size=shape), math.exp(1.125), None),
    # rare large values: 10 with probability 0.05, else 0 (mean 0.5)
    "rare jackpot": (lambda rng, shape: 10.0 * (rng.random(shape) < 0.05), 0.5, 10.0),
    # rare disaster: 0 with probability 0.02, else 1 (mean 0.98); samples often hold no 0 at all,
    # so a bound without its range term would be above the mean in about (0.98)^n of them
    "rare disaster": (lambda rng, shape: (rng.random(shape) >= 0.02).astype(float), 0.98, 1.0),
}


def coverage_check(bounds, mean, delta):
    """Assert that the fraction of bounds at or below the mean is at least 1 - delta, allowing
    Z_TOL Monte Carlo standard errors of a coverage of exactly 1 - delta."""
    bounds = np.asarray(bounds)
    rate = np.mean(bounds <= mean)
    assert rate >= 1 - delta - Z_TOL * math.sqrt(delta * (1 - delta) / bounds.size), rate
    return rate


@pytest.mark.parametrize("problem", PROBLEMS)
def test_hcope_fixed_threshold_covers(problem):
    sample, mean, _ = PROBLEMS[problem]
    x = sample(np.random.default_rng(11), (2000, 50))
    coverage_check([hcope_lower_bound(row, 2.0 * mean, 0.1) for row in x], mean, 0.1)


@pytest.mark.parametrize("problem", PROBLEMS)
def test_hcope_split_covers(problem):
    sample, mean, _ = PROBLEMS[problem]
    x = sample(np.random.default_rng(12), (1000, 200))
    coverage_check([hcope_split_bound(row, 0.1).bound for row in x], mean, 0.1)


@pytest.mark.parametrize("problem", ["rare jackpot", "rare disaster"])
def test_bounded_inequalities_cover(problem):
    sample, mean, b = PROBLEMS[problem]
    x = sample(np.random.default_rng(13), (2000, 50))
    coverage_check([empirical_bernstein_lower_bound(row, b, 0.1) for row in x], mean, 0.1)
    coverage_check([hoeffding_lower_bound(row, b, 0.1) for row in x], mean, 0.1)


def test_the_range_term_is_what_saves_the_bound_on_rare_disasters():
    # Same data as above: the normal lower bound fails in every sample without a 0, about
    # 0.98^50 = 36% of them; the HCOPE bound (c = 1, the known range) does not.
    sample, mean, _ = PROBLEMS["rare disaster"]
    x = sample(np.random.default_rng(14), (2000, 50))
    normal = normal_lower_bound(x.mean(axis=1), x.std(axis=1, ddof=1) / math.sqrt(50), 0.1)
    fails = np.mean(normal > mean)
    assert abs(fails - 0.98**50) < Z_TOL * math.sqrt(0.98**50 * (1 - 0.98**50) / 2000)
    coverage_check([hcope_lower_bound(row, 1.0, 0.1) for row in x], mean, 0.1)


def test_hcope_converges_to_the_truncated_mean():
    # Uniform[0, 2] truncated at 1 has mean 3/4 and variance of Y 5/48: with n = 40,000 the bound is
    # below 3/4 by about sqrt(2 * 5/48 * ln(40) / n) = 0.0044, plus a little noise; so it is a bound
    # that can be close, not one that is always far below.
    x = np.random.default_rng(15).uniform(0.0, 2.0, size=40_000)
    bound = hcope_lower_bound(x, 1.0, 0.05)
    assert 0.75 - 0.012 < bound < 0.75


def test_normal_interval_covers_gaussian_means_at_its_level():
    x = np.random.default_rng(16).normal(3.0, 2.0, size=(4000, 200))
    lo, hi = normal_interval(x.mean(axis=1), x.std(axis=1, ddof=1) / math.sqrt(200), 0.9)
    cov = interval_coverage(lo, hi, 3.0)
    assert abs(cov.rate - 0.9) < Z_TOL * math.sqrt(0.9 * 0.1 / 4000)
    assert abs(cov.below - cov.above) < Z_TOL * math.sqrt(0.1 / 4000)   # misses on both sides


# --- bad input ---------------------------------------------------------------------------------

BAD_X = [
    ([1.0], "x: need at least 2"),
    ([], "x: empty"),
    ([[1.0, 2.0], [3.0, 4.0]], "x: expected a 1-D"),
    ([1.0, -0.5], "x: must be >= 0"),
    ([1.0, np.nan], "x: NaN or inf"),
    ([1.0, np.inf], "x: NaN or inf"),
    (["a", "b"], "x: cannot be converted"),
]
BAD_DELTA = [0.0, 1.0, -0.1, 1.5, np.nan, "a", True, None]


@pytest.mark.parametrize(("x", "message"), BAD_X)
def test_bad_terms_raise(x, message):
    for call in (lambda: hcope_lower_bound(x, 1.0, 0.05),
                 lambda: empirical_bernstein_lower_bound(x, 10.0, 0.05),
                 lambda: hoeffding_lower_bound(x, 10.0, 0.05),
                 lambda: hcope_split_bound(x, 0.05)):
        with pytest.raises(ValueError, match=f"^{message}"):
            call()


@pytest.mark.parametrize("c", [0.0, -1.0, np.inf, np.nan, [1.0, 0.0, 1.0], [1.0, 1.0], "a"])
def test_bad_thresholds_raise(c):
    with pytest.raises(ValueError, match="^c: "):
        hcope_lower_bound([1.0, 2.0, 3.0], c, 0.05)


@pytest.mark.parametrize("delta", BAD_DELTA)
def test_bad_delta_raises(delta):
    x = [0.1, 0.2, 0.3, 0.4]
    for call in (lambda: hcope_lower_bound(x, 1.0, delta),
                 lambda: empirical_bernstein_lower_bound(x, 1.0, delta),
                 lambda: hoeffding_lower_bound(x, 1.0, delta),
                 lambda: hcope_threshold(x, 10, delta),
                 lambda: hcope_split_bound(x, delta),
                 lambda: normal_lower_bound(1.0, 0.1, delta)):
        with pytest.raises(ValueError, match="^delta: "):
            call()


@pytest.mark.parametrize("b", [0.0, -1.0, np.inf, np.nan, 0.35, "a"])
def test_bad_range_raises(b):
    for fn in (empirical_bernstein_lower_bound, hoeffding_lower_bound):
        with pytest.raises(ValueError, match="^(b|x): "):
            fn([0.1, 0.2, 0.4], b, 0.05)


def test_values_above_the_range_are_named():
    with pytest.raises(ValueError, match=r"^x: value 0.4 at index 2 is above b = 0.35"):
        hoeffding_lower_bound([0.1, 0.2, 0.4], 0.35, 0.05)


def test_bad_split_and_threshold_arguments_raise():
    with pytest.raises(ValueError, match="^x: 3 values leave 1"):
        hcope_split_bound([1.0, 2.0, 3.0], 0.05)
    for fraction in (0.0, 1.0, -0.2, 2):
        with pytest.raises(ValueError, match="^pre_fraction: "):
            hcope_split_bound(np.ones(100), 0.05, pre_fraction=fraction)
    for n_post in (1, 0, 2.5, True, "10"):
        with pytest.raises(ValueError, match="^n_post: "):
            hcope_threshold([1.0, 2.0], n_post, 0.05)
    with pytest.raises(ValueError, match="^x_pre: need at least 2"):
        hcope_threshold([1.0], 10, 0.05)


def test_bad_normal_inputs_raise():
    with pytest.raises(ValueError, match="^stderr: NaN"):
        normal_interval(1.0, np.nan)
    with pytest.raises(ValueError, match="^stderr: must be finite and >= 0"):
        normal_interval(1.0, -0.1)
    with pytest.raises(ValueError, match="^estimate: NaN or inf"):
        normal_lower_bound(np.inf, 0.1, 0.05)
    with pytest.raises(ValueError, match="^stderr: shape"):
        normal_interval(np.zeros(3), np.ones(2))
    for level in (0.0, 1.0, 95):
        with pytest.raises(ValueError, match="^level: "):
            normal_interval(1.0, 0.1, level)


def test_bad_coverage_inputs_raise():
    with pytest.raises(ValueError, match="^lower: NaN at index 1"):
        interval_coverage([0.0, np.nan], [1.0, 1.0], 0.5)
    with pytest.raises(ValueError, match="^upper: NaN"):
        interval_coverage([0.0, 0.0], [1.0, np.nan], 0.5)
    with pytest.raises(ValueError, match=r"^lower: 2.0 > upper 1.0 at index 0"):
        interval_coverage([2.0], [1.0], 0.5)
    with pytest.raises(ValueError, match="^lower: expected a non-empty 1-D"):
        interval_coverage(np.zeros((2, 2)), np.ones((2, 2)), 0.5)
    with pytest.raises(ValueError, match="^truth: "):
        interval_coverage([0.0], [1.0], np.nan)
