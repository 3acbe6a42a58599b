r"""Where the variance of importance weights comes from.

:doc:`/book/variance_problem` explains the growth of the trajectory weight
:math:`w = \rho_{0:T-1} = \prod_{t=0}^{T-1} \rho_t` through its second moment. Under the behaviour
policy one ratio has

.. math::

    \mathbb{E}_\mu[\rho^2] = \sum_a \frac{\pi(a)^2}{\mu(a)} = 1 + \chi^2(\pi \Vert \mu).

In an MDP the moment of the product obeys a linear recursion over states, which
:func:`log_weight_moment` solves exactly; it lies between :math:`(1 + \min_s \chi^2_s)^T` and
:math:`(1 + \max_s \chi^2_s)^T`, and equals :math:`(1 + \chi^2)^T` when every state has the same
:math:`\chi^2` (independent steps, for instance).

The functions:

* :func:`chi_square_divergence`: :math:`\chi^2(\pi \Vert \mu)` of one distribution or of each row.
* :func:`log_weight_moment`: exact :math:`\log \mathbb{E}_\mu[w^k]` on a tabular MDP.
* :func:`population_ess_fraction`: the limit :math:`1/\mathbb{E}_\mu[w^2]` of the sample ESS/n,
  and the standard error of its logarithm at sample size n.
* :func:`estimator_moments`: exact mean and variance of the per-episode term of the trajectory,
  per-decision, doubly robust and single-step estimators on a tabular MDP.

The single-ratio estimator of :doc:`per-step weights </book/per_step_weights>`, which avoids this
growth, is :func:`companion.estimators.single_step_is`.

Used in :doc:`/book/trajectory_weights`, :doc:`/book/variance_problem`,
:doc:`/book/per_step_weights`, :doc:`/book/on_off_policy`, :doc:`/book/marginalized_is`,
:doc:`/book/confidence` and the ``variance`` assignment.
"""

from __future__ import annotations

import numpy as np

from ._validation import (
    check_distribution,
    check_instance,
    check_int,
    check_policy,
    check_positive,
    check_support,
    finite_array,
)
from .mdp import TabularMDP

__all__ = ["chi_square_divergence", "log_weight_moment", "population_ess_fraction",
           "estimator_moments"]


def _check_problem(mdp, pi, mu, horizon):
    """The policies of a tabular problem as arrays, and the horizon; ``mu`` must cover ``pi``
    at every non-terminal state."""
    check_instance(mdp, TabularMDP, "mdp")
    shape = (mdp.n_states, mdp.n_actions)
    p, m = check_policy(pi, shape, "pi"), check_policy(mu, shape, "mu")
    check_support(np.where(mdp.terminal[:, None], 0.0, p), m)
    return p, m, check_int(horizon, "horizon")


def chi_square_divergence(pi, mu):
    r"""Chi-square divergence :math:`\chi^2(\pi \Vert \mu)`, the excess second moment of one ratio.

    .. math::

        \chi^2(\pi \Vert \mu) = \sum_a \frac{(\pi(a) - \mu(a))^2}{\mu(a)}
        = \sum_a \frac{\pi(a)^2}{\mu(a)} - 1 = \mathbb{E}_{a \sim \mu}[\rho(a)^2] - 1 .

    Parameters
    ----------
    pi, mu : array_like, shape (A,) or (S, A)
        Target and behaviour distributions; for 2-D input each row is one state's distribution.

    Returns
    -------
    float or ndarray of shape (S,)
        The divergence of each row (a float for 1-D input). Non-negative; 0 iff ``pi == mu``.

    Raises
    ------
    ValueError
        On a shape mismatch, NaN/inf, probabilities outside [0, 1], rows that do not sum to 1, or
        ``mu == 0`` where ``pi > 0`` (the divergence is infinite; names the state and action).

    Examples
    --------
    >>> round(chi_square_divergence([0.6, 0.4], [0.5, 0.5]), 6)   # ratios 1.2 and 0.8
    0.04
    >>> chi_square_divergence([[0.5, 0.5], [0.9, 0.1]], [[0.5, 0.5], [0.5, 0.5]]).round(4)
    array([0.  , 0.64])

    Used in :doc:`/book/trajectory_weights`, :doc:`/book/variance_problem`,
    :doc:`/book/per_step_weights`, :doc:`/book/on_off_policy`, :doc:`/book/marginalized_is` and the
    ``variance`` assignment; see
    eq. (eq-var-chi2).
    """
    p = finite_array(pi, "pi")
    if p.ndim not in (1, 2):
        raise ValueError(f"pi: expected shape (A,) or (S, A), got {p.shape}")
    m = finite_array(mu, "mu")
    if m.shape != p.shape:
        raise ValueError(f"mu: shape {m.shape} does not match pi's shape {p.shape}")
    p, m = check_distribution(p, "pi"), check_distribution(m, "mu")
    check_support(p, m)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(m > 0, (p - m) ** 2 / np.where(m > 0, m, 1.0), 0.0)
    out = terms.sum(axis=-1)
    return float(out) if out.ndim == 0 else out


