"""Tabular Markov decision processes with exact answers.

A :class:`TabularMDP` holds transition probabilities ``P[s, a, s']``, rewards, a discount ``gamma``,
an initial distribution and optional terminal states. Everything a chapter needs to check an
estimator against the truth is computed exactly here: the expected return ``J(pi)`` (a linear solve,
or backward recursion for a finite horizon), ``V^pi``, ``Q^pi``, ``A^pi``, the discounted state
visitation ``d^pi`` and the exact gradient of ``J`` with respect to tabular softmax logits.
:func:`sample_trajectories` draws ``n`` episodes of a behaviour policy at once (a loop over time
only) and returns the arrays that ``companion.estimators`` expects.

Conventions
-----------
* A policy is an array ``(S, A)`` whose row ``s`` is the distribution ``pi(. | s)``.
* Time starts at ``t = 0``; a finite horizon ``H`` means the actions ``a_0, ..., a_{H-1}``.
* The return is ``G = sum_t gamma^t r_t`` and ``J(pi) = E_pi[G]`` with ``s_0 ~ initial``.
* Entering a terminal state ends the episode: terminal states have value 0 and are never acted in.

Used in :doc:`/book/trajectory_weights`, :doc:`/book/variance_problem`,
:doc:`/book/per_step_weights`, :doc:`/book/weighted_is`, :doc:`/book/on_off_policy`,
:doc:`/book/marginalized_is`, :doc:`/book/confidence` and the ``estimators``,
``offpolicy_gradient``, ``traces`` and ``off_policy_evaluation`` assignments.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._validation import (
    check_distribution,
    check_gamma,
    check_int,
    check_optional_int,
    check_policy,
    check_positive,
    check_unit_interval,
    finite_array,
)

__all__ = [
    "TabularMDP",
    "Trajectories",
    "PolicyQuantities",
    "random_mdp",
    "softmax_policy",
    "uniform_policy",
    "mix_policies",
    "policy_value",
    "state_values",
    "q_values",
    "discounted_visitation",
    "policy_quantities",
    "policy_gradient_exact",
    "sample_trajectories",
]

# ---------------------------------------------------------------------------------------------
# the MDP type
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class TabularMDP:
    r"""A finite MDP: transitions, rewards, discount, initial distribution, terminal states.

    .. math::

        s_0 \sim \text{initial}, \quad s_{t+1} \sim P(\cdot \mid s_t, a_t), \quad
        J(\pi) = \mathbb{E}_\pi\Big[\sum_{t} \gamma^t r_t\Big].

    Parameters
    ----------
    P : array_like, shape (S, A, S)
        ``P[s, a, s']`` the probability of moving to ``s'``; each ``P[s, a]`` sums to 1.
    R : array_like, shape (S, A) or (S, A, S)
        Reward ``r(s, a)`` (deterministic given ``s, a``) or ``r(s, a, s')`` (deterministic given the
        transition). Sampling uses the reward exactly as given; the exact solvers use the expected
        reward :attr:`expected_reward`.
    gamma : float
        Discount in [0, 1]. ``gamma = 1`` needs a finite horizon or terminal states that are reached
        with probability 1.
    initial : array_like, shape (S,)
        Distribution of ``s_0``; it must put no mass on terminal states.
    terminal : array_like of bool, shape (S,), optional
        ``True`` marks states that end the episode on entry (value 0). Their rows of ``P`` must still
        be distributions but are never used. Stored as a boolean array (all False if None).

    Raises
    ------
    ValueError
        On a shape mismatch, NaN/inf, probabilities outside [0, 1], rows that do not sum to 1,
        ``gamma`` outside [0, 1], or initial mass on a terminal state.

    Examples
    --------
    >>> import numpy as np
    >>> P = np.array([[[0.5, 0.5], [1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]])
    >>> mdp = TabularMDP(P, R=[[1.0, 0.0], [0.0, 0.0]], gamma=1.0, initial=[1.0, 0.0],
    ...                  terminal=[False, True])
    >>> mdp.n_states, mdp.n_actions
    (2, 2)

    Used in :doc:`/book/trajectory_weights`, :doc:`/book/variance_problem`,
    :doc:`/book/per_step_weights`, :doc:`/book/weighted_is`, :doc:`/book/on_off_policy`,
    :doc:`/book/marginalized_is`, :doc:`/book/confidence` and the ``estimators``,
    ``offpolicy_gradient``, ``traces`` and ``off_policy_evaluation`` assignments.
    """

    P: np.ndarray
    R: np.ndarray
    gamma: float
    initial: np.ndarray
    terminal: np.ndarray | None = None

    def __post_init__(self):
        P = finite_array(self.P, "P", ndim=3)
        S, A, S2 = P.shape
        if S != S2:
            raise ValueError(f"P: expected shape (S, A, S), got {P.shape}")
        P = check_distribution(P, "P")
        R = finite_array(self.R, "R")
        if R.shape not in ((S, A), (S, A, S)):
            raise ValueError(f"R: expected shape (S, A) = {(S, A)} or (S, A, S) = {(S, A, S)}, "
                             f"got {R.shape}")
        gamma = check_gamma(self.gamma)
        initial = finite_array(self.initial, "initial", ndim=1)
        if initial.shape != (S,):
            raise ValueError(f"initial: expected shape (S,) = {(S,)}, got {initial.shape}")
        initial = check_distribution(initial, "initial")
        if self.terminal is None:
            terminal = np.zeros(S, dtype=bool)
        else:
            terminal = np.asarray(self.terminal)
            if terminal.shape != (S,):
                raise ValueError(f"terminal: expected shape (S,) = {(S,)}, got {terminal.shape}")
            if terminal.dtype != bool:
                if not np.all(np.isin(terminal, (0, 1))):
                    raise ValueError("terminal: must be boolean (or 0/1)")
                terminal = terminal.astype(bool)
        if np.any(initial[terminal] > 0):
            s = int(np.flatnonzero(terminal & (initial > 0))[0])
            raise ValueError(f"initial: puts mass {initial[s]} on terminal state {s}")
        for name, value in (("P", P), ("R", R), ("gamma", gamma),
                            ("initial", initial), ("terminal", terminal)):
            if isinstance(value, np.ndarray):
                value = value.copy()
                value.setflags(write=False)
            object.__setattr__(self, name, value)

    @property
    def n_states(self) -> int:
        """Number of states ``S``."""
        return self.P.shape[0]

    @property
    def n_actions(self) -> int:
        """Number of actions ``A``."""
        return self.P.shape[1]

    @property
    def expected_reward(self) -> np.ndarray:
        """Expected one-step reward ``r(s, a) = sum_s' P[s, a, s'] R[s, a, s']``, shape (S, A)."""
        if self.R.ndim == 2:
            return self.R
        return np.einsum("ijk,ijk->ij", self.P, self.R)


@dataclass(frozen=True, eq=False)
class Trajectories:
    """A batch of ``n`` episodes padded to a common length ``T``.

    Used in :doc:`/book/trajectory_weights`, :doc:`/book/variance_problem`,
    :doc:`/book/per_step_weights`, :doc:`/book/weighted_is`, :doc:`/book/on_off_policy`,
    :doc:`/book/marginalized_is`, :doc:`/book/confidence` and the ``estimators``,
    ``offpolicy_gradient`` and ``off_policy_evaluation`` assignments.

    Attributes
    ----------
    states, actions : ndarray of int, shape (n, T)
        ``s_t`` and ``a_t``; padded entries hold 0 and mean nothing (see ``mask``).
    rewards : ndarray of float, shape (n, T)
        ``r_t``; 0 on padded steps.
    logp_behavior : ndarray, shape (n, T)
        ``log mu(a_t | s_t)``; 0 on padded steps.
    logp_target : ndarray, shape (n, T), or None
        ``log pi(a_t | s_t)`` if a target was given; 0 on padded steps.
    mask : ndarray of bool, shape (n, T)
        True on real steps; padding is a suffix.
    terminated : ndarray of bool, shape (n,)
        True if the episode entered a terminal state within the horizon (else it was truncated).
    """

    states: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    logp_behavior: np.ndarray
    logp_target: np.ndarray | None
    mask: np.ndarray
    terminated: np.ndarray

    @property
    def n(self) -> int:
        """Number of episodes."""
        return self.states.shape[0]

    @property
    def horizon(self) -> int:
        """Padded length ``T``."""
        return self.states.shape[1]

    @property
    def log_rho(self) -> np.ndarray:
        """Per-step log ratios ``log pi(a_t|s_t) - log mu(a_t|s_t)``, shape (n, T), 0 on padding.

        Raises
        ------
        ValueError
            If the batch was sampled without a target policy.
        """
        if self.logp_target is None:
            raise ValueError("logp_target: log_rho needs it; pass target= to sample_trajectories")
        with np.errstate(invalid="ignore"):
            out = self.logp_target - self.logp_behavior
        return np.where(self.mask, out, 0.0)


@dataclass(frozen=True, eq=False)
class PolicyQuantities:
    """Exact quantities of a policy on a :class:`TabularMDP` (see :func:`policy_quantities`).

    For an infinite horizon the arrays are stationary: ``V`` (S,), ``Q`` and ``A`` (S, A),
    ``occupancy`` None. For a finite horizon ``H`` they are indexed by time: ``V`` (H + 1, S) with
    ``V[H] = 0``, ``Q`` and ``A`` (H, S, A) where ``Q[t]`` has ``H - t`` steps to go, and
    ``occupancy`` (H, S) with ``occupancy[t, s] = Pr(s_t = s, episode not ended)``.

    Used in :doc:`/book/per_step_weights` and :doc:`/book/marginalized_is`.

    Attributes
    ----------
    J : float
        Expected discounted return from the initial distribution.
    V, Q, A : ndarray
        State values, action values and advantages ``A = Q - V``.
    d : ndarray, shape (S,)
        Discounted visitation ``d(s) = sum_t gamma^t Pr(s_t = s)`` (unnormalised: it sums to the
        expected discounted episode length, ``1 / (1 - gamma)`` without terminal states).
    occupancy : ndarray, shape (H, S), or None
        Per-time state distribution (finite horizon only).
    """

    J: float
    V: np.ndarray
    Q: np.ndarray
    A: np.ndarray
    d: np.ndarray
    occupancy: np.ndarray | None


# ---------------------------------------------------------------------------------------------
# constructors and policies
# ---------------------------------------------------------------------------------------------
def random_mdp(n_states, n_actions, rng, gamma=0.9, *, alpha=1.0, reward_scale=1.0,
               n_terminal=0) -> TabularMDP:
    r"""A random tabular MDP for testing estimators.

    .. math::

        P(\cdot \mid s, a) \sim \mathrm{Dirichlet}(\alpha \mathbf{1}), \quad
        r(s, a) \sim \mathrm{Uniform}[0, \text{reward\_scale}], \quad
        \text{initial} \sim \mathrm{Dirichlet}(\mathbf{1}).

    Parameters
    ----------
    n_states, n_actions : int
        ``S >= 1`` and ``A >= 1``.
    rng : numpy.random.Generator or int
        Source of randomness (``np.random.default_rng(rng)``).
    gamma : float, default 0.9
        Discount in [0, 1].
    alpha : float, default 1.0
        Dirichlet concentration of each transition row (small: nearly deterministic).
    reward_scale : float, default 1.0
        Rewards are uniform on ``[0, reward_scale]``.
    n_terminal : int, default 0
        The last ``n_terminal`` states are terminal (no initial mass on them).

    Returns
    -------
    TabularMDP

    Raises
    ------
    ValueError
        If a size is not a positive integer, ``alpha <= 0`` or ``n_terminal >= n_states``.

    Examples
    --------
    >>> mdp = random_mdp(4, 2, rng=0)
    >>> mdp.P.shape, mdp.R.shape, round(float(mdp.P[0, 0].sum()), 6)
    ((4, 2, 4), (4, 2), 1.0)

    Used in :doc:`/book/trajectory_weights`, :doc:`/book/variance_problem`,
    :doc:`/book/per_step_weights`, :doc:`/book/on_off_policy`, :doc:`/book/marginalized_is`,
    :doc:`/book/confidence` and the ``estimators``, ``offpolicy_gradient``, ``traces`` and
    ``off_policy_evaluation`` assignments.
    """
    S, A = check_int(n_states, "n_states"), check_int(n_actions, "n_actions")
    alpha = check_positive(alpha, "alpha")
    if check_int(n_terminal, "n_terminal", low=0) >= S:
        raise ValueError(f"n_terminal: must be less than n_states = {S}, got {n_terminal!r}")
    rng = np.random.default_rng(rng)
    P = rng.dirichlet(np.full(S, float(alpha)), size=(S, A))
    R = rng.uniform(0.0, reward_scale, size=(S, A))
    terminal = np.zeros(S, dtype=bool)
    if n_terminal:
        terminal[S - n_terminal:] = True
    initial = np.zeros(S)
    initial[~terminal] = rng.dirichlet(np.ones(S - n_terminal))
    return TabularMDP(P, R, gamma, initial, terminal if n_terminal else None)


def softmax_policy(logits):
    r"""Tabular softmax policy from logits.

    .. math::

        \pi(a \mid s) = \frac{\exp \theta_{s a}}{\sum_b \exp \theta_{s b}}.

    Parameters
    ----------
    logits : array_like, shape (S, A)
        The parameters ``theta``.

    Returns
    -------
    ndarray, shape (S, A)
        Rows sum to 1 (computed stably, subtracting the row maximum).

    Raises
    ------
    ValueError
        If ``logits`` is not 2-D or contains NaN/inf.

    Examples
    --------
    >>> softmax_policy([[0.0, 0.0], [0.0, np.log(3.0)]]).round(3)
    array([[0.5 , 0.5 ],
           [0.25, 0.75]])

    Used in :doc:`/book/trajectory_weights`, :doc:`/book/variance_problem`,
    :doc:`/book/per_step_weights`, :doc:`/book/on_off_policy`, :doc:`/book/marginalized_is`,
    :doc:`/book/confidence` and the ``estimators``, ``offpolicy_gradient``, ``traces`` and
    ``off_policy_evaluation`` assignments.
    """
    theta = finite_array(logits, "logits", ndim=2)
    z = np.exp(theta - theta.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def uniform_policy(n_states, n_actions):
    r"""The uniform policy ``pi(a | s) = 1 / A``.

    .. math::

        \pi(a \mid s) = 1 / A.

    Parameters
    ----------
    n_states, n_actions : int
        ``S`` and ``A``.

    Returns
    -------
    ndarray, shape (S, A)

    Raises
    ------
    ValueError
        If a size is not a positive integer.

    Examples
    --------
    >>> uniform_policy(2, 4)[0]
    array([0.25, 0.25, 0.25, 0.25])

    Used in :doc:`/book/trajectory_weights`, :doc:`/book/on_off_policy`,
    :doc:`/book/marginalized_is` and the ``estimators``, ``offpolicy_gradient``, ``traces`` and
    ``off_policy_evaluation`` assignments.
    """
    S, A = check_int(n_states, "n_states"), check_int(n_actions, "n_actions")
    return np.full((S, A), 1.0 / A)


def mix_policies(pi, mu, alpha):
    r"""The mixture ``(1 - alpha) pi + alpha mu`` (conservative policy iteration's update).

    .. math::

        \pi_\alpha(a \mid s) = (1 - \alpha)\, \pi(a \mid s) + \alpha\, \mu(a \mid s).

    Parameters
    ----------
    pi, mu : array_like, shape (S, A)
        Policies (rows are distributions).
    alpha : float
        Weight of ``mu`` in [0, 1].

    Returns
    -------
    ndarray, shape (S, A)

    Raises
    ------
    ValueError
        On a shape mismatch, rows that are not distributions, or ``alpha`` outside [0, 1].

    Examples
    --------
    >>> mix_policies([[1.0, 0.0]], [[0.0, 1.0]], 0.25)
    array([[0.75, 0.25]])

    Used in :doc:`/book/trajectory_weights`, :doc:`/book/variance_problem` and
    :doc:`/book/on_off_policy`.
    """
    p = check_distribution(finite_array(pi, "pi", ndim=2), "pi")
    m = finite_array(mu, "mu", ndim=2)
    if p.shape != m.shape:
        raise ValueError(f"mu: shape {m.shape} does not match pi's shape {p.shape}")
    m = check_distribution(m, "mu")
    alpha = check_unit_interval(alpha, "alpha")
    return (1.0 - alpha) * p + alpha * m


# ---------------------------------------------------------------------------------------------
# exact evaluation
# ---------------------------------------------------------------------------------------------
def _policy_matrices(mdp, pi):
    """``P_pi`` (S, S) with terminal rows and columns zeroed, and ``r_pi`` (S,) zero on terminals."""
    P_pi = np.einsum("sa,sat->st", pi, mdp.P)
    r_pi = np.einsum("sa,sa->s", pi, mdp.expected_reward)
    term = mdp.terminal
    P_pi[term, :] = 0.0
    P_pi[:, term] = 0.0
    r_pi = np.where(term, 0.0, r_pi)
    return P_pi, r_pi


def _solve_infinite(mdp, pi):
    P_pi, r_pi = _policy_matrices(mdp, pi)
    M = np.eye(mdp.n_states) - mdp.gamma * P_pi
    if np.linalg.cond(M) > 1e12:
        raise ValueError(
            "pi: the return is not finite: with gamma = 1 and no horizon, terminal states must "
            "be reached with probability 1 (pass horizon= or use gamma < 1)"
        )
    V = np.linalg.solve(M, r_pi)
    d = np.linalg.solve(M.T, mdp.initial)
    Q = mdp.expected_reward + mdp.gamma * np.einsum("sat,t->sa", mdp.P, V)
    Q[mdp.terminal] = 0.0
    return V, Q, d


def _solve_finite(mdp, pi, H):
    S, A = mdp.n_states, mdp.n_actions
    P_pi, r_pi = _policy_matrices(mdp, pi)
    r = mdp.expected_reward
    V = np.zeros((H + 1, S))
    Q = np.zeros((H, S, A))
    for t in range(H - 1, -1, -1):
        Q[t] = r + mdp.gamma * np.einsum("sat,t->sa", mdp.P, V[t + 1])
        Q[t, mdp.terminal] = 0.0
        V[t] = np.einsum("sa,sa->s", pi, Q[t])
    occ = np.zeros((H, S))
    occ[0] = mdp.initial
    for t in range(1, H):
        occ[t] = occ[t - 1] @ P_pi
    d = (mdp.gamma ** np.arange(H)) @ occ
    return V, Q, d, occ


def policy_quantities(mdp, pi, horizon=None) -> PolicyQuantities:
    r"""Exact ``J``, ``V^pi``, ``Q^pi``, ``A^pi`` and discounted visitation ``d^pi``.

    Infinite horizon (``horizon=None``): with :math:`P_\pi` and :math:`r_\pi` restricted to
    non-terminal states,

    .. math::

        V^\pi = (I - \gamma P_\pi)^{-1} r_\pi, \qquad
        Q^\pi(s, a) = r(s, a) + \gamma \sum_{s'} P(s' \mid s, a) V^\pi(s'), \qquad
        d^\pi = (I - \gamma P_\pi^\top)^{-1} d_0,

    with :math:`d_0` the initial distribution (``mdp.initial``), so
    :math:`d^\pi(s) = \sum_t \gamma^t \Pr(s_t = s)`, an unnormalised measure of total mass
    :math:`\sum_t \gamma^t` (:math:`1/(1-\gamma)` without terminal states). Finite horizon ``H``: backward recursion
    :math:`Q_t = r + \gamma P V_{t+1}`, :math:`V_t(s) = \sum_a \pi(a|s) Q_t(s, a)`, :math:`V_H = 0`, and
    forward recursion for the occupancies :math:`\Pr(s_t = s)`.

    Parameters
    ----------
    mdp : TabularMDP
    pi : array_like, shape (S, A)
        The policy.
    horizon : int, optional
        Number of decisions ``H``; None for the infinite-horizon / episodic case.

    Returns
    -------
    PolicyQuantities
        Fields ``J, V, Q, A, d, occupancy`` (time-indexed for a finite horizon, see the class).

    Raises
    ------
    ValueError
        If ``pi`` is not a policy for ``mdp``, ``horizon`` is not a positive integer, or the return
        is not finite (``gamma = 1`` without horizon and with a non-terminating policy).

    Examples
    --------
    >>> from companion.one_state import sutton_barto_one_state_mdp, sutton_barto_one_state_policies
    >>> mdp = sutton_barto_one_state_mdp()
    >>> pi, mu = sutton_barto_one_state_policies()
    >>> q = policy_quantities(mdp, pi)
    >>> round(q.J, 6), q.Q[0].round(6).tolist()
    (1.0, [1.0, 0.0])

    Used in :doc:`/book/per_step_weights` and :doc:`/book/marginalized_is`.
    """
    pi = check_policy(pi, (mdp.n_states, mdp.n_actions), "pi")
    H = check_optional_int(horizon, "horizon")
    if H is None:
        V, Q, d = _solve_infinite(mdp, pi)
        occ = None
        J = float(mdp.initial @ V)
        A = Q - V[:, None]
    else:
        V, Q, d, occ = _solve_finite(mdp, pi, H)
        J = float(mdp.initial @ V[0])
        A = Q - V[:-1, :, None]
    return PolicyQuantities(J=J, V=V, Q=Q, A=A, d=d, occupancy=occ)


def policy_value(mdp, pi, horizon=None):
    r"""Exact expected discounted return ``J(pi)`` from the initial distribution.

    .. math::

        J(\pi) = \mathbb{E}_\pi\Big[\sum_{t=0}^{H-1} \gamma^t r_t\Big]
               = \sum_s d_0(s) V^\pi(s) \quad (H = \infty \text{ if horizon is None}).

    Parameters
    ----------
    mdp : TabularMDP
    pi : array_like, shape (S, A)
    horizon : int, optional
        Number of decisions; None solves the infinite-horizon / episodic problem by a linear solve.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        As :func:`policy_quantities`.

    Examples
    --------
    >>> from companion.one_state import sutton_barto_one_state_mdp, sutton_barto_one_state_policies
    >>> mdp = sutton_barto_one_state_mdp()
    >>> pi, mu = sutton_barto_one_state_policies()
    >>> round(policy_value(mdp, pi), 6), round(policy_value(mdp, mu), 6)
    (1.0, 0.090909)
    >>> round(policy_value(mdp, pi, horizon=1), 6)
    0.1

    Used in :doc:`/book/trajectory_weights`, :doc:`/book/variance_problem`,
    :doc:`/book/per_step_weights`, :doc:`/book/weighted_is`, :doc:`/book/on_off_policy`,
    :doc:`/book/marginalized_is`, :doc:`/book/confidence` and the ``estimators`` and
    ``off_policy_evaluation`` assignments.
    """
    return policy_quantities(mdp, pi, horizon).J


def state_values(mdp, pi, horizon=None):
    r"""Exact ``V^pi`` (at time 0 for a finite horizon).

    .. math::

        V^\pi(s) = \mathbb{E}_\pi\Big[\sum_{t=0}^{H-1} \gamma^t r_t \Bigm| s_0 = s\Big].

    Parameters
    ----------
    mdp : TabularMDP
    pi : array_like, shape (S, A)
    horizon : int, optional

    Returns
    -------
    ndarray, shape (S,)
        Zero on terminal states.

    Raises
    ------
    ValueError
        As :func:`policy_quantities`.

    Examples
    --------
    >>> from companion.one_state import sutton_barto_one_state_mdp, sutton_barto_one_state_policies
    >>> mdp = sutton_barto_one_state_mdp()
    >>> state_values(mdp, sutton_barto_one_state_policies()[0]).round(6)
    array([1., 0.])

    Used in :doc:`/book/on_off_policy` and the ``traces`` assignment.
    """
    q = policy_quantities(mdp, pi, horizon)
    return q.V if horizon is None else q.V[0]


def q_values(mdp, pi, horizon=None):
    r"""Exact ``Q^pi`` (at time 0, with ``horizon`` steps to go, for a finite horizon).

    .. math::

        Q^\pi(s, a) = r(s, a) + \gamma \sum_{s'} P(s' \mid s, a)\, V^\pi(s').

    Parameters
    ----------
    mdp : TabularMDP
    pi : array_like, shape (S, A)
    horizon : int, optional

    Returns
    -------
    ndarray, shape (S, A)
        Zero on terminal states.

    Raises
    ------
    ValueError
        As :func:`policy_quantities`.

    Examples
    --------
    >>> from companion.one_state import sutton_barto_one_state_mdp, sutton_barto_one_state_policies
    >>> mdp = sutton_barto_one_state_mdp()
    >>> pi, mu = sutton_barto_one_state_policies()
    >>> q_values(mdp, mu)[0].round(6)
    array([0.181818, 0.      ])

    Used in :doc:`/book/on_off_policy` and the ``traces`` assignment.
    """
    q = policy_quantities(mdp, pi, horizon)
    return q.Q if horizon is None else q.Q[0]


def discounted_visitation(mdp, pi, horizon=None, normalize=False):
    r"""Discounted state visitation ``d^pi``.

    .. math::

        d^\pi(s) = \sum_{t=0}^{H-1} \gamma^t \Pr_\pi(s_t = s).

    Parameters
    ----------
    mdp : TabularMDP
    pi : array_like, shape (S, A)
    horizon : int, optional
    normalize : bool, default False
        If True divide by the total so the result is a distribution (for ``gamma < 1`` without
        terminal states and horizon this is ``(1 - gamma) d^pi``).

    Returns
    -------
    ndarray, shape (S,)

    Raises
    ------
    ValueError
        As :func:`policy_quantities`.

    Examples
    --------
    >>> from companion.one_state import sutton_barto_one_state_mdp, sutton_barto_one_state_policies
    >>> mdp = sutton_barto_one_state_mdp()
    >>> pi, mu = sutton_barto_one_state_policies()
    >>> discounted_visitation(mdp, pi).round(6)   # expected number of visits: 1 / 0.1
    array([10.,  0.])

    Used in :doc:`/book/per_step_weights` and :doc:`/book/marginalized_is`.
    """
    d = policy_quantities(mdp, pi, horizon).d
    return d / d.sum() if normalize else d


def policy_gradient_exact(mdp, logits, horizon=None):
    r"""Exact gradient of ``J`` with respect to tabular softmax logits.

    With :math:`\pi = \mathrm{softmax}(\theta)` row-wise, the policy-gradient theorem gives

    .. math::

        \frac{\partial J}{\partial \theta_{s a}}
        = \sum_{t=0}^{H-1} \gamma^t \Pr_\pi(s_t = s)\, \pi(a \mid s)\, A^\pi_t(s, a),

    which for ``horizon=None`` is :math:`d^\pi(s)\, \pi(a|s)\, A^\pi(s, a)`. Note the factor
    :math:`\gamma^t`: this is the gradient of the discounted objective itself.

    Parameters
    ----------
    mdp : TabularMDP
    logits : array_like, shape (S, A)
    horizon : int, optional

    Returns
    -------
    ndarray, shape (S, A)
        Each row sums to 0; rows of terminal states are 0.

    Raises
    ------
    ValueError
        On bad logits or as :func:`policy_quantities`.

    Examples
    --------
    >>> from companion.one_state import sutton_barto_one_state_mdp
    >>> mdp = sutton_barto_one_state_mdp()
    >>> policy_gradient_exact(mdp, np.zeros((2, 2))).round(4)
    array([[ 0.0826, -0.0826],
           [ 0.    ,  0.    ]])

    Used in :doc:`/book/trajectory_weights`, :doc:`/book/per_step_weights`, :doc:`/book/confidence`
    and the ``offpolicy_gradient`` assignment.
    """
    pi = softmax_policy(logits)
    if pi.shape != (mdp.n_states, mdp.n_actions):
        raise ValueError(f"logits: expected shape {(mdp.n_states, mdp.n_actions)}, got {pi.shape}")
    H = check_optional_int(horizon, "horizon")
    q = policy_quantities(mdp, pi, H)
    if H is None:
        return q.d[:, None] * pi * q.A
    disc = mdp.gamma ** np.arange(H)
    return np.einsum("t,ts,sa,tsa->sa", disc, q.occupancy, pi, q.A)


# ---------------------------------------------------------------------------------------------
# sampling
# ---------------------------------------------------------------------------------------------
def _categorical(rng, probs):
    """One draw per row of ``probs`` (n, K) by inversion."""
    cdf = np.cumsum(probs, axis=1)
    u = rng.random(probs.shape[0]) * cdf[:, -1]
    idx = (cdf <= u[:, None]).sum(axis=1)
    return np.minimum(idx, probs.shape[1] - 1)


def sample_trajectories(mdp, behavior, n, horizon, rng, target=None) -> Trajectories:
    r"""Sample ``n`` episodes of a behaviour policy, vectorised over episodes.

    .. math::

        s_0 \sim d_0,\quad a_t \sim \mu(\cdot \mid s_t),\quad s_{t+1} \sim P(\cdot \mid s_t, a_t),
        \quad t = 0, \dots, H - 1,

    stopping early (masking the rest) when ``s_{t+1}`` is terminal. Episodes still running at
    ``t = H`` are truncated (``terminated`` is False for them).

    Parameters
    ----------
    mdp : TabularMDP
    behavior : array_like, shape (S, A)
        The behaviour policy ``mu``.
    n : int
        Number of episodes (>= 1).
    horizon : int
        Maximum number of decisions ``H``.
    rng : numpy.random.Generator or int
    target : array_like, shape (S, A), optional
        The target policy ``pi``; if given ``logp_target`` is filled (``-inf`` where ``pi`` is 0).

    Returns
    -------
    Trajectories
        Arrays of shape (n, H); ``traj.log_rho`` gives the per-step log ratios.

    Raises
    ------
    ValueError
        If a policy is not valid for ``mdp``, or ``n``/``horizon`` is not a positive integer.

    Examples
    --------
    >>> from companion.one_state import sutton_barto_one_state_mdp, sutton_barto_one_state_policies
    >>> mdp = sutton_barto_one_state_mdp()
    >>> pi, mu = sutton_barto_one_state_policies()
    >>> traj = sample_trajectories(mdp, mu, n=4, horizon=5, rng=0, target=pi)
    >>> traj.states.shape, traj.mask.dtype, bool(np.all(traj.mask[:, 0]))
    ((4, 5), dtype('bool'), True)

    Used in :doc:`/book/trajectory_weights`, :doc:`/book/variance_problem`,
    :doc:`/book/per_step_weights`, :doc:`/book/weighted_is`, :doc:`/book/on_off_policy`,
    :doc:`/book/marginalized_is`, :doc:`/book/confidence` and the ``estimators``,
    ``offpolicy_gradient`` and ``off_policy_evaluation`` assignments.
    """
    shape = (mdp.n_states, mdp.n_actions)
    mu = check_policy(behavior, shape, "behavior")
    pi = None if target is None else check_policy(target, shape, "target")
    n = check_int(n, "n")
    H = check_int(horizon, "horizon")  # sampling needs a maximum length
    rng = np.random.default_rng(rng)
    states = np.zeros((n, H), dtype=np.int64)
    actions = np.zeros((n, H), dtype=np.int64)
    rewards = np.zeros((n, H))
    logp_b = np.zeros((n, H))
    logp_t = None if pi is None else np.zeros((n, H))
    mask = np.zeros((n, H), dtype=bool)
    with np.errstate(divide="ignore"):
        log_mu = np.log(mu)
        log_pi = None if pi is None else np.log(pi)
    s = _categorical(rng, np.broadcast_to(mdp.initial, (n, mdp.n_states)))
    alive = np.ones(n, dtype=bool)
    for t in range(H):
        idx = np.flatnonzero(alive)
        if idx.size == 0:
            break
        st = s[idx]
        a = _categorical(rng, mu[st])
        s_next = _categorical(rng, mdp.P[st, a])
        r = mdp.R[st, a] if mdp.R.ndim == 2 else mdp.R[st, a, s_next]
        states[idx, t] = st
        actions[idx, t] = a
        rewards[idx, t] = r
        logp_b[idx, t] = log_mu[st, a]
        if pi is not None:
            logp_t[idx, t] = log_pi[st, a]
        mask[idx, t] = True
        s[idx] = s_next
        alive[idx] = ~mdp.terminal[s_next]
    return Trajectories(states, actions, rewards, logp_b, logp_t, mask, terminated=~alive)
