r"""Where the variance of importance weights comes from.

Chapter 4 (the variance problem) explains the growth of the trajectory weight
:math:`w = \rho_{0:T-1} = \prod_{t=0}^{T-1} \rho_t` through its second moment. Under the behaviour
policy one ratio has

.. math::

    \mathbb{E}_\mu[\rho^2] = \sum_a \frac{\pi(a)^2}{\mu(a)} = 1 + \chi^2(\pi \Vert \mu),

and for independent steps the moments multiply, :math:`\mathbb{E}_\mu[w^2] = (1 + \chi^2)^T`. In an
MDP the steps are not independent, but the moment still obeys a linear recursion over states, which
:func:`log_weight_moment` solves exactly.

The functions:

* :func:`chi_square_divergence`: :math:`\chi^2(\pi \Vert \mu)` of one distribution or of each row.
* :func:`log_weight_moment`: exact :math:`\log \mathbb{E}_\mu[w^k]` on a tabular MDP.
* :func:`population_ess_fraction`: the limit :math:`1/\mathbb{E}_\mu[w^2]` of the sample ESS/n,
  and the standard error of its logarithm at sample size n.

The single-ratio estimator of :doc:`/book/per_step_weights`, which avoids this growth, is
:func:`companion.estimators.single_step_is`.

See chapter 4 (the variance problem).
"""

from __future__ import annotations

import numpy as np

from .mdp import TabularMDP, _check_distribution_rows, _check_horizon, _check_policy, _finite_array

__all__ = ["chi_square_divergence", "log_weight_moment", "population_ess_fraction"]


def _check_support(pi, mu, pi_name="pi", mu_name="mu"):
    """Raise if ``mu`` is 0 where ``pi`` is positive (names the state and action)."""
    bad = (mu <= 0) & (pi > 0)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        place = f"action {idx[-1]}" if len(idx) == 1 else f"state {idx[0]}, action {idx[1]}"
        raise ValueError(
            f"{mu_name}: behaviour probability 0 at {place} where {pi_name} is "
            f"{float(pi[idx]):.6g} > 0; the importance ratio is undefined (no support)"
        )


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

    See chapter 4 (the variance problem), eq. (eq-var-chi2).
    """
    p = _finite_array(pi, "pi")
    m = _finite_array(mu, "mu")
    if p.ndim not in (1, 2) or p.shape != m.shape:
        raise ValueError(f"pi and mu must have the same shape (A,) or (S, A), got {p.shape} and "
                         f"{m.shape}")
    _check_distribution_rows(p, "pi")
    _check_distribution_rows(m, "mu")
    _check_support(p, m)
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

        m_0 = \rho_0, \qquad
        m_{t+1}(s') = \sum_s m_t(s) \sum_a \mu(a \mid s) \Big(\frac{\pi(a \mid s)}{\mu(a \mid s)}
        \Big)^k P(s' \mid s, a) = (m_t K)(s'), \qquad
        \mathbb{E}_\mu[w^k] = \sum_s m_H(s),

    with :math:`K(s, s') = \sum_a \pi(a|s)^k \mu(a|s)^{1-k} P(s'|s,a)` (and :math:`K(s, s) = 1` for
    terminal :math:`s`). For one state and :math:`k = 2`, :math:`K = 1 + \chi^2(\pi \Vert \mu)` and
    :math:`\mathbb{E}_\mu[w^2] = (1 + \chi^2)^H`. The recursion is renormalised at every step, so
    the result is exact in log space for any horizon.

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

    See chapter 4 (the variance problem), eq. (eq-var-second-moment).
    """
    if not isinstance(mdp, TabularMDP):
        raise ValueError(f"mdp must be a companion.mdp.TabularMDP, got {type(mdp).__name__}")
    p = _check_policy(pi, mdp, "pi")
    m = _check_policy(mu, mdp, "mu")
    H = _check_horizon(horizon)
    if H is None:
        raise ValueError("horizon must be a positive integer, got None")
    try:
        k = float(order)
    except (TypeError, ValueError) as err:
        raise ValueError(f"order must be a positive number, got {order!r}") from err
    if not (np.isfinite(k) and k > 0):
        raise ValueError(f"order must be a positive finite number, got {order!r}")
    live = ~mdp.terminal
    _check_support(p[live], m[live])
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

    See chapter 4 (the variance problem), eq. (eq-var-ess).
    """
    log_m2 = log_weight_moment(mdp, pi, mu, horizon, order=2)
    fraction = float(np.exp(-log_m2))
    if n is None:
        return fraction
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    log_m3 = log_weight_moment(mdp, pi, mu, horizon, order=3)
    log_m4 = log_weight_moment(mdp, pi, mu, horizon, order=4)
    with np.errstate(over="ignore", invalid="ignore"):
        var = (4 * np.expm1(log_m2) + np.expm1(log_m4 - 2 * log_m2)
               - 4 * (np.exp(log_m3 - log_m2) - 1)) / int(n)
    if not np.isfinite(var):
        return fraction, float("inf")
    return fraction, float(np.sqrt(max(var, 0.0)))