def log_weight_moment(mdp, pi, mu, horizon, order=2, *, per_horizon=False):
    r"""Exact :math:`\log \mathbb{E}_\mu[w^k]` of the trajectory weight on a tabular MDP.

    With :math:`w = \prod_{t=0}^{H-1} \rho_t` over the steps actually taken (an episode that enters
    a terminal state stops multiplying), let :math:`m_t(s) = \mathbb{E}_\mu[\rho_{0:t-1}^k\,;\,
    s_t = s]`. Conditioning on :math:`s_t` gives a linear recursion,

    .. math::

        m_0 = d_0, \qquad
        m_{t+1}(s') = \sum_s m_t(s) \sum_a \mu(a \mid s) \Big(\frac{\pi(a \mid s)}{\mu(a \mid s)}
        \Big)^k P(s' \mid s, a) = (m_t K)(s'), \qquad
        \mathbb{E}_\mu[w^k] = \sum_s m_H(s),

    with :math:`K(s, s') = \sum_a \pi(a|s)^k \mu(a|s)^{1-k} P(s'|s,a)` (and :math:`K(s, s) = 1` for
    terminal :math:`s`) and :math:`d_0` the initial distribution. For :math:`k = 2` the row sums of
    :math:`K` are :math:`1 + \chi^2_s`, so :math:`(1 + \min_s \chi^2_s)^H \le \mathbb{E}_\mu[w^2]
    \le (1 + \max_s \chi^2_s)^H` (without terminal states), with equality when every state has the
    same :math:`\chi^2`; for one state, :math:`\mathbb{E}_\mu[w^2] = (1 + \chi^2)^H`. The recursion
    is renormalised at every step, so the result is exact in log space for any horizon.

    Parameters
    ----------
    mdp : TabularMDP
    pi, mu : array_like, shape (S, A)
        Target and behaviour policies.
    horizon : int
        Number of decisions ``H`` (>= 1).
    order : float, default 2
        The moment ``k`` (> 0). ``k = 1`` gives 0 (the weight has mean 1).
    per_horizon : bool, default False
        If True return the values for every horizon ``1, ..., H``.

    Returns
    -------
    float, or ndarray of shape (H,)
        :math:`\log \mathbb{E}_\mu[w^k]`; entry ``h - 1`` is the value for horizon ``h``.

    Raises
    ------
    ValueError
        If ``mdp`` is not a :class:`~companion.mdp.TabularMDP`, a policy is invalid for it,
        ``horizon`` is not a positive integer, ``order`` is not a positive number, or ``mu`` is 0
        where ``pi`` is positive at a non-terminal state (names the state and action).

    Examples
    --------
    >>> import numpy as np
    >>> from companion.mdp import TabularMDP
    >>> one_state = TabularMDP(np.ones((1, 2, 1)), np.zeros((1, 2)), gamma=1.0, initial=[1.0])
    >>> pi, mu = np.array([[0.6, 0.4]]), np.array([[0.5, 0.5]])
    >>> round(float(np.exp(log_weight_moment(one_state, pi, mu, horizon=100))), 2)  # 1.04^100
    50.5

    Used in :doc:`/book/trajectory_weights`, :doc:`/book/variance_problem`,
    :doc:`/book/on_off_policy` and :doc:`/book/confidence`; see eqs. (eq-var-moment-recursion) and (eq-var-bounds).
    """
    p, m, H = _check_problem(mdp, pi, mu, horizon)
    k = check_positive(order, "order")
    with np.errstate(divide="ignore", invalid="ignore"):
        g = np.where(m > 0, np.exp(k * np.log(np.where(p > 0, p, 1.0)) + (1 - k) *
                                   np.log(np.where(m > 0, m, 1.0))), 0.0)
    g = np.where(p > 0, g, 0.0)                      # pi(a|s)^k mu(a|s)^(1-k), shape (S, A)
    K = np.einsum("sa,sat->st", g, mdp.P)
    K[mdp.terminal] = 0.0
    K[mdp.terminal, mdp.terminal] = 1.0
    mass = np.asarray(mdp.initial, dtype=float).copy()
    logs = np.empty(H)
    log_scale = 0.0
    for t in range(H):
        mass = mass @ K
        total = mass.sum()
        if total <= 0:                               # every path has weight 0 (pi avoids them all)
            logs[t:] = -np.inf
            break
        log_scale += np.log(total)
        mass /= total
        logs[t] = log_scale
    return logs if per_horizon else float(logs[-1])


