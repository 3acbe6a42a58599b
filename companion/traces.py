r"""Truncated importance-sampling traces: Retrace(:math:`\lambda`) and V-trace.

Multi-step returns computed from another policy's data need importance ratios, and products
of ratios have exploding variance (:doc:`the variance problem </book/variance_problem>`). Retrace (Munos et al. 2016)
and V-trace (Espeholt et al. 2018, IMPALA) cut the products off at one: every step multiplies the
trace by a *truncated* ratio, so the trace never grows.

Sample-based targets, on batches of trajectories of shape (n_trajectories, horizon):

==============================  =============================================================
:func:`retrace_targets`         :math:`Q^{\text{ret}}_t = r_t + \gamma \bar Q_{t+1}
                                + \gamma c_{t+1} (Q^{\text{ret}}_{t+1} - Q(s_{t+1}, a_{t+1}))`,
                                :math:`c_t = \lambda \min(\bar c, \rho_t)`
:func:`vtrace_targets`          :math:`v_t = V(s_t) + \bar\rho_t \delta_t
                                + \gamma c_t (v_{t+1} - V(s_{t+1}))`
==============================  =============================================================

Exact expected operators on a tabular MDP (:class:`companion.mdp.TabularMDP`), which the tests
and :doc:`/book/on_off_policy` iterate to their fixed points:

==============================  =============================================================
:func:`trace_operator`          :math:`\mathcal R Q = Q + (I - \gamma P^{c\mu})^{-1}(T^\pi Q - Q)`
                                for any trace table :math:`c(s, a)`
:func:`retrace_operator`        the same with :math:`c = \lambda \min(\bar c, \pi / \mu)`
:func:`vtrace_operator`         :math:`\mathcal R V = V + (I - \gamma M_c)^{-1} e_{\bar\rho}(V)`
:func:`vtrace_policy`           :math:`\pi_{\bar\rho} \propto \min(\bar\rho \mu, \pi)`, whose value
                                is V-trace's fixed point
:func:`nstep_fixed_point`       fixed point of the uncorrected :math:`n`-step operator
==============================  =============================================================

Batch tabular policy evaluation from one fixed batch of behaviour data (a replay buffer):
:func:`tabular_q_evaluation` (one-step, uncorrected :math:`n`-step or Retrace targets) and
:func:`tabular_v_evaluation` (V-trace targets) repeat "compute the targets with the current
table, replace each entry by the mean target of its visits" until the table stops changing.

Conventions. Arrays follow :mod:`companion.estimators`: ``log_ratios`` holds
:math:`\log\rho_t`, a boolean ``mask`` marks real steps and padding is a suffix. A step whose
successor is terminal must carry a successor value of 0 (``v_next`` / ``next_values``); the
last real step of a row is where the correction stops, and its successor value is the
bootstrap. Targets are 0 on padded steps.

Used in :doc:`/book/on_off_policy` and the ``traces`` assignment.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._validation import (
    as_float_array,
    check_distribution,
    check_gamma,
    check_instance,
    check_int,
    check_mask,
    check_policy,
    check_positive,
    check_same_shape,
    check_unit_interval,
    finite_array,
    first_index,
    raise_nonfinite,
    where,
)
from .mdp import TabularMDP, Trajectories

__all__ = [
    "VTraceTargets",
    "retrace_targets",
    "vtrace_targets",
    "trace_operator",
    "retrace_operator",
    "vtrace_operator",
    "vtrace_policy",
    "nstep_fixed_point",
    "tabular_q_evaluation",
    "tabular_v_evaluation",
]


# ---------------------------------------------------------------------------------------------
# validation helpers



def _batch(arrays: dict, mask, allow_neg_inf=("log_ratios",)):
    """Validate same-shaped 2-D float arrays; return them (padding zeroed) and the mask."""
    out = {}
    first_name = None
    for name, value in arrays.items():
        arr = as_float_array(value, name, ndim=2)
        if first_name is None:
            first_name = name
        else:
            check_same_shape(out[first_name], first_name, arr, name)
        out[name] = arr
    shape = out[first_name].shape
    m = np.ones(shape, dtype=bool) if mask is None else check_mask(mask, shape)
    for name, arr in out.items():
        masked = np.where(m, arr, 0.0)
        ok = np.isfinite(masked) | ((masked == -np.inf) if name in allow_neg_inf else False)
        if not ok.all():
            raise_nonfinite(masked, name, allow_neg_inf=name in allow_neg_inf)
        out[name] = masked
    return out, m


def _truncated_ratio(log_rho: np.ndarray, level: float) -> np.ndarray:
    """min(level, exp(log_rho)) computed without overflow (level may be inf)."""
    capped = np.minimum(log_rho, np.log(level)) if np.isfinite(level) else log_rho
    with np.errstate(over="ignore"):
        return np.exp(capped)


def _check_finite_result(x: np.ndarray, name: str) -> None:
    if not np.all(np.isfinite(x)):
        i, t = first_index(~np.isfinite(x))
        raise ValueError(
            f"log_ratios: the {name} overflow float64 at {where((i, t), 2)}; the untruncated "
            "trace (c_bar = inf) has grown beyond the float range; use a finite c_bar"
        )


# ---------------------------------------------------------------------------------------------
# sample-based targets


class _Layout:
    """Real steps of a padded batch in column-major order, longest rows first.

    Column ``t`` holds the real steps of the ``active[t]`` longest rows, stored at flat positions
    ``off[t], ..., off[t] + active[t] - 1``; row ``j`` of column ``t + 1`` (if it exists) is the
    successor of row ``j`` of column ``t``. The backward recursions then touch real steps only.
    """

    def __init__(self, m: np.ndarray):
        order = np.argsort(-m.sum(axis=1), kind="stable")
        ms = m[order]
        active = ms.sum(axis=0)
        self.active = active[active > 0]                      # non-increasing (suffix padding)
        self.off = np.concatenate([[0], np.cumsum(self.active)[:-1]]).astype(np.int64)
        cols, rows_sorted = np.nonzero(ms.T)
        self.rows, self.cols = order[rows_sorted], cols

    def take(self, x: np.ndarray) -> np.ndarray:
        return x[self.rows, self.cols]

    def put(self, flat: np.ndarray, shape) -> np.ndarray:
        out = np.zeros(shape)
        out[self.rows, self.cols] = flat
        return out

    def columns(self):
        """Yield (slice of column t, slice of column t + 1 or None), for t from last to first."""
        T = len(self.active)
        for t in range(T - 1, -1, -1):
            cur = slice(self.off[t], self.off[t] + self.active[t])
            nxt = None if t + 1 == T else slice(self.off[t + 1], self.off[t + 1] + self.active[t + 1])
            yield cur, nxt


def _retrace_flat(r, q_taken, v_next, c, gamma, layout):
    """Backward recursion of the Retrace target on flat real steps (no validation)."""
    out = np.empty_like(r)
    with np.errstate(over="ignore", invalid="ignore"):
        for cur, nxt in layout.columns():
            cont = np.zeros(cur.stop - cur.start)   # c_{t+1} (Q^ret_{t+1} - Q_{t+1}) or 0
            if nxt is not None:
                cont[: nxt.stop - nxt.start] = c[nxt] * (out[nxt] - q_taken[nxt])
            out[cur] = r[cur] + gamma * (v_next[cur] + cont)
    return out


def retrace_targets(rewards, q_taken, v_next, log_ratios, gamma, lam=1.0, c_bar=1.0,
                    mask=None) -> np.ndarray:
    r"""Retrace(:math:`\lambda`) targets for :math:`Q(s_t, a_t)` along behaviour trajectories.

    .. math::

        Q^{\text{ret}}_t = Q(s_t, a_t) + \sum_{k \ge t} \gamma^{k-t}
        \Bigl(\prod_{j=t+1}^{k} c_j\Bigr) \delta_k, \qquad
        \delta_k = r_k + \gamma \bar Q_{k+1} - Q(s_k, a_k), \qquad
        c_j = \lambda \min(\bar c, \rho_j),

    with :math:`\bar Q_{k+1} = \sum_a \pi(a \mid s_{k+1}) Q(s_{k+1}, a)` (``v_next``). Computed
    backwards, :math:`Q^{\text{ret}}_t = r_t + \gamma \bar Q_{t+1} + \gamma c_{t+1}
    (Q^{\text{ret}}_{t+1} - Q(s_{t+1}, a_{t+1}))`; the sum stops at the last real step of each
    row. The ratio of the action being evaluated, :math:`\rho_t`, is never used: the target is
    conditional on :math:`a_t`. Munos et al. (2016) take :math:`\bar c = 1`; ``c_bar=inf`` gives
    the untruncated importance-sampling traces :math:`c_j = \lambda \rho_j`, ``lam=0`` the
    one-step (expected SARSA) target.

    Parameters
    ----------
    rewards : array_like, shape (n_trajectories, horizon)
        Rewards :math:`r_t` of trajectories drawn with the behaviour policy :math:`\mu`.
    q_taken : array_like, same shape
        The current estimate :math:`Q(s_t, a_t)` of the action actually taken.
    v_next : array_like, same shape
        :math:`\bar Q_{t+1} = \sum_a \pi(a|s_{t+1}) Q(s_{t+1}, a)`; 0 if :math:`s_{t+1}` is
        terminal. On the last real step of a truncated row it is the bootstrap value.
    log_ratios : array_like, same shape
        :math:`\log\rho_t = \log\pi(a_t|s_t) - \log\mu(a_t|s_t)`; ``-inf`` allowed (cuts the trace).
    gamma : float in [0, 1]
        Discount.
    lam : float in [0, 1], default 1.0
        Trace decay :math:`\lambda`.
    c_bar : float > 0 or inf, default 1.0
        Truncation level :math:`\bar c` of the traces.
    mask : array_like of bool, same shape, optional
        ``True`` on real steps; padding (a suffix of each row) is ignored.

    Returns
    -------
    ndarray, shape (n_trajectories, horizon)
        :math:`Q^{\text{ret}}_t`; 0 on padded steps.

    Raises
    ------
    ValueError
        On a shape mismatch, an empty batch, NaN/inf at a real step (NaN/+inf for
        ``log_ratios``; names trajectory and step), ``gamma`` or ``lam`` outside [0, 1],
        ``c_bar <= 0``, a bad ``mask``, or if an untruncated trace overflows float64.

    Examples
    --------
    >>> import numpy as np
    >>> r = np.array([[1.0, 1.0, 1.0]])
    >>> q = np.zeros((1, 3)); v = np.zeros((1, 3))
    >>> lr = np.log([[1.0, 2.0, 0.5]])      # traces c_1 = min(1, 2) = 1, c_2 = 0.5
    >>> retrace_targets(r, q, v, lr, gamma=1.0).round(3)   # 1 + 1 * (1 + 0.5 * 1)
    array([[2.5, 1.5, 1. ]])

    Used in :doc:`/book/on_off_policy` and the ``traces`` assignment; see eq. (eq-onoff-retrace).
    """
    g = check_gamma(gamma)
    lam_ = check_unit_interval(lam, "lam")
    cb = check_positive(c_bar, "c_bar", allow_inf=True)
    arrs, m = _batch({"rewards": rewards, "q_taken": q_taken, "v_next": v_next,
                      "log_ratios": log_ratios}, mask)
    c = lam_ * _truncated_ratio(arrs["log_ratios"], cb)
    lay = _Layout(m)
    flat = _retrace_flat(lay.take(arrs["rewards"]), lay.take(arrs["q_taken"]),
                         lay.take(arrs["v_next"]), lay.take(c), g, lay)
    out = lay.put(flat, m.shape)
    _check_finite_result(out, "Retrace targets")
    return out


@dataclass(frozen=True, eq=False)
class VTraceTargets:
    r"""Result of :func:`vtrace_targets`.

    Used in :doc:`/book/on_off_policy` and the ``traces`` assignment.

    Attributes
    ----------
    vs : ndarray, shape (n_trajectories, horizon)
        The V-trace targets :math:`v_t` (0 on padding).
    pg_advantages : ndarray, shape (n_trajectories, horizon)
        The policy-gradient advantages of IMPALA,
        :math:`\bar\rho_t (r_t + \gamma v_{t+1} - V(s_t))` (0 on padding), with
        :math:`v_{t+1}` replaced by the successor value on the last real step.
    """

    vs: np.ndarray
    pg_advantages: np.ndarray


def vtrace_targets(rewards, values, next_values, log_ratios, gamma, rho_bar=1.0, c_bar=1.0,
                   lam=1.0, mask=None) -> VTraceTargets:
    r"""V-trace targets for :math:`V(s_t)` (Espeholt et al. 2018, eq. 1).

    .. math::

        v_t = V(s_t) + \sum_{k \ge t} \gamma^{k-t} \Bigl(\prod_{j=t}^{k-1} c_j\Bigr)
        \bar\rho_k \bigl(r_k + \gamma V(s_{k+1}) - V(s_k)\bigr), \qquad
        \bar\rho_k = \min(\bar\rho, \rho_k), \quad c_j = \lambda \min(\bar c, \rho_j).

    Computed backwards, :math:`v_t = V(s_t) + \bar\rho_t \delta_t + \gamma c_t (v_{t+1} -
    V(s_{t+1}))`, stopping at the last real step of each row. With :math:`\pi = \mu` and
    :math:`\bar\rho, \bar c \ge 1`, :math:`\lambda = 1`, this is the on-policy :math:`n`-step
    return :math:`\sum_k \gamma^{k-t} r_k + \gamma^{n} V(s_{t+n})`. The truncation level
    :math:`\bar\rho` decides *which* value function is the fixed point
    (:math:`V^{\pi_{\bar\rho}}`, see :func:`vtrace_policy`); :math:`\bar c` only how fast the
    iteration contracts.

    Parameters
    ----------
    rewards : array_like, shape (n_trajectories, horizon)
        Rewards of trajectories drawn with :math:`\mu`.
    values : array_like, same shape
        The current estimate :math:`V(s_t)`.
    next_values : array_like, same shape
        :math:`V(s_{t+1})`; 0 if :math:`s_{t+1}` is terminal; the bootstrap value on the last
        real step of a truncated row.
    log_ratios : array_like, same shape
        :math:`\log\rho_t`; ``-inf`` allowed.
    gamma : float in [0, 1]
        Discount.
    rho_bar, c_bar : float > 0 or inf, default 1.0
        Truncation levels :math:`\bar\rho` and :math:`\bar c`; IMPALA requires
        :math:`\bar\rho \ge \bar c`, which is not enforced here.
    lam : float in [0, 1], default 1.0
        Extra trace decay :math:`\lambda`.
    mask : array_like of bool, same shape, optional
        ``True`` on real steps.

    Returns
    -------
    VTraceTargets
        ``vs`` and ``pg_advantages``, each of shape (n_trajectories, horizon).

    Raises
    ------
    ValueError
        As :func:`retrace_targets` (with ``values``/``next_values``), or ``rho_bar <= 0``.

    Examples
    --------
    >>> import numpy as np
    >>> r = np.array([[1.0, 1.0]]); zero = np.zeros((1, 2))
    >>> out = vtrace_targets(r, zero, zero, np.log([[2.0, 0.5]]), gamma=1.0)
    >>> out.vs.round(3)                     # v_0 = 1 * 1 + 1 * (0.5 * 1), v_1 = 0.5 * 1
    array([[1.5, 0.5]])

    Used in :doc:`/book/on_off_policy` and the ``traces`` assignment; see eq. (eq-onoff-vtrace).
    """
    g = check_gamma(gamma)
    lam_ = check_unit_interval(lam, "lam")
    rb = check_positive(rho_bar, "rho_bar", allow_inf=True)
    cb = check_positive(c_bar, "c_bar", allow_inf=True)
    arrs, m = _batch({"rewards": rewards, "values": values, "next_values": next_values,
                      "log_ratios": log_ratios}, mask)
    r, V, V1 = arrs["rewards"], arrs["values"], arrs["next_values"]
    rho_t = _truncated_ratio(arrs["log_ratios"], rb)
    c = lam_ * _truncated_ratio(arrs["log_ratios"], cb)
    lay = _Layout(m)
    vs_f, adv_f = _vtrace_flat(*(lay.take(x) for x in (r, V, V1, rho_t, c)), g, lay)
    vs, adv = lay.put(vs_f, m.shape), lay.put(adv_f, m.shape)
    _check_finite_result(vs, "V-trace targets")
    _check_finite_result(adv, "V-trace advantages")
    return VTraceTargets(vs, adv)


def _vtrace_flat(r, V, V1, rho_t, c, gamma, layout):
    """Backward recursion of V-trace on flat real steps (no validation)."""
    vs = np.empty_like(r)
    adv = np.empty_like(r)
    with np.errstate(over="ignore", invalid="ignore"):
        for cur, nxt in layout.columns():
            corr = np.zeros(cur.stop - cur.start)   # v_{t+1} - V(s_{t+1}) or 0
            if nxt is not None:
                corr[: nxt.stop - nxt.start] = vs[nxt] - V[nxt]
            td = r[cur] + gamma * V1[cur] - V[cur]
            vs[cur] = V[cur] + rho_t[cur] * td + gamma * c[cur] * corr
            adv[cur] = rho_t[cur] * (td + gamma * corr)
    return vs, adv


def _nstep_parts(r, m, n, g):
    """Reward part, bootstrap column and discount of every n-step target (2-D, padded)."""
    N, T = r.shape
    lengths = m.sum(axis=1)
    part = np.zeros((N, T))
    t = np.arange(T)
    for k in range(min(n, T)):
        shifted = np.zeros((N, T))
        shifted[:, : T - k] = r[:, k:]
        part += g**k * np.where(t[None, :] + k < lengths[:, None], shifted, 0.0)
    last = np.clip(np.minimum(t[None, :] + n, lengths[:, None]) - 1, 0, T - 1)  # bootstrap step
    steps = np.maximum(last - t[None, :] + 1, 0)                                # m
    return part, last, np.where(m, g**steps, 0.0)


# ---------------------------------------------------------------------------------------------
# exact expected operators on a tabular MDP


def _table(x, name, shape):
    arr = finite_array(x, name)
    if arr.shape != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {arr.shape}")
    return arr


def _ratio_table(pi, mu):
    """pi / mu with 0 where mu == 0 (those actions never occur under mu)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(mu > 0, pi / np.where(mu > 0, mu, 1.0), 0.0)


