r"""Trust Region Policy Optimization (TRPO) in PyTorch.

TRPO (Schulman et al. 2015) improves the importance-sampled surrogate

.. math::

    L_{\theta_\text{old}}(\theta)
    = \frac{1}{B}\sum_{i=1}^{B} \rho_i(\theta)\, \hat A_i,
    \qquad
    \rho_i(\theta) = \exp\bigl(\log\pi_\theta(a_i \mid s_i)
                                - \log\pi_{\theta_\text{old}}(a_i \mid s_i)\bigr),

subject to a bound on how far the new policy may move from the one that collected the batch:

.. math::

    \bar D_\mathrm{KL}(\theta)
    = \frac{1}{B}\sum_{i=1}^{B}
      \mathrm{KL}\bigl(\pi_{\theta_\text{old}}(\cdot \mid s_i)
                       \,\|\, \pi_\theta(\cdot \mid s_i)\bigr) \le \delta .

**Which constraint the code enforces.** The theory (the monotonic-improvement bound) is stated
with the *maximum* KL over all states. Like every practical TRPO, this module constrains the
*mean* KL over the visited states :math:`s_1, \dots, s_B` of the batch, :math:`\bar D_\mathrm{KL}`
above. A state that is rare in the batch may therefore move much more than :math:`\delta`. The
history records both the mean (the enforced quantity) and the maximum per-state KL over the batch
(``max_kl``), so the two can be compared.

One update (:func:`train_trpo`) is a sequence of small named steps:

1. collect ``num_steps`` transitions from each of ``num_envs`` environments with
   :math:`\pi_{\theta_\text{old}}`; compute advantages with GAE (:func:`companion.rl.gae`);
2. :math:`g = \nabla_\theta L(\theta_\text{old})`;
3. solve :math:`F s = g` approximately by :func:`conjugate_gradient`, where :math:`F` is applied by
   :func:`fisher_vector_product` (the Hessian of :math:`\bar D_\mathrm{KL}` at
   :math:`\theta_\text{old}`, plus damping);
4. scale to the edge of the quadratic trust region,
   :math:`\Delta\theta = \sqrt{2\delta / s^\top F s}\; s` (:func:`trust_region_step`);
5. :func:`backtracking_line_search`: try :math:`\theta_\text{old} + \alpha^k \Delta\theta`,
   :math:`k = 0, 1, \dots`, and accept the first candidate whose *exact* mean KL is at most
   :math:`\delta` and whose surrogate improves; if none does, keep :math:`\theta_\text{old}`;
6. fit the value function by a few epochs of Adam on the squared error to the GAE returns.

History keys
------------
:func:`train_trpo` returns ``history``, a :class:`TRPOHistory` (a list of one dict per update, with
``.to_dict_of_arrays()``). With :math:`\theta_\text{old}` the parameters that collected the batch,
:math:`\theta_\text{new}` those after the update (equal to :math:`\theta_\text{old}` when the
step is rejected) and :math:`B` the number of transitions in the batch:

``update``
    index of the update, 0, 1, 2, ...
``env_steps``
    environment steps so far, ``num_envs * num_steps * (update + 1)``. This counts every call to
    ``step`` in every copy, including the autoreset step after each episode end, so it slightly
    over-counts real transitions (as ``companion.ppo`` does).
``wall_time``
    seconds of training since :func:`train_trpo` was called (``time.perf_counter``), at the end
    of this update, **excluding** time spent in evaluation and in the callback.
``kl``
    mean KL after the step, :math:`\frac1B \sum_i \mathrm{KL}(\pi_{\theta_\text{old}}(\cdot|s_i)
    \| \pi_{\theta_\text{new}}(\cdot|s_i))` -- the constrained quantity; always
    :math:`\le \delta`; 0 when the step is rejected.
``max_kl``
    the largest per-state KL over the batch, :math:`\max_i \mathrm{KL}(\pi_{\theta_\text{old}}
    (\cdot|s_i) \| \pi_{\theta_\text{new}}(\cdot|s_i))`. Not constrained; it can exceed
    :math:`\delta`.
``n_backtracks``
    the :math:`k` of the accepted candidate :math:`\theta_\text{old} + \alpha^k\Delta\theta`
    (0: the full step was accepted). When the step is rejected it equals ``max_backtracks``:
    all ``max_backtracks + 1`` candidates were refused.
``step_fraction``
    :math:`\alpha^k` for the accepted step, 0 when rejected.
``expected_improvement``
    the first-order prediction :math:`g^\top(\theta_\text{new} - \theta_\text{old})`.
``actual_improvement``
    :math:`L_{\theta_\text{old}}(\theta_\text{new}) - L_{\theta_\text{old}}(\theta_\text{old})`
    (the surrogate uses the normalised advantages when ``norm_adv`` is true).
``improvement_ratio``
    ``actual_improvement / expected_improvement`` (nan when rejected).
``rejected``
    ``True`` when the policy was left unchanged: no candidate passed the line search (then
    ``n_backtracks`` equals ``max_backtracks``), or, in the degenerate case :math:`g = 0`, no step
    was proposed (then ``n_backtracks`` is 0).
``value_loss``
    mean over all value-fitting minibatches of :math:`\frac1{|b|}\sum_{i\in b}(V_\phi(s_i) -
    \hat R_i)^2`, with :math:`\hat R_i = \hat A_i + V(s_i)` the GAE return target.
``entropy``
    mean policy entropy over the batch before the step,
    :math:`\frac1B\sum_i \mathcal H(\pi_{\theta_\text{old}}(\cdot|s_i))`.
``grad_norm``
    :math:`\lVert g \rVert_2`, the norm of the surrogate's gradient.
``episode_return``, ``episodes``
    mean undiscounted return of the training episodes that ended during this batch (nan if none),
    and how many ended.
``eval_return``, ``eval_return_std``
    mean and standard deviation of :func:`companion.rl.evaluate_policy` (deterministic actions,
    ``eval_episodes`` episodes) when an evaluation ran after this update (``eval_every``), nan
    otherwise.

See chapter 7 (TRPO).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.distributions import Categorical, Distribution, Independent, Normal, kl_divergence
from tqdm.auto import tqdm

from companion.rl import ActorCritic, _UpdateEnd, gae, make_vec_env, sample_categorical

__all__ = [
    "conjugate_gradient",
    "make_fisher_vector_product",
    "fisher_vector_product",
    "trust_region_step",
    "LineSearchResult",
    "backtracking_line_search",
    "TRPOConfig",
    "TRPOHistory",
    "train_trpo",
]


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------


def _check_vector(x, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"{name} is empty")
    if not x.is_floating_point():
        raise ValueError(f"{name} must have a floating-point dtype, got {x.dtype}")
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        i = int(torch.nonzero(bad)[0, 0])
        raise ValueError(f"{name} must be finite; entry {i} is {float(x[i])}")
    return x


def _check_positive(x, name: str) -> float:
    if not isinstance(x, (int, float)) or isinstance(x, bool) or not math.isfinite(x) or x <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {x!r}")
    return float(x)


def _check_nonnegative(x, name: str) -> float:
    if not isinstance(x, (int, float)) or isinstance(x, bool) or not math.isfinite(x) or x < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {x!r}")
    return float(x)


def _check_int(x, name: str, low: int) -> int:
    if isinstance(x, bool) or not isinstance(x, int) or x < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {x!r}")
    return int(x)


# --------------------------------------------------------------------------------------------
# Conjugate gradient
# --------------------------------------------------------------------------------------------


def conjugate_gradient(
    Avp: Callable[[torch.Tensor], torch.Tensor],
    b: torch.Tensor,
    iters: int = 10,
    tol: float = 1e-10,
) -> torch.Tensor:
    r"""Approximately solve :math:`A x = b` for symmetric positive-definite :math:`A` by conjugate gradient.

    Only products :math:`v \mapsto A v` are needed, never :math:`A` itself; in TRPO
    :math:`A` is the (damped) Fisher matrix, applied by :func:`fisher_vector_product`.
    Starting from :math:`x_0 = 0`, :math:`r_0 = p_0 = b`, each iteration does

    .. math::

        \alpha_k = \frac{r_k^\top r_k}{p_k^\top A p_k}, \quad
        x_{k+1} = x_k + \alpha_k p_k, \quad
        r_{k+1} = r_k - \alpha_k A p_k, \quad
        p_{k+1} = r_{k+1} + \frac{r_{k+1}^\top r_{k+1}}{r_k^\top r_k} p_k ,

    and stops after ``iters`` iterations or as soon as :math:`\lVert r_k \rVert_2 \le`
    ``tol``. In exact arithmetic it solves an :math:`n \times n` system in at most :math:`n`
    iterations; TRPO uses about 10, which is far fewer than the number of parameters.

    Parameters
    ----------
    Avp : callable
        ``Avp(v)`` returns :math:`A v`, a tensor of shape ``(n,)``, for ``v`` of shape ``(n,)``.
    b : torch.Tensor, shape (n,)
        Right-hand side (in TRPO, the surrogate gradient :math:`g`). Floating point, finite.
    iters : int, default 10
        Maximum number of iterations (= calls to ``Avp``), at least 1.
    tol : float, default 1e-10
        Stop when the residual norm :math:`\lVert b - A x_k \rVert_2` is at most ``tol``.

    Returns
    -------
    torch.Tensor, shape (n,)
        The approximate solution :math:`x`, same dtype as ``b``.

    Raises
    ------
    ValueError
        If ``b`` is not a finite non-empty 1-D float tensor, ``iters < 1``, ``tol < 0``, ``Avp``
        returns a tensor of the wrong shape or a non-finite one, or :math:`p^\top A p \le 0`
        (``A`` is not positive definite).

    Examples
    --------
    >>> import torch
    >>> A = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
    >>> b = torch.tensor([1.0, 2.0], dtype=torch.float64)
    >>> x = conjugate_gradient(lambda v: A @ v, b, iters=2)
    >>> [round(float(xi), 6) for xi in x]
    [0.090909, 0.636364]

    See chapter 7 (TRPO).
    """
    b = _check_vector(b, "b")
    iters = _check_int(iters, "iters", 1)
    tol = _check_nonnegative(tol, "tol")
    x = torch.zeros_like(b)
    r = b.clone()
    p = b.clone()
    rdotr = torch.dot(r, r)
    for k in range(iters):
        if float(rdotr) <= tol * tol:
            break
        Ap = Avp(p)
        if not isinstance(Ap, torch.Tensor) or Ap.shape != b.shape:
            shape = tuple(Ap.shape) if isinstance(Ap, torch.Tensor) else type(Ap).__name__
            raise ValueError(f"Avp must return a tensor of shape {tuple(b.shape)}, got {shape}")
        if not bool(torch.isfinite(Ap).all()):
            raise ValueError(f"Avp returned a non-finite vector at iteration {k}")
        pAp = torch.dot(p, Ap)
        if float(pAp) <= 0.0:
            raise ValueError(
                f"Avp is not positive definite: p^T A p = {float(pAp):.3g} <= 0 at iteration {k}"
            )
        alpha = rdotr / pAp
        x = x + alpha * p
        r = r - alpha * Ap
        new_rdotr = torch.dot(r, r)
        p = r + (new_rdotr / rdotr) * p
        rdotr = new_rdotr
    return x


# --------------------------------------------------------------------------------------------
# Fisher-vector product by automatic differentiation of the mean KL
# --------------------------------------------------------------------------------------------


def _detach_distribution(dist: Distribution) -> Distribution:
    """A copy of ``dist`` cut from the autograd graph (the fixed old policy)."""
    if isinstance(dist, Categorical):
        return Categorical(logits=dist.logits.detach())
    if isinstance(dist, Normal):
        return Normal(dist.loc.detach(), dist.scale.detach())
    if isinstance(dist, Independent):
        return Independent(_detach_distribution(dist.base_dist), dist.reinterpreted_batch_ndims)
    raise ValueError(
        "dist_fn must return a Categorical, Normal or Independent(Normal) distribution, "
        f"got {type(dist).__name__}"
    )


def _flat(tensors: Sequence[torch.Tensor | None], params: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat(
        [
            (t if t is not None else torch.zeros_like(p)).reshape(-1)
            for t, p in zip(tensors, params, strict=True)
        ]
    )


def _check_params(params) -> list[torch.Tensor]:
    params = list(params)
    if not params:
        raise ValueError("params is empty")
    for j, p in enumerate(params):
        if not isinstance(p, torch.Tensor) or not p.requires_grad:
            raise ValueError(f"params[{j}] must be a tensor with requires_grad=True")
    return params


def make_fisher_vector_product(
    dist_fn: Callable[[torch.Tensor], Distribution],
    obs: torch.Tensor,
    params: Sequence[torch.Tensor],
    damping: float = 0.1,
) -> Callable[[torch.Tensor], torch.Tensor]:
    r"""Build :math:`v \mapsto (F + \lambda_\text{damp} I) v` by double back-propagation of the mean KL.

    The Fisher matrix of the policy equals the Hessian of the mean KL divergence from the fixed
    old policy, taken at :math:`\theta = \theta_\text{old}`:

    .. math::

        F = \nabla^2_\theta \, \frac{1}{B}\sum_{i=1}^{B}
            \mathrm{KL}\bigl(\pi_{\theta_\text{old}}(\cdot \mid s_i) \,\|\,
                             \pi_\theta(\cdot \mid s_i)\bigr)
            \Big|_{\theta = \theta_\text{old}},
        \qquad
        F v = \nabla_\theta \bigl( (\nabla_\theta \bar D_\mathrm{KL})^\top v \bigr).

    The gradient :math:`\nabla_\theta \bar D_\mathrm{KL}` (zero in value, but not in its
    graph) is built once with ``create_graph=True``; each product is then one extra backward
    pass, so the closure is cheap to call repeatedly inside :func:`conjugate_gradient`. The
    current parameter values are taken as :math:`\theta_\text{old}`; do not change them while
    the closure is in use.

    Parameters
    ----------
    dist_fn : callable
        ``dist_fn(obs)`` returns the policy's action distribution for a batch of observations,
        a ``torch.distributions.Categorical`` (or ``Normal`` / ``Independent(Normal)``) with
        batch shape ``(B,)``. For :class:`companion.rl.ActorCritic` pass ``policy.distribution``.
    obs : torch.Tensor, shape (B, ...)
        The visited states :math:`s_1, \dots, s_B`.
    params : sequence of torch.Tensor
        The policy parameters :math:`\theta` (``requires_grad=True``); the vector ``v`` is laid
        out as their concatenated flattening, in this order.
    damping : float, default 0.1
        :math:`\lambda_\text{damp} \ge 0`, added on the diagonal; keeps :math:`F` invertible
        and the conjugate-gradient step bounded.

    Returns
    -------
    callable
        ``fvp(v)`` for ``v`` of shape ``(n,)``, :math:`n` the total number of parameters, returns
        :math:`(F + \lambda_\text{damp} I) v`, shape ``(n,)``, detached.

    Raises
    ------
    ValueError
        If ``obs`` is empty, ``params`` is empty or not differentiable, ``damping`` is negative or
        not finite, or (when called) ``v`` has the wrong shape or is not finite.

    Examples
    --------
    A linear softmax policy with logits :math:`W s`, two states, six parameters:

    >>> import torch
    >>> from torch.distributions import Categorical
    >>> W = torch.tensor([[0.5, -1.0, 0.2], [0.1, 0.3, -0.4]], requires_grad=True)
    >>> obs = torch.tensor([[1.0, 0.0, 2.0], [0.5, -1.0, 0.0]])
    >>> fvp = make_fisher_vector_product(
    ...     lambda o: Categorical(logits=o @ W.T), obs, [W], damping=0.0)
    >>> e1 = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    >>> round(float(e1 @ fvp(e1)), 4)      # curvature of the mean KL along W[0, 0]
    0.0885
    >>> ones = torch.ones(6)                # shifts both logits equally: the policy is unchanged
    >>> abs(float(ones @ fvp(ones))) < 1e-6
    True

    See chapter 7 (TRPO).
    """
    params = _check_params(params)
    damping = _check_nonnegative(damping, "damping")
    if not isinstance(obs, torch.Tensor) or obs.ndim == 0 or obs.shape[0] == 0:
        raise ValueError("obs must be a tensor with at least one row (state)")
    dist = dist_fn(obs)
    kl = kl_divergence(_detach_distribution(dist), dist).mean()
    grads = torch.autograd.grad(kl, params, create_graph=True, allow_unused=True)
    if all(g is None for g in grads):
        raise ValueError("the policy distribution does not depend on params")
    flat_grad = torch.cat(
        [
            (g if g is not None else torch.zeros_like(p)).reshape(-1)
            for g, p in zip(grads, params, strict=True)
        ]
    )
    n = flat_grad.numel()

    def fvp(v: torch.Tensor) -> torch.Tensor:
        v = _check_vector(v, "v")
        if v.numel() != n:
            raise ValueError(
                f"v must have shape ({n},) (number of parameters), got {tuple(v.shape)}"
            )
        v = v.to(flat_grad.dtype)
        hv = torch.autograd.grad(
            torch.dot(flat_grad, v.detach()), params, retain_graph=True, allow_unused=True
        )
        return _flat(hv, params).detach() + damping * v

    return fvp


def fisher_vector_product(
    dist_fn: Callable[[torch.Tensor], Distribution],
    obs: torch.Tensor,
    params: Sequence[torch.Tensor],
    v: torch.Tensor,
    damping: float = 0.1,
) -> torch.Tensor:
    r"""Damped Fisher-vector product :math:`(F + \lambda_\text{damp} I)v` at the current parameters.

    .. math::

        F v = \nabla_\theta \Bigl( \bigl(\nabla_\theta \tfrac1B \textstyle\sum_i
              \mathrm{KL}(\pi_{\theta_\text{old}}(\cdot|s_i) \| \pi_\theta(\cdot|s_i))
              \bigr)^\top v \Bigr) \Big|_{\theta=\theta_\text{old}}

    A one-shot convenience around :func:`make_fisher_vector_product` (which see for the
    parameters); use that one when you need many products at the same parameters.

    Parameters
    ----------
    dist_fn : callable
        ``dist_fn(obs)`` returns the action distribution, batch shape ``(B,)``.
    obs : torch.Tensor, shape (B, ...)
        Visited states.
    params : sequence of torch.Tensor
        Policy parameters :math:`\theta`.
    v : torch.Tensor, shape (n,)
        Vector in flattened-parameter space; finite.
    damping : float, default 0.1
        :math:`\lambda_\text{damp} \ge 0`.

    Returns
    -------
    torch.Tensor, shape (n,)

    Raises
    ------
    ValueError
        As :func:`make_fisher_vector_product`.

    Examples
    --------
    >>> import torch
    >>> from torch.distributions import Categorical
    >>> theta = torch.zeros(2, requires_grad=True)          # logits of a 2-action policy
    >>> obs = torch.zeros(4, 1)
    >>> dist_fn = lambda o: Categorical(logits=theta.expand(o.shape[0], 2))
    >>> Fv = fisher_vector_product(dist_fn, obs, [theta], torch.tensor([1.0, 0.0]), damping=0.0)
    >>> [round(float(x), 4) for x in Fv]                    # (diag(p) - p p^T) e_1, p = (1/2, 1/2)
    [0.25, -0.25]

    See chapter 7 (TRPO).
    """
    return make_fisher_vector_product(dist_fn, obs, params, damping)(v)


# --------------------------------------------------------------------------------------------
# Step size and line search
# --------------------------------------------------------------------------------------------


def trust_region_step(s: torch.Tensor, Fs: torch.Tensor, delta: float) -> torch.Tensor:
    r"""Scale a search direction to the edge of the quadratic trust region.

    With the quadratic model :math:`\bar D_\mathrm{KL}(\theta_\text{old} + \Delta\theta)
    \approx \tfrac12 \Delta\theta^\top F \Delta\theta`, the step
    :math:`\Delta\theta = \beta s` meets :math:`\tfrac12\Delta\theta^\top F\Delta\theta
    = \delta` for

    .. math::

        \beta = \sqrt{\frac{2\delta}{s^\top F s}} .

    Parameters
    ----------
    s : torch.Tensor, shape (n,)
        Search direction (the conjugate-gradient solution of :math:`F s = g`).
    Fs : torch.Tensor, shape (n,)
        :math:`F s` (as returned by the Fisher-vector product, damping included).
    delta : float
        KL radius :math:`\delta > 0`.

    Returns
    -------
    torch.Tensor, shape (n,)
        :math:`\Delta\theta = \beta s`.

    Raises
    ------
    ValueError
        If ``delta <= 0`` or not finite, ``s`` or ``Fs`` is not a finite 1-D float tensor, their
        shapes differ, or :math:`s^\top F s \le 0`.

    Examples
    --------
    >>> import torch
    >>> s = torch.tensor([1.0, 0.0])
    >>> step = trust_region_step(s, Fs=torch.tensor([2.0, 0.0]), delta=0.01)   # s^T F s = 2
    >>> [round(float(x), 4) for x in step]                                     # sqrt(0.02 / 2) = 0.1
    [0.1, 0.0]

    See chapter 7 (TRPO).
    """
    delta = _check_positive(delta, "delta")
    s = _check_vector(s, "s")
    Fs = _check_vector(Fs, "Fs")
    if s.shape != Fs.shape:
        raise ValueError(
            f"s and Fs must have the same shape, got {tuple(s.shape)} and {tuple(Fs.shape)}"
        )
    sFs = float(torch.dot(s, Fs))
    if not sFs > 0:
        raise ValueError(f"s^T F s must be > 0 (F positive definite), got {sFs:.3g}")
    return math.sqrt(2.0 * delta / sFs) * s


@dataclass(frozen=True)
class LineSearchResult:
    r"""Outcome of :func:`backtracking_line_search`.

    Attributes
    ----------
    theta : torch.Tensor, shape (n,)
        Parameters to use next: the accepted candidate, or ``theta_old`` when rejected.
    accepted : bool
        Whether a candidate passed both tests.
    n_backtracks : int
        :math:`k` of the accepted candidate :math:`\theta_\text{old} + \alpha^k\Delta\theta`;
        ``max_backtracks`` when rejected.
    step_fraction : float
        :math:`\alpha^k` of the accepted candidate; 0.0 when rejected.
    expected_improvement : float
        :math:`\alpha^k\, g^\top \Delta\theta`, the first-order prediction for the returned
        ``theta`` (0.0 when rejected).
    actual_improvement : float
        :math:`L(\theta) - L(\theta_\text{old})` for the returned ``theta`` (0.0 when rejected).
    mean_kl, max_kl : float
        Mean and maximum per-state KL of the returned ``theta`` from ``theta_old`` (0.0 when
        rejected).
    trials : tuple of (float, float, float)
        ``(step_fraction, actual_improvement, mean_kl)`` of every candidate tried, in order.
    """

    theta: torch.Tensor
    accepted: bool
    n_backtracks: int
    step_fraction: float
    expected_improvement: float
    actual_improvement: float
    mean_kl: float
    max_kl: float
    trials: tuple[tuple[float, float, float], ...]


def backtracking_line_search(
    evaluate: Callable[[torch.Tensor], tuple[float, float, float]],
    theta_old: torch.Tensor,
    full_step: torch.Tensor,
    expected_improvement: float,
    delta: float,
    max_backtracks: int = 10,
    shrink: float = 0.5,
) -> LineSearchResult:
    r"""Shrink a proposed step until it satisfies the KL constraint and improves the surrogate.

    Candidates are :math:`\theta_k = \theta_\text{old} + \alpha^k \Delta\theta` for
    :math:`k = 0, 1, \dots,` ``max_backtracks`` (:math:`\alpha` = ``shrink``). The first
    candidate with

    .. math::

        \bar D_\mathrm{KL}(\theta_k) \le \delta
        \quad\text{and}\quad
        L(\theta_k) - L(\theta_\text{old}) > 0

    is accepted. Both quantities are evaluated exactly on the batch, so the quadratic
    approximation behind :func:`trust_region_step` is checked, not trusted. If no candidate
    passes, the step is rejected and ``theta_old`` is returned. Note that the constraint is on the
    *mean* KL over the batch's states, not on the maximum.

    Parameters
    ----------
    evaluate : callable
        ``evaluate(theta) -> (surrogate, mean_kl, max_kl)`` for a flat parameter vector
        ``theta`` of shape ``(n,)``: the surrogate :math:`L(\theta)`, and the mean and maximum
        over the batch of :math:`\mathrm{KL}(\pi_{\theta_\text{old}}(\cdot|s_i) \|
        \pi_\theta(\cdot|s_i))`, as floats.
    theta_old : torch.Tensor, shape (n,)
        Current parameters.
    full_step : torch.Tensor, shape (n,)
        Proposed step :math:`\Delta\theta` (from :func:`trust_region_step`).
    expected_improvement : float
        First-order prediction for the full step, :math:`g^\top \Delta\theta`.
    delta : float
        KL radius :math:`\delta > 0`.
    max_backtracks : int, default 10
        Largest :math:`k` tried (``max_backtracks + 1`` candidates in all), at least 0.
    shrink : float, default 0.5
        :math:`\alpha \in (0, 1)`.

    Returns
    -------
    LineSearchResult

    Raises
    ------
    ValueError
        If ``delta <= 0`` or not finite, ``shrink`` is not in (0, 1), ``max_backtracks < 0``,
        ``expected_improvement`` is not finite, or ``theta_old`` / ``full_step`` are not finite
        1-D float tensors of the same shape.

    Examples
    --------
    A quadratic KL :math:`\tfrac12\lVert\theta\rVert^2` and a linear surrogate: the full step
    has KL 0.02 > 0.01, half of it has KL 0.005, so one backtrack is needed.

    >>> import torch
    >>> g = torch.tensor([1.0, 0.0])
    >>> evaluate = lambda th: (float(g @ th), float(0.5 * th @ th), float(0.5 * th @ th))
    >>> res = backtracking_line_search(evaluate, torch.zeros(2), torch.tensor([0.2, 0.0]),
    ...                                expected_improvement=0.2, delta=0.01)
    >>> res.accepted, res.n_backtracks, round(res.mean_kl, 4)
    (True, 1, 0.005)

    See chapter 7 (TRPO).
    """
    delta = _check_positive(delta, "delta")
    max_backtracks = _check_int(max_backtracks, "max_backtracks", 0)
    if not isinstance(shrink, (int, float)) or not 0.0 < shrink < 1.0:
        raise ValueError(f"shrink must be in (0, 1), got {shrink!r}")
    if not math.isfinite(expected_improvement):
        raise ValueError(f"expected_improvement must be finite, got {expected_improvement!r}")
    theta_old = _check_vector(theta_old, "theta_old")
    full_step = _check_vector(full_step, "full_step")
    if theta_old.shape != full_step.shape:
        raise ValueError(
            f"theta_old and full_step must have the same shape, got {tuple(theta_old.shape)} "
            f"and {tuple(full_step.shape)}"
        )
    surrogate_old, _, _ = evaluate(theta_old)
    trials = []
    for k in range(max_backtracks + 1):
        fraction = shrink**k
        theta = theta_old + fraction * full_step
        surrogate, mean_kl, max_kl = evaluate(theta)
        improvement = surrogate - surrogate_old
        trials.append((fraction, improvement, mean_kl))
        if (
            math.isfinite(mean_kl)
            and math.isfinite(improvement)
            and mean_kl <= delta
            and improvement > 0
        ):
            return LineSearchResult(
                theta=theta,
                accepted=True,
                n_backtracks=k,
                step_fraction=fraction,
                expected_improvement=fraction * float(expected_improvement),
                actual_improvement=float(improvement),
                mean_kl=float(mean_kl),
                max_kl=float(max_kl),
                trials=tuple(trials),
            )
    return LineSearchResult(
        theta=theta_old.clone(),
        accepted=False,
        n_backtracks=max_backtracks,
        step_fraction=0.0,
        expected_improvement=0.0,
        actual_improvement=0.0,
        mean_kl=0.0,
        max_kl=0.0,
        trials=tuple(trials),
    )


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


@dataclass
class TRPOConfig:
    """Hyperparameters of :func:`train_trpo`, field by field (meaning; usual range).

    The defaults are tuned for CartPole-v1 on one CPU thread: 1,024 transitions per update from
    16 numpy-vectorised copies, 32-32 tanh networks, 10 conjugate-gradient iterations, a KL radius
    of 0.02 and a value fit of 5 Adam epochs. With them the deterministic evaluation return
    typically first reaches 475 after 6,000 to 40,000 environment steps (a few seconds).
    The "usual range" is what TRPO implementations use across classic-control and MuJoCo tasks.

    See chapter 7 (TRPO) for the role of each.
    """

    total_timesteps: int = 100_000
    """Budget of environment steps, counted over all environments (1e5 for CartPole; 1e6+ for
    MuJoCo). Training stops at the first update that reaches it (or earlier, see ``stop_return``)."""

    num_envs: int = 16
    """Parallel environments stepped together (1-64). More environments give more decorrelated
    batches per wall-clock second on a vectorised environment."""

    num_steps: int = 64
    """Steps per environment per update; the batch has ``num_envs * num_steps`` transitions
    (TRPO usually uses 1e3-5e4 transitions per update)."""

    gamma: float = 0.99
    r"""Discount factor :math:`\gamma` (0.95-0.999)."""

    lam: float = 0.95
    r"""GAE parameter :math:`\lambda` (0.9-1.0); see :func:`companion.rl.gae`."""

    delta: float = 0.02
    r"""KL radius :math:`\delta`: the bound on the *mean* KL(pi_old || pi_new) over the batch's
    states (0.001-0.05; the paper uses 0.01)."""

    cg_iters: int = 10
    """Conjugate-gradient iterations, i.e. Fisher-vector products per update (5-20)."""

    cg_damping: float = 0.1
    r"""Damping :math:`\lambda_\text{damp}` added to the Fisher matrix, :math:`F + \lambda_\text{damp}
    I` (1e-3-0.1)."""

    fvp_subsample: int = 1
    """Use every ``fvp_subsample``-th state of the batch to form the Fisher-vector product
    (1-10; 1 uses all). The line search always checks the KL on the whole batch."""

    max_backtracks: int = 10
    r"""Largest :math:`k` in the line search's :math:`\alpha^k` (5-15)."""

    backtrack_shrink: float = 0.5
    r"""Line-search shrink factor :math:`\alpha` (0.5-0.8)."""

    norm_adv: bool = True
    """Standardise the advantages over the batch (mean 0, std 1) before forming the surrogate."""

    hidden: int | tuple[int, ...] = 32
    """Hidden widths of the policy and of the value MLP (tanh); an int ``h`` means two layers of
    width ``h`` (32-256)."""

    vf_lr: float = 3e-3
    """Adam learning rate of the value function (1e-4-1e-2)."""

    vf_epochs: int = 5
    """Passes over the batch when fitting the value function after each policy step (1-20)."""

    vf_minibatch_size: int = 256
    """Minibatch size of the value fit (64-the whole batch)."""

    eval_every: int = 0
    """Evaluate the deterministic policy (:func:`companion.rl.evaluate_policy`, ``eval_episodes``
    episodes) each time the step count passes a multiple of ``eval_every``; 0 never evaluates.
    Evaluation time is excluded from the history's ``wall_time``."""

    eval_episodes: int = 10
    """Episodes per evaluation (5-100)."""

    stop_return: float | None = None
    """Stop training as soon as an evaluation's mean return reaches this value (e.g. 475 for
    CartPole-v1); ``None`` trains for the whole ``total_timesteps``. Needs ``eval_every > 0``."""

    def __post_init__(self):
        for name in (
            "total_timesteps",
            "num_envs",
            "num_steps",
            "cg_iters",
            "fvp_subsample",
            "vf_epochs",
            "vf_minibatch_size",
            "eval_episodes",
        ):
            _check_int(getattr(self, name), name, 1)
        for width in (self.hidden,) if isinstance(self.hidden, int) else tuple(self.hidden):
            _check_int(width, "hidden", 1)
        _check_int(self.max_backtracks, "max_backtracks", 0)
        _check_int(self.eval_every, "eval_every", 0)
        for name in ("gamma", "lam"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value!r}")
        _check_positive(self.delta, "delta")
        _check_nonnegative(self.cg_damping, "cg_damping")
        _check_positive(self.vf_lr, "vf_lr")
        if not isinstance(self.backtrack_shrink, (int, float)) or not 0 < self.backtrack_shrink < 1:
            raise ValueError(f"backtrack_shrink must be in (0, 1), got {self.backtrack_shrink!r}")
        if self.stop_return is not None:
            if not math.isfinite(self.stop_return):
                raise ValueError(f"stop_return must be finite or None, got {self.stop_return!r}")
            if self.eval_every == 0:
                raise ValueError("stop_return needs eval_every > 0 (nothing is evaluated)")


