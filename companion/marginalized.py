r"""Marginalized importance sampling: reweighting states instead of histories.

Per-decision importance sampling weights the reward of step :math:`t` by the product of all the
action ratios before it, :math:`\rho_{0:t}`, whose variance grows exponentially with :math:`t`.
In a Markov decision process the expected reward of step :math:`t` depends on the history only
through the state :math:`s_t`, so one ratio of state distributions can replace the product:

.. math::

    \hat v_{\text{MIS}} = \frac1n \sum_{i=1}^n \sum_{t=0}^{T-1} \gamma^t\,
    w_t(s_{i,t})\, \rho_{i,t}\, r_{i,t}, \qquad
    w_t(s) = \frac{d^\pi_t(s)}{d^\mu_t(s)}, \quad d^\pi_t(s) = \Pr_\pi(s_t = s).

The functions, in the order of the chapter:

* :func:`state_distribution_ratios`: the exact :math:`w_t(s)` of a tabular MDP.
* :func:`marginalized_is`: the estimator above, given the ratios along each trajectory.
* :func:`per_decision_variance`, :func:`marginalized_variance`: the exact variance of one
  trajectory's term of per-decision and of marginalized importance sampling (exact ratios).
* :func:`cramer_rao_bound`: :math:`n` times the smallest variance an unbiased estimator can have
  when the transitions and rewards are unknown (Jiang & Li's bound, for a Markov state), and
  :func:`doubly_robust_variance`: the variance of the doubly robust estimator with a perfect
  model, which equals the bound in a tree and grows exponentially where states recur.
* :func:`history_mdp`: the same process with the whole history as its state (a tree).
* :func:`fit_tabular_model`, :func:`tabular_model_values`, :func:`tabular_state_ratios`,
  :func:`tabular_marginalized_is`: the tabular estimator, which estimates the per-step model from
  the behaviour data, pushes :math:`\hat d^\pi_t` forward through it and plugs the estimated
  ratios into :func:`marginalized_is`. Its estimate equals the value of the target policy in the
  estimated model (a model-based plug-in).

Conventions are those of :mod:`companion.mdp` (policies are ``(S, A)`` arrays, time starts at
0, a finite horizon ``H`` means the actions :math:`a_0, \dots, a_{H-1}`, entering a terminal
state ends the episode) and of :mod:`companion.estimators` (batches of shape
``(n_trajectories, horizon)``, padding is a suffix marked ``False`` in ``mask``).

Used in :doc:`/book/marginalized_is` and the ``off_policy_evaluation`` assignment.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._validation import (
    LOG_FLOAT_MAX,
    as_float_array,
    check_gamma,
    check_instance,
    check_mask,
    check_same_shape,
    first_index,
    raise_nonfinite,
    where,
)
from .estimators import Estimate
from .mdp import TabularMDP, Trajectories, policy_quantities

__all__ = [
    "state_distribution_ratios",
    "marginalized_is",
    "per_decision_variance",
    "marginalized_variance",
    "cramer_rao_bound",
    "doubly_robust_variance",
    "history_mdp",
    "TabularModel",
    "fit_tabular_model",
    "tabular_model_values",
    "tabular_state_ratios",
    "tabular_marginalized_is",
]

#: Largest number of states :func:`history_mdp` builds (dense arrays of S x A x S floats).
MAX_TREE_STATES = 4096

_ROW_TOL = 1e-6  # rows of a policy must sum to 1 within this (as in companion.mdp)


# ---------------------------------------------------------------------------------------------
# input checks (messages start with the argument's name, as in companion._validation)


def _check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer, float, np.floating)):
        raise ValueError(f"{name}: must be a positive integer, got {value!r}")
    if not (np.isfinite(value) and int(value) == value and value >= 1):
        raise ValueError(f"{name}: must be a positive integer, got {value!r}")
    return int(value)


def _check_policy(x, name: str, n_states: int | None = None, n_actions: int | None = None):
    """A policy as a float array (S, A): finite, entries in [0, 1], rows summing to 1."""
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}: cannot be converted to a float array ({err})") from None
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array of shape (n_states, n_actions), "
                         f"got shape {arr.shape}")
    if n_states is not None and arr.shape != (n_states, n_actions):
        raise ValueError(f"{name}: expected shape (n_states, n_actions) = "
                         f"{(n_states, n_actions)}, got {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name}: empty policy (shape {arr.shape})")
    if not np.all(np.isfinite(arr)):
        s, a = first_index(~np.isfinite(arr))
        raise ValueError(f"{name}: NaN or inf at state {s}, action {a}")
    outside = (arr < 0) | (arr > 1)
    if outside.any():
        s, a = first_index(outside)
        raise ValueError(f"{name}: probability {float(arr[s, a]):.6g} at state {s}, action {a} is "
                         "outside [0, 1]")
    sums = arr.sum(axis=1)
    off = np.abs(sums - 1.0) > _ROW_TOL
    if off.any():
        s = int(np.argmax(off))
        raise ValueError(f"{name}: row {s} sums to {sums[s]:.6g}, not 1")
    return arr


def _check_action_support(pi, mu, live) -> None:
    """Raise if ``mu(a|s) = 0 < pi(a|s)`` at a non-terminal state (names state and action)."""
    bad = (mu == 0) & (pi > 0) & live[:, None]
    if bad.any():
        s, a = first_index(bad)
        raise ValueError(f"mu: behaviour probability 0 at state {s}, action {a} where pi is "
                         f"{pi[s, a]:.6g} > 0; the ratio pi/mu is undefined (no support)")


def _problem(mdp, pi, mu, horizon, action_support=True):
    """Validated (mdp, pi, mu, horizon), with the support of the action ratios checked."""
    mdp = check_instance(mdp, TabularMDP, "mdp")
    S, A = mdp.n_states, mdp.n_actions
    pi = _check_policy(pi, "pi", S, A)
    mu = _check_policy(mu, "mu", S, A)
    H = _check_positive_int(horizon, "horizon")
    if action_support:
        _check_action_support(pi, mu, ~mdp.terminal)
    return mdp, pi, mu, H


def _ratio_table(pi, mu):
    """``pi / mu`` with 0 where ``pi`` is 0 (support has been checked)."""
    return np.divide(pi, mu, out=np.zeros_like(pi), where=pi > 0)


def _rewards_sas(mdp) -> np.ndarray:
    """Rewards as an (S, A, S) array ``R[s, a, s']`` (broadcast if given per (s, a))."""
    R = mdp.R
    return np.broadcast_to(R[:, :, None], mdp.P.shape) if R.ndim == 2 else R


def _reward_moments(mdp):
    """``P * R`` (S, A, S) and the first two moments of the reward given (s, a), (S, A) each."""
    PR = mdp.P * _rewards_sas(mdp)
    return PR, PR.sum(axis=2), (PR * _rewards_sas(mdp)).sum(axis=2)


def _live(mdp, values):
    """``values`` with the entries of terminal states set to 0 (an ended episode earns nothing)."""
    return np.where(mdp.terminal, 0.0, values)


# ---------------------------------------------------------------------------------------------
# exact ratios and the estimator


def state_distribution_ratios(mdp, pi, mu, horizon):
    r"""Exact ratios of the state distributions of the target and the behaviour policy.

    .. math::

        w_t(s) = \frac{d^\pi_t(s)}{d^\mu_t(s)}, \qquad
        d^\pi_0 = d_0, \quad
        d^\pi_{t+1}(s') = \sum_{s, a} d^\pi_t(s)\, \pi(a \mid s)\, P(s' \mid s, a),

    for :math:`t = 0, \dots, H - 1`, with :math:`d_0` = ``mdp.initial`` (so :math:`w_0 = 1`
    wherever :math:`d_0 > 0`). Terminal states end the episode and carry no mass, so
    :math:`d^\pi_t` is the probability of being in :math:`s` at time :math:`t` with the episode
    still running (the ``occupancy`` of :func:`companion.mdp.policy_quantities`). Where both
    distributions are 0 the ratio is set to 0; it is never used, since the behaviour never
    visits that state at that step. Only the state distributions need to overlap, not the
    action probabilities; if ``mu`` is positive wherever ``pi`` is, they always do.

    Parameters
    ----------
    mdp : TabularMDP
    pi, mu : array_like, shape (S, A)
        Target and behaviour policies.
    horizon : int
        Number of steps ``H`` (>= 1).

    Returns
    -------
    ndarray, shape (H, S)
        ``w[t, s]``.

    Raises
    ------
    ValueError
        If ``mdp`` is not a :class:`~companion.mdp.TabularMDP`, a policy is not an ``(S, A)``
        array of distributions, ``horizon`` is not a positive integer, or
        :math:`d^\mu_t(s) = 0 < d^\pi_t(s)` (the message names the step and the state).

    Examples
    --------
    >>> import numpy as np
    >>> from companion.mdp import TabularMDP
    >>> P = np.zeros((2, 2, 2)); P[:, 0, 0] = 1.0; P[:, 1, 1] = 1.0   # action a goes to state a
    >>> mdp = TabularMDP(P, np.zeros((2, 2)), gamma=1.0, initial=[1.0, 0.0])
    >>> pi, mu = np.full((2, 2), [0.2, 0.8]), np.full((2, 2), 0.5)
    >>> state_distribution_ratios(mdp, pi, mu, horizon=2)           # d^pi_1 = (0.2, 0.8)
    array([[1. , 0. ],
           [0.4, 1.6]])

    Used in :doc:`/book/marginalized_is` and the ``off_policy_evaluation`` assignment.
    """
    mdp, pi, mu, H = _problem(mdp, pi, mu, horizon, action_support=False)
    d_pi = policy_quantities(mdp, pi, H).occupancy
    d_mu = policy_quantities(mdp, mu, H).occupancy
    bad = (d_mu == 0) & (d_pi > 0)
    if bad.any():
        t, s = first_index(bad)
        raise ValueError(
            f"mu: d^mu_t(s) = 0 < d^pi_t(s) = {d_pi[t, s]:.6g} at step {t}, state {s}: the "
            "behaviour policy never reaches a state that the target reaches, so the state "
            "ratio is undefined (no support)")
    return np.divide(d_pi, d_mu, out=np.zeros_like(d_pi), where=d_mu > 0)


def marginalized_is(rewards, state_ratios, log_ratios, gamma=1.0, mask=None) -> Estimate:
    r"""Marginalized importance sampling estimate of :math:`v^\pi` (Liu et al. 2018; Xie et al. 2019).

    .. math::

        \hat v_{\text{MIS}} = \frac1n \sum_{i=1}^{n} \sum_{t=0}^{T_i-1} \gamma^t\,
        w_t(s_{i,t})\, \rho_{i,t}\, r_{i,t}, \qquad
        w_t(s) = \frac{d^\pi_t(s)}{d^\mu_t(s)}, \quad
        \rho_{i,t} = \frac{\pi(a_{i,t} \mid s_{i,t})}{\mu(a_{i,t} \mid s_{i,t})} .

    One state ratio and one action ratio per step replace the prefix product
    :math:`\rho_{i,0:t}` of :func:`companion.estimators.per_decision_is`. With exact ratios
    (:func:`state_distribution_ratios`) it is unbiased: conditioning on :math:`s_t`,
    :math:`\mathbb{E}_\mu[w_t(s_t) \rho_t r_t] = \sum_s d^\mu_t(s) w_t(s) \sum_a \pi(a|s)\,
    r(s, a) = \mathbb{E}_\pi[r_t]`.

    Parameters
    ----------
    rewards : array_like, shape (n_trajectories, horizon)
        Rewards :math:`r_{i,t}` of trajectories drawn with the behaviour policy :math:`\mu`.
    state_ratios : array_like, shape (n_trajectories, horizon)
        :math:`w_t(s_{i,t}) \ge 0` along each trajectory, e.g. ``w[np.arange(T), states]`` with
        ``w`` from :func:`state_distribution_ratios`.
    log_ratios : array_like, shape (n_trajectories, horizon)
        :math:`\log \rho_{i,t}`; ``-inf`` allowed (ratio 0).
    gamma : float in [0, 1], default 1.0
        Discount :math:`\gamma`.
    mask : array_like of bool, same shape, optional
        ``True`` on real steps; padding (a suffix of each row) contributes nothing, and the
        values of the three arrays there are ignored (they may hold anything, including NaN).

    Returns
    -------
    Estimate
        ``terms`` are :math:`\sum_t \gamma^t w_t(s_{i,t}) \rho_{i,t} r_{i,t}`; ``stderr`` is
        their sample sd over :math:`\sqrt n` (valid for ratios that do not depend on the batch).

    Raises
    ------
    ValueError
        On a shape mismatch, an empty batch, ``gamma`` outside [0, 1], a bad ``mask``, or at a
        real step: NaN or inf in ``rewards`` or ``state_ratios``, a negative state ratio, NaN or
        +inf in ``log_ratios``, or a ratio :math:`\rho` that overflows float64 (each names the
        trajectory and the step).

    Examples
    --------
    >>> import numpy as np
    >>> rewards = np.array([[1.0, 1.0], [0.0, 1.0]])
    >>> w = np.array([[1.0, 2.0], [1.0, 0.5]])
    >>> lr = np.log([[2.0, 1.0], [0.5, 0.5]])
    >>> e = marginalized_is(rewards, w, lr)      # terms 1*2*1 + 2*1*1 and 0 + 0.5*0.5*1
    >>> e.terms.tolist(), e.estimate
    ([4.0, 0.25], 2.125)

    Used in :doc:`/book/marginalized_is` and the ``off_policy_evaluation`` assignment.
    """
    r = as_float_array(rewards, "rewards", ndim=2)
    w = as_float_array(state_ratios, "state_ratios", ndim=2)
    lr = as_float_array(log_ratios, "log_ratios", ndim=2)
    check_same_shape(r, "rewards", w, "state_ratios")
    check_same_shape(r, "rewards", lr, "log_ratios")
    g = check_gamma(gamma)
    m = None if mask is None else check_mask(mask, r.shape)
    if m is not None:
        r, w, lr = (np.where(m, x, 0.0) for x in (r, w, lr))
    raise_nonfinite(r, "rewards")
    raise_nonfinite(w, "state_ratios")
    raise_nonfinite(lr, "log_ratios", allow_neg_inf=True)
    if (w < 0).any():
        idx = first_index(w < 0)
        raise ValueError(f"state_ratios: ratios of probabilities must be >= 0, got {float(w[idx]):.6g} "
                         f"at {where(idx, 2)}")
    if lr.max() > LOG_FLOAT_MAX:
        idx = first_index(lr > LOG_FLOAT_MAX)
        raise ValueError(f"log_ratios: ratio exp({lr[idx]:.6g}) overflows float64 at "
                         f"{where(idx, 2)}")
    discount = g ** np.arange(r.shape[1], dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        terms = (w * np.exp(lr) * r) @ discount   # sum_t gamma^t w_t rho_t r_t
    if not np.all(np.isfinite(terms)):
        i = int(np.flatnonzero(~np.isfinite(terms))[0])
        raise ValueError(f"state_ratios: the weighted rewards of trajectory {i} overflow float64")
    n = r.shape[0]
    se = float(np.std(terms, ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    return Estimate(float(terms.mean()), se, n, terms, "marginalized_is")


# ---------------------------------------------------------------------------------------------
# exact variances and the bound


def per_decision_variance(mdp, pi, mu, horizon) -> float:
    r"""Exact variance of one trajectory's per-decision importance sampling term under :math:`\mu`.

    The term :math:`Y_0 = \sum_{t<H} \gamma^t \rho_{0:t} r_t` obeys
    :math:`Y_t = \rho_t (r_t + \gamma Y_{t+1})`, :math:`Y_H = 0`. Its conditional moments given
    :math:`s_t = s` follow backwards:

    .. math::

        M^{(1)}_t(s) = \sum_a \pi(a|s) \sum_{s'} P(s'|s,a) \bigl(r + \gamma M^{(1)}_{t+1}(s')\bigr)
        = V^\pi_t(s), \\
        M^{(2)}_t(s) = \sum_a \frac{\pi(a|s)^2}{\mu(a|s)} \sum_{s'} P(s'|s,a)
        \bigl(r^2 + 2 \gamma r M^{(1)}_{t+1}(s') + \gamma^2 M^{(2)}_{t+1}(s')\bigr),

    with :math:`r = r(s, a, s')`, both zero on terminal states, and
    :math:`\operatorname{Var} = \sum_s d_0(s) M^{(2)}_0(s) - J(\pi)^2`. The estimate from
    :math:`n` trajectories has variance ``per_decision_variance(...) / n``. The second moment
    grows like :math:`(\gamma^2 \lambda)^H`, :math:`\lambda` the largest eigenvalue of the
    matrix :math:`K(s, s') = \sum_a \pi(a|s)^2 / \mu(a|s)\, P(s'|s,a)`.

    Parameters
    ----------
    mdp : TabularMDP
        Its ``gamma`` is the discount.
    pi, mu : array_like, shape (S, A)
        Target and behaviour policies.
    horizon : int
        Number of steps ``H`` (>= 1).

    Returns
    -------
    float

    Raises
    ------
    ValueError
        As :func:`state_distribution_ratios`, except that only the support of the actions is
        needed: ``mu`` must be positive wherever ``pi`` is, at every non-terminal state.

    Examples
    --------
    >>> import numpy as np
    >>> from companion.mdp import TabularMDP
    >>> bandit = TabularMDP(np.ones((1, 2, 1)), [[1.0, 0.0]], gamma=1.0, initial=[1.0])
    >>> pi, mu = np.array([[0.6, 0.4]]), np.array([[0.5, 0.5]])
    >>> round(per_decision_variance(bandit, pi, mu, horizon=1), 6)   # E[rho^2 r^2] - 0.6^2
    0.36

    Used in :doc:`/book/marginalized_is`.
    """
    mdp, pi, mu, H = _problem(mdp, pi, mu, horizon)
    g, P = mdp.gamma, mdp.P
    PR, r1, r2 = _reward_moments(mdp)                      # sum_s' P R, E[r | s, a], E[r^2 | s, a]
    square = pi * _ratio_table(pi, mu)                     # pi^2 / mu
    m1 = m2 = np.zeros(mdp.n_states)
    for _ in range(H):                                     # t = H - 1, ..., 0
        n1, n2 = _live(mdp, m1), _live(mdp, m2)            # moments at s_{t+1}
        m2 = np.sum(square * (r2 + 2 * g * PR @ n1 + g**2 * P @ n2), axis=1)
        m1 = np.sum(pi * (r1 + g * P @ n1), axis=1)
    mean = float(mdp.initial @ _live(mdp, m1))
    return max(float(mdp.initial @ _live(mdp, m2)) - mean**2, 0.0)


def marginalized_variance(mdp, pi, mu, horizon) -> float:
    r"""Exact variance of one trajectory's marginalized importance sampling term (exact ratios).

    The term :math:`Z = \sum_{t<H} c_t(s_t, a_t, s_{t+1})` with
    :math:`c_t(s, a, s') = \gamma^t w_t(s) \frac{\pi(a|s)}{\mu(a|s)} r(s, a, s')` and the exact
    :math:`w_t` of :func:`state_distribution_ratios` is a sum of costs along the behaviour's
    Markov chain, so its conditional moments given :math:`s_t = s` follow backwards:

    .. math::

        m^{(1)}_t(s) = \sum_a \mu(a|s) \sum_{s'} P(s'|s,a) \bigl(c_t + m^{(1)}_{t+1}(s')\bigr),
        \\
        m^{(2)}_t(s) = \sum_a \mu(a|s) \sum_{s'} P(s'|s,a)
        \bigl(c_t^2 + 2 c_t\, m^{(1)}_{t+1}(s') + m^{(2)}_{t+1}(s')\bigr),

    both zero on terminal states, and :math:`\operatorname{Var} = \sum_s d_0(s) m^{(2)}_0(s) -
    J(\pi)^2`. If the ratios are bounded the terms are too, and the variance grows at most like
    :math:`H^2`.

    Parameters
    ----------
    mdp : TabularMDP
        Its ``gamma`` is the discount.
    pi, mu : array_like, shape (S, A)
        Target and behaviour policies.
    horizon : int
        Number of steps ``H`` (>= 1).

    Returns
    -------
    float

    Raises
    ------
    ValueError
        As :func:`state_distribution_ratios`, and if ``mu`` is 0 where ``pi`` is positive at a
        non-terminal state (names the state and the action).

    Examples
    --------
    >>> import numpy as np
    >>> from companion.mdp import TabularMDP
    >>> bandit = TabularMDP(np.ones((1, 2, 1)), [[1.0, 0.0]], gamma=1.0, initial=[1.0])
    >>> pi, mu = np.array([[0.6, 0.4]]), np.array([[0.5, 0.5]])
    >>> round(marginalized_variance(bandit, pi, mu, horizon=10), 6)   # 10 independent steps
    3.6

    Used in :doc:`/book/marginalized_is`.
    """
    mdp, pi, mu, H = _problem(mdp, pi, mu, horizon)
    w = state_distribution_ratios(mdp, pi, mu, H)
    P = mdp.P
    PR, r1, r2 = _reward_moments(mdp)
    rho = _ratio_table(pi, mu)
    m1 = m2 = np.zeros(mdp.n_states)
    for t in range(H - 1, -1, -1):
        k = mdp.gamma**t * w[t][:, None] * rho              # c_t = k_t(s, a) r(s, a, s')
        n1, n2 = _live(mdp, m1), _live(mdp, m2)            # moments at s_{t+1}
        m2 = np.sum(mu * (k**2 * r2 + 2 * k * (PR @ n1) + P @ n2), axis=1)
        m1 = np.sum(mu * (k * r1 + P @ n1), axis=1)
    mean = float(mdp.initial @ _live(mdp, m1))
    return max(float(mdp.initial @ _live(mdp, m2)) - mean**2, 0.0)


def _efficiency_variance(mdp, pi, mu, H, mass):
    r"""``Var(V_0(s_0)) + sum_t gamma^(2t) sum_s mass[t, s] sum_a mu rho^2 Var(r + gamma V_{t+1})``."""
    V = policy_quantities(mdp, pi, H).V                    # (H + 1, S), 0 on terminal states
    P, g = mdp.P, mdp.gamma
    PR, r1, r2 = _reward_moments(mdp)
    rho2 = _ratio_table(pi, mu) ** 2
    total = float(mdp.initial @ V[0] ** 2 - (mdp.initial @ V[0]) ** 2)
    for t in range(H):                                     # y = r + gamma V_{t+1}(s')
        mean = r1 + g * P @ V[t + 1]                       # E[y | s, a] = Q_t(s, a)
        second = r2 + 2 * g * PR @ V[t + 1] + g**2 * P @ V[t + 1] ** 2
        var = np.maximum(second - mean**2, 0.0)
        total += g ** (2 * t) * np.sum(mass[t][:, None] * mu * rho2 * var)
    return float(total)


def cramer_rao_bound(mdp, pi, mu, horizon) -> float:
    r""":math:`n` times the Cramér-Rao bound for estimating :math:`J(\pi)` from :math:`n` episodes.

    When the initial distribution, the transitions and the rewards of every step are unknown
    (any tabular MDP whose dynamics may change with :math:`t`), every estimator from :math:`n`
    episodes of :math:`\mu` that is unbiased whatever they are has variance at least
    :math:`B / n`, with

    .. math::

        B = \operatorname{Var}_{s_0 \sim d_0}\bigl(V^\pi_0(s_0)\bigr)
        + \sum_{t=0}^{H-1} \gamma^{2t}\, \mathbb{E}_\mu\Bigl[w_t(s_t)^2 \rho_t^2\,
        \operatorname{Var}\bigl(r_t + \gamma V^\pi_{t+1}(s_{t+1}) \bigm| s_t, a_t\bigr)\Bigr],

    :math:`w_t` the state ratios of :func:`state_distribution_ratios` and :math:`V^\pi_t` the
    target's value with :math:`H - t` steps to go. :math:`B` is the variance of the estimator's
    best possible influence function, :math:`V^\pi_0(s_0) + \sum_t \gamma^t w_t \rho_t
    (r_t + \gamma V^\pi_{t+1}(s_{t+1}) - Q^\pi_t(s_t, a_t))`, whose terms are uncorrelated. In a
    tree, where the state is the history, :math:`w_t(s_t) \rho_t = \rho_{0:t}` and :math:`B` is
    Jiang and Li's bound, exponential in :math:`H`; with recurring states it grows
    polynomially. An estimator that knows the dynamics are the same at every step can do
    better than :math:`B`, and so can one that is given the dynamics: marginalized importance
    sampling with the exact ratios of :func:`state_distribution_ratios` may fall below it.
    Since :math:`\mathbb{E}_\mu[\rho_{0:t-1}^2 ; s_t = s] \ge d^\pi_t(s)^2 / d^\mu_t(s)`
    (Cauchy-Schwarz), :math:`B` is never above :func:`doubly_robust_variance`, with equality in
    a tree.

    Parameters
    ----------
    mdp : TabularMDP
        Its ``gamma`` is the discount; rewards are the deterministic ``R[s, a]`` or
        ``R[s, a, s']``.
    pi, mu : array_like, shape (S, A)
        Target and behaviour policies.
    horizon : int
        Number of steps ``H`` (>= 1).

    Returns
    -------
    float
        :math:`B`, in units of variance times episodes.

    Raises
    ------
    ValueError
        As :func:`state_distribution_ratios`, and if ``mu`` is 0 where ``pi`` is positive at a
        non-terminal state (names the state and the action).

    Examples
    --------
    >>> import numpy as np
    >>> from companion.mdp import TabularMDP
    >>> P = np.full((2, 2, 2), 0.5)                    # a fair coin decides the next state...
    >>> R = np.zeros((2, 2, 2)); R[:, :, 1] = 1.0      # ... and the reward: 1 if it is state 1
    >>> coin = TabularMDP(P, R, gamma=1.0, initial=[1.0, 0.0])
    >>> pi, mu = np.full((2, 2), [0.6, 0.4]), np.full((2, 2), 0.5)
    >>> round(cramer_rao_bound(coin, pi, mu, horizon=1), 6)   # Var(r | s, a) (1 + chi^2)
    0.26

    Used in :doc:`/book/marginalized_is`.
    """
    mdp, pi, mu, H = _problem(mdp, pi, mu, horizon)
    w = state_distribution_ratios(mdp, pi, mu, H)
    d_mu = policy_quantities(mdp, mu, H).occupancy
    return _efficiency_variance(mdp, pi, mu, H, w**2 * d_mu)   # E_mu[w_t^2 ; s_t = s]


def doubly_robust_variance(mdp, pi, mu, horizon) -> float:
    r"""Exact variance of one trajectory's doubly robust term with the perfect model :math:`Q^\pi`.

    With :math:`\hat Q = Q^\pi_t` and :math:`\hat V = V^\pi_t` the doubly robust term of
    :func:`companion.estimators.doubly_robust` telescopes to
    :math:`V^\pi_0(s_0) + \sum_t \gamma^t \rho_{0:t} (r_t + \gamma V^\pi_{t+1}(s_{t+1}) -
    Q^\pi_t(s_t, a_t))`, a sum of uncorrelated terms, so

    .. math::

        \operatorname{Var} = \operatorname{Var}_{d_0}\bigl(V^\pi_0(s_0)\bigr)
        + \sum_{t=0}^{H-1} \gamma^{2t} \sum_s m_t(s) \sum_a \mu(a|s)\, \rho(s, a)^2\,
        \operatorname{Var}\bigl(r_t + \gamma V^\pi_{t+1}(s_{t+1}) \bigm| s, a\bigr),

    with :math:`m_t(s) = \mathbb{E}_\mu[\rho_{0:t-1}^2 ; s_t = s]`, :math:`m_0 = d_0`,
    :math:`m_{t+1}(s') = \sum_s m_t(s) \sum_a \frac{\pi(a|s)^2}{\mu(a|s)} P(s'|s,a)` (the
    recursion of :func:`companion.variance.log_weight_moment`). It is :func:`cramer_rao_bound`
    with :math:`m_t(s)` in place of :math:`w_t(s)^2 d^\mu_t(s)`: the same in a tree, larger
    (and exponential in :math:`H`) where states recur. Even a perfect model leaves the
    prefix products in the doubly robust estimator.

    Parameters
    ----------
    mdp : TabularMDP
        Its ``gamma`` is the discount.
    pi, mu : array_like, shape (S, A)
        Target and behaviour policies.
    horizon : int
        Number of steps ``H`` (>= 1).

    Returns
    -------
    float

    Raises
    ------
    ValueError
        As :func:`per_decision_variance`.

    Examples
    --------
    >>> import numpy as np
    >>> from companion.mdp import TabularMDP
    >>> P = np.full((2, 2, 2), 0.5)
    >>> R = np.zeros((2, 2, 2)); R[:, :, 1] = 1.0
    >>> coin = TabularMDP(P, R, gamma=1.0, initial=[1.0, 0.0])
    >>> pi, mu = np.full((2, 2), [0.6, 0.4]), np.full((2, 2), 0.5)
    >>> round(doubly_robust_variance(coin, pi, mu, horizon=2), 6)   # 0.25 (1.04 + 1.04^2)
    0.5304

    Used in :doc:`/book/marginalized_is`.
    """
    mdp, pi, mu, H = _problem(mdp, pi, mu, horizon)
    K = np.einsum("sa,sat->st", pi * _ratio_table(pi, mu), mdp.P)
    K[mdp.terminal, :] = 0.0
    K[:, mdp.terminal] = 0.0
    mass = np.empty((H, mdp.n_states))
    mass[0] = mdp.initial
    for t in range(1, H):
        mass[t] = mass[t - 1] @ K                          # E_mu[rho_{0:t-1}^2 ; s_t = s]
    return _efficiency_variance(mdp, pi, mu, H, mass)


# ---------------------------------------------------------------------------------------------
# the tree


def history_mdp(mdp, depth):
    r"""The MDP whose state is the whole history of ``mdp``: a tree, where no state recurs.

    A state of the new MDP is a history :math:`h_t = (s_0, a_0, s_1, \dots, a_{t-1}, s_t)` of
    ``mdp`` with :math:`t <` ``depth`` (one per path of positive probability); action :math:`a`
    leads from :math:`h_t` to :math:`(h_t, a, s')` with probability :math:`P(s' \mid s_t, a)` and
    reward :math:`r(s_t, a, s')`. After ``depth`` actions, or on entering a terminal state
    :math:`s'` of ``mdp``, the episode enters a terminal state that records only :math:`s'`.
    Every policy of ``mdp`` acts the same way in both MDPs (``pi[origin]``), so the returns
    have the same distribution; but since each history has one path to it,

    .. math::

        d^\pi_t(h_t) = d_0(s_0) \prod_{k<t} \pi(a_k \mid s_k) P(s_{k+1} \mid s_k, a_k),
        \qquad w_t(h_t) = \rho_{0:t-1}, \qquad w_t(h_t)\, \rho_t = \rho_{0:t},

    and marginalized importance sampling *is* per-decision importance sampling.

    Parameters
    ----------
    mdp : TabularMDP
        Keep it small: the tree has up to :math:`\sum_{t<\text{depth}} S (S A)^t` states.
    depth : int
        Number of decisions (>= 1).

    Returns
    -------
    tree : TabularMDP
        States ``0 .. N - 1`` are histories in order of length (state 0 is the first
        history), followed by ``mdp.n_states`` terminal states; same ``gamma``.
    origin : ndarray of int, shape (tree.n_states,)
        The state of ``mdp`` that each state of the tree ends in (:math:`s_t` of the history,
        :math:`s'` for a terminal state). Lift a policy with ``pi[origin]``.

    Raises
    ------
    ValueError
        If ``mdp`` is not a :class:`~companion.mdp.TabularMDP`, ``depth`` is not a positive
        integer, or the tree would have more than ``MAX_TREE_STATES`` states (its arrays are
        dense).

    Examples
    --------
    >>> import numpy as np
    >>> from companion.mdp import TabularMDP
    >>> coin = TabularMDP(np.full((2, 2, 2), 0.5), np.zeros((2, 2)), gamma=1.0, initial=[1, 0])
    >>> tree, origin = history_mdp(coin, depth=3)     # 1 + 4 + 16 histories, 2 terminal states
    >>> tree.n_states, origin[:5].tolist(), int(tree.terminal.sum())
    (23, [0, 0, 1, 0, 1], 2)

    Used in :doc:`/book/marginalized_is`.
    """
    mdp = check_instance(mdp, TabularMDP, "mdp")
    D = _check_positive_int(depth, "depth")
    S, A = mdp.n_states, mdp.n_actions
    R3 = _rewards_sas(mdp)
    levels = [[(s,) for s in np.flatnonzero(mdp.initial > 0)]]   # histories (s_0, a_0, ..., s_t)
    for _ in range(D - 1):
        levels.append([h + (a, int(s2)) for h in levels[-1] for a in range(A)
                       for s2 in np.flatnonzero(mdp.P[h[-1], a] > 0) if not mdp.terminal[s2]])
        if sum(map(len, levels)) + S > MAX_TREE_STATES:
            raise ValueError(f"depth: the history tree of depth {D} has more than "
                             f"{MAX_TREE_STATES} states (its transition array is dense)")
    histories = [h for level in levels for h in level]
    index = {h: k for k, h in enumerate(histories)}
    N = len(histories)
    P, R = np.zeros((N + S, A, N + S)), np.zeros((N + S, A, N + S))
    for k, h in enumerate(histories):
        s, last_level = h[-1], len(h) == 2 * D - 1
        for a in range(A):
            for s2 in np.flatnonzero(mdp.P[s, a] > 0):
                child = h + (a, int(s2))
                j = N + s2 if (last_level or mdp.terminal[s2]) else index[child]
                P[k, a, j] += mdp.P[s, a, s2]
                R[k, a, j] = R3[s, a, s2]
    P[N + np.arange(S), :, N + np.arange(S)] = 1.0
    origin = np.array([h[-1] for h in histories] + list(range(S)))
    terminal = np.arange(N + S) >= N
    initial = np.zeros(N + S)
    initial[:len(levels[0])] = mdp.initial[[h[0] for h in levels[0]]]
    return TabularMDP(P, R, mdp.gamma, initial, terminal), origin


# ---------------------------------------------------------------------------------------------
# the tabular estimator


@dataclass(frozen=True, eq=False)
class TabularModel:
    r"""The per-step empirical model of a batch of episodes (see :func:`fit_tabular_model`).

    Attributes
    ----------
    initial : ndarray, shape (S,)
        :math:`\hat d_0(s) = n_0(s) / n`, the empirical distribution of the first states.
    P : ndarray, shape (T, S, A, S)
        :math:`\hat P_t(s' \mid s, a) = n_t(s, a, s') / n_t(s, a)`. A row sums to the fraction of
        its visits after which the episode went on (less than 1 where some ended); rows of pairs
        never visited at step ``t`` are 0, and so is ``P[T - 1]`` (no successor observed).
    R : ndarray, shape (T, S, A)
        :math:`\hat r_t(s, a)`, the mean reward of the visits of :math:`(s, a)` at step ``t``
        (0 where there are none).
    counts : ndarray of int, shape (T, S, A)
        :math:`n_t(s, a)`, the number of episodes in :math:`s` at step ``t`` that took ``a``.
    n : int
        Number of episodes.

    Examples
    --------
    >>> from companion.mdp import random_mdp, sample_trajectories, uniform_policy
    >>> mdp, mu = random_mdp(2, 2, rng=0), uniform_policy(2, 2)
    >>> model = fit_tabular_model(sample_trajectories(mdp, mu, n=10, horizon=3, rng=0), 2, 2)
    >>> model.counts.shape, int(model.counts.sum())   # 10 episodes x 3 steps
    ((3, 2, 2), 30)

    Used in :doc:`/book/marginalized_is`.
    """

    initial: np.ndarray
    P: np.ndarray
    R: np.ndarray
    counts: np.ndarray
    n: int


def _check_trajectories(trajectories, n_states: int, n_actions: int) -> Trajectories:
    check_instance(trajectories, Trajectories, "trajectories")
    m = check_mask(trajectories.mask, trajectories.states.shape, "trajectories.mask")
    for name, values, size in (("states", trajectories.states, n_states),
                               ("actions", trajectories.actions, n_actions)):
        bad = m & ((values < 0) | (values >= size))
        if bad.any():
            idx = first_index(bad)
            raise ValueError(f"trajectories.{name}: {values[idx]} at {where(idx, 2)} is not in "
                             f"0..{size - 1}")
    raise_nonfinite(np.where(m, trajectories.rewards, 0.0), "trajectories.rewards")
    return trajectories


def fit_tabular_model(trajectories, n_states, n_actions) -> TabularModel:
    r"""Count the per-step transitions and rewards of a batch of behaviour episodes.

    .. math::

        \hat d_0(s) = \frac{n_0(s)}{n}, \qquad
        \hat P_t(s' \mid s, a) = \frac{n_t(s, a, s')}{n_t(s, a)}, \qquad
        \hat r_t(s, a) = \frac{1}{n_t(s, a)} \sum_{i:\, (s_{i,t}, a_{i,t}) = (s, a)} r_{i,t},

    where :math:`n_t(s, a, s')` counts the episodes with :math:`(s_t, a_t, s_{t+1}) =
    (s, a, s')`. One model per step: nothing assumes that the dynamics are the same at every
    step. Episodes that end (``mask`` turns False) contribute no successor.

    Parameters
    ----------
    trajectories : Trajectories
        A batch from :func:`companion.mdp.sample_trajectories` (any behaviour policy; it need
        not be known).
    n_states, n_actions : int
        ``S`` and ``A``.

    Returns
    -------
    TabularModel

    Raises
    ------
    ValueError
        If ``trajectories`` is not a :class:`~companion.mdp.Trajectories`, its mask is not a
        suffix padding, a state or action at a real step is out of range, a reward at a real step
        is NaN or inf, or a size is not a positive integer.

    Examples
    --------
    >>> from companion.mdp import random_mdp, sample_trajectories, uniform_policy
    >>> mdp = random_mdp(3, 2, rng=0)
    >>> traj = sample_trajectories(mdp, uniform_policy(3, 2), n=50, horizon=4, rng=1)
    >>> model = fit_tabular_model(traj, 3, 2)
    >>> model.P.shape, int(model.counts[0].sum()), bool(np.allclose(model.P[0].sum(-1)[model.counts[0] > 0], 1))
    ((4, 3, 2, 3), 50, True)

    Used in :doc:`/book/marginalized_is`.
    """
    S = _check_positive_int(n_states, "n_states")
    A = _check_positive_int(n_actions, "n_actions")
    traj = _check_trajectories(trajectories, S, A)
    states, actions, rewards, mask = traj.states, traj.actions, traj.rewards, traj.mask
    n, T = states.shape
    steps = np.broadcast_to(np.arange(T), (n, T))
    pair = (steps * S + states) * A + actions               # flat index of (t, s, a)
    counts = np.bincount(pair[mask], minlength=T * S * A).reshape(T, S, A)
    reward_sums = np.bincount(pair[mask], weights=rewards[mask],
                              minlength=T * S * A).reshape(T, S, A)
    on = mask[:, :-1] & mask[:, 1:]                         # episodes that went on to t + 1
    move = pair[:, :-1][on] * S + states[:, 1:][on]         # flat index of (t, s, a, s')
    moves = np.bincount(move, minlength=T * S * A * S).reshape(T, S, A, S).astype(np.float64)
    seen = counts > 0
    R = np.divide(reward_sums, counts, out=np.zeros_like(reward_sums), where=seen)
    P = np.divide(moves, counts[..., None], out=np.zeros_like(moves),
                  where=np.broadcast_to(seen[..., None], moves.shape))
    initial = np.bincount(states[mask[:, 0], 0], minlength=S) / n
    return TabularModel(initial, P, R, counts, n)


def tabular_model_values(model, target, gamma=1.0):
    r"""Values of the target policy in the estimated model (the model-based plug-in).

    .. math::

        \hat Q_t(s, a) = \hat r_t(s, a) + \gamma \sum_{s'} \hat P_t(s' \mid s, a)\,
        \hat V_{t+1}(s'), \qquad \hat V_t(s) = \sum_a \pi(a \mid s)\, \hat Q_t(s, a), \qquad
        \hat V_T = 0,

    and the estimate of :math:`J(\pi)` is :math:`\sum_s \hat d_0(s) \hat V_0(s)`. A pair never
    visited at step ``t`` acts as "reward 0, episode ends".

    Parameters
    ----------
    model : TabularModel
    target : array_like, shape (S, A)
        The target policy.
    gamma : float in [0, 1], default 1.0

    Returns
    -------
    V : ndarray, shape (T + 1, S)
    Q : ndarray, shape (T, S, A)

    Raises
    ------
    ValueError
        If ``model`` is not a :class:`TabularModel`, ``target`` is not a policy of its shape, or
        ``gamma`` is outside [0, 1].

    Examples
    --------
    >>> from companion.mdp import random_mdp, sample_trajectories, uniform_policy
    >>> mdp = random_mdp(3, 2, rng=0)
    >>> traj = sample_trajectories(mdp, uniform_policy(3, 2), n=50, horizon=4, rng=1)
    >>> V, Q = tabular_model_values(fit_tabular_model(traj, 3, 2), uniform_policy(3, 2))
    >>> V.shape, Q.shape
    ((5, 3), (4, 3, 2))

    Used in :doc:`/book/marginalized_is`.
    """
    model, pi = _check_model(model, target)
    g = check_gamma(gamma)
    T, S, A = model.R.shape
    V, Q = np.zeros((T + 1, S)), np.zeros((T, S, A))
    for t in range(T - 1, -1, -1):
        Q[t] = model.R[t] + g * np.einsum("sat,t->sa", model.P[t], V[t + 1])
        V[t] = np.einsum("sa,sa->s", pi, Q[t])
    return V, Q


def _check_model(model, target):
    if not isinstance(model, TabularModel):
        raise ValueError(f"model: must be a TabularModel, got {type(model).__name__}")
    _, S, A = model.R.shape
    return model, _check_policy(target, "target", S, A)


def tabular_state_ratios(model, target):
    r"""Estimated state ratios: :math:`\hat d^\pi_t` pushed through the model, over :math:`\hat d^\mu_t`.

    .. math::

        \hat w_t(s) = \frac{\hat d^\pi_t(s)}{\hat d^\mu_t(s)}, \qquad
        \hat d^\mu_t(s) = \frac{n_t(s)}{n}, \qquad \hat d^\pi_0 = \hat d_0, \qquad
        \hat d^\pi_{t+1}(s') = \sum_{s,a} \hat d^\pi_t(s)\, \pi(a \mid s)\,
        \hat P_t(s' \mid s, a).

    Equivalently, :math:`\hat d^\pi_{t+1}(s') = \frac1n \sum_i \hat w_t(s_{i,t})\,
    \hat\rho_{i,t}\, \mathbb{1}[s_{i,t+1} = s']` with :math:`\hat\rho = \pi / \hat\mu_t`: each
    step's state distribution is a marginalized importance sampling estimate built on the ratios
    of the step before. :math:`\hat d^\pi_t` lives on the states observed at step ``t``, so the
    ratio is always defined there; it is 0 on states not observed.

    Parameters
    ----------
    model : TabularModel
    target : array_like, shape (S, A)

    Returns
    -------
    ndarray, shape (T, S)

    Raises
    ------
    ValueError
        As :func:`tabular_model_values`.

    Examples
    --------
    >>> from companion.mdp import random_mdp, sample_trajectories, uniform_policy
    >>> mdp = random_mdp(3, 2, rng=0)
    >>> mu = uniform_policy(3, 2)
    >>> model = fit_tabular_model(sample_trajectories(mdp, mu, n=50, horizon=4, rng=1), 3, 2)
    >>> bool(np.all(tabular_state_ratios(model, mu)[model.counts.sum(-1) > 0] > 0))
    True

    Used in :doc:`/book/marginalized_is`.
    """
    model, pi = _check_model(model, target)
    T, S, _ = model.R.shape
    d_mu = model.counts.sum(axis=2) / model.n          # (T, S)
    w = np.zeros((T, S))
    d_pi = model.initial
    for t in range(T):
        w[t] = np.divide(d_pi, d_mu[t], out=np.zeros(S), where=d_mu[t] > 0)
        d_pi = np.einsum("s,sa,sat->t", d_pi, pi, model.P[t])
    return w


def tabular_marginalized_is(trajectories, target, gamma=1.0) -> Estimate:
    r"""The tabular marginalized importance sampling estimator (Yin & Wang 2020).

    Fit the per-step model (:func:`fit_tabular_model`), take the estimated state ratios
    :math:`\hat w_t` (:func:`tabular_state_ratios`) and the estimated action ratios
    :math:`\hat\rho_{i,t} = \pi(a_{i,t}|s_{i,t}) / \hat\mu_t(a_{i,t}|s_{i,t})` with
    :math:`\hat\mu_t(a|s) = n_t(s, a) / n_t(s)`, and plug them into :func:`marginalized_is`:

    .. math::

        \hat v = \frac1n \sum_{i,t} \gamma^t \hat w_t(s_{i,t})\, \hat\rho_{i,t}\, r_{i,t}
        = \sum_t \gamma^t \sum_{s,a} \hat d^\pi_t(s)\, \pi(a|s)\, \hat r_t(s, a)
        = \sum_s \hat d_0(s)\, \hat V_0(s),

    the value of :math:`\pi` in the estimated model (:func:`tabular_model_values`). The
    behaviour policy is not needed. The estimate is consistent, biased at finite :math:`n`, and
    its variance approaches :func:`cramer_rao_bound` divided by :math:`n`. The standard error
    comes from the influence terms

    .. math::

        \psi_i = \hat V_0(s_{i,0}) + \sum_t \gamma^t \hat w_t(s_{i,t})\, \hat\rho_{i,t}
        \bigl(r_{i,t} + \gamma \hat V_{t+1}(s_{i,t+1}) - \hat Q_t(s_{i,t}, a_{i,t})\bigr),

    (the successor's value is 0 where the episode ends), whose mean is the estimate (the
    corrections sum to zero in the fitted model); ``stderr`` is their sample sd over
    :math:`\sqrt n`. The sd of the plain terms :math:`\sum_t \gamma^t \hat w_t \hat\rho_t r_t`
    would ignore that the ratios are estimated from the same data.

    Parameters
    ----------
    trajectories : Trajectories
        Episodes of the behaviour policy (``logp_target`` is not needed).
    target : array_like, shape (S, A)
        The target policy; ``S`` and ``A`` are read from its shape.
    gamma : float in [0, 1], default 1.0

    Returns
    -------
    Estimate
        ``terms`` are the influence terms :math:`\psi_i`.

    Raises
    ------
    ValueError
        As :func:`fit_tabular_model` and :func:`tabular_model_values`.

    Examples
    --------
    >>> from companion.mdp import policy_value, random_mdp, sample_trajectories, uniform_policy
    >>> mdp = random_mdp(3, 2, rng=0, gamma=1.0)
    >>> pi, mu = np.array([[0.9, 0.1]] * 3), uniform_policy(3, 2)
    >>> traj = sample_trajectories(mdp, mu, n=4000, horizon=5, rng=1)
    >>> e = tabular_marginalized_is(traj, pi)
    >>> abs(e.estimate - policy_value(mdp, pi, horizon=5)) < 4 * e.stderr
    True

    Used in :doc:`/book/marginalized_is`.
    """
    pi = _check_policy(target, "target")
    S, A = pi.shape
    model = fit_tabular_model(trajectories, S, A)
    traj = trajectories
    n, T = traj.states.shape
    w = tabular_state_ratios(model, pi)
    V, Q = tabular_model_values(model, pi, gamma)
    steps = np.arange(T)
    s, a, m = traj.states, traj.actions, traj.mask
    n_s = model.counts.sum(axis=2)[steps, s]                          # n_t(s_it)
    n_sa = model.counts[steps, s, a]                                   # n_t(s_it, a_it)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_rho_hat = np.where(m, np.log(pi[s, a]) - np.log(n_sa / n_s), 0.0)
    mis = marginalized_is(traj.rewards, w[steps, s], log_rho_hat, gamma, m)
    # influence terms: V_0(s_0) + sum_t gamma^t w_t rho_t (r_t + gamma V_{t+1}(s_{t+1}) - Q_t)
    g = check_gamma(gamma)
    following = np.zeros((n, T))
    following[:, :-1] = np.where(m[:, 1:], V[steps[1:], s[:, 1:]], 0.0)   # V_{t+1}(s_{t+1})
    weight = np.where(m, w[steps, s] * np.exp(log_rho_hat), 0.0)
    residual = np.where(m, traj.rewards + g * following - Q[steps, s, a], 0.0)
    psi = V[0, s[:, 0]] * m[:, 0] + (weight * residual) @ (g ** steps.astype(np.float64))
    se = float(np.std(psi, ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    return Estimate(mis.estimate, se, n, psi, "tabular_marginalized_is")
