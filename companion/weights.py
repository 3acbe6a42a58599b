r"""Importance ratios and weights, computed in log space.

A batch of trajectories is stored as arrays of shape ``(n_trajectories, horizon)``. Shorter
trajectories are padded at the end; a boolean ``mask`` of the same shape marks real steps
(``True``) and padding (``False``). Padded steps are treated as an absorbing state with ratio
:math:`\rho_t = 1` (log ratio 0) and reward 0, so they change no weight and no return.

Notation (book/notation.md): :math:`\pi` target policy, :math:`\mu` behaviour policy,
:math:`\rho_t = \pi(a_t \mid s_t) / \mu(a_t \mid s_t)` the per-step ratio,
:math:`\rho_{0:t} = \prod_{k=0}^{t} \rho_k` the prefix product and
:math:`w = \rho_{0:T-1}` the trajectory weight of a trajectory with :math:`T` steps
(:math:`T` factors, one per action taken).

The estimators of :mod:`companion.estimators` are built on these log weights.

Used in :doc:`/book/trajectory_weights`, :doc:`/book/variance_problem`,
:doc:`/book/per_step_weights`, :doc:`/book/weighted_is`, :doc:`/book/on_off_policy`,
:doc:`/book/confidence` and the ``estimators`` and ``variance`` assignments.
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

from ._validation import (
    as_float_array,
    check_finite,
    check_logp,
    check_mask,
    check_same_shape,
    check_weights,
    first_index,
    where,
)

__all__ = [
    "log_ratios",
    "trajectory_log_weights",
    "per_decision_log_weights",
    "self_normalise",
]


def _masked(x: np.ndarray, mask) -> np.ndarray:
    """Return ``x`` with padded entries set to 0 (a copy only when there is a mask)."""
    if mask is None:
        return x
    m = check_mask(mask, x.shape)
    return np.where(m, x, 0.0)


def log_ratios(logp_target, logp_behavior, mask=None) -> np.ndarray:
    r"""Per-step log importance ratios :math:`\log \rho_t`.

    .. math::

        \log \rho_t = \log \pi(a_t \mid s_t) - \log \mu(a_t \mid s_t).

    A target log probability of :math:`-\infty` (an action the target never takes) gives
    :math:`\log \rho_t = -\infty`, i.e. weight zero; that is allowed. A behaviour log
    probability of :math:`-\infty` for an action that was taken is impossible data and raises.

    Parameters
    ----------
    logp_target : array_like, shape (n_trajectories, horizon)
        :math:`\log \pi(a_t \mid s_t)` of the actions taken. Any shape is accepted; indices in
        error messages are read as (trajectory, step) for 2-D input.
    logp_behavior : array_like, same shape
        :math:`\log \mu(a_t \mid s_t)` of the same actions.
    mask : array_like of bool, same shape, optional
        ``True`` on real steps. Padded entries are not checked and come out as 0.

    Returns
    -------
    ndarray, same shape
        :math:`\log \rho_t`; 0 on padded steps.

    Raises
    ------
    ValueError
        If the shapes differ, an entry is NaN or :math:`+\infty`, a log probability is
        positive (probability outside [0, 1]), the batch is empty, or the behaviour probability
        is 0 at a real step (message names the trajectory and step).

    Examples
    --------
    >>> import numpy as np
    >>> lr = log_ratios(np.log([[0.5, 1.0]]), np.log([[0.25, 0.5]]))
    >>> np.exp(lr).round(3).tolist()
    [[2.0, 2.0]]

    Used in :doc:`/book/trajectory_weights`, :doc:`/book/variance_problem`,
    :doc:`/book/per_step_weights` and :doc:`/book/confidence`.
    """
    lp_pi = as_float_array(logp_target, "logp_target")
    lp_mu = as_float_array(logp_behavior, "logp_behavior")
    check_same_shape(lp_pi, "logp_target", lp_mu, "logp_behavior")
    if mask is not None:
        m = check_mask(mask, lp_pi.shape)
        lp_pi = np.where(m, lp_pi, 0.0)
        lp_mu = np.where(m, lp_mu, 0.0)
    check_logp(lp_pi, "logp_target")
    check_logp(lp_mu, "logp_behavior")
    impossible = lp_mu == -np.inf
    if impossible.any():
        idx = first_index(impossible)
        detail = (
            "the target's is positive"
            if lp_pi[idx] > -np.inf
            else "the target's is 0 too, so this action could not have been taken"
        )
        raise ValueError(
            f"logp_behavior: behaviour probability is 0 at {where(idx, lp_mu.ndim)} while "
            f"{detail}; importance sampling needs mu(a|s) > 0 wherever pi(a|s) > 0"
        )
    return lp_pi - lp_mu


def trajectory_log_weights(log_ratios, mask=None) -> np.ndarray:
    r"""Log trajectory weights :math:`\log w_i = \sum_t \log \rho_{i,t}`.

    .. math::

        \log w_i = \log \prod_{t=0}^{T_i - 1} \rho_{i,t} = \sum_{t=0}^{T_i - 1} \log \rho_{i,t},

    where :math:`T_i` is the number of real steps of trajectory :math:`i` (so :math:`T_i` factors).

    Parameters
    ----------
    log_ratios : array_like, shape (n_trajectories, horizon)
        Per-step log ratios :math:`\log \rho_{i,t}` (``-inf`` allowed: weight zero).
    mask : array_like of bool, same shape, optional
        ``True`` on real steps; padding must be a suffix of each row.

    Returns
    -------
    ndarray, shape (n_trajectories,)
        :math:`\log w_i`.

    Raises
    ------
    ValueError
        If ``log_ratios`` is not 2-D or empty, holds NaN or :math:`+\infty` at a real step,
        or ``mask`` has the wrong shape, dtype, or a gap.

    Examples
    --------
    >>> import numpy as np
    >>> lr = np.log([[2.0, 0.5, 3.0], [2.0, 4.0, 9.9]])
    >>> mask = np.array([[True, True, True], [True, True, False]])
    >>> np.exp(trajectory_log_weights(lr, mask)).round(3).tolist()
    [3.0, 8.0]

    Used in :doc:`/book/trajectory_weights`, :doc:`/book/variance_problem`,
    :doc:`/book/weighted_is`, :doc:`/book/on_off_policy`, :doc:`/book/confidence`, the
    ``estimators`` and ``variance`` assignments; :func:`companion.estimators.trajectory_is` and
    :func:`companion.estimators.weighted_trajectory_is` are built on it.
    """
    lr = as_float_array(log_ratios, "log_ratios", ndim=2)
    lr = _masked(lr, mask)
    lw = lr.sum(axis=1)
    if not np.all(np.isfinite(lw) | (lw == -np.inf)):
        check_finite(lr, "log_ratios", allow_neg_inf=True)
    return lw


def per_decision_log_weights(log_ratios, mask=None) -> np.ndarray:
    r"""Log prefix weights :math:`\log \rho_{0:t}` for every step (running sums).

    .. math::

        \log \rho_{i,0:t} = \sum_{k=0}^{t} \log \rho_{i,k}, \qquad t = 0, \dots, T - 1.

    Parameters
    ----------
    log_ratios : array_like, shape (n_trajectories, horizon)
        Per-step log ratios.
    mask : array_like of bool, same shape, optional
        ``True`` on real steps. Padded steps hold the last valid value (padding has ratio 1).

    Returns
    -------
    ndarray, shape (n_trajectories, horizon)
        :math:`\log \rho_{i,0:t}`; the last column equals :func:`trajectory_log_weights`.

    Raises
    ------
    ValueError
        As for :func:`trajectory_log_weights`.

    Examples
    --------
    >>> import numpy as np
    >>> lr = np.log([[2.0, 0.5, 3.0]])
    >>> np.exp(per_decision_log_weights(lr)).round(3).tolist()
    [[2.0, 1.0, 3.0]]

    Used in :doc:`/book/variance_problem`; :func:`companion.estimators.per_decision_is`,
    :func:`companion.estimators.weighted_per_decision_is`,
    :func:`companion.estimators.doubly_robust` and
    :func:`companion.wis_experiments.running_per_decision` are built on it.
    """
    lr = as_float_array(log_ratios, "log_ratios", ndim=2)
    lr = _masked(lr, mask)
    prefix = np.cumsum(lr, axis=1)
    last = prefix[:, -1]
    if not np.all(np.isfinite(last) | (last == -np.inf)):
        check_finite(lr, "log_ratios", allow_neg_inf=True)
    return prefix


def self_normalise(log_w) -> np.ndarray:
    r"""Self-normalised weights :math:`\bar w_i = w_i / \sum_j w_j`, computed from log weights.

    .. math::

        \bar w_i = \exp\Bigl(\log w_i - \operatorname{logsumexp}_j \log w_j\Bigr).

    Parameters
    ----------
    log_w : array_like, shape (n,)
        Log weights (``-inf`` allowed, but not all of them).

    Returns
    -------
    ndarray, shape (n,)
        Non-negative weights summing to 1. Never overflows, even for log weights of
        thousands.

    Raises
    ------
    ValueError
        If ``log_w`` is not 1-D, is empty, holds NaN or :math:`+\infty`, or is all ``-inf``.

    Examples
    --------
    >>> self_normalise([1000.0, 1000.0 + np.log(3.0)]).round(3).tolist()
    [0.25, 0.75]

    Used in :doc:`/book/weighted_is`.
    """
    lw = check_weights(log_w, "log_w", log=True)
    return np.exp(lw - logsumexp(lw))
