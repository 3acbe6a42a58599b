r"""Weighted importance sampling over episodes: running estimates and exact finite-n moments.

* :func:`running_estimates` turns a sequence of episodes (weights :math:`w_i` and returns
  :math:`G_i`) into the ordinary and weighted estimates after every episode, the quantities that
  Sutton & Barto (2018) plot in Figures 5.3 and 5.4; :func:`running_per_decision` does the same
  for the per-decision estimators.
* :func:`weighted_is_exact` computes the exact mean, bias and mean squared error of the weighted
  estimator for ``n`` draws from a finite distribution (by enumerating every possible sample), and
  :func:`weighted_is_bias_limit` the constant :math:`c` in :math:`\text{bias} \approx c / n`.

Sutton & Barto's Example 5.5, where ordinary importance sampling has infinite variance, is in
:mod:`companion.one_state`; their Example 5.4 in :mod:`companion.blackjack`.

Convention for 0/0. Before the first episode with a positive weight the weighted estimate is 0/0.
Like Sutton & Barto's incremental algorithm (section 5.6), which starts from :math:`V = 0` and
changes it only when a weight is positive, we report 0 there. The estimators of
:mod:`companion.estimators` raise instead; here a value is needed at every episode count.

Used in :doc:`/book/weighted_is` and the ``weighted_is`` assignment.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from math import comb

import numpy as np
from scipy.special import gammaln

from ._validation import (
    as_float_array,
    check_checkpoints,
    check_distribution,
    check_finite,
    check_gamma,
    check_int,
    check_same_shape,
    check_support,
    finite_array,
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
    "running_per_decision",
]

#: Largest number of outcomes-count vectors :func:`weighted_is_exact` will enumerate.
_MAX_COMPOSITIONS = 5_000_000


# ---------------------------------------------------------------------------------------------
# running estimates
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunningEstimates:
    """Ordinary and weighted importance sampling estimates after each of ``n`` episodes.

    Used in :doc:`/book/weighted_is` and the ``weighted_is`` assignment.

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

    Used in :doc:`/book/weighted_is` and the ``weighted_is`` assignment.
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

    Used in :doc:`/book/weighted_is`.

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
    fv = finite_array(f, "f", ndim=1)
    out = [fv]
    for arr, name in ((p, "p"), (q, "q")):
        a = finite_array(arr, name, ndim=1)
        check_same_shape(fv, "f", a, name)
        out.append(check_distribution(a, name))
    fv, pv, qv = out
    check_support(pv, qv, "p", "q", axes=("outcome",))
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
    n = check_int(n, "n")
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

    Used in :doc:`/book/weighted_is`.
    """
    r = as_float_array(rewards, "rewards", ndim=2)
    lr = as_float_array(log_ratios, "log_ratios", ndim=2)
    check_same_shape(r, "rewards", lr, "log_ratios")
    log_w = per_decision_log_weights(lr, mask)  # log rho_{i,0:t}; checks mask and log_ratios
    if mask is not None:
        r = np.where(mask, r, 0.0)
    check_finite(r, "rewards")
    g = check_gamma(gamma)
    n, horizon = r.shape
    cps = check_checkpoints(checkpoints, n, "n")
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
