r"""Weighted importance sampling: running estimates, exact finite-n moments, infinite variance.

Tools for :doc:`/book/weighted_is`:

* :func:`running_estimates` turns a sequence of episodes (weights :math:`w_i` and returns
  :math:`G_i`) into the ordinary and weighted estimates after every episode, the quantities that
  Sutton & Barto (2018) plot in Figures 5.3 and 5.4.
* :func:`weighted_is_exact` computes the exact mean, bias and mean squared error of the weighted
  estimator for ``n`` draws from a finite distribution (by enumerating every possible sample), and
  :func:`weighted_is_bias_limit` the constant :math:`c` in :math:`\text{bias} \approx c / n`.
* :func:`running_per_decision` does the same for the per-decision estimators.
* :func:`one_state_episodes`, :func:`one_state_running` and :func:`one_state_second_moment` for the
  one-state MDP of Sutton & Barto's Example 5.5, where ordinary importance sampling has infinite
  variance.

Convention for 0/0. Before the first episode with a positive weight the weighted estimate is 0/0.
Like Sutton & Barto's incremental algorithm (section 5.6), which starts from :math:`V = 0` and
changes it only when a weight is positive, we report 0 there. The estimators of
:mod:`companion.estimators` raise instead; here a value is needed at every episode count.

See :doc:`/book/weighted_is`.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from math import comb

import numpy as np
from scipy.special import gammaln

from ._validation import (
    as_float_array,
    check_finite,
    check_same_shape,
    first_index,
    where,
)
from .weights import per_decision_log_weights

__all__ = [
    "RunningEstimates",
    "running_estimates",
    "ExactMoments",
    "weighted_is_exact",
    "weighted_is_bias_limit",
    "one_state_episodes",
    "OneStateRuns",
    "one_state_running",
    "one_state_second_moment",
    "running_per_decision",
]

#: Probabilities of one step of Example 5.5 under the behaviour policy (left 1/2, right 1/2).
_P_LEFT_STAY = 0.5 * 0.9
_P_LEFT_END = 0.5 * 0.1
_P_END = 1.0 - _P_LEFT_STAY  # 0.55: the episode ends at this step
_P_NONZERO = _P_LEFT_END / _P_END  # 1/11: an ending step is 'left' (weight > 0)

#: Largest number of outcomes-count vectors :func:`weighted_is_exact` will enumerate.
_MAX_COMPOSITIONS = 5_000_000


# ---------------------------------------------------------------------------------------------
# running estimates
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunningEstimates:
    """Ordinary and weighted importance sampling estimates after each of ``n`` episodes.

    Attributes
    ----------
    ordinary : ndarray, shape (..., n)
        ``ordinary[..., k]`` is :math:`\\frac{1}{k+1}\\sum_{i \\le k} w_i G_i`.
    weighted : ndarray, shape (..., n)
        ``weighted[..., k]`` is :math:`\\sum_{i \\le k} w_i G_i / \\sum_{i \\le k} w_i`, and 0 while
        every weight so far is 0.
    """

    ordinary: np.ndarray
    weighted: np.ndarray


def _check_nonneg(arr: np.ndarray, name: str) -> None:
    check_finite(arr, name)
    if (arr < 0).any():
        idx = first_index(arr < 0)
        raise ValueError(f"{name}: weights must be >= 0, got {float(arr[idx])!r} at {where(idx, arr.ndim)}")


def running_estimates(w, G, *, log: bool = False) -> RunningEstimates:
    r"""Ordinary and weighted importance sampling estimates after every episode.

    .. math::

        V^{\text{ord}}_k = \frac{1}{k} \sum_{i=1}^{k} w_i G_i, \qquad
        V^{\text{wtd}}_k = \frac{\sum_{i=1}^{k} w_i G_i}{\sum_{i=1}^{k} w_i}
        \quad (0 \text{ while } \textstyle\sum_{i \le k} w_i = 0).

    The last axis is the episode axis; leading axes (for example independent runs) are kept.
    The weighted estimate equals the incremental rule of Sutton & Barto (2018, eq. 5.8),
    :math:`C_k = C_{k-1} + w_k`, :math:`V_k = V_{k-1} + (w_k / C_k)(G_k - V_{k-1})`, started at
    :math:`V_0 = 0`.

    Parameters
    ----------
    w : array_like, shape (..., n)
        Trajectory weights :math:`w_i \ge 0` (or log weights if ``log=True``, ``-inf`` allowed).
    G : array_like, shape (..., n)
        Returns :math:`G_i`.
    log : bool, default False
        Whether ``w`` holds log weights. The weighted estimate is then computed after subtracting
        each row's largest log weight (it is invariant to that scale); the ordinary one needs the
        weights themselves and raises if they overflow float64.

    Returns
    -------
    RunningEstimates
        Arrays ``ordinary`` and ``weighted`` of the same shape as ``G``.

    Raises
    ------
    ValueError
        If the shapes differ, an input is empty or 0-dimensional, holds NaN/inf (``+inf`` or NaN
        for log weights), a weight is negative, or (``log=True``) the ordinary terms overflow.

    Examples
    --------
    >>> est = running_estimates([0.0, 2.0, 1.0], [5.0, 1.0, 4.0])
    >>> est.ordinary.tolist(), est.weighted.tolist()
    ([0.0, 1.0, 2.0], [0.0, 1.0, 2.0])
    >>> running_estimates([0.0, 4.0, 1.0], [5.0, 1.0, 6.0]).weighted.round(3).tolist()
    [0.0, 1.0, 2.0]

    See :doc:`/book/weighted_is`, Figures 5.3 and 5.4 of Sutton & Barto.
    """
    g = as_float_array(G, "G")
    if g.ndim == 0:
        raise ValueError("G: expected at least one axis (the episode axis), got a scalar")
    check_finite(g, "G")
    ww = as_float_array(w, "w")
    check_same_shape(g, "G", ww, "w")
    if log:
        check_finite(ww, "w", allow_neg_inf=True)
        top = ww.max(axis=-1, keepdims=True)
        top = np.where(top == -np.inf, 0.0, top)
        scaled = np.exp(ww - top)
        with np.errstate(over="ignore"):
            scale = np.exp(top)  # inf if the weights themselves overflow: caught below
    else:
        _check_nonneg(ww, "w")
        scaled = ww
        scale = 1.0
    sum_wg = np.cumsum(scaled * g, axis=-1)
    sum_w = np.cumsum(scaled, axis=-1)
    k = np.arange(1, g.shape[-1] + 1)
    with np.errstate(over="ignore", invalid="ignore"):
        ordinary = sum_wg * scale / k
    if not np.all(np.isfinite(ordinary)):
        raise ValueError(
            "w: the ordinary estimate overflows float64 (log weights up to "
            f"{float(np.max(ww)):.6g}); use the weighted estimate, which is scale-invariant"
        )
    weighted = np.divide(sum_wg, sum_w, out=np.zeros_like(sum_wg), where=sum_w > 0)
    return RunningEstimates(ordinary, weighted)


# ---------------------------------------------------------------------------------------------
# exact moments on a finite support
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExactMoments:
    """Exact moments of an estimator built from ``n`` i.i.d. draws (see :func:`weighted_is_exact`).

    Attributes
    ----------
    n : int
        Sample size.
    value : float
        The estimand :math:`\\E_\\pi[f]`.
    mean : float
        :math:`\\E[\\hat v]`.
    bias : float
        ``mean - value``.
    variance : float
        :math:`\\Var(\\hat v)`.
    mse : float
        ``variance + bias**2``.
    """

    n: int
    value: float
    mean: float
    bias: float
    variance: float
    mse: float


def _check_finite_problem(f, p, q):
    fv = as_float_array(f, "f", ndim=1)
    check_finite(fv, "f")
    out = [fv]
    for arr, name in ((p, "p"), (q, "q")):
        a = as_float_array(arr, name, ndim=1)
        check_same_shape(fv, "f", a, name)
        check_finite(a, name)
        if (a < 0).any() or (a > 1).any():
            idx = first_index((a < 0) | (a > 1))
            raise ValueError(f"{name}: probability {float(a[idx])!r} outside [0, 1] at {where(idx, 1)}")
        if abs(a.sum() - 1.0) > 1e-9:
            raise ValueError(f"{name}: probabilities must sum to 1, got {a.sum()!r}")
        out.append(a)
    fv, pv, qv = out
    bad = (qv == 0) & (pv > 0)
    if bad.any():
        idx = first_index(bad)
        raise ValueError(
            f"q: probability 0 at {where(idx, 1)} where p is {float(pv[idx])!r} > 0 "
            "(importance sampling needs q > 0 wherever p > 0)"
        )
    return fv, pv, qv


def _compositions(n: int, k: int) -> np.ndarray:
    """All count vectors (c_1, ..., c_k) of non-negative integers summing to n, shape (M, k)."""
    if k == 1:
        return np.array([[n]])
    bars = np.array(list(combinations(range(n + k - 1), k - 1)), dtype=np.int64)
    edges = np.hstack([np.full((bars.shape[0], 1), -1), bars, np.full((bars.shape[0], 1), n + k - 1)])
    return np.diff(edges, axis=1) - 1


def weighted_is_exact(f, p, q, n) -> ExactMoments:
    r"""Exact mean, bias, variance and MSE of the weighted estimator on a finite support.

    With :math:`n` i.i.d. draws :math:`x_i \sim q` on outcomes :math:`1, \dots, K`, the
    weighted estimate depends only on the counts :math:`c_j` of each outcome, which are
    multinomial, so its moments are finite sums:

    .. math::

        \hat v_{\text{WIS}} = \frac{\sum_j c_j w_j f_j}{\sum_j c_j w_j}, \qquad
        \E\bigl[\hat v^m_{\text{WIS}}\bigr] = \sum_{c_1 + \dots + c_K = n}
        \frac{n!}{\prod_j c_j!} \prod_j q_j^{c_j} \, \hat v^m_{\text{WIS}}(c),
        \qquad w_j = p_j / q_j.

    A sample in which every weight is 0 (possible when :math:`p_j = 0 < q_j`) is scored 0, as in
    :func:`running_estimates`.

    Parameters
    ----------
    f : array_like, shape (K,)
        Value (return) of each outcome.
    p : array_like, shape (K,)
        Target probabilities :math:`p_j = \pi(j)`.
    q : array_like, shape (K,)
        Sampling (behaviour) probabilities :math:`q_j = \mu(j)`.
    n : int
        Number of draws (>= 1).

    Returns
    -------
    ExactMoments

    Raises
    ------
    ValueError
        If the arrays differ in length, are not probability vectors, ``q_j = 0 < p_j`` for some
        ``j``, ``n`` is not a positive integer, or there are more than 5 million count vectors
        (:math:`\binom{n + K - 1}{K - 1}`) to enumerate.

    Examples
    --------
    >>> m = weighted_is_exact([0.0, 1.0], [0.5, 0.5], [0.8, 0.2], n=1)
    >>> round(m.mean, 6), round(m.bias, 6)  # one draw: the estimate is f(x_1), mean E_q[f]
    (0.2, -0.3)

    See :doc:`/book/weighted_is`, eq. (eq-wis-bias).
    """
    fv, pv, qv = _check_finite_problem(f, p, q)
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise ValueError(f"n: must be a positive integer, got {n!r}")
    n = int(n)
    keep = qv > 0  # outcomes that can be drawn
    fk, pk, qk = fv[keep], pv[keep], qv[keep]
    k = fk.shape[0]
    if comb(n + k - 1, k - 1) > _MAX_COMPOSITIONS:
        raise ValueError(
            f"n: {comb(n + k - 1, k - 1)} count vectors for n={n} and {k} outcomes; at most "
            f"{_MAX_COMPOSITIONS} are enumerated"
        )
    counts = _compositions(n, k)
    log_prob = gammaln(n + 1) - gammaln(counts + 1).sum(axis=1) + counts @ np.log(qk)
    prob = np.exp(log_prob)
    wj = pk / qk
    num = counts @ (wj * fk)
    den = counts @ wj
    est = np.divide(num, den, out=np.zeros(counts.shape[0]), where=den > 0)
    value = float(pv @ fv)
    mean = float(prob @ est)
    var = float(prob @ (est - mean) ** 2)
    return ExactMoments(n, value, mean, mean - value, var, var + (mean - value) ** 2)


def weighted_is_bias_limit(f, p, q) -> float:
    r"""The constant :math:`c` in the first-order bias of weighted IS, bias :math:`\approx c/n`.

    A second-order (delta-method) expansion of the ratio of the two sample means
    :math:`\bar A = \frac1n\sum_i w_i f(x_i)` and :math:`\bar B = \frac1n\sum_i w_i` around
    :math:`(v, 1)` gives

    .. math::

        \E[\hat v_{\text{WIS}}] - v = \frac{c}{n} + O(n^{-2}), \qquad
        c = -\E_q\bigl[w^2 (f - v)\bigr] = -\E_p\bigl[w (f - v)\bigr].

    Parameters
    ----------
    f, p, q : array_like, shape (K,)
        As in :func:`weighted_is_exact`.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        As :func:`weighted_is_exact`.

    Examples
    --------
    >>> round(weighted_is_bias_limit([0.0, 1.0], [0.5, 0.5], [0.8, 0.2]), 6)
    -0.46875

    See :doc:`/book/weighted_is`, eq. (eq-wis-bias).
    """
    fv, pv, qv = _check_finite_problem(f, p, q)
    keep = qv > 0
    v = float(pv @ fv)
    w = pv[keep] / qv[keep]
    return float(-(pv[keep] * w) @ (fv[keep] - v))


# ---------------------------------------------------------------------------------------------
# Sutton & Barto, Example 5.5
# ---------------------------------------------------------------------------------------------
def _check_count(n, name: str) -> int:
    ok = not isinstance(n, bool) and isinstance(n, (int, np.integer, float)) and float(n).is_integer()
    if not ok or n < 1:
        raise ValueError(f"{name}: must be a positive integer, got {n!r}")
    return int(n)


def one_state_episodes(n, rng):
    r"""Sample episodes of Sutton & Barto's Example 5.5 under the behaviour policy.

    Under :math:`\mu` (left or right with probability 1/2) each step is *left, stay* with
    probability 0.45, *left, end* (reward +1) with 0.05 and *right, end* (reward 0) with 0.5. So
    the number :math:`K` of *left, stay* steps is geometric,
    :math:`\Pr(K = k) = 0.45^k \cdot 0.55`, the episode has :math:`T = K + 1` steps, and the last
    step is *left* with probability :math:`0.05/0.55 = 1/11`, independently of :math:`K`. With
    :math:`\pi` = always left, :math:`\rho = 2` for left and 0 for right, so

    .. math::

        w = \rho_{0:T-1} = 2^{K+1} \indicator[\text{ends left}], \qquad
        G = \indicator[\text{ends left}].

    Parameters
    ----------
    n : int
        Number of episodes.
    rng : numpy.random.Generator or int

    Returns
    -------
    w : ndarray, shape (n,)
        Trajectory weights (exact powers of two, or 0).
    G : ndarray, shape (n,)
        Returns (0 or 1).
    length : ndarray of int, shape (n,)
        Number of steps :math:`T` of each episode.

    Raises
    ------
    ValueError
        If ``n`` is not a positive integer.

    Examples
    --------
    >>> w, G, length = one_state_episodes(5, rng=3)
    >>> bool(np.all((w == 0) | (w == 2.0 ** length))), bool(np.all(G == (w > 0)))
    (True, True)

    See :doc:`/book/weighted_is` (infinite variance).
    """
    n = _check_count(n, "n")
    rng = np.random.default_rng(rng)
    length = rng.geometric(_P_END, size=n)  # T = K + 1 >= 1
    ends_left = rng.random(n) < _P_NONZERO
    G = ends_left.astype(np.float64)
    w = np.where(ends_left, np.ldexp(1.0, length), 0.0)
    return w, G, length


@dataclass(frozen=True)
class OneStateRuns:
    """Running estimates of Example 5.5 at chosen episode counts (see :func:`one_state_running`).

    Attributes
    ----------
    checkpoints : ndarray of int, shape (m,)
        Episode counts :math:`k` at which the estimates are recorded.
    ordinary, weighted : ndarray, shape (n_runs, m)
        Ordinary and weighted IS estimates after :math:`k` episodes.
    second_moment : ndarray, shape (n_runs, m)
        Sample second moment :math:`\\frac1k \\sum_{i \\le k} (w_i G_i)^2`.
    first_positive : ndarray of int, shape (n_runs,)
        Number (1-based) of the first episode with a positive weight.
    """

    checkpoints: np.ndarray
    ordinary: np.ndarray
    weighted: np.ndarray
    second_moment: np.ndarray
    first_positive: np.ndarray


def one_state_running(n_runs, n_episodes, checkpoints, rng) -> OneStateRuns:
    r"""Ordinary and weighted IS on Example 5.5 for many episodes, recorded at checkpoints.

    Ten out of eleven episodes have weight 0 and add nothing to any sum, so the simulation draws
    only the others: the gaps between episodes with positive weight are geometric with success
    probability 1/11, and each such episode has :math:`w G = 2^{K+1}` with
    :math:`\Pr(K = k) = 0.45^k \cdot 0.55`. This gives exactly the same distribution of every
    running sum as drawing all ``n_episodes`` episodes one by one (:func:`one_state_episodes`),
    at a tenth of the cost and memory.

    .. math::

        V^{\text{ord}}_k = \frac1k \sum_{i \le k} w_i G_i, \quad
        V^{\text{wtd}}_k = \frac{\sum_{i \le k} w_i G_i}{\sum_{i \le k} w_i}, \quad
        M_k = \frac1k \sum_{i \le k} (w_i G_i)^2.

    Parameters
    ----------
    n_runs : int
        Number of independent runs.
    n_episodes : int
        Episodes per run.
    checkpoints : array_like of int, shape (m,)
        Episode counts in ``[1, n_episodes]`` at which to record the estimates.
    rng : numpy.random.Generator or int

    Returns
    -------
    OneStateRuns

    Raises
    ------
    ValueError
        If a count is not a positive integer or a checkpoint is outside ``[1, n_episodes]``.

    Examples
    --------
    >>> runs = one_state_running(3, 1000, [10, 100, 1000], rng=0)
    >>> runs.ordinary.shape, bool(np.all(runs.weighted[:, -1] == 1.0))
    ((3, 3), True)

    See :doc:`/book/weighted_is` (infinite variance).
    """
    n_runs = _check_count(n_runs, "n_runs")
    n_episodes = _check_count(n_episodes, "n_episodes")
    cps = np.asarray(checkpoints)
    if cps.ndim != 1 or cps.size == 0 or not np.issubdtype(cps.dtype, np.integer):
        raise ValueError(f"checkpoints: expected a non-empty 1-D array of integers, got {checkpoints!r}")
    if cps.min() < 1 or cps.max() > n_episodes:
        raise ValueError(f"checkpoints: must lie in [1, n_episodes={n_episodes}], got {cps.min()}..{cps.max()}")
    rng = np.random.default_rng(rng)
    m = cps.size
    out = {name: np.zeros((n_runs, m)) for name in ("ordinary", "weighted", "second")}
    first = np.zeros(n_runs, dtype=np.int64)
    expected = n_episodes * _P_NONZERO
    block = int(expected + 10 * np.sqrt(expected) + 20)
    for r in range(n_runs):
        pos = np.cumsum(rng.geometric(_P_NONZERO, size=block))
        while pos[-1] <= n_episodes:  # rare: draw more gaps
            pos = np.concatenate([pos, pos[-1] + np.cumsum(rng.geometric(_P_NONZERO, size=block))])
        pos = pos[pos <= n_episodes]
        length = rng.geometric(_P_END, size=pos.size)  # T = K + 1
        wg = np.ldexp(1.0, length)
        idx = np.searchsorted(pos, cps, side="right")  # episodes with positive weight so far
        s1 = np.concatenate([[0.0], np.cumsum(wg)])[idx]
        s2 = np.concatenate([[0.0], np.cumsum(wg * wg)])[idx]
        out["ordinary"][r] = s1 / cps
        out["second"][r] = s2 / cps
        # all positive weights have G = 1, so numerator and denominator are the same sum
        out["weighted"][r] = np.divide(s1, s1, out=np.zeros(m), where=s1 > 0)
        first[r] = pos[0] if pos.size else n_episodes + 1
    return OneStateRuns(cps.copy(), out["ordinary"], out["weighted"], out["second"], first)


def one_state_second_moment(max_left_stays):
    r"""Partial sums of :math:`\E_\mu[(\rho_{0:T-1} G)^2]` in Example 5.5 (closed form).

    The episode that goes *left, stay* :math:`k` times and then *left, end* has probability
    :math:`0.45^k \cdot 0.05` under :math:`\mu`, weight :math:`2^{k+1}` and return 1; every
    other episode has :math:`\rho G = 0`. Summing over :math:`k \le K`:

    .. math::

        S_K = \sum_{k=0}^{K} 0.05 \cdot 0.45^k \cdot 4^{k+1}
            = \sum_{k=0}^{K} 0.2 \cdot 1.8^k = \frac{1.8^{K+1} - 1}{4},

    which grows without bound: the second moment, hence the variance, is infinite.

    Parameters
    ----------
    max_left_stays : int or array_like of int
        :math:`K \ge 0`.

    Returns
    -------
    float or ndarray
        :math:`S_K`, same shape as the input.

    Raises
    ------
    ValueError
        If an entry is negative or not an integer.

    Examples
    --------
    >>> one_state_second_moment([0, 1, 2]).round(4).tolist()  # 0.2, 0.2 + 0.36, + 0.648
    [0.2, 0.56, 1.208]

    See :doc:`/book/weighted_is` (infinite variance), eq. (eq-wis-second-moment).
    """
    k = np.asarray(max_left_stays)
    if not np.issubdtype(k.dtype, np.integer) or (k < 0).any():
        raise ValueError(f"max_left_stays: must be integers >= 0, got {max_left_stays!r}")
    out = (1.8 ** (k + 1.0) - 1.0) / 4.0
    return float(out) if out.ndim == 0 else out


# ---------------------------------------------------------------------------------------------
# running per-decision estimates
# ---------------------------------------------------------------------------------------------
def running_per_decision(rewards, log_ratios, checkpoints, gamma=1.0, mask=None):
    r"""Ordinary and weighted per-decision IS estimates after the first ``k`` episodes, for each
    checkpoint ``k``.

    .. math::

        V^{\text{PD}}_k = \frac1k \sum_{i \le k} \sum_t \gamma^t \rho_{i,0:t} r_{i,t}, \qquad
        V^{\text{WPD}}_k = \sum_t \gamma^t
            \frac{\sum_{i \le k} \rho_{i,0:t} r_{i,t}}{\sum_{i \le k} \rho_{i,0:t}},

    with a step contributing 0 while its denominator is 0. Padded steps (``mask == False``) count
    as ratio 1 and reward 0, so a finished episode keeps its final weight in the denominators of
    later steps, exactly as :func:`companion.estimators.weighted_per_decision_is`, which gives the
    same numbers for the full batch.

    Parameters
    ----------
    rewards : array_like, shape (n, T)
        Rewards of ``n`` episodes in the order they were collected.
    log_ratios : array_like, shape (n, T)
        :math:`\log \rho_{i,t}` (``-inf`` allowed).
    checkpoints : array_like of int, shape (m,)
        Episode counts in ``[1, n]``.
    gamma : float in [0, 1], default 1.0
    mask : array_like of bool, shape (n, T), optional

    Returns
    -------
    ordinary, weighted : ndarray, shape (m,)

    Raises
    ------
    ValueError
        On shape mismatch, NaN/inf rewards, NaN/+inf log ratios, a bad ``gamma``, checkpoint
        or ``mask`` (not boolean, wrong shape, or padding not a suffix of each row), or if a
        prefix weight overflows float64.

    Examples
    --------
    >>> rewards = np.array([[1.0, 1.0], [0.0, 1.0]])
    >>> lr = np.log([[2.0, 1.0], [0.5, 0.5]])
    >>> pd, wpd = running_per_decision(rewards, lr, [1, 2])
    >>> pd.tolist(), wpd.round(4).tolist()  # n = 2: (4 + 0.25) / 2 and 0.8 + 1
    ([4.0, 2.125], [2.0, 1.8])

    See chapter 8 (weighted per-decision importance sampling).
    """
    r = as_float_array(rewards, "rewards", ndim=2)
    lr = as_float_array(log_ratios, "log_ratios", ndim=2)
    check_same_shape(r, "rewards", lr, "log_ratios")
    log_w = per_decision_log_weights(lr, mask)  # log rho_{i,0:t}; checks mask and log_ratios
    if mask is not None:
        r = np.where(mask, r, 0.0)
    check_finite(r, "rewards")
    g = float(gamma)
    if not 0.0 <= g <= 1.0:
        raise ValueError(f"gamma: discount must be in [0, 1], got {gamma!r}")
    n, horizon = r.shape
    cps = np.asarray(checkpoints)
    if cps.ndim != 1 or cps.size == 0 or not np.issubdtype(cps.dtype, np.integer):
        raise ValueError(f"checkpoints: expected a non-empty 1-D array of integers, got {checkpoints!r}")
    if cps.min() < 1 or cps.max() > n:
        raise ValueError(f"checkpoints: must lie in [1, n={n}], got {cps.min()}..{cps.max()}")
    with np.errstate(over="ignore"):
        prefix = np.exp(log_w)  # rho_{i,0:t}; padding keeps the last value
    if not np.all(np.isfinite(prefix)):
        raise ValueError("log_ratios: a prefix weight overflows float64")
    disc = g ** np.arange(horizon)
    num = np.cumsum(prefix * r, axis=0)[cps - 1]  # (m, T)
    den = np.cumsum(prefix, axis=0)[cps - 1]
    ordinary = num @ disc / cps
    weighted = np.divide(num, den, out=np.zeros_like(num), where=den > 0) @ disc
    return ordinary, weighted