class TRPOHistory(list):
    """One dict per update (keys documented in the module docstring), plus array access."""

    def to_dict_of_arrays(self) -> dict[str, np.ndarray]:
        """Return ``{key: numpy array over updates}``."""
        keys = self[0].keys() if self else []
        return {k: np.asarray([row[k] for row in self]) for k in keys}


def _collect(env, policy, obs, prev_done, n_steps, generator, episode_stats):
    """Step the vector env ``num_steps`` times with the current policy (next-step autoreset).

    Returns the rollout arrays (``obs`` has ``n_steps + 1`` rows, the last one for
    bootstrapping), the next observation and the done flags of the last step. ``valid[t, i]``
    is False for the autoreset step right after a done, which is not a transition.
    """
    num_envs = obs.shape[0]
    obs_buf = np.empty((n_steps + 1, *obs.shape), dtype=np.float32)
    actions = np.empty((n_steps, num_envs), dtype=np.int64)
    rewards = np.empty((n_steps, num_envs), dtype=np.float64)
    dones = np.empty((n_steps, num_envs), dtype=bool)
    truncs = np.empty((n_steps, num_envs), dtype=bool)
    valid = np.empty((n_steps, num_envs), dtype=bool)
    running, finished = episode_stats["running"], episode_stats["finished"]
    with torch.inference_mode():
        for t in range(n_steps):
            obs_buf[t] = obs
            valid[t] = ~prev_done
            a = sample_categorical(policy.actor(torch.from_numpy(obs)), generator).numpy()
            obs, r, term, trunc, _ = env.step(a)
            obs = np.asarray(obs, dtype=np.float32).reshape(num_envs, -1)
            actions[t], rewards[t] = a, r
            dones[t] = term | trunc
            truncs[t] = trunc & ~term
            running += np.where(valid[t], r, 0.0)
            for i in np.flatnonzero(dones[t]):
                finished.append(float(running[i]))
                running[i] = 0.0
            prev_done = dones[t].copy()
    obs_buf[n_steps] = obs
    rollout = {
        "obs": obs_buf,
        "actions": actions,
        "rewards": rewards,
        "dones": dones,
        "truncs": truncs,
        "valid": valid,
    }
    return rollout, obs, prev_done