def trace_operator(mdp, q, pi, mu, traces) -> np.ndarray:
    r"""Exact expected off-policy return operator with an arbitrary trace table.

    .. math::

        \mathcal R Q(s, a) = Q(s, a) + \mathbb{E}_\mu\Bigl[\sum_{t \ge 0} \gamma^t
        \Bigl(\prod_{j=1}^{t} c(s_j, a_j)\Bigr)
        \bigl(r_t + \gamma \textstyle\sum_b \pi(b|s_{t+1}) Q(s_{t+1}, b) - Q(s_t, a_t)\bigr)
        \Bigm| s_0 = s, a_0 = a\Bigr]
        = Q + (I - \gamma P^{c\mu})^{-1} (T^\pi Q - Q),

    with :math:`P^{c\mu}((s,a),(s',a')) = P(s'|s,a)\,\mu(a'|s')\,c(s',a')` and :math:`T^\pi Q = r +
    \gamma P^\pi Q`, both on state-action pairs (Munos et al. 2016, eq. 3). Every trace table
    leaves :math:`Q^\pi` fixed; :math:`c = \lambda\min(1, \pi/\mu)` (Retrace),
    :math:`c = \lambda\pi/\mu` (importance sampling) and :math:`c = \lambda\pi` (tree backup) make
    it a :math:`\gamma`-contraction for every :math:`\mu` (any :math:`0 \le c \le \pi/\mu` does),
    while :math:`c = \lambda`, Q(:math:`\lambda`), which ignores the ratios, need not contract
    and can diverge when :math:`\pi` and :math:`\mu` differ much. Terminal states have value 0 and are never entered by a trace.

    Parameters
    ----------
    mdp : TabularMDP
        The MDP (transitions, expected rewards, discount, terminal states).
    q : array_like, shape (S, A)
        The action-value table :math:`Q`; its rows for terminal states are ignored.
    pi, mu : array_like, shape (S, A)
        Target and behaviour policies.
    traces : array_like, shape (S, A)
        Trace coefficients :math:`c(s, a) \ge 0`.

    Returns
    -------
    ndarray, shape (S, A)
        :math:`\mathcal R Q`; 0 on terminal states.

    Raises
    ------
    ValueError
        If ``mdp`` is not a TabularMDP, a table has the wrong shape or holds NaN/inf, a policy
        row is not a distribution, a trace is negative, or :math:`I - \gamma P^{c\mu}` is
        singular (traces too large for ``gamma = 1``).

    Examples
    --------
    >>> from companion.mdp import random_mdp, q_values, uniform_policy
    >>> mdp = random_mdp(3, 2, rng=0)
    >>> pi = uniform_policy(3, 2)
    >>> q_pi = q_values(mdp, pi)
    >>> c = np.full((3, 2), 0.7)
    >>> bool(np.allclose(trace_operator(mdp, q_pi, pi, pi, c), q_pi))   # Q^pi is fixed
    True

    See :doc:`/book/on_off_policy` (Retrace), eq. (eq-onoff-retrace-operator).
    """
    mdp = check_instance(mdp, TabularMDP, "mdp")
    S, A = mdp.n_states, mdp.n_actions
    p = check_policy(pi, (mdp.n_states, mdp.n_actions), "pi")
    m = check_policy(mu, (mdp.n_states, mdp.n_actions), "mu")
    Q = _table(q, "q", (S, A))
    c = _table(traces, "traces", (S, A))
    if (c < 0).any():
        idx = tuple(int(i) for i in np.argwhere(c < 0)[0])
        raise ValueError(f"traces: must be >= 0, got {c[idx]} at state {idx[0]}, action {idx[1]}")
    live = ~mdp.terminal
    Q = np.where(live[:, None], Q, 0.0)
    v = (p * Q).sum(axis=1)
    TQ = mdp.expected_reward + mdp.gamma * np.einsum("sat,t->sa", mdp.P, v)
    delta = np.where(live[:, None], TQ - Q, 0.0).ravel()
    step = (m * c) * live[:, None]                               # mu(a'|s') c(s', a'), (S, A)
    M = (mdp.P[:, :, :, None] * step[None, None, :, :]).reshape(S * A, S * A)
    M[~np.repeat(live, A)] = 0.0
    system = np.eye(S * A) - mdp.gamma * M
    if np.linalg.cond(system) > 1e12:
        raise ValueError("traces: I - gamma P^{c mu} is singular; the traces are too large for "
                         "this discount (use gamma < 1 or traces whose products decay)")
    out = Q + np.linalg.solve(system, delta).reshape(S, A)
    return np.where(live[:, None], out, 0.0)


