r"""Sutton & Barto's Example 5.5: the one-state MDP where ordinary importance sampling has
infinite variance.

One non-terminal state; *left* returns to it with probability 0.9 (reward 0) and ends the episode
with probability 0.1 (reward +1); *right* ends it with reward 0. The target policy always goes
left (:math:`v_\pi = 1`), the behaviour policy picks either action with probability 1/2. The
weight :math:`\rho_{0:T-1} G` then has an infinite second moment under the behaviour policy.

* :func:`sutton_barto_one_state_mdp` and :func:`sutton_barto_one_state_policies` give the example
  as a :class:`~companion.mdp.TabularMDP`, for the exact solvers and the step-by-step sampler of
  :mod:`companion.mdp`.
* :func:`one_state_episodes` samples whole episodes at once from their closed-form distribution,
  and :func:`one_state_running` the running ordinary and weighted estimates of many long runs.
* :func:`one_state_second_moment` gives the partial sums of the diverging second moment.

Used in :doc:`/book/weighted_is` and :doc:`/book/confidence`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._validation import check_checkpoints, check_int
from .mdp import TabularMDP

__all__ = [
    "sutton_barto_one_state_mdp",
    "sutton_barto_one_state_policies",
    "one_state_episodes",
    "OneStateRuns",
    "one_state_running",
    "one_state_second_moment",
]

#: Probabilities of one step under the behaviour policy (left 1/2, right 1/2).
_P_LEFT_STAY = 0.5 * 0.9
_P_LEFT_END = 0.5 * 0.1
_P_END = 1.0 - _P_LEFT_STAY  # 0.55: the episode ends at this step
_P_NONZERO = _P_LEFT_END / _P_END  # 1/11: an ending step is 'left' (weight > 0)


def sutton_barto_one_state_mdp() -> TabularMDP:
    r"""The one-state MDP of Sutton & Barto (2018), Example 5.5 (infinite variance of ordinary IS).

    State 0 is the only non-terminal state, state 1 is terminal. Action 0 (*left*) returns to state 0
    with probability 0.9 (reward 0) and terminates with probability 0.1 (reward +1); action 1
    (*right*) terminates with reward 0. No discount:

    .. math::

        v_\pi(s) = 0.1 + 0.9\, v_\pi(s) = 1 \quad \text{for } \pi = \text{always left}.

    Rewards are given per transition (``R`` has shape (2, 2, 2)) so that sampled returns are 0 or 1
    as in the book, not the expected reward 0.1 per step.

    Returns
    -------
    TabularMDP
        ``gamma = 1``, ``initial = [1, 0]``, ``terminal = [False, True]``.

    Examples
    --------
    >>> mdp = sutton_barto_one_state_mdp()
    >>> mdp.P[0].tolist(), float(mdp.R[0, 0, 1])
    ([[0.9, 0.1], [0.0, 1.0]], 1.0)

    Used in :doc:`/book/weighted_is` and :doc:`/book/confidence`.
    """
    P = np.zeros((2, 2, 2))
    P[0, 0] = [0.9, 0.1]
    P[0, 1] = [0.0, 1.0]
    P[1, :, 1] = 1.0
    R = np.zeros((2, 2, 2))
    R[0, 0, 1] = 1.0
    return TabularMDP(P, R, gamma=1.0, initial=[1.0, 0.0], terminal=[False, True])


def sutton_barto_one_state_policies():
    r"""Target and behaviour policies of Sutton & Barto's Example 5.5.

    .. math::

        \pi(\text{left} \mid s) = 1, \qquad \mu(\text{left} \mid s) = \mu(\text{right} \mid s) = 1/2.

    Returns
    -------
    pi, mu : ndarray, shape (2, 2)
        Rows for the terminal state are set to the same distributions (never used).

    Examples
    --------
    >>> pi, mu = sutton_barto_one_state_policies()
    >>> pi[0].tolist(), mu[0].tolist()
    ([1.0, 0.0], [0.5, 0.5])

    Used in :doc:`/book/weighted_is` and :doc:`/book/confidence`.
    """
    pi = np.array([[1.0, 0.0], [1.0, 0.0]])
    mu = np.full((2, 2), 0.5)
    return pi, mu


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
    n = check_int(n, "n")
    rng = np.random.default_rng(rng)
    length = rng.geometric(_P_END, size=n)  # T = K + 1 >= 1
    ends_left = rng.random(n) < _P_NONZERO
    G = ends_left.astype(np.float64)
    w = np.where(ends_left, np.ldexp(1.0, length), 0.0)
    return w, G, length


@dataclass(frozen=True)
class OneStateRuns:
    """Running estimates of Example 5.5 at chosen episode counts (see :func:`one_state_running`).

    Used in :doc:`/book/weighted_is`.

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
    n_runs = check_int(n_runs, "n_runs")
    n_episodes = check_int(n_episodes, "n_episodes")
    cps = check_checkpoints(checkpoints, n_episodes, "n_episodes")
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