def _make_batch(policy, rollout, cfg):
    """GAE advantages and returns (:func:`companion.rl.gae`), flattened to the valid steps."""
    T, N = rollout["actions"].shape
    obs_all = torch.from_numpy(rollout["obs"].reshape((T + 1) * N, -1))
    with torch.no_grad():
        values = policy.value(obs_all).reshape(T + 1, N).double().numpy()
    adv, ret = gae(
        rollout["rewards"],
        values[:T],
        rollout["dones"],
        rollout["truncs"],
        values[T],
        cfg.gamma,
        cfg.lam,
    )
    valid = rollout["valid"].reshape(-1)
    b_adv = torch.as_tensor(adv.reshape(-1)[valid], dtype=torch.float32)
    if cfg.norm_adv and b_adv.numel() > 1:
        b_adv = (b_adv - b_adv.mean()) / (b_adv.std() + 1e-8)
    return {
        "obs": obs_all[: T * N][torch.from_numpy(valid)],
        "actions": torch.from_numpy(rollout["actions"].reshape(-1)[valid]),
        "advantages": b_adv,
        "returns": torch.as_tensor(ret.reshape(-1)[valid], dtype=torch.float32),
    }


def _surrogate_and_kl(policy, batch, logp_old_all):
    r"""Surrogate :math:`\frac1B\sum_i \rho_i \hat A_i` and per-state KL(pi_old || pi), both
    differentiable in the actor parameters. ``logp_old_all`` is (B, n_actions), detached."""
    logp_all = torch.log_softmax(policy.actor(batch["obs"]), -1)
    a = batch["actions"][:, None]
    log_rho = (logp_all.gather(1, a) - logp_old_all.gather(1, a)).squeeze(1)
    surrogate = (torch.exp(log_rho) * batch["advantages"]).mean()
    kl = (logp_old_all.exp() * (logp_old_all - logp_all)).sum(-1)
    return surrogate, kl