def population_ess_fraction(mdp, pi, mu, horizon, n=None):
    r"""The value :math:`1/\mathbb{E}_\mu[w^2]` that the sample ESS/n estimates, and its spread.

    Kong's effective sample size of ``n`` trajectory weights, divided by ``n``, is
    :math:`\widehat{\mathrm{ESS}}/n = \bar w^2 / \overline{w^2}` (sample means). As
    :math:`n \to \infty` it tends to :math:`(\mathbb{E}_\mu w)^2 / \mathbb{E}_\mu[w^2]
    = 1/\mathbb{E}_\mu[w^2]`, since :math:`\mathbb{E}_\mu w = 1`. By the delta method, with
    :math:`m_k = \mathbb{E}_\mu[w^k]` (all exact, from :func:`log_weight_moment`),

    .. math::

        \operatorname{sd}\Big(\log \frac{\widehat{\mathrm{ESS}}}{n}\Big) \approx \sqrt{\frac1n
        \Big(4 (m_2 - 1) + \frac{m_4 - m_2^2}{m_2^2} - 4\, \frac{m_3 - m_2}{m_2}\Big)} .

    When this is large (heavy-tailed weights) the sample ESS is itself unreliable, and it is then
    typically *too optimistic*: the sample has not yet met the rare huge weights.

    Parameters
    ----------
    mdp : TabularMDP
    pi, mu : array_like, shape (S, A)
        Target and behaviour policies.
    horizon : int
        Number of decisions.
    n : int, optional
        Number of trajectories; if given, also return the standard error.

    Returns
    -------
    fraction : float
        :math:`1/\mathbb{E}_\mu[w^2]`.
    log_stderr : float
        Only if ``n`` is given: the delta-method sd of :math:`\log(\widehat{\mathrm{ESS}}/n)`
        (``inf`` if the moments overflow).

    Raises
    ------
    ValueError
        As :func:`log_weight_moment`, or if ``n`` is not a positive integer.

    Examples
    --------
    >>> import numpy as np
    >>> from companion.mdp import TabularMDP
    >>> one_state = TabularMDP(np.ones((1, 2, 1)), np.zeros((1, 2)), gamma=1.0, initial=[1.0])
    >>> pi, mu = np.array([[0.6, 0.4]]), np.array([[0.5, 0.5]])
    >>> frac, se = population_ess_fraction(one_state, pi, mu, horizon=20, n=4000)
    >>> round(frac, 4), round(se, 3)   # 1 / 1.04^20
    (0.4564, 0.039)

    The delta method approximates the spread of a smooth function of sample means by a
    first-order Taylor expansion around the population means. Used in
    :doc:`/book/variance_problem`, eq. (eq-var-ess).
    """
    log_m2 = log_weight_moment(mdp, pi, mu, horizon, order=2)
    fraction = float(np.exp(-log_m2))
    if n is None:
        return fraction
    n = check_int(n, "n")
    log_m3 = log_weight_moment(mdp, pi, mu, horizon, order=3)
    log_m4 = log_weight_moment(mdp, pi, mu, horizon, order=4)
    with np.errstate(over="ignore", invalid="ignore"):
        var = (4 * np.expm1(log_m2) + np.expm1(log_m4 - 2 * log_m2)
               - 4 * (np.exp(log_m3 - log_m2) - 1)) / n
    if not np.isfinite(var):
        return fraction, float("inf")
    return fraction, float(np.sqrt(max(var, 0.0)))