def retrace_operator(mdp, q, pi, mu, lam=1.0, c_bar=1.0) -> np.ndarray:
    r"""Exact expected Retrace(:math:`\lambda`) operator on a tabular MDP.

    .. math::

        \mathcal R Q = Q + (I - \gamma P^{c\mu})^{-1} (T^\pi Q - Q), \qquad
        c(s, a) = \lambda \min\Bigl(\bar c, \frac{\pi(a|s)}{\mu(a|s)}\Bigr).

    For :math:`\bar c \le 1` it is a :math:`\gamma`-contraction in the sup norm with fixed point
    :math:`Q^\pi`, for every behaviour policy :math:`\mu` (Munos et al. 2016, theorem 1). Where
    :math:`\mu(a|s) = 0` the trace is irrelevant (the action never occurs) and is set to 0.

    Parameters
    ----------
    mdp : TabularMDP
    q : array_like, shape (S, A)
        Current action values.
    pi, mu : array_like, shape (S, A)
        Target and behaviour policies.
    lam : float in [0, 1], default 1.0
        Trace decay.
    c_bar : float > 0 or inf, default 1.0
        Truncation level; ``inf`` gives importance-sampling traces.

    Returns
    -------
    ndarray, shape (S, A)

    Raises
    ------
    ValueError
        As :func:`trace_operator`, and for ``lam`` outside [0, 1] or ``c_bar <= 0``.

    Examples
    --------
    >>> from companion.mdp import random_mdp, q_values, softmax_policy
    >>> mdp = random_mdp(4, 2, rng=1)
    >>> pi = softmax_policy(np.random.default_rng(2).normal(size=(4, 2)))
    >>> mu = np.full((4, 2), 0.5)
    >>> q = np.zeros((4, 2))
    >>> for _ in range(200):
    ...     q = retrace_operator(mdp, q, pi, mu, lam=1.0)
    >>> float(np.abs(q - q_values(mdp, pi)).max()) < 1e-10
    True

    See :doc:`/book/on_off_policy` (Retrace), eq. (eq-onoff-retrace-operator).
    """
    mdp = check_instance(mdp, TabularMDP, "mdp")
    lam_ = check_unit_interval(lam, "lam")
    cb = check_positive(c_bar, "c_bar", allow_inf=True)
    p = check_policy(pi, (mdp.n_states, mdp.n_actions), "pi")
    m = check_policy(mu, (mdp.n_states, mdp.n_actions), "mu")
    c = lam_ * np.minimum(cb, _ratio_table(p, m))
    return trace_operator(mdp, q, p, m, c)