def _policy_step(policy, batch, cfg):
    """One TRPO policy update on ``batch`` (steps 2-5 of the module docstring); returns info."""
    params = list(policy.actor.parameters())
    with torch.no_grad():
        logp_old_all = torch.log_softmax(policy.actor(batch["obs"]), -1)
    entropy = float(-(logp_old_all.exp() * logp_old_all).sum(-1).mean())
    surrogate, _ = _surrogate_and_kl(policy, batch, logp_old_all)
    g = _flat(torch.autograd.grad(surrogate, params), params)
    info = {
        "kl": 0.0,
        "max_kl": 0.0,
        "n_backtracks": 0,
        "step_fraction": 0.0,
        "expected_improvement": 0.0,
        "actual_improvement": 0.0,
        "improvement_ratio": float("nan"),
        "rejected": True,
        "entropy": entropy,
        "grad_norm": float(g.norm()),
    }
    if not math.isfinite(info["grad_norm"]):
        raise RuntimeError(f"the surrogate gradient is not finite (norm {info['grad_norm']})")
    if info["grad_norm"] == 0.0:
        return info  # nothing to improve (e.g. all advantages zero): no step is proposed
    fvp = make_fisher_vector_product(
        policy.distribution, batch["obs"][:: cfg.fvp_subsample], params, cfg.cg_damping
    )
    s = conjugate_gradient(fvp, g, iters=cfg.cg_iters)
    full_step = trust_region_step(s, fvp(s), cfg.delta)
    theta_old = torch.nn.utils.parameters_to_vector(params).detach()

    def evaluate(theta):
        torch.nn.utils.vector_to_parameters(theta, params)
        with torch.no_grad():
            surr, kl = _surrogate_and_kl(policy, batch, logp_old_all)
        return float(surr), float(kl.mean()), float(kl.max())

    res = backtracking_line_search(
        evaluate,
        theta_old,
        full_step,
        float(g @ full_step),
        cfg.delta,
        max_backtracks=cfg.max_backtracks,
        shrink=cfg.backtrack_shrink,
    )
    torch.nn.utils.vector_to_parameters(res.theta, params)
    info.update(
        kl=res.mean_kl,
        max_kl=res.max_kl,
        n_backtracks=res.n_backtracks,
        step_fraction=res.step_fraction,
        expected_improvement=res.expected_improvement,
        actual_improvement=res.actual_improvement,
        rejected=not res.accepted,
    )
    if res.accepted:
        info["improvement_ratio"] = res.actual_improvement / res.expected_improvement
    return info


