r"""Importance sampling estimators: plain expectations and off-policy evaluation.

Two plain estimators of :math:`\mathbb{E}_p[f]` from samples of :math:`q` with weights
:math:`w_i = p(x_i)/q(x_i)`: :func:`ordinary_is` and :func:`weighted_is`. Four off-policy
evaluation (OPE) estimators of :math:`v^\pi = \mathbb{E}_\pi[\sum_t \gamma^t r_t]` from a batch of
trajectories drawn with the behaviour policy :math:`\mu`, each with signature
``(rewards, log_ratios, gamma=1.0, mask=None)``:

================================  =======================================================
:func:`trajectory_is`             :math:`\frac1n \sum_i w_i G_i` (unbiased)
:func:`weighted_trajectory_is`    :math:`\sum_i w_i G_i / \sum_i w_i` (biased, consistent)
:func:`per_decision_is`           :math:`\frac1n \sum_i \sum_t \gamma^t \rho_{i,0:t} r_{i,t}`
:func:`weighted_per_decision_is`  :math:`\sum_t \gamma^t \sum_i \rho_{i,0:t} r_{i,t} / \sum_i \rho_{i,0:t}`
================================  =======================================================

The doubly robust estimator :func:`doubly_robust` (Jiang & Li 2016) takes in addition a value
model along each trajectory, ``(rewards, log_ratios, q_hat, v_hat, gamma=1.0, mask=None)``.
The single-ratio estimator :func:`single_step_is` of the surrogate objective takes the behaviour
policy's advantages instead, ``(rewards, log_ratios, advantages, gamma=1.0, mask=None)``.

All of them return an :class:`Estimate` with ``.estimate``, ``.stderr``, ``.n`` and ``.terms``
(per-trajectory contributions, scaled so that ``estimate == terms.mean()``).

Numerics. Everything is computed from log ratios, with the log weights of
:mod:`companion.weights` (:func:`~companion.weights.trajectory_log_weights` and
:func:`~companion.weights.per_decision_log_weights`). The weighted estimators subtract the
largest log weight (per step, for the per-decision one) before exponentiating, so they give the
right answer for trajectories of any length, e.g. 10,000 steps with ratios 1.2 (log weight 1823,
far beyond float64). The ordinary estimators need the weights themselves: a weight below
float64's smallest number (about ``5e-324``) is taken as 0, and one below about ``2e-308`` keeps
fewer digits (absolute errors below ``1e-323``, harmless), while a term :math:`w_i G_i` that
exceeds the float64 range raises :class:`ValueError` (rather than returning ``inf``); use the
weighted estimator or work with log weights in that case.

Masks. Padded steps (``mask == False``) are treated as an absorbing state with ratio 1 and
reward 0; their values in ``rewards`` and ``log_ratios`` are ignored (they may hold anything,
including NaN). In the weighted per-decision estimator a finished trajectory therefore keeps
its final weight in the denominators of later steps.

Memory. Beyond the inputs (two float64 arrays of shape ``(n, T)``), the per-decision
estimators work on blocks of rows of about 65,000 elements (half a megabyte per temporary array),
so :func:`per_decision_is` needs a few MB whatever the batch size, and
:func:`weighted_per_decision_is` one array of shape ``(n, T)`` (the prefix weights of every
trajectory, which its per-step normalisation needs twice) plus a few MB. The trajectory-wise
estimators need :math:`O(n)`, or with a mask one temporary ``(n, T)`` array (the inputs with
their padding set to 0). So the extra memory stays below the size of the inputs.
``benchmarks/ope_estimators.py`` measures the speed.

Used in :doc:`/book/core_idea`, :doc:`/book/trajectory_weights`, :doc:`/book/variance_problem`,
:doc:`/book/per_step_weights`, :doc:`/book/weighted_is`, :doc:`/book/on_off_policy`,
:doc:`/book/marginalized_is`, :doc:`/book/confidence` and the ``estimators`` and
``off_policy_evaluation`` assignments.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._validation import (
    LOG_FLOAT_MAX,
    as_float_array,
    check_finite,
    check_mask,
    check_same_shape,
    check_weights,
    first_index,
    raise_nonfinite,
    where,
)
from ._validation import (
    check_gamma as _check_gamma,
)
from .weights import per_decision_log_weights, trajectory_log_weights

__all__ = [
    "Estimate",
    "ordinary_is",
    "weighted_is",
    "trajectory_is",
    "weighted_trajectory_is",
    "per_decision_is",
    "weighted_per_decision_is",
    "doubly_robust",
    "single_step_is",
]

#: Elements per block of rows in the per-decision estimators (512 KiB per float64 array).
_BLOCK_SIZE = 1 << 16


@dataclass(frozen=True, eq=False)
class Estimate:
    """Result of an importance sampling estimator.

    Attributes
    ----------
    estimate : float
        The point estimate.
    stderr : float
        Estimated standard error: sample standard deviation of the terms over
        :math:`\\sqrt n` for the ordinary estimators, the delta method for the weighted
        ones. NaN when ``n == 1`` (not estimable from one sample).
    n : int
        Number of samples or trajectories.
    terms : ndarray of shape (n,) or None
        Per-sample / per-trajectory contributions with ``estimate == terms.mean()``.
    method : str
        Name of the estimator that produced this result.

    Examples
    --------
    >>> e = Estimate(estimate=1.5, stderr=0.25, n=4)
    >>> float(e), round(e.estimate - 2 * e.stderr, 2)
    (1.5, 1.0)

    Returned by every estimator of this module. Used in :doc:`/book/core_idea`,
    :doc:`/book/trajectory_weights`, :doc:`/book/variance_problem`, :doc:`/book/per_step_weights`,
    :doc:`/book/weighted_is`, :doc:`/book/on_off_policy`, :doc:`/book/marginalized_is`,
    :doc:`/book/confidence` and the ``estimators`` and ``off_policy_evaluation`` assignments.
    """

    estimate: float
    stderr: float
    n: int
    terms: np.ndarray | None = None
    method: str = ""

    def __float__(self) -> float:
        return float(self.estimate)

    def __repr__(self) -> str:
        name = f"{self.method}: " if self.method else ""
        return f"Estimate({name}{self.estimate:.6g} +/- {self.stderr:.3g}, n={self.n})"


# ---------------------------------------------------------------------------------------------
# helpers


def _sd_over_sqrt_n(terms: np.ndarray) -> float:
    n = terms.shape[0]
    if n < 2:
        return float("nan")
    return float(np.std(terms, ddof=1) / np.sqrt(n))


def _weights_from(w, log: bool, name: str = "w") -> tuple[np.ndarray, float]:
    """Return (scaled weights, log scale) with ``w = scaled * exp(log_scale)``, max scaled = 1."""
    arr = check_weights(w, name, log=log)
    if log:
        m = float(arr.max())
        return np.exp(arr - m), m
    m = float(arr.max())
    return arr / m, float(np.log(m))


def _prepare(rewards, log_ratios, gamma, mask):
    """Validated inputs: two 2-D arrays of one shape, ``gamma`` in [0, 1], a mask whose padding
    is a suffix of each row, and at every real step no NaN or inf in ``rewards`` and no NaN or
    +inf in ``log_ratios`` (the first bad entry is named by trajectory and step)."""
    r = as_float_array(rewards, "rewards", ndim=2)
    lr = as_float_array(log_ratios, "log_ratios", ndim=2)
    check_same_shape(r, "rewards", lr, "log_ratios")
    g = _check_gamma(gamma)
    m = None if mask is None else check_mask(mask, r.shape)
    # Fast path: one sum per row over the real steps is finite (or -inf for the log ratios)
    # exactly when no entry is NaN or inf (+inf); only if not, look for the first bad entry.
    real = True if m is None else m
    if not (np.all(np.isfinite(np.sum(r, axis=1, where=real)))
            and _ok_log_weight(np.sum(lr, axis=1, where=real))):
        _raise_bad_inputs(r, lr, m)
    return r, lr, g, m


def _masked_full(x, m):
    return x if m is None else np.where(m, x, 0.0)


def _raise_bad_inputs(r, lr, m) -> None:
    """Slow path: find the first NaN/inf among the real steps and raise naming it."""
    raise_nonfinite(_masked_full(lr, m), "log_ratios", allow_neg_inf=True)
    raise_nonfinite(_masked_full(r, m), "rewards")


def _row_blocks(shape: tuple[int, int]):
    """Slices of consecutive rows of about ``_BLOCK_SIZE`` elements that cover ``shape[0]`` rows."""
    n, horizon = shape
    rows = max(1, _BLOCK_SIZE // horizon)
    return (slice(start, start + rows) for start in range(0, n, rows))


def _rows(m, rows: slice):
    """The mask of a block of rows (``None`` for no mask)."""
    return None if m is None else m[rows]


def _discounts(gamma: float, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """:math:`\\gamma^t` and :math:`t \\log \\gamma` for ``t = 0, ..., horizon - 1`` (``-inf``
    for :math:`0^t`, ``t >= 1``)."""
    t = np.arange(horizon, dtype=np.float64)
    if gamma == 1.0:
        return np.ones(horizon), np.zeros(horizon)
    if gamma == 0.0:
        d = (t == 0).astype(np.float64)
        return d, np.where(t == 0, 0.0, -np.inf)
    return gamma**t, t * np.log(gamma)


def _ok_log_weight(x: np.ndarray) -> bool:
    """True if every entry is finite or -inf (no NaN, no +inf)."""
    return bool(np.all(np.isfinite(x) | (x == -np.inf)))


def _returns_and_log_weights(r, lr, gamma, m):
    """Discounted returns :math:`G_i` and log trajectory weights :math:`\\log w_i`."""
    d, _ = _discounts(gamma, r.shape[1])
    G = _masked_full(r, m) @ d
    if not np.all(np.isfinite(G)):
        raise ValueError("rewards: the discounted returns overflow float64")
    return G, trajectory_log_weights(lr, m)


def _overflow_error(name: str, log_max: float, arg: str = "log_ratios") -> ValueError:
    return ValueError(
        f"{arg}: the {name} terms overflow float64 (largest log weight {log_max:.6g}; "
        f"exp overflows above {LOG_FLOAT_MAX:.2f}). The ordinary estimator cannot represent "
        "them; use the weighted estimator, which is computed with max-subtraction, or "
        "work with log weights."
    )


# ---------------------------------------------------------------------------------------------
# plain expectations


def ordinary_is(f, w, *, log: bool = False) -> Estimate:
    r"""Ordinary importance sampling estimate of :math:`\mathbb{E}_p[f]`.

    .. math::

        \hat\mu_{\text{IS}} = \frac{1}{n} \sum_{i=1}^{n} w_i f(x_i),
        \qquad w_i = \frac{p(x_i)}{q(x_i)}, \quad x_i \sim q.

    Unbiased whenever :math:`q > 0` wherever :math:`p f \ne 0`. Standard error: sample
    standard deviation of :math:`w_i f(x_i)` over :math:`\sqrt n`.

    Parameters
    ----------
    f : array_like, shape (n,)
        Function values :math:`f(x_i)`.
    w : array_like, shape (n,)
        Importance weights :math:`w_i \ge 0`, or log weights if ``log=True``.
    log : bool, default False
        Whether ``w`` holds log weights (``-inf`` allowed).

    Returns
    -------
    Estimate
        ``terms`` are :math:`w_i f(x_i)`.

    Raises
    ------
    ValueError
        If an input is empty, not 1-D, holds NaN/inf, the shapes differ, a weight is negative,
        all weights are zero, or a term :math:`w_i f(x_i)` overflows float64.

    Examples
    --------
    >>> ordinary_is([1.0, 2.0, 3.0], [1.0, 1.0, 1.0]).estimate
    2.0
    >>> round(ordinary_is([1.0, 2.0], [0.5, 1.5]).estimate, 3)
    1.75

    Used in :doc:`/book/core_idea` and the ``estimators`` assignment.
    """
    fv = as_float_array(f, "f", ndim=1)
    check_finite(fv, "f")
    ws = check_weights(w, "w", log=log)
    check_same_shape(fv, "f", ws, "w")
    with np.errstate(over="ignore", invalid="ignore"):
        terms = (np.exp(ws) if log else ws) * fv
    if not np.all(np.isfinite(terms)):
        raise _overflow_error("ordinary IS", float(ws.max() if log else np.log(ws.max())), "w")
    return Estimate(float(terms.mean()), _sd_over_sqrt_n(terms), fv.shape[0], terms, "ordinary_is")


def weighted_is(f, w, *, log: bool = False) -> Estimate:
    r"""Weighted (self-normalised) importance sampling estimate of :math:`\mathbb{E}_p[f]`.

    .. math::

        \hat\mu_{\text{WIS}} = \frac{\sum_{i} w_i f(x_i)}{\sum_{i} w_i},
        \qquad \widehat{\operatorname{se}} =
        \frac{\sqrt{\sum_i w_i^2 \bigl(f(x_i) - \hat\mu_{\text{WIS}}\bigr)^2}}{\sum_i w_i}.

    Biased at finite :math:`n` but consistent; invariant to multiplying all weights by a
    constant (so the weights need only be known up to a constant); always inside the range of
    the observed :math:`f`. The standard error is the delta-method one.

    Parameters
    ----------
    f : array_like, shape (n,)
        Function values.
    w : array_like, shape (n,)
        Weights :math:`w_i \ge 0` (not all zero), or log weights if ``log=True``.
    log : bool, default False
        Whether ``w`` holds log weights; then any size of log weight is fine.

    Returns
    -------
    Estimate
        ``terms`` are :math:`n \bar w_i f(x_i)` with :math:`\bar w_i = w_i / \sum_j w_j`.

    Raises
    ------
    ValueError
        If an input is empty, not 1-D, holds NaN/inf, the shapes differ, a weight is negative,
        or all weights are zero (the ratio is 0/0).

    Examples
    --------
    >>> round(weighted_is([1.0, 2.0], [1.0, 3.0]).estimate, 6)
    1.75
    >>> round(weighted_is([1.0, 2.0], [5000.0, 5000.0 + np.log(3.0)], log=True).estimate, 6)
    1.75

    Used in :doc:`/book/core_idea` and the ``estimators`` assignment.
    """
    fv = as_float_array(f, "f", ndim=1)
    check_finite(fv, "f")
    ws, _ = _weights_from(w, log)
    check_same_shape(fv, "f", ws, "w")
    total = ws.sum()
    est = float(ws @ fv / total)
    n = fv.shape[0]
    se = float(np.sqrt(np.sum((ws * (fv - est)) ** 2)) / total) if n > 1 else float("nan")
    return Estimate(est, se, n, n * ws * fv / total, "weighted_is")


# ---------------------------------------------------------------------------------------------
# off-policy evaluation


def trajectory_is(rewards, log_ratios, gamma=1.0, mask=None) -> Estimate:
    r"""Ordinary trajectory-wise importance sampling estimate of :math:`v^\pi`.

    .. math::

        \hat v_{\text{IS}} = \frac{1}{n} \sum_{i=1}^{n} w_i G_i, \qquad
        w_i = \prod_{t=0}^{T_i-1} \rho_{i,t}, \quad G_i = \sum_{t=0}^{T_i-1} \gamma^t r_{i,t}.

    Unbiased. Its variance grows exponentially with the horizon. The weights come from
    :func:`companion.weights.trajectory_log_weights`.

    Parameters
    ----------
    rewards : array_like, shape (n_trajectories, horizon)
        Rewards :math:`r_{i,t}` of trajectories drawn with the behaviour policy :math:`\mu`.
    log_ratios : array_like, shape (n_trajectories, horizon)
        :math:`\log \rho_{i,t}` (see :func:`companion.weights.log_ratios`); ``-inf`` allowed.
    gamma : float in [0, 1], default 1.0
        Discount :math:`\gamma`.
    mask : array_like of bool, same shape, optional
        ``True`` on real steps; padding (a suffix of each row) counts as ratio 1, reward 0.

    Returns
    -------
    Estimate
        ``terms`` are :math:`w_i G_i`; ``stderr`` is their sample sd over :math:`\sqrt n`.

    Raises
    ------
    ValueError
        On shape mismatch, empty batch, NaN or inf in ``rewards`` (or NaN/+inf in
        ``log_ratios``) at a real step (names trajectory and step), ``gamma`` outside [0, 1],
        a bad ``mask``, or if a term :math:`w_i G_i` overflows float64 (e.g. 10,000 steps with
        ratio 1.2: :math:`\log w = 1823`); use :func:`weighted_trajectory_is` then.

    Examples
    --------
    >>> import numpy as np
    >>> rewards = np.array([[1.0, 1.0], [0.0, 1.0]])
    >>> lr = np.log([[2.0, 1.0], [0.5, 0.5]])
    >>> e = trajectory_is(rewards, lr)
    >>> e.terms.tolist(), e.estimate
    ([4.0, 0.25], 2.125)

    Used in :doc:`/book/trajectory_weights`, :doc:`/book/variance_problem`,
    :doc:`/book/per_step_weights`, :doc:`/book/weighted_is`, :doc:`/book/on_off_policy`,
    :doc:`/book/confidence` and the ``estimators`` assignment.
    """
    r, lr, g, m = _prepare(rewards, log_ratios, gamma, mask)
    G, log_w = _returns_and_log_weights(r, lr, g, m)
    with np.errstate(over="ignore", invalid="ignore"):
        terms = np.exp(log_w) * G
    if not np.all(np.isfinite(terms)):
        raise _overflow_error("trajectory IS", float(log_w.max()))
    return Estimate(float(terms.mean()), _sd_over_sqrt_n(terms), r.shape[0], terms, "trajectory_is")


def weighted_trajectory_is(rewards, log_ratios, gamma=1.0, mask=None) -> Estimate:
    r"""Weighted (self-normalised) trajectory-wise importance sampling estimate of :math:`v^\pi`.

    .. math::

        \hat v_{\text{WIS}} = \frac{\sum_i w_i G_i}{\sum_i w_i}
        = \sum_i \bar w_i G_i, \qquad
        \bar w_i = \exp\bigl(\log w_i - \max_j \log w_j\bigr) \big/ \textstyle\sum_k
        \exp\bigl(\log w_k - \max_j \log w_j\bigr).

    Biased at finite :math:`n`, consistent, and always within the range of the observed returns.
    Computed with max-subtraction, so any trajectory length is fine. Standard error by the
    delta method, :math:`\sqrt{\sum_i \bar w_i^2 (G_i - \hat v)^2}`.

    Parameters
    ----------
    rewards : array_like, shape (n_trajectories, horizon)
        Rewards :math:`r_{i,t}` of trajectories drawn with the behaviour policy :math:`\mu`.
    log_ratios : array_like, shape (n_trajectories, horizon)
        :math:`\log \rho_{i,t}` (see :func:`companion.weights.log_ratios`); ``-inf`` allowed.
    gamma : float in [0, 1], default 1.0
        Discount :math:`\gamma`.
    mask : array_like of bool, same shape, optional
        ``True`` on real steps; padding (a suffix of each row) counts as ratio 1, reward 0.

    Returns
    -------
    Estimate
        ``terms`` are :math:`n \bar w_i G_i`.

    Raises
    ------
    ValueError
        As :func:`trajectory_is` (but never overflows), and if every trajectory has weight
        zero (0/0).

    Examples
    --------
    >>> import numpy as np
    >>> rewards = np.array([[1.0, 1.0], [0.0, 1.0]])
    >>> lr = np.log([[2.0, 1.0], [0.5, 0.5]])
    >>> round(weighted_trajectory_is(rewards, lr).estimate, 4)  # (4 + 0.25) / (2 + 0.25)
    1.8889

    Used in :doc:`/book/weighted_is`, :doc:`/book/on_off_policy` and :doc:`/book/confidence`.
    """
    r, lr, g, m = _prepare(rewards, log_ratios, gamma, mask)
    G, log_w = _returns_and_log_weights(r, lr, g, m)
    top = log_w.max()
    if top == -np.inf:
        raise ValueError(
            "log_ratios: every trajectory has weight zero (log weight -inf), so weighted "
            "importance sampling is 0/0; no trajectory is possible under the target policy"
        )
    w_bar = np.exp(log_w - top)
    w_bar /= w_bar.sum()
    est = float(w_bar @ G)
    n = r.shape[0]
    se = float(np.sqrt(np.sum((w_bar * (G - est)) ** 2))) if n > 1 else float("nan")
    return Estimate(est, se, n, n * w_bar * G, "weighted_trajectory_is")


def per_decision_is(rewards, log_ratios, gamma=1.0, mask=None) -> Estimate:
    r"""Per-decision importance sampling estimate of :math:`v^\pi` (Precup et al. 2000).

    .. math::

        \hat v_{\text{PDIS}} = \frac{1}{n} \sum_{i=1}^{n} \sum_{t=0}^{T_i-1}
        \gamma^t \rho_{i,0:t} \, r_{i,t}, \qquad \rho_{i,0:t} = \prod_{k=0}^{t} \rho_{i,k}.

    Each reward is weighted only by the ratios of the actions taken up to its own time, which
    keeps the estimator unbiased and lowers the variance compared with :func:`trajectory_is`.
    The products are formed as ``exp(log_rho_0t + t log gamma)`` from the log prefix weights of
    :func:`companion.weights.per_decision_log_weights`, one block of rows at a time (a few MB of
    memory beyond the inputs).

    Parameters
    ----------
    rewards : array_like, shape (n_trajectories, horizon)
        Rewards :math:`r_{i,t}` of trajectories drawn with the behaviour policy :math:`\mu`.
    log_ratios : array_like, shape (n_trajectories, horizon)
        :math:`\log \rho_{i,t}` (see :func:`companion.weights.log_ratios`); ``-inf`` allowed.
    gamma : float in [0, 1], default 1.0
        Discount :math:`\gamma`.
    mask : array_like of bool, same shape, optional
        ``True`` on real steps; padding (a suffix of each row) counts as ratio 1, reward 0.

    Returns
    -------
    Estimate
        ``terms`` are :math:`\sum_t \gamma^t \rho_{i,0:t} r_{i,t}`; ``stderr`` is their sample
        sd over :math:`\sqrt n`.

    Raises
    ------
    ValueError
        As :func:`trajectory_is`, including when a term overflows float64.

    Examples
    --------
    >>> import numpy as np
    >>> rewards = np.array([[1.0, 1.0], [0.0, 1.0]])
    >>> lr = np.log([[2.0, 1.0], [0.5, 0.5]])
    >>> e = per_decision_is(rewards, lr)  # terms 2*1 + 2*1 and 0.5*0 + 0.25*1
    >>> e.terms.tolist(), e.estimate
    ([4.0, 0.25], 2.125)

    Used in :doc:`/book/trajectory_weights`, :doc:`/book/per_step_weights`,
    :doc:`/book/on_off_policy`, :doc:`/book/marginalized_is`, :doc:`/book/confidence` and the
    ``estimators`` and ``off_policy_evaluation`` assignments.
    """
    r, lr, g, m = _prepare(rewards, log_ratios, gamma, mask)
    n, horizon = r.shape
    _, log_d = _discounts(g, horizon)  # t log gamma
    terms = np.empty(n)
    with np.errstate(over="ignore", invalid="ignore"):  # checked below
        for rows in _row_blocks(r.shape):
            log_w = per_decision_log_weights(lr[rows], _rows(m, rows))  # log rho_{i,0:t}
            r0 = _masked_full(r[rows], _rows(m, rows))
            terms[rows] = np.sum(np.exp(log_w + log_d) * r0, axis=1)
    if not np.all(np.isfinite(terms)):
        largest = max(float(np.max(per_decision_log_weights(lr[rows], _rows(m, rows)) + log_d))
                      for rows in _row_blocks(r.shape))
        raise _overflow_error("per-decision IS", largest)
    return Estimate(float(terms.mean()), _sd_over_sqrt_n(terms), n, terms, "per_decision_is")


def weighted_per_decision_is(rewards, log_ratios, gamma=1.0, mask=None) -> Estimate:
    r"""Weighted per-decision importance sampling estimate of :math:`v^\pi`.

    .. math::

        \hat v_{\text{WPDIS}} = \sum_{t=0}^{T-1} \gamma^t
        \frac{\sum_i \rho_{i,0:t} \, r_{i,t}}{\sum_i \rho_{i,0:t}}.

    Each step's reward is self-normalised by the prefix weights of that step (Precup et al.
    2000; Sutton & Barto 2018, section 5.9, discuss per-decision weighting but leave the weighted
    form open; this is the per-step normalisation of Precup et al.). Computed with a per-step
    max-subtraction, :math:`W_{i,t} = \exp(\log \rho_{i,0:t} - \max_j \log \rho_{j,0:t}) \le 1`,
    so any trajectory length is fine. If every prefix weight at step :math:`t` is zero, the step
    contributes 0 (no trajectory reached it under :math:`\pi`). Standard error by the delta
    method with the per-trajectory influence
    :math:`\psi_i = \sum_t \gamma^t \rho_{i,0:t} (r_{i,t} - \hat r_t) / \overline{\rho_{0:t}}`,
    :math:`\widehat{\operatorname{se}} = \sqrt{\sum_i \psi_i^2} / n`, where :math:`\hat r_t` is
    the weighted mean reward at step :math:`t` and :math:`\overline{\rho_{0:t}}` the mean prefix
    weight. Memory: the weights :math:`W` of the whole batch (one array of the shape of
    ``rewards``) plus a few MB.

    Parameters
    ----------
    rewards : array_like, shape (n_trajectories, horizon)
        Rewards :math:`r_{i,t}` of trajectories drawn with the behaviour policy :math:`\mu`.
    log_ratios : array_like, shape (n_trajectories, horizon)
        :math:`\log \rho_{i,t}` (see :func:`companion.weights.log_ratios`); ``-inf`` allowed.
    gamma : float in [0, 1], default 1.0
        Discount :math:`\gamma`.
    mask : array_like of bool, same shape, optional
        ``True`` on real steps; padding (a suffix of each row) counts as ratio 1, reward 0.

    Returns
    -------
    Estimate
        ``terms`` are :math:`\sum_t \gamma^t \rho_{i,0:t} r_{i,t} / \overline{\rho_{0:t}}`.

    Raises
    ------
    ValueError
        As :func:`trajectory_is` (but never overflows), and if every trajectory has weight zero
        already at step 0.

    Examples
    --------
    >>> import numpy as np
    >>> rewards = np.array([[1.0, 1.0], [0.0, 1.0]])
    >>> lr = np.log([[2.0, 1.0], [0.5, 0.5]])
    >>> # step 0: (2*1 + 0.5*0) / 2.5 = 0.8;  step 1: (2*1 + 0.25*1) / 2.25 = 1
    >>> round(weighted_per_decision_is(rewards, lr).estimate, 4)
    1.8

    Used in :doc:`/book/weighted_is`, :doc:`/book/on_off_policy` and :doc:`/book/marginalized_is`.
    """
    r, lr, g, m = _prepare(rewards, log_ratios, gamma, mask)
    n, horizon = r.shape
    d, _ = _discounts(g, horizon)
    log_w = np.empty((n, horizon))  # log rho_{i,0:t}, filled block by block
    for rows in _row_blocks(r.shape):
        log_w[rows] = per_decision_log_weights(lr[rows], _rows(m, rows))
    top = log_w.max(axis=0)
    top[top == -np.inf] = 0.0  # nobody reaches step t: its weights are all 0 anyway
    # W_it = rho_{i,0:t} / max_j rho_{j,0:t} <= 1, in place (W reuses log_w's memory)
    W = np.exp(np.subtract(log_w, top, out=log_w), out=log_w)
    B = W.sum(axis=0)
    if B[0] == 0.0:
        raise ValueError("log_ratios: every trajectory has weight zero at step 0, so weighted "
                         "per-decision importance sampling is 0/0")
    c = np.divide(n * d, B, out=np.zeros(horizon), where=B > 0)  # gamma^t / mean_i W_it
    A, terms = np.zeros(horizon), np.empty(n)
    for rows in _row_blocks(r.shape):
        Wr = W[rows] * _masked_full(r[rows], _rows(m, rows))
        A += Wr.sum(axis=0)  # sum_i W_it r_it
        terms[rows] = Wr @ c  # sum_t gamma^t rho_{i,0:t} r_it / mean_j rho_{j,0:t}
    if not np.all(np.isfinite(terms)):
        raise ValueError("rewards: the weighted per-decision terms overflow float64")
    r_hat = np.divide(A, B, out=np.zeros(horizon), where=B > 0)  # weighted mean reward at t
    psi = terms - W @ (c * r_hat)  # delta-method influence of trajectory i
    se = float(np.sqrt(psi @ psi) / n) if n > 1 else float("nan")
    return Estimate(float(d @ r_hat), se, n, terms, "weighted_per_decision_is")


def doubly_robust(rewards, log_ratios, q_hat, v_hat, gamma=1.0, mask=None) -> Estimate:
    r"""Doubly robust estimate of :math:`v^\pi` (Jiang & Li 2016): per-decision IS with a value model.

    .. math::

        \hat v_{\text{DR}} = \frac{1}{n} \sum_{i=1}^{n} \sum_{t=0}^{T_i-1} \gamma^t
        \Bigl[\rho_{i,0:t} \bigl(r_{i,t} - \hat Q(s_{i,t}, a_{i,t})\bigr)
        + \rho_{i,0:t-1} \hat V(s_{i,t})\Bigr], \qquad \rho_{i,0:-1} = 1,

    equivalently the backward recursion :math:`\hat v_t = \hat V(s_t) + \rho_t (r_t + \gamma
    \hat v_{t+1} - \hat Q(s_t, a_t))`. The model terms are a control variate: given the past,
    :math:`\mathbb{E}_\mu[\rho_t \hat Q(s_t, a_t)] = \sum_a \pi(a|s_t) \hat Q(s_t, a)`, so the
    estimator is **unbiased for any** :math:`\hat Q` provided
    :math:`\hat V(s) = \sum_a \pi(a|s) \hat Q(s, a)` (this function cannot check that; with an
    inconsistent :math:`\hat V` it is biased). With :math:`\hat Q = \hat V = 0` it is
    :func:`per_decision_is`; the closer :math:`\hat Q` is to :math:`Q^\pi`, the smaller the
    variance. For a finite horizon the model may depend on time (pass the values along each
    trajectory).

    Parameters
    ----------
    rewards : array_like, shape (n_trajectories, horizon)
        Rewards :math:`r_{i,t}` of trajectories drawn with the behaviour policy :math:`\mu`.
    log_ratios : array_like, shape (n_trajectories, horizon)
        :math:`\log \rho_{i,t}` (see :func:`companion.weights.log_ratios`); ``-inf`` allowed.
    q_hat : array_like, shape (n_trajectories, horizon)
        The model's :math:`\hat Q(s_{i,t}, a_{i,t})` along each trajectory.
    v_hat : array_like, shape (n_trajectories, horizon)
        The model's :math:`\hat V(s_{i,t}) = \sum_a \pi(a|s_{i,t}) \hat Q(s_{i,t}, a)`.
    gamma : float in [0, 1], default 1.0
        Discount :math:`\gamma`.
    mask : array_like of bool, same shape, optional
        ``True`` on real steps; padding (a suffix of each row) contributes nothing.

    Returns
    -------
    Estimate
        ``terms`` are the per-trajectory sums; ``stderr`` is their sample sd over :math:`\sqrt n`.

    Raises
    ------
    ValueError
        As :func:`per_decision_is` (including overflow of a term), and if ``q_hat`` or
        ``v_hat`` has the wrong shape or holds NaN/inf at a real step (names trajectory and step).

    Examples
    --------
    >>> import numpy as np
    >>> rewards = np.array([[1.0, 1.0], [0.0, 1.0]])
    >>> lr = np.log([[2.0, 1.0], [0.5, 0.5]])
    >>> zero = np.zeros((2, 2))
    >>> doubly_robust(rewards, lr, zero, zero).estimate     # no model: per-decision IS
    2.125
    >>> e = doubly_robust(rewards, lr, np.ones((2, 2)), np.ones((2, 2)))
    >>> e.terms.tolist(), e.estimate     # (0 + 1) + (0 + 2) and (-0.5 + 1) + (0 + 0.5)
    ([3.0, 1.0], 2.0)

    Used in :doc:`/book/per_step_weights`, :doc:`/book/on_off_policy` and
    :doc:`/book/marginalized_is`; see eq. (eq-onoff-dr).
    """
    r, lr, g, m = _prepare(rewards, log_ratios, gamma, mask)
    q = as_float_array(q_hat, "q_hat", ndim=2)
    check_same_shape(r, "rewards", q, "q_hat")
    v = as_float_array(v_hat, "v_hat", ndim=2)
    check_same_shape(r, "rewards", v, "v_hat")
    r0, q0, v0 = (_masked_full(x, m) for x in (r, q, v))
    check_finite(q0, "q_hat")
    check_finite(v0, "v_hat")
    n, horizon = r.shape
    _, log_d = _discounts(g, horizon)
    P = per_decision_log_weights(lr, m)  # log rho_{i,0:t}
    prev = np.concatenate([np.zeros((n, 1)), P[:, :-1]], axis=1)   # log rho_{0:t-1}
    with np.errstate(over="ignore", invalid="ignore"):
        w = np.exp(P + log_d)
        w_prev = np.exp(prev + log_d)
        terms = np.sum(w * (r0 - q0) + w_prev * v0, axis=1)
    if not np.all(np.isfinite(terms)):
        raise _overflow_error("doubly robust", float(np.max(P)))
    return Estimate(float(terms.mean()), _sd_over_sqrt_n(terms), n, terms, "doubly_robust")


def single_step_is(rewards, log_ratios, advantages, gamma=1.0, mask=None) -> Estimate:
    r"""Single-ratio (surrogate) estimate: the behaviour's return plus ratio-corrected advantages.

    .. math::

        \hat L = \frac1n \sum_{i=1}^n \Big( \sum_t \gamma^t r_{i,t}
                 + \sum_t \gamma^t (\rho_{i,t} - 1)\, A_{i,t} \Big), \qquad
        \rho_{i,t} = \frac{\pi(a_{i,t} \mid s_{i,t})}{\mu(a_{i,t} \mid s_{i,t})} .

    The part that depends on :math:`\pi` is :math:`\sum_t \gamma^t \rho_t A_t`, the per-step
    surrogate of CPI, TRPO and PPO. With :math:`A_{i,t} = A^\mu_t(s_{i,t}, a_{i,t})` (or any
    estimate whose conditional mean given :math:`s_t, a_t` is that) and episodes from :math:`\mu`,
    :math:`\mathbb{E}_\mu[A^\mu_t(s_t, a_t)] = 0`, so the expectation is the surrogate

    .. math::

        L_\mu(\pi) = J(\mu) + \sum_t \gamma^t\, \mathbb{E}_{s \sim d^\mu_t}
        \sum_a \pi(a \mid s) A^\mu_t(s, a),

    not :math:`J(\pi)`: each step is reweighted by its own ratio only, so states are still visited
    as under :math:`\mu`. The difference :math:`J(\pi) - L_\mu(\pi)` is of second order in the
    distance between the policies. The ``- 1`` is a control variate: it changes no expectation,
    and at :math:`\pi = \mu` it makes the estimate the plain on-policy Monte Carlo return.

    Parameters
    ----------
    rewards : array_like, shape (n_trajectories, horizon)
        Rewards of episodes drawn with the behaviour policy.
    log_ratios : array_like, shape (n_trajectories, horizon)
        :math:`\log \rho_{i,t}`; ``-inf`` allowed (ratio 0).
    advantages : array_like, shape (n_trajectories, horizon)
        Advantages of the behaviour policy at the visited state-action pairs.
    gamma : float in [0, 1], default 1.0
        Discount :math:`\gamma`.
    mask : array_like of bool, same shape, optional
        ``True`` on real steps (padding, a suffix, contributes nothing).

    Returns
    -------
    Estimate
        ``terms`` are the per-trajectory sums; ``stderr`` their sample sd over :math:`\sqrt n`.

    Raises
    ------
    ValueError
        On a shape mismatch, an empty batch, NaN/inf in ``rewards`` or ``advantages`` or NaN/+inf
        in ``log_ratios`` at a real step (names trajectory and step), a bad ``mask``, ``gamma``
        outside [0, 1], or a ratio that overflows float64.

    Examples
    --------
    >>> import numpy as np
    >>> rewards = np.array([[1.0, 0.0], [0.0, 1.0]])
    >>> lr = np.log([[2.0, 1.0], [0.5, 1.0]])
    >>> adv = np.array([[0.5, 0.0], [-0.5, 0.0]])
    >>> e = single_step_is(rewards, lr, adv)   # terms 1 + (2 - 1) 0.5 and 1 + (0.5 - 1)(-0.5)
    >>> e.terms.tolist(), e.estimate
    ([1.5, 1.25], 1.375)

    Used in :doc:`/book/per_step_weights`, eq. (eq-perstep-single-step).
    """
    r, lr, g, m = _prepare(rewards, log_ratios, gamma, mask)
    adv = as_float_array(advantages, "advantages", ndim=2)
    check_same_shape(r, "rewards", adv, "advantages")
    r, lr, adv = (_masked_full(x, m) for x in (r, lr, adv))
    check_finite(adv, "advantages")
    if lr.max() > LOG_FLOAT_MAX:
        idx = first_index(lr > LOG_FLOAT_MAX)
        raise ValueError(f"log_ratios: ratio exp({lr[idx]:.6g}) overflows float64 at "
                         f"{where(idx, 2)}")
    d, _ = _discounts(g, r.shape[1])
    terms = (r + np.expm1(lr) * adv) @ d  # sum_t gamma^t (r_it + (rho_it - 1) A_it)
    if not np.all(np.isfinite(terms)):
        i = int(np.flatnonzero(~np.isfinite(terms))[0])
        raise ValueError(f"log_ratios: the ratio-weighted advantages of trajectory {i} overflow "
                         "float64")
    return Estimate(float(terms.mean()), _sd_over_sqrt_n(terms), r.shape[0], terms,
                    "single_step_is")