def vtrace_policy(pi, mu, rho_bar=1.0) -> np.ndarray:
    r"""The policy whose value V-trace converges to: :math:`\pi_{\bar\rho} \propto \min(\bar\rho\mu, \pi)`.

    .. math::

        \pi_{\bar\rho}(a \mid s) = \frac{\min\bigl(\bar\rho\, \mu(a|s),\, \pi(a|s)\bigr)}
        {\sum_b \min\bigl(\bar\rho\, \mu(b|s),\, \pi(b|s)\bigr)}.

    It equals :math:`\pi` when :math:`\bar\rho \ge \max_{s,a} \pi/\mu`, and tends to :math:`\mu` as
    :math:`\bar\rho \to 0` (Espeholt et al. 2018, section 4.1).

    Parameters
    ----------
    pi, mu : array_like, shape (S, A) or (A,)
        Target and behaviour policies.
    rho_bar : float > 0 or inf, default 1.0
        Truncation level :math:`\bar\rho`.

    Returns
    -------
    ndarray, same shape
        Rows sum to 1.

    Raises
    ------
    ValueError
        On a shape mismatch, rows that are not distributions, ``rho_bar <= 0``, or a state where
        :math:`\pi` and :math:`\mu` have disjoint supports (the normaliser is 0; names the state).

    Examples
    --------
    >>> vtrace_policy([0.9, 0.1], [0.5, 0.5], rho_bar=1.0)   # min(0.5, 0.9), min(0.5, 0.1)
    array([0.83333333, 0.16666667])

    Used in :doc:`/book/on_off_policy` and the ``traces`` assignment; see eq.
    (eq-onoff-vtrace-policy).
    """
    p = finite_array(pi, "pi")
    m = finite_array(mu, "mu")
    if p.ndim not in (1, 2) or p.shape != m.shape:
        raise ValueError(f"pi: shape {p.shape} must equal mu's shape {m.shape}, (A,) or (S, A)")
    p, m = check_distribution(p, "pi"), check_distribution(m, "mu")
    rb = check_positive(rho_bar, "rho_bar", allow_inf=True)
    w = np.minimum(rb * m, p) if np.isfinite(rb) else np.where(m > 0, p, 0.0)
    z = w.sum(axis=-1, keepdims=True)
    if (z <= 0).any():
        s = int(np.flatnonzero(z.ravel() <= 0)[0])
        raise ValueError(f"mu: no action of state {s} has positive probability under both pi and "
                         "mu, so the truncated policy is undefined (no support)")
    return w / z


