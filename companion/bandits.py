r"""A Gaussian multi-armed bandit with a softmax policy: the smallest problem with an exact policy
gradient, used to show why a policy gradient computed from stale samples needs importance weights.

The policy is :math:`\pi_\theta(a) = \exp\theta_a / \sum_b \exp\theta_b` over ``K`` arms; pulling
arm ``a`` pays a reward :math:`r \sim \mathcal N(m_a, \sigma^2)`. Everything is exact:

.. math::

    J(\theta) = \sum_a \pi_\theta(a)\, m_a, \qquad
    \nabla_\theta J = \pi_\theta \odot (m - J(\theta)\,\mathbf 1),

and the sampled gradient is REINFORCE (Williams, 1992) on pulls from a behaviour policy
:math:`\mu`, with or without the importance ratio :math:`\rho = \pi_\theta(a)/\mu(a)`:

.. math::

    \hat g = \frac1n \sum_{i=1}^n \rho_i\, r_i\, \nabla_\theta \log \pi_\theta(a_i), \qquad
    \nabla_\theta \log \pi_\theta(a) = e_a - \pi_\theta .

:func:`train_softmax_bandit` runs many independent learners at once (vectorised over runs) and
reuses each batch of pulls for several reweighted gradient steps.

Used in :doc:`/book/why_rl` and the ``offpolicy_gradient`` assignment.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._validation import (
    check_distribution,
    check_instance,
    check_int,
    check_nonnegative,
    check_positive,
    finite_array,
)
from .policy_gradient import GradientEstimate

__all__ = [
    "GaussianBandit",
    "BanditBatch",
    "BanditHistory",
    "bandit_policy",
    "bandit_value",
    "bandit_gradient_exact",
    "sample_bandit",
    "bandit_gradient",
    "train_softmax_bandit",
]

_CORRECTIONS = ("ratio", "none")


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------
def _check_logits(logits, n_arms, name="logits"):
    arr = finite_array(logits, name)
    if arr.ndim not in (1, 2) or arr.shape[-1] != n_arms:
        raise ValueError(f"{name}: expected shape (K,) or (n_runs, K) with K = {n_arms}, "
                         f"got {arr.shape}")
    return arr


def _check_probs(p, n_arms, name):
    arr = finite_array(p, name)
    if arr.ndim not in (1, 2) or arr.shape[-1] != n_arms:
        raise ValueError(f"{name}: expected shape (K,) or (n_runs, K) with K = {n_arms}, "
                         f"got {arr.shape}")
    return check_distribution(arr, name)


# ---------------------------------------------------------------------------------------------
# the bandit
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GaussianBandit:
    r"""A ``K``-armed bandit whose arm ``a`` pays :math:`r \sim \mathcal N(m_a, \sigma^2)`.

    .. math::

        \E[r \mid a] = m_a, \qquad \Var[r \mid a] = \sigma^2 .

    Parameters
    ----------
    means : array_like, shape (K,)
        Mean reward :math:`m_a` of each arm, ``K >= 2``.
    sd : float, default 1.0
        Reward noise :math:`\sigma \ge 0` (the same for every arm).

    Raises
    ------
    ValueError
        If ``means`` is not 1-D with at least two finite entries or ``sd`` is negative or not finite.

    Examples
    --------
    >>> bandit = GaussianBandit([0.0, 1.0, 0.5], sd=0.5)
    >>> bandit.n_arms, float(bandit.means.max())
    (3, 1.0)

    Used in :doc:`/book/why_rl` and the ``offpolicy_gradient`` assignment.
    """

    means: np.ndarray
    sd: float = 1.0

    def __post_init__(self):
        means = finite_array(self.means, "means")
        if means.ndim != 1 or means.shape[0] < 2:
            raise ValueError(f"means: expected shape (K,) with K >= 2, got {means.shape}")
        sd = check_nonnegative(self.sd, "sd")
        means = means.copy()
        means.setflags(write=False)
        object.__setattr__(self, "means", means)
        object.__setattr__(self, "sd", sd)

    @property
    def n_arms(self) -> int:
        """Number of arms ``K``."""
        return self.means.shape[0]


@dataclass(frozen=True)
class BanditBatch:
    """Pulls of a bandit by a behaviour policy.

    Used in :doc:`/book/why_rl` and the ``offpolicy_gradient`` assignment.

    Attributes
    ----------
    actions : ndarray of int, shape (n,) or (n_runs, n)
        Pulled arms :math:`a_i \\sim \\mu`.
    rewards : ndarray, shape like ``actions``
        Observed rewards :math:`r_i`.
    logp_behavior : ndarray, shape like ``actions``
        :math:`\\log \\mu(a_i)`, needed later for the importance ratio.
    """

    actions: np.ndarray
    rewards: np.ndarray
    logp_behavior: np.ndarray

    @property
    def n(self) -> int:
        """Number of pulls (per run)."""
        return self.actions.shape[-1]


@dataclass(frozen=True)
class BanditHistory:
    r"""Learning curves of :func:`train_softmax_bandit`.

    Used in :doc:`/book/why_rl`.

    Attributes
    ----------
    pulls : ndarray of int, shape (n_batches + 1,)
        Environment samples used so far: ``pulls[b] = b * batch_size``.
    J : ndarray, shape (n_runs, n_batches + 1)
        Exact value :math:`J(\theta)` of each run's policy after ``b`` batches (column 0: start).
    ess_fraction : ndarray, shape (n_runs, n_batches, epochs)
        Kong's effective sample size over ``batch_size``,
        :math:`(\sum_i \rho_i)^2 / (n \sum_i \rho_i^2)`, of the ratios used in each update (1 when
        ``correction="none"`` and on the first epoch of every batch, where :math:`\rho = 1`).
    logits : ndarray, shape (n_runs, K)
        Final logits.
    """

    pulls: np.ndarray
    J: np.ndarray
    ess_fraction: np.ndarray
    logits: np.ndarray


# ---------------------------------------------------------------------------------------------
# exact quantities
# ---------------------------------------------------------------------------------------------
def bandit_policy(logits):
    r"""Softmax policy over arms, row-wise and numerically stable.

    .. math::

        \pi_\theta(a) = \frac{\exp(\theta_a - \max_b \theta_b)}{\sum_c \exp(\theta_c - \max_b \theta_b)} .

    Parameters
    ----------
    logits : array_like, shape (K,) or (n_runs, K)

    Returns
    -------
    ndarray, same shape as ``logits``

    Raises
    ------
    ValueError
        If ``logits`` holds NaN or inf or has more than two dimensions.

    Examples
    --------
    >>> bandit_policy([0.0, np.log(3.0)]).round(3)
    array([0.25, 0.75])

    Used in :doc:`/book/why_rl` and the ``offpolicy_gradient`` assignment.
    """
    theta = finite_array(logits, "logits")
    if theta.ndim not in (1, 2):
        raise ValueError(f"logits: expected shape (K,) or (n_runs, K), got {theta.shape}")
    z = np.exp(theta - theta.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def bandit_value(bandit, logits):
    r"""Exact expected reward of the softmax policy.

    .. math::

        J(\theta) = \sum_a \pi_\theta(a)\, m_a .

    Parameters
    ----------
    bandit : GaussianBandit
    logits : array_like, shape (K,) or (n_runs, K)

    Returns
    -------
    float or ndarray of shape (n_runs,)

    Raises
    ------
    ValueError
        If ``logits`` does not match the number of arms or holds NaN/inf.

    Examples
    --------
    >>> bandit = GaussianBandit([0.0, 1.0])
    >>> bandit_value(bandit, [0.0, 0.0])
    0.5

    Used in :doc:`/book/why_rl`.
    """
    theta = _check_logits(logits, bandit.n_arms)
    J = bandit_policy(theta) @ bandit.means
    return float(J) if theta.ndim == 1 else J


def bandit_gradient_exact(bandit, logits):
    r"""Exact gradient of :math:`J(\theta)` with respect to the logits.

    .. math::

        \frac{\partial J}{\partial \theta_a} = \pi_\theta(a)\,\big(m_a - J(\theta)\big).

    Parameters
    ----------
    bandit : GaussianBandit
    logits : array_like, shape (K,) or (n_runs, K)

    Returns
    -------
    ndarray, same shape as ``logits`` (each row sums to 0)

    Raises
    ------
    ValueError
        If ``logits`` does not match the number of arms or holds NaN/inf.

    Examples
    --------
    >>> bandit = GaussianBandit([0.0, 1.0])
    >>> bandit_gradient_exact(bandit, [0.0, 0.0])
    array([-0.25,  0.25])

    Used in :doc:`/book/why_rl` and the ``offpolicy_gradient`` assignment; see eq.
    (eq-why-bandit-gradient).
    """
    theta = _check_logits(logits, bandit.n_arms)
    pi = bandit_policy(theta)
    J = pi @ bandit.means
    return pi * (bandit.means - np.asarray(J)[..., None])


# ---------------------------------------------------------------------------------------------
# sampling and estimation
# ---------------------------------------------------------------------------------------------
def _draw(rng, probs, n):
    """``n`` arms per row of ``probs`` (R, K) by inversion, shape (R, n)."""
    cdf = np.cumsum(probs, axis=-1)
    u = rng.random((probs.shape[0], n)) * cdf[:, -1:]
    idx = (cdf[:, None, :] <= u[:, :, None]).sum(axis=-1)
    return np.minimum(idx, probs.shape[-1] - 1)


def sample_bandit(bandit, behavior, n, rng) -> BanditBatch:
    r"""Pull the bandit ``n`` times with the behaviour policy :math:`\mu`.

    .. math::

        a_i \sim \mu, \qquad r_i = m_{a_i} + \sigma \varepsilon_i, \quad
        \varepsilon_i \sim \mathcal N(0, 1), \qquad i = 1, \dots, n .

    Parameters
    ----------
    bandit : GaussianBandit
    behavior : array_like, shape (K,) or (n_runs, K)
        Arm probabilities :math:`\mu`; one row per independent run.
    n : int
        Pulls per run (>= 1).
    rng : numpy.random.Generator or int

    Returns
    -------
    BanditBatch
        Arrays of shape (n,) for a 1-D ``behavior``, (n_runs, n) for a 2-D one.

    Raises
    ------
    ValueError
        If ``behavior`` is not a distribution over the arms or ``n`` is not a positive integer.

    Examples
    --------
    >>> bandit = GaussianBandit([0.0, 1.0], sd=0.0)
    >>> batch = sample_bandit(bandit, [0.0, 1.0], n=3, rng=0)
    >>> batch.actions.tolist(), batch.rewards.tolist()
    ([1, 1, 1], [1.0, 1.0, 1.0])

    Used in :doc:`/book/why_rl` and the ``offpolicy_gradient`` assignment.
    """
    mu = _check_probs(behavior, bandit.n_arms, "behavior")
    n = check_int(n, "n")
    rng = np.random.default_rng(rng)
    mu2 = np.atleast_2d(mu)
    actions = _draw(rng, mu2, n)
    rewards = bandit.means[actions] + bandit.sd * rng.standard_normal(actions.shape)
    with np.errstate(divide="ignore"):
        logp = np.log(np.take_along_axis(mu2, actions, axis=-1))
    if mu.ndim == 1:
        actions, rewards, logp = actions[0], rewards[0], logp[0]
    return BanditBatch(actions=actions, rewards=rewards, logp_behavior=logp)


def _log_softmax(theta):
    """Row-wise log-softmax, finite for finite logits (no log of an underflowed probability)."""
    z = theta - theta.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _gradient_terms(theta, actions, rewards, logp_behavior, correction):
    """Per-pull terms (R, n, K) and log ratios (R, n); ``theta`` (R, K), the rest (R, n)."""
    log_pi = _log_softmax(theta)
    pi = np.exp(log_pi)
    log_rho = np.take_along_axis(log_pi, actions, axis=-1) - logp_behavior
    coef = rewards * (np.exp(log_rho) if correction == "ratio" else 1.0)
    K = pi.shape[-1]
    onehot = actions[..., None] == np.arange(K)
    terms = coef[..., None] * (onehot - pi[:, None, :])
    return terms, log_rho


def bandit_gradient(batch, logits, correction="ratio") -> GradientEstimate:
    r"""REINFORCE gradient at ``logits`` from pulls of a behaviour policy, reweighted or not.

    .. math::

        \hat g = \frac1n \sum_{i=1}^n \rho_i\, r_i\, (e_{a_i} - \pi_\theta), \qquad
        \rho_i = \frac{\pi_\theta(a_i)}{\mu(a_i)} \ (\text{``ratio''}) \text{ or } 1 \
        (\text{``none''}).

    With ``correction="ratio"`` the estimate is unbiased for :math:`\nabla J(\theta)` whenever
    :math:`\mu(a) > 0` for every arm; with ``"none"`` it is unbiased only if :math:`\mu = \pi_\theta`.

    Parameters
    ----------
    batch : BanditBatch
        Pulls of one run, arrays of shape (n,), or of several runs, shape (n_runs, n).
    logits : array_like, shape (K,) or (n_runs, K)
        Where the gradient is wanted (one row per run for a batch of runs).
    correction : {"ratio", "none"}, default "ratio"

    Returns
    -------
    companion.policy_gradient.GradientEstimate
        One run: ``estimate`` and ``stderr`` of shape (K,), ``terms`` of shape (n, K).
        Several runs: ``estimate`` and ``stderr`` of shape (n_runs, K), ``terms`` (n, n_runs, K).

    Raises
    ------
    ValueError
        If ``correction`` is unknown, ``batch`` and ``logits`` do not match, an arm is out of
        range, rewards are NaN/inf, or a pulled arm had behaviour probability 0.

    Examples
    --------
    >>> bandit = GaussianBandit([0.0, 1.0], sd=0.0)
    >>> batch = sample_bandit(bandit, [0.5, 0.5], n=4000, rng=0)
    >>> g = bandit_gradient(batch, [0.0, 0.0])
    >>> bool(np.all(np.abs(g.estimate - bandit_gradient_exact(bandit, [0.0, 0.0])) < 4 * g.stderr))
    True

    Used in :doc:`/book/why_rl` and the ``offpolicy_gradient`` assignment; see eq.
    (eq-why-reweighted).
    """
    if correction not in _CORRECTIONS:
        raise ValueError(f"correction: must be one of {_CORRECTIONS}, got {correction!r}")
    check_instance(batch, BanditBatch, "batch")
    actions = np.asarray(batch.actions)
    theta = finite_array(logits, "logits")
    if actions.ndim not in (1, 2) or theta.ndim != actions.ndim or (
            actions.ndim == 2 and theta.shape[0] != actions.shape[0]):
        raise ValueError(f"logits: shape {theta.shape} does not match batch.actions shape "
                         f"{actions.shape}; expected (K,) with (n,) or (n_runs, K) with (n_runs, n)")
    if not np.issubdtype(actions.dtype, np.integer):
        raise ValueError(f"batch.actions: must be integers, got dtype {actions.dtype}")
    K = theta.shape[-1]
    out_of_range = (actions < 0) | (actions >= K)
    if np.any(out_of_range):
        idx = tuple(int(i) for i in np.argwhere(out_of_range)[0])
        raise ValueError(f"batch.actions: arm {actions[idx]} at index {idx} is outside [0, {K})")
    rewards = finite_array(batch.rewards, "batch.rewards")
    logp_b = np.asarray(batch.logp_behavior, dtype=float)
    if rewards.shape != actions.shape or logp_b.shape != actions.shape:
        raise ValueError("batch: actions, rewards and logp_behavior must have the same shape")
    if np.any(~np.isfinite(logp_b)):
        idx = tuple(int(i) for i in np.argwhere(~np.isfinite(logp_b))[0])
        raise ValueError(f"batch.logp_behavior: not finite at index {idx} (the behaviour gave "
                         "probability 0 to an arm it pulled)")
    one = actions.ndim == 1
    terms, _ = _gradient_terms(np.atleast_2d(theta), np.atleast_2d(actions),
                               np.atleast_2d(rewards), np.atleast_2d(logp_b), correction)
    return GradientEstimate.from_terms(terms[0] if one else np.moveaxis(terms, 1, 0))


def train_softmax_bandit(bandit, *, n_runs, n_batches, batch_size, epochs, lr, rng,
                         correction="ratio", logits0=None) -> BanditHistory:
    r"""Policy-gradient ascent with data reuse, for ``n_runs`` independent learners at once.

    For each batch ``b``: freeze :math:`\mu = \pi_{\theta}`, pull ``batch_size`` arms from it, then
    take ``epochs`` gradient steps on those same pulls,

    .. math::

        \theta \leftarrow \theta + \eta\, \frac1n \sum_{i=1}^n \rho_i\, r_i\,
        (e_{a_i} - \pi_\theta), \qquad \rho_i = \frac{\pi_\theta(a_i)}{\mu(a_i)},

    recomputing :math:`\rho_i` at the current :math:`\theta` before every step. ``epochs=1`` is
    plain on-policy REINFORCE (:math:`\rho = 1`). ``correction="none"`` drops the ratio (naive reuse).

    Parameters
    ----------
    bandit : GaussianBandit
    n_runs : int
        Independent learners (each with its own pulls), simulated together.
    n_batches : int
        Batches of environment samples per learner.
    batch_size : int
        Pulls per batch.
    epochs : int
        Gradient steps per batch (>= 1).
    lr : float
        Step size :math:`\eta > 0`.
    rng : numpy.random.Generator or int
    correction : {"ratio", "none"}, default "ratio"
    logits0 : array_like, shape (K,), optional
        Initial logits (default: zeros, the uniform policy).

    Returns
    -------
    BanditHistory
        ``J`` after every batch (exact), the ESS fraction of every update and the final logits.

    Raises
    ------
    ValueError
        If a count is not a positive integer, ``lr`` is not positive and finite, ``correction`` is
        unknown or ``logits0`` does not match the bandit.

    Examples
    --------
    >>> bandit = GaussianBandit([0.0, 0.5, 1.0])
    >>> h = train_softmax_bandit(bandit, n_runs=4, n_batches=10, batch_size=8, epochs=2,
    ...                          lr=0.5, rng=0)
    >>> h.J.shape, int(h.pulls[-1]), h.ess_fraction.shape
    ((4, 11), 80, (4, 10, 2))

    Used in :doc:`/book/why_rl`.
    """
    n_runs = check_int(n_runs, "n_runs")
    n_batches = check_int(n_batches, "n_batches")
    batch_size = check_int(batch_size, "batch_size")
    epochs = check_int(epochs, "epochs")
    if correction not in _CORRECTIONS:
        raise ValueError(f"correction: must be one of {_CORRECTIONS}, got {correction!r}")
    lr = check_positive(lr, "lr")
    K = bandit.n_arms
    if logits0 is None:
        theta0 = np.zeros(K)
    else:
        theta0 = _check_logits(logits0, K, "logits0")
        if theta0.ndim != 1:
            raise ValueError(f"logits0: expected shape (K,), got {theta0.shape}")
    rng = np.random.default_rng(rng)
    theta = np.tile(theta0, (n_runs, 1))
    J = np.empty((n_runs, n_batches + 1))
    ess = np.empty((n_runs, n_batches, epochs))
    J[:, 0] = bandit_policy(theta) @ bandit.means
    for b in range(n_batches):
        batch = sample_bandit(bandit, bandit_policy(theta), batch_size, rng)
        logp_mu = np.take_along_axis(_log_softmax(theta), batch.actions, axis=-1)
        for e in range(epochs):
            terms, log_rho = _gradient_terms(theta, batch.actions, batch.rewards, logp_mu,
                                             correction)
            w = np.exp(log_rho - log_rho.max(axis=-1, keepdims=True))
            ess[:, b, e] = 1.0 if correction == "none" else (
                w.sum(axis=-1) ** 2 / (batch_size * (w ** 2).sum(axis=-1)))
            theta = theta + lr * terms.mean(axis=1)
        J[:, b + 1] = bandit_policy(theta) @ bandit.means
    pulls = batch_size * np.arange(n_batches + 1)
    return BanditHistory(pulls=pulls, J=J, ess_fraction=ess, logits=theta)
