r"""The importance ratio and the KL divergence of diagonal Gaussian policies, in closed form.

For continuous actions the policies of PPO and TRPO are diagonal Gaussians,
:math:`\pi(a \mid s) = \prod_{j=1}^d \mathcal N(a_j;\, \mu_j(s), \sigma_j^2)`
(:class:`companion.rl.GaussianActorCritic`). The importance ratio is then a ratio of
*densities*, and both it and the KL divergence have closed forms that are sums over the action
coordinates:

.. math::

    \log\rho(a) = \log\frac{\pi(a)}{\pi_\text{old}(a)}
    = \sum_{j=1}^d \Big(\log\frac{\sigma^\text{old}_j}{\sigma_j}
      - \frac{(a_j - \mu_j)^2}{2\sigma_j^2}
      + \frac{(a_j - \mu^\text{old}_j)^2}{2(\sigma^\text{old}_j)^2}\Big),

.. math::

    \mathrm{KL}(\pi_\text{old} \,\|\, \pi)
    = \sum_{j=1}^d \Big(\log\frac{\sigma_j}{\sigma^\text{old}_j}
      + \frac{(\sigma^\text{old}_j)^2 + (\mu^\text{old}_j - \mu_j)^2}{2\sigma_j^2}
      - \frac12\Big).

The trainers compute both with ``torch.distributions`` (``log_prob`` differences and
``kl_divergence``); these NumPy versions are the formulas written out, for the chapter's
experiments and as the reference the tests compare ``torch.distributions`` against.

**A small KL does not bound the ratio.** If only the means move, by :math:`\Delta_j`, then under
:math:`\pi_\text{old}` the log-ratio is exactly normal,
:math:`\log\rho \sim \mathcal N(-\kappa, 2\kappa)` with
:math:`\kappa = \mathrm{KL} = \sum_j \Delta_j^2 / (2\sigma_j^2)`: the ratio is log-normal and
exceeds any bound with positive probability, however small the KL
(:func:`mean_shift_ratio_tail`).

Used in :doc:`/book/continuous_actions`.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm

from ._validation import as_float_array, check_finite, check_positive, check_unit_interval

__all__ = ["gaussian_log_ratio", "gaussian_kl", "mean_shift_ratio_tail"]


def _gaussian_arrays(names_values, std_names=()):
    """Float arrays broadcast to one shape ``(..., d)``; finite, standard deviations positive."""
    arrays = {}
    for name, value in names_values:
        x = as_float_array(value, name)
        check_finite(x, name)
        if name in std_names and (x <= 0).any():
            raise ValueError(f"{name}: standard deviations must be positive, got {x.min():.3g}")
        arrays[name] = x
    try:
        shapes = np.broadcast_shapes(*(x.shape for x in arrays.values()))
    except ValueError as err:
        raise ValueError(f"{', '.join(arrays)}: shapes do not broadcast: "
                         f"{[x.shape for x in arrays.values()]}") from err
    if len(shapes) == 0:
        raise ValueError(f"{', '.join(arrays)}: need a last axis of action coordinates, got scalars")
    return [np.broadcast_to(x, shapes) for x in arrays.values()]


def gaussian_log_ratio(actions, mean_old, std_old, mean_new, std_new) -> np.ndarray:
    r"""Log importance ratio :math:`\log \pi(a)/\pi_\text{old}(a)` of two diagonal Gaussians.

    .. math::

        \log\rho(a) = \sum_{j=1}^d \Big(\log\frac{\sigma^\text{old}_j}{\sigma_j}
          - \frac{(a_j - \mu_j)^2}{2\sigma_j^2}
          + \frac{(a_j - \mu^\text{old}_j)^2}{2(\sigma^\text{old}_j)^2}\Big)

    (the :math:`\tfrac12\log 2\pi` terms cancel).

    Parameters
    ----------
    actions, mean_old, std_old, mean_new, std_new : array_like, shape (..., d)
        Actions and the two policies' means and standard deviations; broadcast against each
        other (scalars too, but not all of them), the last axis is the action coordinate
        :math:`j`.

    Returns
    -------
    ndarray, shape (...)
        :math:`\log\rho`, summed over the last axis.

    Raises
    ------
    ValueError
        If an input is not finite, a standard deviation is not positive, the shapes do not
        broadcast, or all inputs are scalars.

    Examples
    --------
    Same standard deviation 1, mean moved from 0 to 0.1: :math:`\log\rho(a) = 0.1 a - 0.005`.

    >>> gaussian_log_ratio([[0.0], [3.0]], [0.0], [1.0], [0.1], [1.0]).round(4).tolist()
    [-0.005, 0.295]

    Used in :doc:`/book/continuous_actions`, eq. (eq-cont-log-ratio).
    """
    a, mu_o, sd_o, mu_n, sd_n = _gaussian_arrays(
        [("actions", actions), ("mean_old", mean_old), ("std_old", std_old),
         ("mean_new", mean_new), ("std_new", std_new)], std_names=("std_old", "std_new"))
    per_coordinate = (np.log(sd_o / sd_n) - (a - mu_n) ** 2 / (2 * sd_n**2)
                      + (a - mu_o) ** 2 / (2 * sd_o**2))
    return per_coordinate.sum(-1)


def gaussian_kl(mean_old, std_old, mean_new, std_new) -> np.ndarray:
    r"""KL divergence :math:`\mathrm{KL}(\pi_\text{old} \| \pi)` of two diagonal Gaussians.

    .. math::

        \mathrm{KL}(\pi_\text{old} \,\|\, \pi)
        = \sum_{j=1}^d \Big(\log\frac{\sigma_j}{\sigma^\text{old}_j}
          + \frac{(\sigma^\text{old}_j)^2 + (\mu^\text{old}_j - \mu_j)^2}{2\sigma_j^2}
          - \frac12\Big)

    Parameters
    ----------
    mean_old, std_old, mean_new, std_new : array_like, shape (..., d)
        The two policies' means and standard deviations (broadcast; last axis the coordinate).

    Returns
    -------
    ndarray, shape (...)
        The KL, summed over the last axis; it is :math:`\mathbb E_{\pi_\text{old}}[-\log\rho]`.

    Raises
    ------
    ValueError
        As :func:`gaussian_log_ratio`.

    Examples
    --------
    >>> round(float(gaussian_kl([0.0], [1.0], [0.1], [1.0])), 6)        # 0.1^2 / 2
    0.005
    >>> round(float(gaussian_kl([0.0, 0.0], [1.0, 1.0], [0.0, 0.0], [2.0, 2.0])), 4)  # 2 (log 2 + 1/8 - 1/2)
    0.6363

    Used in :doc:`/book/continuous_actions`, eq. (eq-cont-kl).
    """
    mu_o, sd_o, mu_n, sd_n = _gaussian_arrays(
        [("mean_old", mean_old), ("std_old", std_old), ("mean_new", mean_new),
         ("std_new", std_new)], std_names=("std_old", "std_new"))
    per_coordinate = (np.log(sd_n / sd_o) + (sd_o**2 + (mu_o - mu_n) ** 2) / (2 * sd_n**2) - 0.5)
    return per_coordinate.sum(-1)


def mean_shift_ratio_tail(kl, clip_eps: float = 0.2, bound: float | None = None) -> dict:
    r"""How often the ratio of a mean-shifted Gaussian leaves the clip interval, or exceeds a bound.

    When only the means move (equal standard deviations) and the KL is :math:`\kappa > 0`, the
    log-ratio of an action drawn from :math:`\pi_\text{old}` is
    :math:`\log\rho = \sqrt{2\kappa}\, z - \kappa` with :math:`z \sim \mathcal N(0, 1)`, whatever
    the dimension. Hence, with :math:`\bar\Phi` the standard normal tail,

    .. math::

        P(\rho > 1 + \epsilon) = \bar\Phi\Big(\frac{\log(1+\epsilon) + \kappa}{\sqrt{2\kappa}}\Big),
        \qquad
        P(\rho < 1 - \epsilon) = \Phi\Big(\frac{\log(1-\epsilon) + \kappa}{\sqrt{2\kappa}}\Big),

    and :math:`P(\rho > M) = \bar\Phi\big((\log M + \kappa)/\sqrt{2\kappa}\big) > 0` for every
    bound :math:`M`.

    Parameters
    ----------
    kl : float or array_like
        :math:`\kappa > 0`.
    clip_eps : float in (0, 1), default 0.2
        :math:`\epsilon`.
    bound : float or None
        :math:`M > 0`; if given, also return :math:`P(\rho > M)`.

    Returns
    -------
    dict of float or ndarray
        ``"above"`` :math:`P(\rho > 1+\epsilon)`, ``"below"`` :math:`P(\rho < 1-\epsilon)`,
        ``"outside"`` their sum, and ``"above_bound"`` :math:`P(\rho > M)` when ``bound`` is given.

    Raises
    ------
    ValueError
        If ``kl`` is not positive and finite, ``clip_eps`` is not in (0, 1), or ``bound`` is not
        positive.

    Examples
    --------
    >>> p = mean_shift_ratio_tail(0.01, clip_eps=0.2, bound=2.0)
    >>> round(float(p["outside"]), 4), float(p["above_bound"]) > 0
    (0.1528, True)

    Used in :doc:`/book/continuous_actions`, eq. (eq-cont-lognormal).
    """
    kl = as_float_array(kl, "kl")
    check_finite(kl, "kl")
    if (kl <= 0).any():
        raise ValueError(f"kl: must be positive, got {kl.min():.3g}")
    clip_eps = check_unit_interval(clip_eps, "clip_eps", open=True)
    scale = np.sqrt(2 * kl)
    out = {
        "above": norm.sf((np.log1p(clip_eps) + kl) / scale),
        "below": norm.cdf((np.log1p(-clip_eps) + kl) / scale),
    }
    out["outside"] = out["above"] + out["below"]
    if bound is not None:
        bound = check_positive(bound, "bound")
        out["above_bound"] = norm.sf((np.log(bound) + kl) / scale)
    if kl.ndim == 0:
        out = {key: float(value) for key, value in out.items()}
    return out