def vtrace_operator(mdp, v, pi, mu, rho_bar=1.0, c_bar=1.0, lam=1.0) -> np.ndarray:
    r"""Exact expected V-trace operator on a tabular MDP.

    .. math::

        \mathcal R V = V + (I - \gamma M_c)^{-1} e, \qquad
        e(s) = \sum_a \min\bigl(\bar\rho\mu(a|s), \pi(a|s)\bigr)
        \bigl(r(s,a) + \gamma \textstyle\sum_{s'} P(s'|s,a) V(s') - V(s)\bigr),

    :math:`M_c(s, s') = \sum_a \mu(a|s)\, \lambda\min(\bar c, \pi(a|s)/\mu(a|s))\, P(s'|s,a)`.
    Its fixed point solves :math:`e = 0`, i.e. :math:`V = V^{\pi_{\bar\rho}}` with
    :math:`\pi_{\bar\rho}` from :func:`vtrace_policy`, whatever :math:`\bar c`.

    Parameters
    ----------
    mdp : TabularMDP
    v : array_like, shape (S,)
        Current state values (entries of terminal states are ignored).
    pi, mu : array_like, shape (S, A)
        Target and behaviour policies.
    rho_bar, c_bar : float > 0 or inf, default 1.0
        Truncation levels.
    lam : float in [0, 1], default 1.0
        Trace decay.

    Returns
    -------
    ndarray, shape (S,)
        :math:`\mathcal R V`; 0 on terminal states.

    Raises
    ------
    ValueError
        As :func:`trace_operator`; also for bad levels or a singular system.

    Examples
    --------
    >>> from companion.mdp import random_mdp, state_values
    >>> mdp = random_mdp(3, 2, rng=0)
    >>> pi = np.array([[0.9, 0.1]] * 3); mu = np.full((3, 2), 0.5)
    >>> v = np.zeros(3)
    >>> for _ in range(300):
    ...     v = vtrace_operator(mdp, v, pi, mu, rho_bar=1.0)
    >>> bool(np.allclose(v, state_values(mdp, vtrace_policy(pi, mu, 1.0))))
    True

    See :doc:`/book/on_off_policy` (V-trace), eq. (eq-onoff-vtrace-operator).
    """
    mdp = check_instance(mdp, TabularMDP, "mdp")
    S = mdp.n_states
    p = check_policy(pi, (mdp.n_states, mdp.n_actions), "pi")
    m = check_policy(mu, (mdp.n_states, mdp.n_actions), "mu")
    rb = check_positive(rho_bar, "rho_bar", allow_inf=True)
    cb = check_positive(c_bar, "c_bar", allow_inf=True)
    lam_ = check_unit_interval(lam, "lam")
    V = _table(v, "v", (S,))
    live = ~mdp.terminal
    V = np.where(live, V, 0.0)
    ratio = _ratio_table(p, m)
    w_rho = m * np.minimum(rb, ratio)                                  # min(rho_bar mu, pi)
    w_c = m * lam_ * np.minimum(cb, ratio)
    td = mdp.expected_reward + mdp.gamma * np.einsum("sat,t->sa", mdp.P, V) - V[:, None]
    e = np.where(live, (w_rho * td).sum(axis=1), 0.0)
    M = np.einsum("sa,sat->st", w_c, mdp.P)
    M[~live] = 0.0
    M[:, ~live] = 0.0
    system = np.eye(S) - mdp.gamma * M
    if np.linalg.cond(system) > 1e12:
        raise ValueError("c_bar: I - gamma M_c is singular; use gamma < 1 or smaller traces")
    return np.where(live, V + np.linalg.solve(system, e), 0.0)