# The estimators that estimator_moments knows (per-episode terms as in companion.estimators).
_KINDS = ("trajectory", "per-decision", "doubly-robust", "single-step")


def estimator_moments(mdp, pi, mu, horizon, estimator, *, q_hat=None, advantages=None):
    r"""Exact mean and variance of one episode's term of an off-policy estimator on a tabular MDP.

    Every estimator of :doc:`/book/per_step_weights` averages one term per episode drawn with the
    behaviour :math:`\mu`; its mean squared error from ``n`` episodes is
    :math:`(\text{mean} - J(\pi))^2 + \text{variance} / n`. Each term is the value :math:`X_0` of a
    backward recursion over the steps of the episode (:math:`X_H = 0`, :math:`W_H = 1`,
    :math:`\rho = \pi(a_t|s_t)/\mu(a_t|s_t)`, :math:`r = r(s_t, a_t, s_{t+1})`):

    .. math::

        \text{trajectory:}\quad & X_t = \rho\,(r\, W_{t+1} + \gamma X_{t+1}), \quad
            W_t = \rho\, W_{t+1} \quad (X_0 = \rho_{0:H-1} \textstyle\sum_t \gamma^t r_t), \\
        \text{per-decision:}\quad & X_t = \rho\,(r + \gamma X_{t+1}), \\
        \text{doubly robust:}\quad & X_t = \hat V_t(s_t) + \rho\,\big(r - \hat Q_t(s_t, a_t)
            + \gamma X_{t+1}\big), \quad \hat V_t(s) = \textstyle\sum_a \pi(a|s) \hat Q_t(s, a), \\
        \text{single-step:}\quad & X_t = r + (\rho - 1)\, \hat A_t(s_t, a_t) + \gamma X_{t+1} .

    Each is affine in the future, :math:`X_t = f + c\, X_{t+1} + h\, W_{t+1}`, with
    :math:`(W_{t+1}, X_{t+1})` independent of :math:`(s_t, a_t)` given :math:`s_{t+1}` (the
    Markov property). So the conditional moments :math:`m_1 = \mathbb{E}_\mu[X_t \mid s_t]`,
    :math:`m_2 = \mathbb{E}_\mu[X_t^2 \mid s_t]`, :math:`\mathbb{E}_\mu[W_t^2 \mid s_t]` and
    :math:`\mathbb{E}_\mu[W_t X_t \mid s_t]` follow from those at :math:`t + 1` by one average over
    :math:`a_t \sim \mu(\cdot|s_t)`, :math:`s_{t+1} \sim P(\cdot|s_t, a_t)` (with
    :math:`\mathbb{E}_\mu[W_{t+1} \mid s_{t+1}] = 1`). The mean and variance of :math:`X_0` are
    exact, without sampling; an episode that enters a terminal state stops there.

    Parameters
    ----------
    mdp : TabularMDP
    pi, mu : array_like, shape (S, A)
        Target and behaviour policies.
    horizon : int
        Number of decisions ``H`` (>= 1).
    estimator : {"trajectory", "per-decision", "doubly-robust", "single-step"}
        The per-episode term: that of :func:`companion.estimators.trajectory_is`,
        :func:`companion.estimators.per_decision_is`, :func:`companion.estimators.doubly_robust`
        (with ``v_hat`` the consistent :math:`\sum_a \pi(a|s) \hat Q_t(s, a)`) or
        :func:`companion.estimators.single_step_is`, all with ``gamma = mdp.gamma``.
    q_hat : array_like, shape (H, S, A)
        The model :math:`\hat Q_t(s, a)` of the doubly robust estimator (required for it only).
    advantages : array_like, shape (H, S, A)
        The advantages :math:`\hat A_t(s, a)` of the single-step estimator (required for it
        only; :math:`A^\mu_t` makes the mean the surrogate :math:`L_\mu(\pi)`).

    Returns
    -------
    mean, variance : float
        :math:`\mathbb{E}_\mu[X_0]` and :math:`\operatorname{Var}_\mu(X_0)` over episodes from
        :math:`\mu`. The mean is :math:`J(\pi)` for the first three (unbiased) estimators.

    Raises
    ------
    ValueError
        If ``mdp`` is not a :class:`~companion.mdp.TabularMDP`, a policy is invalid for it,
        ``horizon`` is not a positive integer, ``estimator`` is not one of the four names, the
        table that estimator needs is missing, has the wrong shape or holds NaN/inf, or ``mu`` is 0
        where ``pi`` is positive at a non-terminal state (names the state and action).

    Examples
    --------
    >>> import numpy as np
    >>> from companion.mdp import TabularMDP
    >>> bandit = TabularMDP(np.ones((1, 2, 1)), [[1.0, 0.0]], gamma=1.0, initial=[1.0])
    >>> pi, mu = np.array([[0.6, 0.4]]), np.array([[0.5, 0.5]])
    >>> mean, var = estimator_moments(bandit, pi, mu, 1, "per-decision")
    >>> round(mean, 6), round(var, 6)     # term 1.2 or 0 with probability 1/2 each
    (0.6, 0.36)

    See :doc:`/book/per_step_weights` (exact variances of the four estimators).
    """
    p, m, H = _check_problem(mdp, pi, mu, horizon)
    if estimator not in _KINDS:
        raise ValueError(f"estimator: must be one of {_KINDS}, got {estimator!r}")
    needed = {"doubly-robust": ("q_hat", q_hat), "single-step": ("advantages", advantages)}
    table = None
    if estimator in needed:
        name, value = needed[estimator]
        if value is None:
            raise ValueError(f"{name}: the {estimator} estimator needs a table of shape (H, S, A)")
        table = finite_array(value, name, ndim=3)
        if table.shape != (H, mdp.n_states, mdp.n_actions):
            raise ValueError(f"{name}: expected shape (H, S, A) = "
                             f"{(H, mdp.n_states, mdp.n_actions)}, got {table.shape}")
    rho = np.where(m > 0, p / np.where(m > 0, m, 1.0), 0.0)[:, :, None]      # (S, A, 1)
    R = mdp.R if mdp.R.ndim == 3 else np.broadcast_to(mdp.R[:, :, None], mdp.P.shape)
    step = m[:, :, None] * mdp.P                         # Pr(a_t, s_{t+1} | s_t), (S, A, S)
    g = mdp.gamma
    m1, m2 = np.zeros(mdp.n_states), np.zeros(mdp.n_states)   # E[X_t | s], E[X_t^2 | s]
    w2, wx = np.ones(mdp.n_states), np.zeros(mdp.n_states)    # E[W_t^2 | s], E[W_t X_t | s]
    for t in range(H - 1, -1, -1):
        f, c, h = 0.0, g * rho, 0.0                      # X_t = f + c X_{t+1} + h W_{t+1}
        if estimator == "trajectory":
            h = rho * R
        elif estimator == "per-decision":
            f = rho * R
        elif estimator == "doubly-robust":
            v = np.sum(p * table[t], axis=1)
            f = v[:, None, None] + rho * (R - table[t][:, :, None])
        else:
            f, c = R + (rho - 1) * table[t][:, :, None], g
        new_m1 = np.sum(step * (f + c * m1 + h), axis=(1, 2))
        new_m2 = np.sum(step * (f**2 + c**2 * m2 + h**2 * w2 + 2 * f * c * m1 + 2 * f * h
                                + 2 * c * h * wx), axis=(1, 2))
        new_wx = np.sum(step * rho * (f + c * wx + h * w2), axis=(1, 2))
        new_w2 = np.sum(step * rho**2 * w2, axis=(1, 2))
        m1, m2, wx, w2 = (np.where(mdp.terminal, end, x) for x, end in
                          [(new_m1, 0.0), (new_m2, 0.0), (new_wx, 0.0), (new_w2, 1.0)])
    mean = float(mdp.initial @ m1)
    return mean, float(max(mdp.initial @ m2 - mean**2, 0.0))
