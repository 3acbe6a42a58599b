r"""Confidence intervals and lower bounds for importance-sampling estimates.

An off-policy estimate is an average of independent terms :math:`X_1, \dots, X_n`, one per
trajectory (the weighted returns :math:`X_i = w_i G_i` of ordinary importance sampling, say). This
module turns such terms into statements about their mean :math:`\mathbb{E}[X]`:

* :func:`normal_interval` and :func:`normal_lower_bound`: the central-limit interval
  :math:`\hat v \pm z\, \widehat{\mathrm{se}}` and its one-sided version; approximate.
* :func:`hoeffding_lower_bound`: Hoeffding's inequality for terms in :math:`[0, b]`; holds for
  every :math:`n`, but needs the range :math:`b`.
* :func:`empirical_bernstein_lower_bound`: the empirical Bernstein inequality of Maurer and
  Pontil (2009) for terms in :math:`[0, b]`: the sample variance replaces most of the range.
* :func:`hcope_lower_bound`: Theorem 1 of Thomas, Theocharous and Ghavamzadeh (2015), the
  empirical Bernstein inequality applied to the terms truncated at thresholds :math:`c_i`; it
  needs no upper bound on the terms, only :math:`X_i \ge 0`.
* :func:`hcope_threshold` and :func:`hcope_split_bound`: the threshold chosen on a first part of
  the data, and the bound computed on the rest (the procedure of the same paper).
* :func:`interval_coverage`: the fraction of many intervals that contain a known value, with its
  Monte Carlo standard error; the tool of every coverage study.

The three inequalities are lower bounds with probability at least :math:`1 - \delta` over the
draw of the data; the normal interval has its nominal level only in the limit
:math:`n \to \infty`. Every function takes plain NumPy arrays.

Used in :doc:`/book/confidence` and the ``off_policy_evaluation`` assignment.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from ._validation import (
    as_float_array,
    check_finite,
    check_int,
    check_positive,
    check_unit_interval,
    first_index,
    where,
)

__all__ = [
    "normal_interval",
    "normal_lower_bound",
    "hoeffding_lower_bound",
    "empirical_bernstein_lower_bound",
    "hcope_lower_bound",
    "hcope_threshold",
    "HCOPEBound",
    "hcope_split_bound",
    "Coverage",
    "interval_coverage",
]


# ---------------------------------------------------------------------------------------------
# input checks (messages start with the argument's name, as everywhere in the companion)


def _check_terms(x, name: str = "x") -> np.ndarray:
    """A 1-D array of at least two finite, non-negative values."""
    arr = as_float_array(x, name, ndim=1)
    if arr.size < 2:
        raise ValueError(f"{name}: need at least 2 values (the bound uses the sample variance), "
                         f"got {arr.size}")
    check_finite(arr, name)
    if arr.min() < 0:
        idx = first_index(arr < 0)
        raise ValueError(f"{name}: must be >= 0 (weighted returns with returns scaled to [0, 1]), "
                         f"got {float(arr[idx])!r} at {where(idx, 1)}")
    return arr


def _check_range(x: np.ndarray, b) -> float:
    """The upper end ``b`` of the range: finite, positive and not below any value of ``x``."""
    bound = check_positive(b, "b")
    if x.max() > bound:
        idx = first_index(x > bound)
        raise ValueError(f"x: value {float(x[idx])!r} at {where(idx, 1)} is above b = {bound!r}; "
                         "the bound needs every value in [0, b]")
    return bound


def _check_thresholds(c, n: int) -> np.ndarray:
    """Thresholds ``c``: a scalar or shape (n,), every entry finite and > 0."""
    try:
        arr = np.asarray(c, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"c: must be a positive number or an array of shape ({n},), "
                         f"got {c!r}") from None
    if arr.ndim == 0:
        arr = np.full(n, float(arr))
    elif arr.shape != (n,):
        raise ValueError(f"c: shape {arr.shape} does not match x shape ({n},); pass one threshold "
                         "or one per value")
    bad = ~np.isfinite(arr) | (arr <= 0)
    if bad.any():
        idx = first_index(bad)
        raise ValueError(f"c: thresholds must be finite and > 0, got {float(arr[idx])!r} at "
                         f"{where(idx, 1)}")
    return arr


# ---------------------------------------------------------------------------------------------
# the normal approximation


def normal_interval(estimate, stderr, level=0.95):
    r"""The normal (central-limit) confidence interval :math:`\hat v \pm z\, \widehat{\mathrm{se}}`.

    .. math::

        \Big[\hat v - z_{(1 + \ell)/2}\, \widehat{\mathrm{se}},\;
             \hat v + z_{(1 + \ell)/2}\, \widehat{\mathrm{se}}\Big], \qquad
        z_p = \Phi^{-1}(p),

    with :math:`\ell` the level (:math:`z = 1.96` for 95%). Its coverage is :math:`\ell` only in
    the limit of many samples; with heavy-tailed importance weights it can be far lower.

    Parameters
    ----------
    estimate, stderr : float or array_like
        Point estimates and their standard errors (any broadcastable shapes; ``stderr >= 0``).
    level : float, default 0.95
        Nominal coverage, in (0, 1).

    Returns
    -------
    lower, upper : float or ndarray
        The ends of the interval, of the broadcast shape (floats for scalar input).

    Raises
    ------
    ValueError
        If ``level`` is not in (0, 1), ``estimate`` is NaN or infinite, or ``stderr`` is negative,
        NaN (an estimate from one sample has no standard error) or infinite.

    Examples
    --------
    >>> lo, hi = normal_interval(1.0, 0.1)
    >>> round(lo, 4), round(hi, 4)
    (0.804, 1.196)

    Used in :doc:`/book/confidence`.
    """
    level = check_unit_interval(level, "level", open=True)
    est, se = _check_estimate(estimate, stderr)
    z = norm.ppf(0.5 + level / 2)
    lower, upper = est - z * se, est + z * se
    if lower.ndim == 0:
        return float(lower), float(upper)
    return lower, upper


def normal_lower_bound(estimate, stderr, delta):
    r"""The one-sided normal lower bound :math:`\hat v - z_{1 - \delta}\, \widehat{\mathrm{se}}`.

    .. math::

        L = \hat v - \Phi^{-1}(1 - \delta)\, \widehat{\mathrm{se}}
        \qquad (z_{0.95} = 1.645 \text{ for } \delta = 0.05),

    the lower end of the two-sided interval of level :math:`1 - 2\delta`. Approximate: nothing
    guarantees :math:`\Pr(L \le \mathbb{E}[X]) \ge 1 - \delta` at finite :math:`n`.

    Parameters
    ----------
    estimate, stderr : float or array_like
        Point estimates and their standard errors (broadcastable; ``stderr >= 0``).
    delta : float
        Allowed probability that the bound is above the true value, in (0, 1).

    Returns
    -------
    float or ndarray
        The bound, of the broadcast shape (a float for scalar input).

    Raises
    ------
    ValueError
        As :func:`normal_interval`, with ``delta`` in place of ``level``.

    Examples
    --------
    >>> round(normal_lower_bound(1.0, 0.1, delta=0.05), 4)
    0.8355

    Used in :doc:`/book/confidence`.
    """
    delta = check_unit_interval(delta, "delta", open=True)
    est, se = _check_estimate(estimate, stderr)
    out = est - norm.ppf(1 - delta) * se
    return float(out) if out.ndim == 0 else out


def _check_estimate(estimate, stderr):
    est = np.asarray(estimate, dtype=np.float64)
    se = np.asarray(stderr, dtype=np.float64)
    if not np.all(np.isfinite(est)):
        raise ValueError("estimate: NaN or inf; every estimate must be finite")
    if np.any(np.isnan(se)):
        raise ValueError("stderr: NaN (an estimate from a single sample has no standard error)")
    if not np.all(np.isfinite(se)) or np.any(se < 0):
        raise ValueError("stderr: must be finite and >= 0")
    try:
        est, se = np.broadcast_arrays(est, se)
    except ValueError:
        raise ValueError(f"stderr: shape {se.shape} does not broadcast with estimate shape "
                         f"{est.shape}") from None
    return est, se


# ---------------------------------------------------------------------------------------------
# concentration inequalities


def hoeffding_lower_bound(x, b, delta) -> float:
    r"""Hoeffding's lower bound on the mean of independent terms in :math:`[0, b]`.

    .. math::

        \Pr\Big(\mathbb{E}[X] \ge \bar X - b \sqrt{\frac{\ln(1/\delta)}{2n}}\Big) \ge 1 - \delta ,
        \qquad \bar X = \frac1n \sum_{i=1}^n X_i .

    It holds for every :math:`n` and every distribution on :math:`[0, b]`, but its width is set
    by the range :math:`b`, not by the spread of the data. For ordinary importance sampling with
    returns in :math:`[0, 1]`, :math:`b` is the largest possible trajectory weight.

    Parameters
    ----------
    x : array_like, shape (n,)
        Independent terms with a common mean, each in :math:`[0, b]`; ``n >= 2``.
    b : float
        Upper end of the range (finite, > 0).
    delta : float
        Allowed probability that the bound is above the mean, in (0, 1).

    Returns
    -------
    float

    Raises
    ------
    ValueError
        If ``x`` is not 1-D, has fewer than 2 values, holds NaN/inf or a value outside
        :math:`[0, b]`; if ``b`` is not finite and positive; if ``delta`` is not in (0, 1).

    Examples
    --------
    >>> # 0.5 - sqrt(ln 20 / 8)
    >>> round(hoeffding_lower_bound([0.2, 0.4, 0.6, 0.8], b=1.0, delta=0.05), 4)
    -0.1119

    Used in :doc:`/book/confidence`.
    """
    arr = _check_terms(x)
    bound = _check_range(arr, b)
    delta = check_unit_interval(delta, "delta", open=True)
    n = arr.size
    return float(arr.mean() - bound * math.sqrt(math.log(1 / delta) / (2 * n)))


def empirical_bernstein_lower_bound(x, b, delta) -> float:
    r"""The empirical Bernstein lower bound of Maurer and Pontil (2009) for terms in :math:`[0, b]`.

    .. math::

        \Pr\Big(\mathbb{E}[X] \ge \bar X - \sqrt{\frac{2\, s^2 \ln(2/\delta)}{n}}
              - \frac{7\, b \ln(2/\delta)}{3(n - 1)}\Big) \ge 1 - \delta ,
        \qquad s^2 = \frac{1}{n - 1} \sum_{i=1}^n (X_i - \bar X)^2 .

    The leading term uses the sample variance, as the normal bound does; the range :math:`b` enters
    only through a term of order :math:`b/n` instead of Hoeffding's :math:`b/\sqrt n`. (Maurer and
    Pontil state it for :math:`[0, 1]`; dividing the terms by :math:`b` gives this form.)

    Parameters
    ----------
    x : array_like, shape (n,)
        Independent, identically distributed terms in :math:`[0, b]`; ``n >= 2``.
    b : float
        Upper end of the range (finite, > 0).
    delta : float
        Allowed probability that the bound is above the mean, in (0, 1).

    Returns
    -------
    float

    Raises
    ------
    ValueError
        As :func:`hoeffding_lower_bound`.

    Examples
    --------
    >>> # 0.5 - sqrt(2 (0.2 / 3) ln 40 / 4) - 7 ln 40 / 9: four values are far too few
    >>> round(empirical_bernstein_lower_bound([0.2, 0.4, 0.6, 0.8], b=1.0, delta=0.05), 4)
    -2.7198

    Used in :doc:`/book/confidence` and the ``off_policy_evaluation`` assignment.
    """
    arr = _check_terms(x)
    bound = _check_range(arr, b)
    delta = check_unit_interval(delta, "delta", open=True)
    n = arr.size
    log_term = math.log(2 / delta)
    spread = math.sqrt(2 * arr.var(ddof=1) * log_term / n)
    return float(arr.mean() - spread - 7 * bound * log_term / (3 * (n - 1)))


def hcope_lower_bound(x, c, delta) -> float:
    r"""Theorem 1 of Thomas, Theocharous and Ghavamzadeh (2015): a lower bound from truncated terms.

    For independent :math:`X_i \ge 0` with :math:`\mathbb{E}[X_i] = v` (it suffices that
    :math:`\mathbb{E}[X_i] \le v`) and thresholds :math:`c_i > 0` fixed before seeing the
    :math:`X_i`, let :math:`Y_i = \min(X_i, c_i)` and :math:`S = \sum_i 1/c_i`. With probability at
    least :math:`1 - \delta`, :math:`v` is at least

    .. math::

        L = \frac{1}{S} \sum_{i=1}^n \frac{Y_i}{c_i}
          - \frac{1}{S}\, \frac{7 n \ln(2/\delta)}{3 (n - 1)}
          - \frac{1}{S} \sqrt{\frac{2 \ln(2/\delta)}{n - 1}
              \Big( n \sum_{i=1}^n \Big(\frac{Y_i}{c_i}\Big)^2
                    - \Big(\sum_{i=1}^n \frac{Y_i}{c_i}\Big)^2 \Big)} .

    Truncation only lowers a mean, :math:`\mathbb{E}[Y_i] \le \mathbb{E}[X_i]`, so a lower bound on
    the mean of the truncated terms is one on :math:`v`; and :math:`Y_i / c_i \in [0, 1]`, so the
    empirical Bernstein inequality applies to them without any upper bound on the :math:`X_i`. The
    bracket is computed as :math:`n \sum_i (Z_i - \bar Z)^2` with :math:`Z_i = Y_i/c_i`, which is
    the same number and never negative by rounding. With one threshold :math:`c` for all terms the
    bound is :func:`empirical_bernstein_lower_bound` of the :math:`Y_i` with :math:`b = c`.

    Parameters
    ----------
    x : array_like, shape (n,)
        Independent non-negative terms, e.g. importance-weighted returns :math:`w_i G_i` with the
        returns shifted and scaled to :math:`[0, 1]`; ``n >= 2``.
    c : float or array_like of shape (n,)
        Thresholds, finite and > 0. They must not depend on ``x`` (choose them on other data:
        :func:`hcope_split_bound`).
    delta : float
        Allowed probability that the bound is above the mean, in (0, 1).

    Returns
    -------
    float

    Raises
    ------
    ValueError
        If ``x`` is not 1-D, has fewer than 2 values, or holds a negative value, NaN or inf; if
        ``c`` has the wrong shape or a non-positive or non-finite entry; if ``delta`` is not in
        (0, 1).

    Examples
    --------
    >>> import math
    >>> x = [0.0, 1.0, 2.0, 4.0]      # Y/c = (0, 1/2, 1, 1) with c = 2, so S = 2 and the bracket
    >>> L = math.log(40)               # is 4 * 2.25 - 2.5**2 = 2.75 (delta = 0.05)
    >>> by_hand = (2.5 - 7 * 4 * L / 9 - math.sqrt(2 * L / 3 * 2.75)) / 2
    >>> round(hcope_lower_bound(x, c=2.0, delta=0.05), 4), round(by_hand, 4)
    (-5.7885, -5.7885)
    >>> hcope_lower_bound(x, c=[2.0, 2.0, 2.0, 2.0], delta=0.05) == hcope_lower_bound(x, 2.0, 0.05)
    True

    Used in :doc:`/book/confidence` and the ``off_policy_evaluation`` assignment.
    """
    arr = _check_terms(x)
    n = arr.size
    c = _check_thresholds(c, n)
    delta = check_unit_interval(delta, "delta", open=True)
    z = np.minimum(arr, c) / c                       # Y_i / c_i, in [0, 1]
    S = np.sum(1 / c)
    log_term = math.log(2 / delta)
    bracket = n * np.sum((z - z.mean()) ** 2)        # n sum z^2 - (sum z)^2
    return float((z.sum() - 7 * n * log_term / (3 * (n - 1))
                  - math.sqrt(2 * log_term / (n - 1) * bracket)) / S)


# ---------------------------------------------------------------------------------------------
# choosing the threshold on held-out data


def _predicted_bound(x_pre: np.ndarray, c: np.ndarray, n_post: int, delta: float) -> np.ndarray:
    """The bound on ``n_post`` terms predicted from ``x_pre``, for each threshold in ``c``."""
    log_term = math.log(2 / delta)
    y = np.minimum(x_pre[None, :], c[:, None])      # (thresholds, n_pre)
    return (y.mean(axis=1) - 7 * c * log_term / (3 * (n_post - 1))
            - np.sqrt(2 * log_term * y.var(axis=1, ddof=1) / n_post))


def hcope_threshold(x_pre, n_post, delta) -> float:
    r"""The threshold that maximises the bound predicted from a first part of the data for the rest.

    With one threshold :math:`c` for all :math:`n_\text{post}` terms, :func:`hcope_lower_bound`
    is :math:`\bar Y - 7 c \ln(2/\delta) / (3(n_\text{post} - 1)) - \sqrt{2 s_Y^2 \ln(2/\delta) /
    n_\text{post}}`. Thomas, Theocharous and Ghavamzadeh (2015) predict it with the mean and
    sample variance of :math:`Y = \min(X, c)` on a separate first part of the data,
    :math:`D_\text{pre}`, and choose

    .. math::

        c^\star = \arg\max_{c > 0}\; \bar Y_\text{pre}(c)
            - \frac{7\, c \ln(2/\delta)}{3 (n_\text{post} - 1)}
            - \sqrt{\frac{2 \ln(2/\delta)\, s^2_\text{pre}(c)}{n_\text{post}}} .

    A small :math:`c` truncates much (the mean drops); a large one inflates the range term. The
    maximum is searched over the positive values of ``x_pre`` and 100 thresholds spaced
    geometrically between the smallest and the largest of them (above the largest value nothing
    is truncated and only the range term grows). If every value of ``x_pre`` is 0, the data say
    nothing about the scale and ``c = 1`` is returned (the largest return, once returns are
    scaled to [0, 1]). Any threshold chosen without looking at the terms of the bound keeps it
    valid; a better choice only makes it tighter.

    Parameters
    ----------
    x_pre : array_like, shape (n_pre,)
        The terms of :math:`D_\text{pre}` (non-negative, finite, ``n_pre >= 2``).
    n_post : int
        Number of terms the bound will be computed on (>= 2).
    delta : float
        The bound's error probability, in (0, 1).

    Returns
    -------
    float
        :math:`c^\star > 0`.

    Raises
    ------
    ValueError
        If ``x_pre`` is invalid as for :func:`hcope_lower_bound`, ``n_post`` is not an integer
        >= 2, or ``delta`` is not in (0, 1).

    Examples
    --------
    >>> c = hcope_threshold([0.5, 0.5, 1.0, 1.0, 40.0], n_post=95, delta=0.05)
    >>> bool(1.0 < c < 40.0)          # it truncates the outlier and keeps the rest
    True

    :func:`hcope_split_bound` calls it (:doc:`Confidence </book/confidence>`). Used in the
    ``off_policy_evaluation`` assignment.
    """
    arr = _check_terms(x_pre, "x_pre")
    n_post = check_int(n_post, "n_post", low=2)
    delta = check_unit_interval(delta, "delta", open=True)
    positive = arr[arr > 0]
    if positive.size == 0:
        return 1.0
    candidates = np.unique(np.concatenate(
        [positive, np.geomspace(positive.min(), positive.max(), 100)]))
    return float(candidates[np.argmax(_predicted_bound(arr, candidates, n_post, delta))])


@dataclass(frozen=True)
class HCOPEBound:
    """Result of :func:`hcope_split_bound`.

    Attributes
    ----------
    bound : float
        The lower bound, from :func:`hcope_lower_bound` on the second part of the data.
    threshold : float
        The threshold :math:`c^\\star` chosen on the first part (:func:`hcope_threshold`).
    n_pre, n_post : int
        Sizes of the two parts.

    Examples
    --------
    >>> r = HCOPEBound(bound=0.4, threshold=3.0, n_pre=5, n_post=95)
    >>> float(r)
    0.4

    Returned by :func:`hcope_split_bound`; used in :doc:`/book/confidence`.
    """

    bound: float
    threshold: float
    n_pre: int
    n_post: int

    def __float__(self) -> float:
        return float(self.bound)


def hcope_split_bound(x, delta, pre_fraction=0.05) -> HCOPEBound:
    r"""Choose the threshold on a first part of the data and bound the mean with the rest.

    .. math::

        D_\text{pre} = (X_1, \dots, X_{m}), \quad D_\text{post} = (X_{m+1}, \dots, X_n), \quad
        c^\star = \texttt{hcope\_threshold}(D_\text{pre}), \quad
        L = \texttt{hcope\_lower\_bound}(D_\text{post}, c^\star, \delta),

    with :math:`m = \max(2, \operatorname{round}(\texttt{pre\_fraction} \cdot n))`. Because
    :math:`c^\star` depends only on :math:`D_\text{pre}`, which is independent of
    :math:`D_\text{post}`, Theorem 1 applies to :math:`D_\text{post}` with the threshold held
    fixed: :math:`\Pr(L \le v) \ge 1 - \delta`. Thomas, Theocharous and Ghavamzadeh (2015) use
    :math:`1/20` of the data for :math:`D_\text{pre}`. The first :math:`m` values form
    :math:`D_\text{pre}`, so the order of ``x`` must not depend on the values (the order in which
    trajectories were collected is fine; shuffle otherwise).

    Parameters
    ----------
    x : array_like, shape (n,)
        Independent, identically distributed non-negative terms (e.g. :math:`w_i G_i` with
        returns in [0, 1]); ``n >= 4``, so that each part has at least 2.
    delta : float
        Allowed probability that the bound is above the mean, in (0, 1).
    pre_fraction : float, default 0.05
        Fraction of the data used to choose the threshold, in (0, 1).

    Returns
    -------
    HCOPEBound
        ``bound``, ``threshold``, ``n_pre``, ``n_post``; ``float(result)`` is the bound.

    Raises
    ------
    ValueError
        If ``x`` holds a negative value, NaN or inf, or is too short to leave 2 values in each
        part; if ``delta`` or ``pre_fraction`` is not in (0, 1).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).exponential(size=2000)     # mean 1
    >>> r = hcope_split_bound(x, delta=0.05)
    >>> r.n_pre, r.n_post, bool(0.7 < r.bound < 1.0)
    (100, 1900, True)

    Used in :doc:`/book/confidence`.
    """
    arr = _check_terms(x)
    delta = check_unit_interval(delta, "delta", open=True)
    pre_fraction = check_unit_interval(pre_fraction, "pre_fraction", open=True)
    n = arr.size
    n_pre = max(2, int(round(pre_fraction * n)))
    if n - n_pre < 2:
        raise ValueError(f"x: {n} values leave {n - n_pre} for the bound after {n_pre} for the "
                         "threshold; need at least 2 in each part")
    c = hcope_threshold(arr[:n_pre], n - n_pre, delta)
    return HCOPEBound(hcope_lower_bound(arr[n_pre:], c, delta), c, n_pre, n - n_pre)


# ---------------------------------------------------------------------------------------------
# coverage studies


@dataclass(frozen=True)
class Coverage:
    """How often many intervals contain a known value (result of :func:`interval_coverage`).

    Attributes
    ----------
    rate : float
        Fraction of intervals with ``lower <= truth <= upper``.
    se : float
        Its Monte Carlo standard error, :math:`\\sqrt{\\text{rate}(1 - \\text{rate}) / n}`.
    below : float
        Fraction of intervals that lie entirely below the truth (``upper < truth``).
    above : float
        Fraction that lie entirely above it (``lower > truth``): for a lower bound, the failures.
    n : int
        Number of intervals.

    Examples
    --------
    >>> Coverage(rate=0.9, se=0.03, below=0.1, above=0.0, n=100).below
    0.1

    Returned by :func:`interval_coverage`; used in :doc:`/book/confidence`.
    """

    rate: float
    se: float
    below: float
    above: float
    n: int


def interval_coverage(lower, upper, truth) -> Coverage:
    r"""Coverage of intervals from independent repetitions, with its Monte Carlo standard error.

    .. math::

        \widehat{\text{cov}} = \frac{1}{B} \sum_{b=1}^{B} \mathbb{1}\{L_b \le v \le U_b\},
        \qquad \operatorname{se} = \sqrt{\widehat{\text{cov}}\,(1 - \widehat{\text{cov}}) / B} .

    The misses are split into intervals entirely below :math:`v` (:math:`U_b < v`) and entirely
    above it (:math:`L_b > v`). For one-sided lower bounds pass ``upper=np.inf``.

    Parameters
    ----------
    lower, upper : array_like, shape (B,), or scalars that broadcast to it
        Ends of the intervals from :math:`B` independent repetitions (``upper`` may be ``inf``,
        ``lower`` may be ``-inf``).
    truth : float
        The value the intervals should contain (finite).

    Returns
    -------
    Coverage

    Raises
    ------
    ValueError
        If an end is NaN, the shapes do not broadcast to one dimension, ``lower > upper``
        somewhere, or ``truth`` is not finite.

    Examples
    --------
    >>> cov = interval_coverage([0.0, 0.5, 1.2, -1.0], [1.0, 2.0, 3.0, 0.2], truth=1.0)
    >>> cov.rate, cov.below, cov.above
    (0.5, 0.25, 0.25)

    Used in :doc:`/book/confidence`.
    """
    try:
        lo, hi = np.broadcast_arrays(np.asarray(lower, dtype=np.float64),
                                     np.asarray(upper, dtype=np.float64))
    except ValueError:
        raise ValueError("upper: shape does not broadcast with the shape of lower") from None
    if lo.ndim != 1 or lo.size == 0:
        raise ValueError("lower: expected a non-empty 1-D array of shape (B,), got shape "
                         f"{lo.shape}")
    for arr, name in ((lo, "lower"), (hi, "upper")):
        if np.isnan(arr).any():
            idx = first_index(np.isnan(arr))
            raise ValueError(f"{name}: NaN at {where(idx, 1)}")
    if (lo > hi).any():
        idx = first_index(lo > hi)
        raise ValueError(f"lower: {float(lo[idx])!r} > upper {float(hi[idx])!r} at {where(idx, 1)}")
    try:
        v = float(truth)
    except (TypeError, ValueError):
        raise ValueError(f"truth: must be a finite number, got {truth!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"truth: must be a finite number, got {truth!r}")
    B = lo.size
    rate = float(np.mean((lo <= v) & (v <= hi)))
    return Coverage(rate, math.sqrt(rate * (1 - rate) / B), float(np.mean(hi < v)),
                    float(np.mean(lo > v)), B)