def nstep_fixed_point(mdp, pi, mu, n_step) -> np.ndarray:
    r"""Fixed point of the uncorrected :math:`n`-step operator with behaviour data.

    The expected uncorrected :math:`n`-step target
    :math:`G^{(n)}_t = \sum_{k=0}^{n-1} \gamma^k r_{t+k} + \gamma^n \bar V_{t+n}` (no importance
    ratios) with actions :math:`a_{t+1}, \dots,
    a_{t+n-1} \sim \mu` is :math:`T_n Q = \sum_{k=0}^{n-1} (\gamma P^\mu)^k r + (\gamma
    P^\mu)^{n-1} \gamma P^\pi Q` on state-action pairs, with :math:`P^\nu((s,a),(s',a')) =
    P(s'|s,a)\,\nu(a'|s')`. Its fixed point is

    .. math::

        Q_n = \bigl(I - \gamma^n (P^\mu)^{n-1} P^\pi\bigr)^{-1}
        \sum_{k=0}^{n-1} (\gamma P^\mu)^k r ,

    the value of "take :math:`a`, follow :math:`\mu` for :math:`n-1` steps, then choose with
    :math:`\pi` and repeat".
    :math:`Q_1 = Q^\pi`; as :math:`n \to \infty` (with :math:`\gamma < 1`) :math:`Q_n \to Q^\mu`.

    Parameters
    ----------
    mdp : TabularMDP
    pi, mu : array_like, shape (S, A)
        Target and behaviour policies.
    n_step : int >= 1
        Number of rewards in the target.

    Returns
    -------
    ndarray, shape (S, A)
        :math:`Q_n`; 0 on terminal states.

    Raises
    ------
    ValueError
        If ``mdp`` is not a TabularMDP, a policy is invalid, ``n_step`` is not a positive
        integer, or the system is singular (``gamma = 1`` without reachable terminal states).

    Examples
    --------
    >>> from companion.mdp import random_mdp, q_values, uniform_policy
    >>> mdp = random_mdp(3, 2, rng=0)
    >>> pi = np.array([[1.0, 0.0]] * 3); mu = uniform_policy(3, 2)
    >>> bool(np.allclose(nstep_fixed_point(mdp, pi, mu, 1), q_values(mdp, pi)))
    True

    See :doc:`/book/on_off_policy` (experience replay), eq. (eq-onoff-nstep-fixed-point).
    """
    mdp = check_instance(mdp, TabularMDP, "mdp")
    S, A = mdp.n_states, mdp.n_actions
    p = check_policy(pi, (mdp.n_states, mdp.n_actions), "pi")
    m = check_policy(mu, (mdp.n_states, mdp.n_actions), "mu")
    n = check_int(n_step, "n_step")
    live = ~mdp.terminal

    def sa_matrix(policy):
        M = (mdp.P[:, :, :, None] * (policy * live[:, None])[None, None]).reshape(S * A, S * A)
        M[~np.repeat(live, A)] = 0.0
        return M

    Pm, Pp = sa_matrix(m), sa_matrix(p)
    r = np.where(live[:, None], mdp.expected_reward, 0.0).ravel()
    g = mdp.gamma
    acc = np.zeros(S * A)
    term = r.copy()
    for _ in range(n):
        acc += term
        term = g * (Pm @ term)
    Pn = np.linalg.matrix_power(g * Pm, n - 1) @ (g * Pp)
    system = np.eye(S * A) - Pn
    if np.linalg.cond(system) > 1e12:
        raise ValueError("mdp: the n-step system is singular (gamma = 1 without termination)")
    return np.linalg.solve(system, acc).reshape(S, A)


# ---------------------------------------------------------------------------------------------
# batch tabular evaluation from a fixed buffer


def _buffer(traj, n_states, n_actions, groups, n_groups, need_ratios):
    check_instance(traj, Trajectories, "traj")
    if traj.horizon < 2:
        raise ValueError(f"traj: needs horizon >= 2 (the last column supplies only the bootstrap "
                         f"state), got {traj.horizon}")
    n = traj.n
    if groups is None:
        grp = np.zeros(n, dtype=np.int64)
        G = 1
    else:
        grp = np.asarray(groups)
        if grp.shape != (n,) or not np.issubdtype(grp.dtype, np.integer):
            raise ValueError(f"groups: must be an integer array of shape ({n},), got "
                             f"{grp.shape} {grp.dtype}")
        G = int(grp.max()) + 1 if n_groups is None else int(n_groups)
        if grp.min() < 0 or grp.max() >= G:
            raise ValueError(f"groups: ids must lie in [0, {G}), got [{grp.min()}, {grp.max()}]")
    if traj.states.max() >= n_states or traj.actions.max() >= n_actions:
        raise ValueError(f"traj: states/actions exceed the table size ({n_states}, {n_actions})")
    log_rho = traj.log_rho[:, :-1] if need_ratios else None
    if need_ratios:
        bad = np.isnan(log_rho) | (log_rho == np.inf)
        if bad.any():
            i, t = first_index(bad)
            raise ValueError(f"traj: behaviour probability 0 where the target's is positive at "
                             f"{where((i, t), 2)}")
    m = traj.mask[:, :-1]
    lay = _Layout(m)
    take = lay.take
    return {
        "m": m, "layout": lay, "rows": lay.rows, "cols": lay.cols,
        "s": take(traj.states[:, :-1]), "a": take(traj.actions[:, :-1]),
        "r": take(traj.rewards[:, :-1]), "s1": take(traj.states[:, 1:]),
        "alive1": take(traj.mask[:, 1:]), "ended": ~traj.mask[:, -1],
        "log_rho": None if log_rho is None else take(log_rho),
        "g": grp[lay.rows], "G": G,
    }


