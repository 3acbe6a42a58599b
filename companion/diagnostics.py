r"""Diagnostics for importance weights: effective sample size and Pareto :math:`\hat k`.

* :func:`effective_sample_size` -- Kong's ESS, :math:`(\sum_i w_i)^2 / \sum_i w_i^2`.
* :func:`pareto_khat` -- the shape estimate of Pareto-smoothed importance sampling (PSIS,
  Vehtari et al. 2015/2024), which measures how heavy the right tail of the weights is.
* :func:`khat_threshold` -- the sample-size-dependent reliability threshold for :math:`\hat k`.
* :func:`weight_report` -- all of the above in one object that renders as an HTML table in a
  notebook and as text in a terminal.
* :func:`running_mean` -- the running mean of per-sample terms and its standard error, for the
  "estimate against number of samples" plots.

Every function accepts log weights (``log=True``), so weights of any size never overflow.

Used in :doc:`/book/core_idea`, :doc:`/book/trajectory_weights`, :doc:`/book/variance_problem`,
:doc:`/book/weighted_is`, :doc:`/book/on_off_policy` and the ``variance`` assignment.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp

from ._validation import as_float_array, check_finite, check_int, check_weights

__all__ = [
    "effective_sample_size",
    "pareto_khat",
    "khat_threshold",
    "WeightReport",
    "weight_report",
    "running_mean",
]

_MIN_TAIL = 5  # a generalized Pareto fit needs at least five tail draws (as in ArviZ and loo)


def _log_weights(w, log: bool) -> np.ndarray:
    arr = check_weights(w, "w", log=log)
    if log:
        return arr
    with np.errstate(divide="ignore"):
        return np.log(arr)


def effective_sample_size(w, log: bool = False) -> float:
    r"""Kong's effective sample size of importance weights.

    .. math::

        \mathrm{ESS} = \frac{\bigl(\sum_{i=1}^n w_i\bigr)^2}{\sum_{i=1}^n w_i^2}
        = \frac{1}{\sum_i \bar w_i^2}, \qquad \bar w_i = \frac{w_i}{\sum_j w_j},

    computed from log weights with log-sum-exp. :math:`1 \le \mathrm{ESS} \le n`, with
    :math:`\mathrm{ESS} = n` exactly when all weights are equal and :math:`\mathrm{ESS} = 1`
    when one weight carries everything.

    Parameters
    ----------
    w : array_like, shape (n,)
        Weights :math:`w_i \ge 0` (not all zero), or log weights if ``log=True``.
    log : bool, default False
        Whether ``w`` holds log weights (``-inf`` allowed).

    Returns
    -------
    float
        The ESS, in :math:`[1, n]`.

    Raises
    ------
    ValueError
        If ``w`` is empty or not 1-D, holds NaN or inf (``+inf`` for log weights), negative
        weights, or only zeros.

    Examples
    --------
    >>> effective_sample_size([1.0, 1.0, 1.0, 1.0])
    4.0
    >>> round(effective_sample_size([1.0, 0.0, 0.0, 3.0]), 4)  # 16 / 10
    1.6
    >>> effective_sample_size([2000.0, 2000.0], log=True)
    2.0

    Used in :doc:`/book/weighted_is`, :doc:`/book/on_off_policy` and the ``variance`` assignment.
    """
    lw = _log_weights(w, log)
    n = lw.shape[0]
    wb = np.exp(lw - lw.max())  # largest is exactly 1; equal weights give exactly n
    ess = float(wb.sum() ** 2 / (wb @ wb))
    return min(max(ess, 1.0), float(n))  # clamp rounding just outside [1, n]


def khat_threshold(n) -> float:
    r"""Sample-size-dependent threshold for the Pareto :math:`\hat k` diagnostic.

    .. math::

        k_{\text{thr}}(S) = \min\Bigl(1 - \frac{1}{\log_{10} S},\; 0.7\Bigr).

    Below it, :math:`S` draws are enough for a reliable importance sampling estimate (Vehtari et
    al. 2024, section 3.2.3). The cap 0.7 applies from :math:`S \approx 2200` on.

    Parameters
    ----------
    n : int
        Sample size :math:`S \ge 2`.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        If ``n`` is not an integer >= 2.

    Examples
    --------
    >>> khat_threshold(100)
    0.5
    >>> khat_threshold(10_000)
    0.7
    """
    n = check_int(n, "n", low=2)
    return float(min(1.0 - 1.0 / math.log10(n), 0.7))


def _gpd_fit_zhang_stephens(x: np.ndarray) -> tuple[float, float]:
    """Generalized Pareto fit to sorted exceedances ``x > 0`` (Zhang & Stephens 2009).

    Empirical-Bayes posterior mean of ``b = -k/sigma`` over a grid of ``m = 30 + sqrt(n)``
    points, then ``k`` from the profile, then the weakly-informative prior adjustment
    ``k <- (n k + 10 * 0.5) / (n + 10)`` (Vehtari et al. 2024, appendix C; as ArviZ and loo).
    Returns ``(k, sigma)``.
    """
    n = x.shape[0]
    m = 30 + int(math.sqrt(n))
    b = 1.0 - np.sqrt(m / (np.arange(1, m + 1, dtype=np.float64) - 0.5))
    b /= 3.0 * x[int(n / 4 + 0.5) - 1]  # prior scale: first quartile
    b += 1.0 / x[-1]
    k = np.log1p(-b[:, None] * x[None, :]).mean(axis=1)
    log_lik = n * (np.log(-b / k) - k - 1.0)
    # posterior weights exp(L_j) / sum_l exp(L_l) = exp(-logsumexp_l(L_l - L_j)), without overflow
    post = np.exp(-logsumexp(log_lik[None, :] - log_lik[:, None], axis=1))
    keep = post >= 10 * np.finfo(np.float64).eps
    post, b = post[keep], b[keep]
    post /= post.sum()
    b_hat = float(post @ b)
    k_hat = float(np.log1p(-b_hat * x).mean())
    sigma = -k_hat / b_hat
    k_hat = (n * k_hat + 10 * 0.5) / (n + 10)
    return k_hat, sigma


def pareto_khat(w, log: bool = False) -> float:
    r"""Pareto :math:`\hat k`: the tail shape of the importance weights (PSIS diagnostic).

    A generalized Pareto distribution is fitted to the :math:`M` largest weights,

    .. math::

        M = \bigl\lceil \min(0.2\, S,\; 3 \sqrt{S}) \bigr\rceil, \qquad
        p(w \mid w > u) = \frac{1}{\sigma}\Bigl(1 + k \frac{w - u}{\sigma}\Bigr)^{-1/k - 1},

    where :math:`u` is the :math:`(M+1)`-th largest weight, with the Zhang & Stephens (2009)
    empirical-Bayes estimator and the weakly-informative prior adjustment
    :math:`\hat k \leftarrow (M \hat k + 5) / (M + 10)` (Vehtari et al. 2024). This follows
    ``arviz.psislw`` (version 0.23) step by step with ``reff = 1``: weights are scaled by the
    largest one, the threshold :math:`u` is at least the smallest positive float, and the tail is
    every weight strictly above :math:`u`.

    Reading it: :math:`\hat k < 1/2` finite variance; :math:`\hat k` below
    :func:`khat_threshold` (:math:`S`) reliable; :math:`\hat k > 0.7` unreliable at any
    practical sample size. The population :math:`k` is the smallest :math:`1/r` for which the
    :math:`r`-th moment of the weights is infinite.

    Parameters
    ----------
    w : array_like, shape (S,)
        Weights :math:`w_i \ge 0`, or log weights if ``log=True``. Needs :math:`M \ge 5`,
        i.e. :math:`S \ge 21`.
    log : bool, default False
        Whether ``w`` holds log weights.

    Returns
    -------
    float
        :math:`\hat k`. ``-inf`` when fewer than five weights lie strictly above the threshold
        because the largest weights are tied (for example all weights equal, weights in
        :math:`\{0, c\}` from a deterministic target policy, or weights truncated at :math:`c`):
        then the weights have no tail at all, every moment is finite, and the estimate is
        reliable as far as the tail is concerned. ArviZ returns ``+inf`` ("fit failed") in that
        case; we deliberately differ, because a bounded weight distribution is the best case.

    Notes
    -----
    The fit assumes a continuous tail. Weights on a coarse lattice with many ties in the tail
    (products of a few distinct ratios, e.g. ratios 1.2 and 0.8 over 50 steps, or the powers of two
    of Sutton & Barto's Example 5.5) can give a meaningless :math:`\hat k` (values far above 1, or
    far below the true tail index); ArviZ gives the same numbers.
    :doc:`The weighted importance sampling chapter </book/weighted_is>` shows such a case.

    Raises
    ------
    ValueError
        If ``w`` is empty, not 1-D, has fewer than 21 entries, holds NaN/inf, negative weights,
        or only zeros.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> heavy = rng.pareto(1 / 0.8, size=20_000) + 1  # population k = 0.8
    >>> round(pareto_khat(heavy), 1)
    0.8
    >>> pareto_khat(np.ones(100))
    -inf

    Used in :doc:`/book/core_idea`, :doc:`/book/weighted_is` and :doc:`/book/on_off_policy`.
    """
    lw = _log_weights(w, log)
    S = lw.shape[0]
    M = math.ceil(min(S / 5.0, 3.0 * math.sqrt(S)))
    if M < _MIN_TAIL:
        raise ValueError(
            f"w: pareto_khat needs at least 21 weights (to fit the {_MIN_TAIL} largest), got {S}"
        )
    x = lw - lw.max()  # log weights relative to the largest (max 0)
    x_sorted = np.sort(x)
    log_u = max(float(x_sorted[-M - 1]), math.log(np.finfo(np.float64).tiny))
    tail = x_sorted[x_sorted > log_u]
    if tail.shape[0] < _MIN_TAIL or tail[0] == tail[-1]:
        return -math.inf
    exceed = np.exp(tail) - math.exp(log_u)
    k, _ = _gpd_fit_zhang_stephens(exceed)
    return float(k)


_VERDICT_TEXT = {
    "good": "reliable: k-hat is below the threshold for this sample size",
    "more samples": "unreliable at this sample size: k-hat is above the threshold for n, "
    "more samples (or a closer proposal) are needed",
    "bad": "unreliable: k-hat > 0.7, the weights are so heavy-tailed that more samples will "
    "hardly help; change the proposal (behaviour policy) or the estimator",
    "no tail": "reliable as far as the tail goes: the largest weights are tied, so the "
    "weights have no tail (k-hat = -inf)",
    "too few": "too few weights to estimate k-hat (needs n >= 21); judge by the ESS alone",
}


@dataclass(frozen=True)
class WeightReport:
    """Summary of a batch of importance weights (see :func:`weight_report`).

    Used in :doc:`/book/core_idea`, :doc:`/book/variance_problem`, :doc:`/book/weighted_is` and
    :doc:`/book/on_off_policy`.

    Attributes
    ----------
    n : int
        Number of weights.
    ess : float
        Kong's effective sample size.
    ess_fraction : float
        ``ess / n``.
    max_share : float
        Largest weight's share of the total, :math:`\\max_i w_i / \\sum_j w_j`.
    khat : float
        Pareto :math:`\\hat k` (NaN if ``n < 21``, ``-inf`` if the weights have no tail).
    khat_threshold : float
        :func:`khat_threshold` (n) (NaN if ``n < 2``).
    verdict : str
        Plain-words reading of the numbers.
    """

    n: int
    ess: float
    ess_fraction: float
    max_share: float
    khat: float
    khat_threshold: float
    verdict: str

    def _rows(self) -> list[tuple[str, str]]:
        return [
            ("n", f"{self.n:,}"),
            ("ESS", f"{self.ess:,.1f}"),
            ("ESS / n", f"{self.ess_fraction:.3f}"),
            ("largest weight's share", f"{self.max_share:.3g}"),
            ("Pareto k-hat", f"{self.khat:.3f}"),
            ("k-hat threshold", f"{self.khat_threshold:.3f}"),
        ]

    def __str__(self) -> str:
        rows = self._rows()
        width = max(len(k) for k, _ in rows)
        lines = ["Importance weight report"]
        lines += [f"  {k:<{width}}  {v}" for k, v in rows]
        lines.append(f"  verdict: {self.verdict}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        body = "".join(
            f"<tr><td style='text-align:left'>{html.escape(k)}</td>"
            f"<td style='text-align:right'>{html.escape(v)}</td></tr>"
            for k, v in self._rows()
        )
        return (
            "<table><caption>Importance weight report</caption>"
            "<thead><tr><th>quantity</th><th>value</th></tr></thead>"
            f"<tbody>{body}</tbody>"
            f"<tfoot><tr><td colspan='2' style='text-align:left'><b>verdict:</b> "
            f"{html.escape(self.verdict)}</td></tr></tfoot></table>"
        )


def weight_report(w, log: bool = False) -> WeightReport:
    r"""Summarise importance weights: ESS, largest share, Pareto :math:`\hat k`, verdict.

    .. math::

        \mathrm{ESS} = \frac{(\sum_i w_i)^2}{\sum_i w_i^2}, \qquad
        \text{max share} = \frac{\max_i w_i}{\sum_j w_j}, \qquad
        \hat k \text{ vs. } \min\bigl(1 - 1/\log_{10} n,\; 0.7\bigr).

    The verdict follows Vehtari et al. (2024): :math:`\hat k` at or below the threshold is
    reliable; between the threshold and 0.7 needs more samples; above 0.7 is unreliable.

    Parameters
    ----------
    w : array_like, shape (n,)
        Weights, or log weights if ``log=True`` (use this for weights that would overflow).
    log : bool, default False
        Whether ``w`` holds log weights.

    Returns
    -------
    WeightReport
        Renders as an HTML table in a notebook (``_repr_html_``) and as text with ``print``.
        For ``n < 21`` the k-hat fields are NaN and the verdict says so.

    Raises
    ------
    ValueError
        If ``w`` is empty or not 1-D, holds NaN/inf or negative weights, or only zeros.

    Examples
    --------
    Equal weights: every draw counts fully, and there is no tail (:math:`1 - 1/\log_{10} 50`
    is the threshold).

    >>> print(weight_report([1.0] * 50))  # doctest: +NORMALIZE_WHITESPACE
    Importance weight report
      n                       50
      ESS                     50.0
      ESS / n                 1.000
      largest weight's share  0.02
      Pareto k-hat            -inf
      k-hat threshold         0.411
      verdict: reliable as far as the tail goes: the largest weights are tied, so the weights
      have no tail (k-hat = -inf)

    Bounded weights :math:`1, \dots, 100`: the ESS is :math:`5050^2 / 338350`, and the fitted
    tail is light (:math:`\hat k < 0`, a bounded distribution).

    >>> report = weight_report(np.arange(1.0, 101.0))
    >>> bool(np.isclose(report.ess, 5050**2 / 338350)), bool(np.isclose(report.max_share, 100 / 5050))
    (True, True)
    >>> bool(report.khat < 0 < report.khat_threshold), report.verdict
    (True, 'reliable: k-hat is below the threshold for this sample size')

    Used in :doc:`/book/core_idea`, :doc:`/book/variance_problem`, :doc:`/book/weighted_is` and
    :doc:`/book/on_off_policy`.
    """
    lw = _log_weights(w, log)
    n = lw.shape[0]
    ess = effective_sample_size(lw, log=True)
    max_share = float(math.exp(lw.max() - logsumexp(lw)))
    threshold = khat_threshold(n) if n >= 2 else math.nan
    if n < 21:
        khat, key = math.nan, "too few"
    else:
        khat = pareto_khat(lw, log=True)
        if khat == -math.inf:
            key = "no tail"
        elif khat > 0.7:
            key = "bad"
        elif khat > threshold:
            key = "more samples"
        else:
            key = "good"
    verdict = _VERDICT_TEXT[key]
    if ess / n < 0.1 and key in ("good", "no tail"):
        verdict += f"; but only {100 * ess / n:.1f}% of the draws are effectively used"
    return WeightReport(n, ess, ess / n, max_share, khat, threshold, verdict)


def running_mean(terms) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""The running mean of per-sample terms after :math:`k = 1, \dots, n` samples, with its
    estimated standard error.

    .. math::

        \bar x_k = \frac1k \sum_{i=1}^k x_i, \qquad
        \widehat{\mathrm{se}}_k = \sqrt{\frac{s_k^2}{k}}, \qquad
        s_k^2 = \frac{1}{k - 1} \sum_{i=1}^k (x_i - \bar x_k)^2 \quad (s_1^2 = 0).

    For an estimator that is a mean of per-sample terms (ordinary and per-decision importance
    sampling: ``Estimate.terms``), :math:`\bar x_k` is the estimate from the first :math:`k`
    samples. The standard error is itself estimated from those samples, so it shares their
    blind spots: before the first large weight arrives it is small (see the variance chapter).

    Parameters
    ----------
    terms : array_like, shape (n,)
        Finite per-sample terms :math:`x_i`.

    Returns
    -------
    count, mean, stderr : ndarray, shape (n,)
        :math:`k`, :math:`\bar x_k` and :math:`\widehat{\mathrm{se}}_k`.

    Raises
    ------
    ValueError
        If ``terms`` is not a non-empty 1-D array of finite numbers.

    Examples
    --------
    >>> count, mean, se = running_mean([1.0, 3.0, 2.0])
    >>> count.tolist(), mean.tolist(), se.round(4).tolist()
    ([1, 2, 3], [1.0, 2.0, 2.0], [0.0, 1.0, 0.5774])

    Used in :doc:`/book/core_idea`, :doc:`/book/trajectory_weights` and
    :doc:`/book/variance_problem`.
    """
    x = as_float_array(terms, "terms", ndim=1)
    check_finite(x, "terms")
    count = np.arange(1, x.size + 1)
    mean = np.cumsum(x) / count
    # sum of squared deviations after k samples, from running sums (shifted by x[0] for accuracy)
    d = x - x[0]
    ss = np.maximum(np.cumsum(d**2) - np.cumsum(d) ** 2 / count, 0.0)
    var = ss / np.maximum(count - 1, 1)
    return count, mean, np.sqrt(var / count)