def _fit_value(policy, optimizer, batch, cfg, generator):
    r"""A few epochs of Adam on :math:`(V_\phi(s_i) - \hat R_i)^2`; returns (loss, info)."""
    n = batch["obs"].shape[0]
    losses = []
    for _ in range(cfg.vf_epochs):
        perm = torch.randperm(n, generator=generator)
        for lo in range(0, n, cfg.vf_minibatch_size):
            idx = perm[lo : lo + cfg.vf_minibatch_size]
            loss = ((policy.value(batch["obs"][idx]) - batch["returns"][idx]) ** 2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    mean_loss = float(np.mean(losses))
    return mean_loss, {"value_loss": mean_loss}


def train_trpo(
    env_id: str = "CartPole-v1",
    config: TRPOConfig | None = None,
    seed: int = 0,
    progress: bool = True,
    callback: Callable[[dict, ActorCritic], bool | None] | None = None,
):
    r"""Train a categorical policy with TRPO; return the policy and the per-update history.

    Each update maximises the importance-sampled surrogate under the mean-KL constraint,

    .. math::

        \max_\theta \; \frac1B \sum_{i=1}^B
            \frac{\pi_\theta(a_i \mid s_i)}{\pi_{\theta_\text{old}}(a_i \mid s_i)} \hat A_i
        \quad \text{s.t.} \quad
        \frac1B \sum_{i=1}^B \mathrm{KL}\bigl(\pi_{\theta_\text{old}}(\cdot|s_i) \|
            \pi_\theta(\cdot|s_i)\bigr) \le \delta,

    by one natural-gradient step (conjugate gradient on the Fisher matrix, step size
    :math:`\sqrt{2\delta / s^\top F s}`) checked by a backtracking line search, followed by a
    value-function fit. The constraint is on the **mean** KL over the visited states, not on
    the maximum over states that the theory bounds; ``history`` logs both.

    The batch contains ``num_envs * num_steps`` vector steps of :func:`companion.rl.make_vec_env`
    (next-step autoreset); the autoreset steps are masked out of every loss and statistic, so
    :math:`B` is the number of real transitions. ``env_steps`` counts all vector steps.
    Also available as ``companion.trpo.train``.

    Parameters
    ----------
    env_id : str, default "CartPole-v1"
        Gymnasium id of an environment with a discrete action space and flat observations.
    config : TRPOConfig or None
        Hyperparameters; ``None`` uses ``TRPOConfig()``.
    seed : int, default 0
        Seeds the network initialisation, the environments and the action sampling (private
        generators; no global random state is touched). Evaluation ``k`` uses seed
        ``10_000 * (seed + 1) + k``.
    progress : bool, default True
        Show a ``tqdm.auto`` progress bar over environment steps.
    callback : callable or None
        ``callback(record, policy)`` after every update (and its evaluation); return True to
        stop. Its run time is excluded from ``wall_time``.

    Returns
    -------
    policy : companion.rl.ActorCritic
        The trained policy and value function.
    history : TRPOHistory
        One dict per update; keys and formulas in the module docstring.

    Raises
    ------
    ValueError
        If ``config`` is not a :class:`TRPOConfig`, ``seed`` is not an integer, or the
        environment's action space is not discrete.
    RuntimeError
        If the surrogate gradient becomes non-finite (training diverged).

    Examples
    --------
    >>> cfg = TRPOConfig(total_timesteps=2048, num_envs=4, num_steps=256)
    >>> policy, history = train_trpo("CartPole-v1", cfg, seed=0, progress=False)
    >>> len(history), history[-1]["env_steps"]
    (2, 2048)
    >>> all(row["kl"] <= cfg.delta for row in history)
    True

    See chapter 7 (TRPO).
    """
    start = time.perf_counter()
    if config is None:
        config = TRPOConfig()
    if not isinstance(config, TRPOConfig):
        raise ValueError(f"config must be a TRPOConfig or None, got {type(config).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    cfg, seed = config, int(seed)

    env = make_vec_env(env_id, cfg.num_envs, seed=seed)
    if not hasattr(env.single_action_space, "n"):
        env.close()
        raise ValueError(f"env_id {env_id!r} must have a discrete action space")
    obs_dim = int(np.prod(env.single_observation_space.shape))
    policy = ActorCritic(obs_dim, int(env.single_action_space.n), hidden=cfg.hidden, seed=seed)
    vf_optimizer = torch.optim.Adam(policy.critic.parameters(), lr=cfg.vf_lr)
    generator = torch.Generator().manual_seed(seed)

    obs, _ = env.reset()
    obs = np.asarray(obs, dtype=np.float32).reshape(cfg.num_envs, obs_dim)
    prev_done = np.zeros(cfg.num_envs, dtype=bool)
    episode_stats = {"running": np.zeros(cfg.num_envs), "finished": []}
    history = TRPOHistory()
    env_steps = 0
    end_update = _UpdateEnd(env_id, cfg.eval_every, cfg.eval_episodes, cfg.stop_return, seed,
                            callback)
    batch_steps = cfg.num_steps * cfg.num_envs
    bar = tqdm(total=cfg.total_timesteps, disable=not progress, desc="TRPO", unit="step")
    try:
        while env_steps < cfg.total_timesteps:
            # 1. rollout with pi_old and GAE
            rollout, obs, prev_done = _collect(
                env, policy, obs, prev_done, cfg.num_steps, generator, episode_stats
            )
            env_steps += batch_steps
            batch = _make_batch(policy, rollout, cfg)
            # 2.-5. natural-gradient step with line search; 6. value fit
            record = {"update": len(history), "env_steps": env_steps}
            record.update(_policy_step(policy, batch, cfg))
            record.update(_fit_value(policy, vf_optimizer, batch, cfg, generator)[1])
            finished = episode_stats["finished"]
            record["episode_return"] = float(np.mean(finished)) if finished else float("nan")
            record["episodes"] = len(finished)
            episode_stats["finished"] = []
            record["eval_return"] = record["eval_return_std"] = float("nan")
            record["wall_time"] = time.perf_counter() - start - end_update.excluded
            bar.update(batch_steps)

            # evaluation and callback, excluded from wall_time
            stop = end_update(record, policy, history, bar)
            if stop:
                break
    finally:
        bar.close()
        env.close()
    return policy, history


train = train_trpo
"""Alias of :func:`train_trpo` (``companion.trpo.train``); not in ``__all__`` so that it does not
clash with ``companion.ppo.train`` when the package re-exports both modules."""