def _fixed_point(table, targets_of, keys):
    """Limit of the batch iteration X <- F(X) (per group), found by solving the affine system.

    ``F(X)`` sets each visited entry to the mean target of its visits; it is affine in ``X``,
    ``F(X) = A X + b``. Unvisited entries keep their initial value. The iteration converges iff
    the spectral radius of ``A`` is below 1, and then its limit is ``(I - A)^{-1} b``.
    """
    G = table.shape[0]
    K = table[0].size
    size = G * K
    counts = np.bincount(keys, minlength=size).reshape(G, K)
    visited = counts > 0

    def F(X):
        with np.errstate(over="ignore", invalid="ignore"):
            tgt = targets_of(X.reshape(table.shape))
            return np.bincount(keys, weights=tgt, minlength=size).reshape(G, K) / np.maximum(counts, 1)

    b = F(np.zeros((G, K)))
    A = np.empty((G, K, K))
    for k in range(K):
        unit = np.zeros((G, K))
        unit[:, k] = 1.0
        with np.errstate(over="ignore", invalid="ignore"):
            A[:, :, k] = F(unit) - b
    A[~visited] = 0.0                                    # unvisited rows: X_j = initial value
    b = np.where(visited, b, table.reshape(G, K))
    finite = np.isfinite(A).all(axis=(1, 2)) & np.isfinite(b).all(axis=1)
    radius = np.full(G, np.inf)
    if finite.any():
        radius[finite] = np.abs(np.linalg.eigvals(A[finite])).max(axis=1)
    if not np.all(radius < 1.0 - 1e-9):
        g = int(np.argmax(~(radius < 1.0 - 1e-9)))
        raise ValueError(
            f"traj: the batch iteration diverges for group {g}: its linear part has spectral "
            f"radius {radius[g]:.3g} >= 1 on this batch (untruncated traces, c_bar > 1, are the "
            "usual cause); use c_bar <= 1 or more data"
        )
    X = np.linalg.solve(np.eye(K)[None] - A, b[:, :, None])[:, :, 0]
    return X.reshape(table.shape)


def tabular_q_evaluation(traj, pi, gamma, *, method="retrace", lam=1.0, c_bar=1.0, n_step=1,
                         groups=None, n_groups=None, q0=None):
    r"""Evaluate :math:`\pi` from a fixed batch of behaviour data by iterating sample targets.

    Each sweep of the batch iteration computes a target :math:`y_t` for every real step with the
    current table and sets every visited entry to the mean target of its visits,

    .. math::

        Q_{k+1}(s, a) = \frac{1}{N(s,a)} \sum_{(i,t):\, (s_{i,t}, a_{i,t}) = (s,a)} y_{i,t}(Q_k)
        = A Q_k + b .

    The targets are affine in the table, so the limit of the iteration is the solution of
    :math:`(I - A) Q = b`, computed directly (from :math:`SA + 1` evaluations of the targets)
    after checking that the spectral radius of :math:`A` is below one, which is exactly when the
    iteration converges. Unvisited entries keep their value in ``q0``. Targets (``method``):

    * ``"one_step"``: :math:`r_t + \gamma \sum_b \pi(b|s_{t+1}) Q(s_{t+1}, b)` (expected SARSA;
      no ratios needed). The limit is the certainty-equivalence estimate, the value of
      :math:`\pi` in the MDP estimated from the batch's counts: consistent for :math:`Q^\pi` as
      the batch grows, biased in general at any finite size;
    * ``"n_step"``: the uncorrected :math:`n`-step return (no ratios; consistent for
      :func:`nstep_fixed_point`, not for :math:`Q^\pi`); only complete windows are used (the
      episode ended, or :math:`n` steps of data follow), as in an :math:`n`-step replay buffer;
    * ``"retrace"``: :func:`retrace_targets` with ``lam`` and ``c_bar`` (consistent for
      :math:`Q^\pi`, likewise biased at a finite batch).

    The batch must come from :func:`companion.mdp.sample_trajectories` with one extra step:
    the last column supplies only the successor state of the step before it (its action and
    reward are not used). A step whose successor is terminal gets successor value 0.

    Parameters
    ----------
    traj : Trajectories
        Behaviour data (with ``logp_target`` for ``"retrace"``), horizon :math:`H + 1 \ge 2`.
    pi : array_like, shape (S, A)
        Target policy.
    gamma : float in [0, 1]
        Discount.
    method : {"retrace", "one_step", "n_step"}, default "retrace"
    lam, c_bar : float
        Retrace's trace decay and truncation level.
    n_step : int, default 1
        Number of rewards for ``"n_step"``.
    groups : array_like of int, shape (n_trajectories,), optional
        Evaluate independent tables, one per group id (replications, vectorised).
    n_groups : int, optional
        Number of groups (default ``max(groups) + 1``).
    q0 : array_like, shape (S, A), optional
        Initial table (default zeros); unvisited entries keep it.

    Returns
    -------
    ndarray, shape (S, A), or (n_groups, S, A) if ``groups`` is given

    Raises
    ------
    ValueError
        On an unknown ``method``, a bad ``traj`` (not Trajectories, horizon < 2, states or
        actions outside the table, no target for ``"retrace"``, behaviour probability 0 where
        the target's is positive), bad ``groups``, invalid numbers, or if the batch iteration
        diverges (spectral radius >= 1, e.g. untruncated traces on a small batch; names the
        group).

    Examples
    --------
    >>> from companion.mdp import random_mdp, q_values, sample_trajectories, uniform_policy
    >>> mdp = random_mdp(3, 2, rng=0, gamma=0.5)
    >>> pi = np.array([[0.8, 0.2]] * 3); mu = uniform_policy(3, 2)
    >>> traj = sample_trajectories(mdp, mu, n=400, horizon=21, rng=1, target=pi)
    >>> q = tabular_q_evaluation(traj, pi, gamma=0.5)
    >>> bool(np.abs(q - q_values(mdp, pi)).max() < 0.1)
    True

    See :doc:`/book/on_off_policy` (experience replay and Retrace).
    """
    if method not in ("retrace", "one_step", "n_step"):
        raise ValueError(f"method: must be 'retrace', 'one_step' or 'n_step', got {method!r}")
    g = check_gamma(gamma)
    lam_ = check_unit_interval(lam, "lam")
    cb = check_positive(c_bar, "c_bar", allow_inf=True)
    n = check_int(n_step, "n_step")
    p = finite_array(pi, "pi", ndim=2)
    p = check_distribution(p, "pi")
    S, A = p.shape
    b = _buffer(traj, S, A, groups, n_groups, need_ratios=method == "retrace")
    G = b["G"]
    lay = b["layout"]
    use = np.ones(b["s"].shape, dtype=bool)
    if method == "n_step":
        # keep only complete n-step windows: the episode ended, or n real steps are available
        m = b["m"]
        part, last, disc = _nstep_parts(np.where(m, traj.rewards[:, :-1], 0.0), m, n, g)
        pos = np.zeros(m.shape, dtype=np.int64)
        pos[lay.rows, lay.cols] = np.arange(lay.rows.size)
        boot = lay.take(np.take_along_axis(pos, last, axis=1))      # flat index of bootstrap
        part, disc = lay.take(part), lay.take(disc)
        lengths = m.sum(axis=1)[lay.rows]
        use = b["ended"][lay.rows] | (lay.cols + n <= lengths)
    keys = ((b["g"] * S + b["s"]) * A + b["a"])[use]
    table = np.zeros((G, S, A)) if q0 is None else np.broadcast_to(
        _table(q0, "q0", (S, A)), (G, S, A)).astype(float)
    if method == "retrace":
        c = lam_ * _truncated_ratio(b["log_rho"], cb)

    def targets_of(Q):
        v = np.einsum("sa,gsa->gs", p, Q)
        v_next = np.where(b["alive1"], v[b["g"], b["s1"]], 0.0)
        if method == "one_step":
            y = b["r"] + g * v_next
        elif method == "n_step":
            y = part + disc * v_next[boot]
        else:
            y = _retrace_flat(b["r"], Q[b["g"], b["s"], b["a"]], v_next, c, g, lay)
        return y[use]

    out = _fixed_point(table, targets_of, keys)
    return out if groups is not None else out[0]


