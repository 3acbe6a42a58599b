r"""Off-policy policy-gradient estimators for tabular softmax policies, and the surrogate objective.

The target is :math:`\pi = \mathrm{softmax}(\theta)` with logits :math:`\theta` of shape (S, A); the
data are episodes from a behaviour policy :math:`\mu` (a :class:`companion.mdp.Trajectories`).
Every estimator returns a :class:`GradientEstimate` holding one gradient term per trajectory,
shape (n, S, A), their mean and its standard error, so that a chapter can check it against
:func:`companion.mdp.policy_gradient_exact`.

Discounting convention (used throughout). The objective is
:math:`J(\pi) = \mathbb{E}_\pi[\sum_t \gamma^t r_t]`, and its exact gradient is

.. math::

    \nabla J(\pi) = \mathbb{E}_\pi\Big[\sum_t \nabla \log \pi(a_t|s_t)
        \sum_{t' \ge t} \gamma^{t'} r_{t'}\Big]
    = \sum_t \gamma^t\, \mathbb{E}_\pi\big[\nabla \log \pi(a_t|s_t)\, Q^\pi_t(s_t, a_t)\big].

Rewards are therefore discounted from time 0 (:math:`\gamma^{t'}`, not :math:`\gamma^{t'-t}`): the
estimators below include the factor :math:`\gamma^t` that practical implementations often drop.
With the return from time :math:`t` of the notation page, :math:`G_t = \sum_{t' \ge t}
\gamma^{t'-t} r_{t'}`, the reward-to-go discounted from time 0 is
:math:`\gamma^t G_t = \sum_{t' \ge t} \gamma^{t'} r_{t'}`; and
:math:`\rho_{0:t} = \prod_{k \le t} \pi(a_k|s_k) / \mu(a_k|s_k)` is the prefix weight.

Used in :doc:`/book/why_rl`, :doc:`/book/trajectory_weights`, :doc:`/book/per_step_weights`,
:doc:`/book/on_off_policy` and the ``offpolicy_gradient`` assignment.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._validation import (
    check_gamma,
    check_instance,
    check_mask,
    check_optional_int,
    check_policy,
)
from .mdp import TabularMDP, Trajectories, policy_quantities, softmax_policy

__all__ = [
    "GradientEstimate",
    "score_function",
    "prefix_weighted_gradient",
    "per_decision_gradient",
    "trajectory_is_gradient",
    "surrogate_objective",
    "surrogate_gradient_exact",
    "prefix_weighted_gradient_expectation",
]


@dataclass(frozen=True, eq=False)
class GradientEstimate:
    """A Monte Carlo estimate of a gradient with respect to (S, A) logits.

    Used in :doc:`/book/why_rl`, :doc:`/book/trajectory_weights` and the ``offpolicy_gradient``
    assignment.

    Attributes
    ----------
    estimate : ndarray, shape (S, A)
        Mean of the per-trajectory terms.
    stderr : ndarray, shape (S, A)
        Standard error of the mean, ``std(terms, ddof=1) / sqrt(n)`` per component (0 if n = 1).
    n : int
        Number of trajectories.
    terms : ndarray, shape (n, S, A)
        One gradient term per trajectory.
    """

    estimate: np.ndarray
    stderr: np.ndarray
    n: int
    terms: np.ndarray

    @classmethod
    def from_terms(cls, terms):
        """Build from per-trajectory terms (n, S, A)."""
        n = terms.shape[0]
        se = terms.std(axis=0, ddof=1) / np.sqrt(n) if n > 1 else np.zeros(terms.shape[1:])
        return cls(estimate=terms.mean(axis=0), stderr=se, n=n, terms=terms)


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def _check_traj(traj, logits, gamma):
    check_instance(traj, Trajectories, "traj")
    pi = softmax_policy(logits)
    S, A = pi.shape
    if traj.n < 1:
        raise ValueError("traj: empty batch")
    mask = check_mask(traj.mask, traj.states.shape, "traj.mask")
    if np.any(traj.states[mask] >= S) or np.any(traj.states[mask] < 0):
        raise ValueError(f"traj.states: a state outside [0, {S}) for logits of shape {pi.shape}")
    if np.any(traj.actions[mask] >= A) or np.any(traj.actions[mask] < 0):
        raise ValueError(f"traj.actions: an action outside [0, {A}) for logits of shape {pi.shape}")
    gamma = check_gamma(gamma)
    lb = traj.logp_behavior
    if not np.all(np.isfinite(lb[mask])):
        i, t = (int(x) for x in np.argwhere(mask & ~np.isfinite(lb))[0])
        raise ValueError(f"traj.logp_behavior: not finite at trajectory {i}, step {t}: the "
                         "behaviour gave probability 0 to an action it took")
    if not np.all(np.isfinite(traj.rewards[mask])):
        i, t = (int(x) for x in np.argwhere(mask & ~np.isfinite(traj.rewards))[0])
        raise ValueError(f"traj.rewards: NaN or inf at trajectory {i}, step {t}")
    return pi, gamma


def _log_pi(pi, traj):
    return np.where(traj.mask, np.log(pi[traj.states, traj.actions]), 0.0)


def _prefix_rho(pi, traj):
    """rho_{0:t} (n, T), 0 on padded steps; raises on overflow."""
    log_rho = np.where(traj.mask, _log_pi(pi, traj) - traj.logp_behavior, 0.0)
    cum = np.cumsum(log_rho, axis=1)
    if np.any(cum[traj.mask] > 700.0):
        i, t = (int(x) for x in np.argwhere(traj.mask & (cum > 700.0))[0])
        raise ValueError(f"logits: the prefix weight rho_0:t overflows float64 at trajectory {i}, "
                         f"step {t}")
    return np.where(traj.mask, np.exp(cum), 0.0)


def _discounted_rewards(traj, gamma):
    """gamma^t r_t (n, T), 0 on padding."""
    disc = gamma ** np.arange(traj.horizon)
    return np.where(traj.mask, traj.rewards, 0.0) * disc


def _reward_to_go(x):
    """Suffix sums along axis 1: out[:, t] = sum_{t' >= t} x[:, t']."""
    return np.flip(np.cumsum(np.flip(x, axis=1), axis=1), axis=1)


def _accumulate_score(pi, states, actions, coef, mask):
    r"""Per-trajectory sum_t coef_t * grad log pi(a_t|s_t), shape (n, S, A)."""
    n, T = states.shape
    S, A = pi.shape
    c = np.where(mask, coef, 0.0)
    rows = np.repeat(np.arange(n), T)
    s = states.ravel()
    a = actions.ravel()
    cf = c.ravel()
    out = np.zeros(n * S * A)
    np.add.at(out, (rows * S + s) * A + a, cf)
    out = out.reshape(n, S, A)
    per_state = np.zeros(n * S)
    np.add.at(per_state, rows * S + s, cf)
    out -= per_state.reshape(n, S)[:, :, None] * pi[None, :, :]
    return out


# ---------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------
def score_function(logits, states, actions):
    r"""Score of a tabular softmax policy with respect to its logits.

    .. math::

        \frac{\partial \log \pi(a \mid s)}{\partial \theta_{s' b}}
        = \mathbb{1}[s' = s]\,\big(\mathbb{1}[b = a] - \pi(b \mid s)\big).

    Parameters
    ----------
    logits : array_like, shape (S, A)
    states, actions : array_like of int, same shape ``batch``
        States and actions (scalars allowed).

    Returns
    -------
    ndarray, shape batch + (S, A)
        Only row ``s`` of each (S, A) slice is non-zero; it sums to 0.

    Raises
    ------
    ValueError
        On NaN/inf logits, mismatched shapes, or a state/action out of range.

    Examples
    --------
    >>> score_function(np.zeros((2, 2)), 1, 0)
    array([[ 0. ,  0. ],
           [ 0.5, -0.5]])

    Used in the ``offpolicy_gradient`` assignment.
    """
    pi = softmax_policy(logits)
    S, A = pi.shape
    s = np.asarray(states)
    a = np.asarray(actions)
    if s.shape != a.shape:
        raise ValueError(f"actions: shape {a.shape} does not match states' shape {s.shape}")
    for arr, name, size in ((s, "states", S), (a, "actions", A)):
        if not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"{name}: must be an integer array, got dtype {arr.dtype}")
        if np.any((arr < 0) | (arr >= size)):
            raise ValueError(f"{name}: must lie in [0, {size}) for logits of shape {(S, A)}")
    out = np.zeros(s.shape + (S, A))
    flat = out.reshape(-1, S, A)
    k = np.arange(flat.shape[0])
    sf, af = s.ravel(), a.ravel()
    flat[k, sf, :] = -pi[sf]
    flat[k, sf, af] += 1.0
    return out


def prefix_weighted_gradient(traj, logits, gamma) -> GradientEstimate:
    r"""Prefix-weighted reward-to-go: the prefix weight up to the action times the *behaviour's*
    reward-to-go.

    .. math::

        \hat g = \frac1n \sum_i \sum_t \rho^i_{0:t}\, \nabla \log \pi(a^i_t \mid s^i_t)\,
                 \gamma^t G^i_t, \qquad \gamma^t G_t = \sum_{t' \ge t} \gamma^{t'} r_{t'} .

    A formula that looks right, but is biased in general: the rewards after ``t`` were produced by
    :math:`\mu`, and their ratios after ``t`` are left out, so

    .. math::

        \mathbb{E}_\mu[\hat g] = \sum_t \gamma^t\, \mathbb{E}_{s_t, a_t \sim \pi}
            \big[\nabla \log \pi(a_t|s_t)\, Q^\mu_t(s_t, a_t)\big] \ne \nabla J(\pi)

    (see :func:`prefix_weighted_gradient_expectation`). It is unbiased when ``pi = mu``; the
    unbiased way to drop later ratios is :func:`per_decision_gradient`.

    Parameters
    ----------
    traj : Trajectories
        Episodes from the behaviour ``mu`` (``traj.logp_behavior`` is used).
    logits : array_like, shape (S, A)
    gamma : float

    Returns
    -------
    GradientEstimate

    Raises
    ------
    ValueError
        On malformed trajectories or an overflowing weight.

    Examples
    --------
    >>> from companion.mdp import random_mdp, sample_trajectories, uniform_policy
    >>> mdp = random_mdp(3, 2, rng=0)
    >>> traj = sample_trajectories(mdp, uniform_policy(3, 2), n=50, horizon=4, rng=1)
    >>> prefix_weighted_gradient(traj, np.ones((3, 2)), mdp.gamma).estimate.shape
    (3, 2)

    See :doc:`/book/trajectory_weights`.
    """
    pi, gamma = _check_traj(traj, logits, gamma)
    coef = _prefix_rho(pi, traj) * _reward_to_go(_discounted_rewards(traj, gamma))
    return GradientEstimate.from_terms(
        _accumulate_score(pi, traj.states, traj.actions, coef, traj.mask))


def per_decision_gradient(traj, logits, gamma) -> GradientEstimate:
    r"""Unbiased per-decision off-policy gradient: each reward weighted by its own prefix.

    .. math::

        \hat g = \frac1n \sum_i \sum_t \nabla \log \pi(a^i_t \mid s^i_t)
                 \sum_{t' \ge t} \gamma^{t'} \rho^i_{0:t'}\, r^i_{t'} .

    Unbiased for :math:`\nabla J(\pi)` (finite horizon, or episodes that all terminate within
    ``T``) whenever :math:`\mu > 0` wherever :math:`\pi > 0`.

    Parameters
    ----------
    traj : Trajectories
    logits : array_like, shape (S, A)
    gamma : float

    Returns
    -------
    GradientEstimate

    Raises
    ------
    ValueError
        On malformed trajectories or an overflowing weight.

    Examples
    --------
    >>> from companion.mdp import random_mdp, sample_trajectories, uniform_policy
    >>> mdp = random_mdp(3, 2, rng=0)
    >>> traj = sample_trajectories(mdp, uniform_policy(3, 2), n=50, horizon=4, rng=1)
    >>> g = per_decision_gradient(traj, np.zeros((3, 2)), mdp.gamma)
    >>> bool(np.allclose(g.estimate.sum(axis=1), 0.0))
    True

    Used in :doc:`/book/trajectory_weights` and the ``offpolicy_gradient`` assignment.
    """
    pi, gamma = _check_traj(traj, logits, gamma)
    coef = _reward_to_go(_prefix_rho(pi, traj) * _discounted_rewards(traj, gamma))
    return GradientEstimate.from_terms(
        _accumulate_score(pi, traj.states, traj.actions, coef, traj.mask))


def trajectory_is_gradient(traj, logits, gamma) -> GradientEstimate:
    r"""Full-trajectory importance-sampled policy gradient.

    .. math::

        \hat g = \frac1n \sum_i \rho^i_{0:T_i - 1} \sum_t \nabla \log \pi(a^i_t \mid s^i_t)\,
                 \gamma^t G^i_t, \qquad \gamma^t G_t = \sum_{t' \ge t} \gamma^{t'} r_{t'} .

    Unbiased, with a variance that grows with the length of the episode
    (:doc:`the variance problem </book/variance_problem>`).

    Parameters
    ----------
    traj : Trajectories
    logits : array_like, shape (S, A)
    gamma : float

    Returns
    -------
    GradientEstimate

    Raises
    ------
    ValueError
        On malformed trajectories or an overflowing weight.

    Examples
    --------
    >>> from companion.mdp import random_mdp, sample_trajectories, uniform_policy
    >>> mdp = random_mdp(3, 2, rng=0)
    >>> traj = sample_trajectories(mdp, uniform_policy(3, 2), n=50, horizon=4, rng=1)
    >>> trajectory_is_gradient(traj, np.zeros((3, 2)), mdp.gamma).n
    50

    Used in :doc:`/book/trajectory_weights`.
    """
    pi, gamma = _check_traj(traj, logits, gamma)
    rho = _prefix_rho(pi, traj)
    last = np.maximum(traj.mask.sum(axis=1) - 1, 0)
    w = rho[np.arange(traj.n), last] * traj.mask[:, 0]
    coef = w[:, None] * _reward_to_go(_discounted_rewards(traj, gamma))
    return GradientEstimate.from_terms(
        _accumulate_score(pi, traj.states, traj.actions, coef, traj.mask))


def _weighted_by_time(mdp, pi, qmu, H, values):
    """sum_t gamma^t sum_s d_t(s) values_t(s) with the behaviour's occupancy."""
    if H is None:
        return qmu.d @ values
    disc = mdp.gamma ** np.arange(H)
    return np.einsum("t,ts,ts->", disc, qmu.occupancy, values)


def surrogate_objective(mdp, pi, mu, horizon=None):
    r"""Kakade-Langford / TRPO local approximation :math:`L_\mu(\pi)` of :math:`J(\pi)`, exactly.

    .. math::

        L_\mu(\pi) = J(\mu) + \sum_t \gamma^t\, \mathbb{E}_{s \sim d^\mu_t}
                     \sum_a \pi(a \mid s)\, A^\mu_t(s, a),

    with :math:`d^\mu_t(s) = \Pr_\mu(s_t = s)`. It uses the behaviour's state distribution, so
    :math:`L_\mu(\mu) = J(\mu)` and :math:`\nabla L_\mu(\pi)|_{\pi=\mu} = \nabla J(\pi)|_{\pi=\mu}`:
    the two agree to first order at :math:`\pi = \mu` and drift apart as :math:`\pi` moves away.

    Parameters
    ----------
    mdp : TabularMDP
    pi, mu : array_like, shape (S, A)
        New and old (behaviour) policies.
    horizon : int, optional
        Finite horizon ``H`` (time-indexed ``A^mu_t``) or None (stationary).

    Returns
    -------
    float

    Raises
    ------
    ValueError
        If a policy is invalid for ``mdp`` or as :func:`companion.mdp.policy_quantities`.

    Examples
    --------
    >>> from companion.mdp import random_mdp, uniform_policy, policy_value
    >>> mdp = random_mdp(3, 2, rng=0)
    >>> mu = uniform_policy(3, 2)
    >>> bool(np.isclose(surrogate_objective(mdp, mu, mu), policy_value(mdp, mu)))
    True

    Used in :doc:`/book/per_step_weights` and :doc:`/book/on_off_policy`; see eq.
    (eq-perstep-surrogate).
    """
    check_instance(mdp, TabularMDP, "mdp")
    pi = check_policy(pi, (mdp.n_states, mdp.n_actions), "pi")
    mu = check_policy(mu, (mdp.n_states, mdp.n_actions), "mu")
    H = check_optional_int(horizon, "horizon")
    qmu = policy_quantities(mdp, mu, H)
    gain = np.einsum("sa,...sa->...s", pi, qmu.A)
    return float(qmu.J + _weighted_by_time(mdp, pi, qmu, H, gain))


def surrogate_gradient_exact(mdp, logits, mu, horizon=None):
    r"""Exact gradient of :func:`surrogate_objective` with respect to the logits of ``pi``.

    .. math::

        \frac{\partial L_\mu}{\partial \theta_{s a}} = \sum_t \gamma^t d^\mu_t(s)\, \pi(a \mid s)
        \Big(A^\mu_t(s, a) - \sum_b \pi(b \mid s) A^\mu_t(s, b)\Big).

    Parameters
    ----------
    mdp : TabularMDP
    logits : array_like, shape (S, A)
        Logits of ``pi``.
    mu : array_like, shape (S, A)
    horizon : int, optional

    Returns
    -------
    ndarray, shape (S, A)

    Raises
    ------
    ValueError
        As :func:`surrogate_objective`.

    Examples
    --------
    >>> from companion.mdp import random_mdp, softmax_policy, policy_gradient_exact
    >>> mdp = random_mdp(3, 2, rng=0)
    >>> theta = np.zeros((3, 2))
    >>> g = surrogate_gradient_exact(mdp, theta, softmax_policy(theta))
    >>> bool(np.allclose(g, policy_gradient_exact(mdp, theta)))
    True

    Used in :doc:`/book/per_step_weights` (first-order agreement with :math:`\nabla J`).
    """
    check_instance(mdp, TabularMDP, "mdp")
    pi = softmax_policy(logits)
    pi = check_policy(pi, (mdp.n_states, mdp.n_actions), "softmax(logits)")
    mu = check_policy(mu, (mdp.n_states, mdp.n_actions), "mu")
    H = check_optional_int(horizon, "horizon")
    qmu = policy_quantities(mdp, mu, H)
    centred = qmu.A - np.einsum("sa,...sa->...s", pi, qmu.A)[..., None]
    if H is None:
        return qmu.d[:, None] * pi * centred
    disc = mdp.gamma ** np.arange(H)
    return np.einsum("t,ts,sa,tsa->sa", disc, qmu.occupancy, pi, centred)


def prefix_weighted_gradient_expectation(mdp, logits, mu, horizon=None):
    r"""Exact expectation of :func:`prefix_weighted_gradient`: the target's state distribution
    with the behaviour's action values :math:`Q^\mu` in place of :math:`Q^\pi`.

    .. math::

        \mathbb{E}_\mu[\hat g]_{s a} = \sum_t \gamma^t \Pr_\pi(s_t = s)\, \pi(a \mid s)
        \Big(Q^\mu_t(s, a) - \sum_b \pi(b \mid s) Q^\mu_t(s, b)\Big).

    Compare with :func:`companion.mdp.policy_gradient_exact`, which has :math:`Q^\pi` in its place:
    the difference is the bias of the prefix-weighted estimator. (The single-ratio surrogate's
    gradient, :func:`surrogate_gradient_exact`, differs in the state distribution too: it has
    :math:`d^\mu_t` where this has :math:`\Pr_\pi(s_t = s)`.)

    Parameters
    ----------
    mdp : TabularMDP
    logits : array_like, shape (S, A)
        Logits of the target ``pi``.
    mu : array_like, shape (S, A)
        Behaviour policy.
    horizon : int, optional

    Returns
    -------
    ndarray, shape (S, A)

    Raises
    ------
    ValueError
        As :func:`surrogate_objective`.

    Examples
    --------
    >>> from companion.mdp import random_mdp, softmax_policy, policy_gradient_exact
    >>> mdp = random_mdp(3, 2, rng=0)
    >>> theta = np.zeros((3, 2))
    >>> g = prefix_weighted_gradient_expectation(mdp, theta, softmax_policy(theta), horizon=5)
    >>> bool(np.allclose(g, policy_gradient_exact(mdp, theta, horizon=5)))   # unbiased at pi = mu
    True

    See :doc:`/book/trajectory_weights`.
    """
    check_instance(mdp, TabularMDP, "mdp")
    pi = check_policy(softmax_policy(logits), (mdp.n_states, mdp.n_actions), "softmax(logits)")
    mu = check_policy(mu, (mdp.n_states, mdp.n_actions), "mu")
    H = check_optional_int(horizon, "horizon")
    qpi = policy_quantities(mdp, pi, H)
    qmu = policy_quantities(mdp, mu, H)
    centred = qmu.Q - np.einsum("sa,...sa->...s", pi, qmu.Q)[..., None]
    if H is None:
        return qpi.d[:, None] * pi * centred
    disc = mdp.gamma ** np.arange(H)
    return np.einsum("t,ts,sa,tsa->sa", disc, qpi.occupancy, pi, centred)