def tabular_v_evaluation(traj, n_states, gamma, *, rho_bar=1.0, c_bar=1.0, lam=1.0,
                         groups=None, n_groups=None, v0=None):
    r"""Evaluate a target policy's state values from a fixed batch by iterating V-trace targets.

    .. math::

        V_{k+1}(s) = \frac{1}{N(s)} \sum_{(i,t):\, s_{i,t} = s} v_{i,t}(V_k),

    with :math:`v_{i,t}` from :func:`vtrace_targets`; its limit is computed directly as in
    :func:`tabular_q_evaluation`. Its limit is consistent (as the batch grows) for
    :math:`V^{\pi_{\bar\rho}}`, the value of the truncated policy of
    :func:`vtrace_policy`: equal to :math:`V^\pi` only if :math:`\bar\rho` is at least the
    largest ratio. Data layout as in :func:`tabular_q_evaluation`.

    Parameters
    ----------
    traj : Trajectories
        Behaviour data with ``logp_target``; horizon :math:`H + 1 \ge 2`.
    n_states : int
        Number of states ``S``.
    gamma : float in [0, 1]
    rho_bar, c_bar : float > 0 or inf, default 1.0
    lam : float in [0, 1], default 1.0
    groups, n_groups
        As in :func:`tabular_q_evaluation`.
    v0 : array_like, shape (S,), optional
        Initial table (default zeros).

    Returns
    -------
    ndarray, shape (S,), or (n_groups, S) if ``groups`` is given

    Raises
    ------
    ValueError
        As :func:`tabular_q_evaluation`.

    Examples
    --------
    >>> from companion.mdp import random_mdp, sample_trajectories, state_values, uniform_policy
    >>> mdp = random_mdp(3, 2, rng=0, gamma=0.5)
    >>> pi = np.array([[0.8, 0.2]] * 3); mu = uniform_policy(3, 2)
    >>> traj = sample_trajectories(mdp, mu, n=400, horizon=21, rng=1, target=pi)
    >>> v = tabular_v_evaluation(traj, 3, gamma=0.5, rho_bar=1.0)
    >>> v_trunc = state_values(mdp, vtrace_policy(pi, mu, 1.0))
    >>> bool(np.abs(v - v_trunc).max() < 0.1)
    True

    See :doc:`/book/on_off_policy` (V-trace).
    """
    g = check_gamma(gamma)
    rb = check_positive(rho_bar, "rho_bar", allow_inf=True)
    cb = check_positive(c_bar, "c_bar", allow_inf=True)
    lam_ = check_unit_interval(lam, "lam")
    S = check_int(n_states, "n_states")
    b = _buffer(traj, S, int(traj.actions.max()) + 1, groups, n_groups, need_ratios=True)
    G = b["G"]
    keys = b["g"] * S + b["s"]
    table = np.zeros((G, S)) if v0 is None else np.broadcast_to(
        _table(v0, "v0", (S,)), (G, S)).astype(float)
    rho_t = _truncated_ratio(b["log_rho"], rb)
    c = lam_ * _truncated_ratio(b["log_rho"], cb)

    def targets_of(V):
        values = V[b["g"], b["s"]]
        next_values = np.where(b["alive1"], V[b["g"], b["s1"]], 0.0)
        vs, _ = _vtrace_flat(b["r"], values, next_values, rho_t, c, g, b["layout"])
        return vs

    out = _fixed_point(table, targets_of, keys)
    return out if groups is not None else out[0]
