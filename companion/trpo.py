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

**Which constraint the code enforces.** TRPO's monotonic-improvement bound (Schulman et al. 2015,
Theorem 1) is stated with the *maximum* KL over all states. Like every practical TRPO, this module
constrains the *mean* KL over the visited states :math:`s_1, \dots, s_B` of the batch,
:math:`\bar D_\mathrm{KL}` above. A bound with the square root of the mean KL over the discounted
state distribution of the old policy exists (Achiam et al. 2017, Corollary 3); the batch mean
estimates that mean, without the discount weights. A state that is rare in the batch may move much
more than :math:`\delta`. The
history records both the mean (the enforced quantity) and the maximum per-state KL over the batch
(``max_kl``), so the two can be compared.

One update (:func:`train_trpo`) is a sequence of small named steps:

1. collect ``num_steps`` transitions from each of ``num_envs`` environments with
   :math:`\pi_{\theta_\text{old}}` (:class:`companion.rl.RolloutCollector`); compute advantages
   with GAE (:func:`companion.rl.gae`), the same as :mod:`companion.ppo`;
2. :math:`g = \nabla_\theta L(\theta_\text{old})`;
3. solve :math:`F s = g` approximately by :func:`conjugate_gradient`, where :math:`F` is applied by
   :func:`fisher_vector_product` (the Hessian of :math:`\bar D_\mathrm{KL}` at
   :math:`\theta_\text{old}`, plus damping); stopping after ``cg_iters`` iterations leaves
   :math:`s` in the span of :math:`g, Fg, \dots, F^{k-1}g`, which shrinks it in the directions
   of small curvature, much as damping does;
4. scale to the edge of the quadratic trust region,
   :math:`\Delta\theta = \sqrt{2\delta / s^\top F s}\; s` (:func:`trust_region_step`);
5. :func:`backtracking_line_search`: try :math:`\theta_\text{old} + \alpha^k \Delta\theta`,
   :math:`k = 0, 1, \dots`, and accept the first candidate whose *exact* mean KL is at most
   :math:`\delta` and whose surrogate improves; if none does, keep :math:`\theta_\text{old}`;
6. fit the value function by a few epochs of Adam on the squared error to the GAE returns.

History keys
------------
:func:`train_trpo` returns ``history``, a :class:`companion.rl.History` (a list of one dict per
update, with ``.to_dict_of_arrays()``). With :math:`\theta_\text{old}` the parameters that collected the batch,
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

Used in :doc:`/book/trpo`, :doc:`/book/continuous_actions` and the ``trpo`` assignment.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.distributions import Categorical, Distribution, Independent, Normal, kl_divergence
from tqdm.auto import tqdm

from ._validation import (
    check_int,
    check_nonnegative,
    check_positive,
    check_real,
    check_unit_interval,
)
from .rl import (
    ActorCritic,
    EvaluationSchedule,
    GaussianActorCritic,
    History,
    RolloutCollector,
    TrainingClock,
    check_common_config,
    check_env_spaces,
    gae,
    make_actor_critic,
    make_vec_env,
)

__all__ = [
    "conjugate_gradient",
    "make_fisher_vector_product",
    "fisher_vector_product",
    "trust_region_step",
    "LineSearchResult",
    "backtracking_line_search",
    "TRPOConfig",
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
    iterations; TRPO uses about 10, which is far fewer than the number of parameters. The
    iterate after :math:`k` iterations lies in the span of :math:`b, Ab, \dots, A^{k-1}b`; an
    early stop under-resolves the directions of small eigenvalues, where :math:`A^{-1}b` is
    largest, so it acts like damping rather than as an exact solve.

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

    Used in :doc:`/book/trpo` and the ``trpo`` assignment.
    """
    b = _check_vector(b, "b")
    iters = check_int(iters, "iters")
    tol = check_nonnegative(tol, "tol")
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
        batch shape ``(B,)``. For :class:`companion.rl.ActorCritic` or
        :class:`companion.rl.GaussianActorCritic` pass ``policy.distribution``; for the latter
        the KL is the closed form between diagonal Gaussians (``torch.distributions``
        registers it for ``Independent(Normal)``).
    obs : torch.Tensor, shape (B, ...)
        The visited states :math:`s_1, \dots, s_B`.
    params : sequence of torch.Tensor
        The policy parameters :math:`\theta` (``requires_grad=True``); the vector ``v`` is laid
        out as their concatenated flattening, in this order.
    damping : float, default 0.1
        :math:`\lambda_\text{damp} \ge 0`, added on the diagonal; keeps :math:`F` invertible
        and the conjugate-gradient step bounded. For a network the undamped :math:`F` is
        singular whenever the parameters outnumber :math:`B(|\mathcal A| - 1)` (each state
        adds a term of rank at most :math:`|\mathcal A| - 1`).

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

    Used in :doc:`/book/trpo`.
    """
    params = _check_params(params)
    damping = check_nonnegative(damping, "damping")
    if not isinstance(obs, torch.Tensor) or obs.ndim == 0 or obs.shape[0] == 0:
        raise ValueError("obs must be a tensor with at least one row (state)")
    dist = dist_fn(obs)
    kl = kl_divergence(_detach_distribution(dist), dist).mean()
    grads = torch.autograd.grad(kl, params, create_graph=True, allow_unused=True)
    if all(g is None for g in grads):
        raise ValueError("the policy distribution does not depend on params")
    flat_grad = _flat(grads, params)
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

    A one-call form of :func:`make_fisher_vector_product`, for a single product.
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

    Used in :doc:`/book/trpo` and the ``trpo`` assignment.
    """
    delta = check_positive(delta, "delta")
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

    Used in :doc:`/book/trpo` and the ``trpo`` assignment.

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

    Used in :doc:`/book/trpo` and the ``trpo`` assignment.
    """
    delta = check_positive(delta, "delta")
    max_backtracks = check_int(max_backtracks, "max_backtracks", low=0)
    shrink = check_unit_interval(shrink, "shrink", open=True)
    expected_improvement = check_real(expected_improvement, "expected_improvement")
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
    first reaches 475 after 6,000 to 41,000 environment steps (median about 15,000 over seeds
    0-9; a few seconds), and at the end of the 100,000-step budget it evaluates at or above 475
    for all ten seeds (``benchmarks/trpo_cartpole.py`` and the slow test check seeds 0-4).
    The "usual range" is what TRPO implementations use across classic-control and MuJoCo tasks.

    See :doc:`TRPO </book/trpo>` for the role of each. Used in :doc:`/book/trpo` and
    :doc:`/book/continuous_actions`.
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
    """Conjugate-gradient iterations, i.e. Fisher-vector products per update (5-20). Fewer
    iterations act like more damping: the step is shrunk in the directions of small curvature."""

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

    log_std_init: float = 0.0
    """Initial log standard deviation of a Gaussian policy (Box action spaces only; 0 gives
    standard deviation 1; -1 to 0.5, relative to the scale of the actions)."""

    norm_obs: bool = False
    """Normalise observations by running mean and variance (:class:`companion.rl.RunningMeanStd`,
    updated after each update's policy step and value fit)."""

    reward_scale: float = 1.0
    """Multiply rewards by this before GAE (the value function learns the scaled returns; logged
    returns are unscaled; 0.01-1)."""

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

    @classmethod
    def pendulum(cls, **changes) -> TRPOConfig:
        """The Pendulum-v1 setting used by :doc:`/book/continuous_actions`; keyword arguments
        override single fields.

        4,096 transitions per update from 8 copies x 512 steps, 64-64 tanh networks, a KL
        radius of 0.05, gamma 0.9 and lambda 0.95 (rl-baselines3-zoo's PPO values), a
        state-independent log standard deviation starting at -0.5 (standard deviation 0.61), a
        value fit of 10 epochs of minibatches of 128 at learning rate 1e-3, observations
        normalised by running statistics and rewards scaled by 0.1. Tuning was short (three
        settings, two seeds, 40,000 steps on a loaded machine): with 2,048 transitions per
        update, radius 0.02 and standard deviation 0.37 the evaluation return after 40,000 steps
        was about -900; with this setting -616 and -524 (seeds 0 and 1).
        """
        setting = dict(num_envs=8, num_steps=512, gamma=0.9, lam=0.95, delta=0.05, hidden=64,
                       vf_lr=1e-3, vf_epochs=10, vf_minibatch_size=128, log_std_init=-0.5,
                       norm_obs=True, reward_scale=0.1)
        return cls(**{**setting, **changes})

    def __post_init__(self):
        check_common_config(self)
        for name in ("cg_iters", "fvp_subsample", "vf_epochs", "vf_minibatch_size"):
            check_int(getattr(self, name), name)
        check_int(self.max_backtracks, "max_backtracks", low=0)
        check_positive(self.delta, "delta")
        check_nonnegative(self.cg_damping, "cg_damping")
        check_positive(self.vf_lr, "vf_lr")
        check_unit_interval(self.backtrack_shrink, "backtrack_shrink", open=True)


def _batch(policy, rollout, cfg):
    r"""The valid transitions of ``rollout`` with their GAE advantages (normalised over the batch
    when ``norm_adv``) and returns, as tensors."""
    with torch.no_grad():
        values = policy.value(torch.from_numpy(rollout.obs)).double().numpy()  # (T + 1, N)
    advantages, returns = gae(cfg.reward_scale * rollout.rewards, values[:-1], rollout.terminated,
                              rollout.truncated, values[-1], cfg.gamma, cfg.lam)
    valid = rollout.valid
    advantages = torch.as_tensor(advantages[valid], dtype=torch.float32)
    if cfg.norm_adv and len(advantages) > 1:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    return {
        "obs": torch.from_numpy(rollout.obs[:-1][valid]),
        "actions": torch.from_numpy(rollout.actions[valid]),
        "advantages": advantages,
        "returns": torch.as_tensor(returns[valid], dtype=torch.float32),
    }


def _surrogate_and_kl(policy, batch, old_dist):
    r"""Surrogate :math:`\frac1B\sum_i \rho_i \hat A_i` and the per-state
    :math:`\mathrm{KL}(\pi_{\theta_\text{old}}(\cdot|s_i) \| \pi_\theta(\cdot|s_i))`, both
    differentiable in the actor's parameters; ``old_dist`` is the fixed (detached) old policy."""
    dist = policy.distribution(batch["obs"])
    log_ratio = dist.log_prob(batch["actions"]) - old_dist.log_prob(batch["actions"])
    surrogate = (log_ratio.exp() * batch["advantages"]).mean()
    return surrogate, kl_divergence(old_dist, dist)


def _policy_step(policy, batch, cfg):
    """One TRPO policy update on ``batch`` (steps 2-5 of the module docstring); returns info."""
    params = list(policy.actor.parameters())
    with torch.no_grad():
        old_dist = policy.distribution(batch["obs"])
    surrogate, _ = _surrogate_and_kl(policy, batch, old_dist)
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
        "entropy": float(old_dist.entropy().mean()),
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
            surr, kl = _surrogate_and_kl(policy, batch, old_dist)
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


def _fit_value(policy, optimizer, batch, cfg, generator) -> float:
    r"""``vf_epochs`` epochs of Adam on :math:`(V_\phi(s_i) - \hat R_i)^2`; returns the mean loss."""
    n = len(batch["obs"])
    losses = []
    for _epoch in range(cfg.vf_epochs):
        for idx in torch.randperm(n, generator=generator).split(cfg.vf_minibatch_size):
            loss = (policy.value(batch["obs"][idx]) - batch["returns"][idx]).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    return float(np.mean(losses))


def train_trpo(
    env_id: str = "CartPole-v1",
    config: TRPOConfig | None = None,
    seed: int = 0,
    progress: bool = True,
    callback: Callable[[dict, ActorCritic | GaussianActorCritic], bool | None] | None = None,
) -> tuple[ActorCritic | GaussianActorCritic, History]:
    r"""Train a policy with TRPO; return the policy and the per-update history.

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

    Parameters
    ----------
    env_id : str, default "CartPole-v1"
        Gymnasium id of an environment with flat ``Box`` observations and a ``Discrete`` action
        space (categorical policy) or a one-dimensional ``Box`` action space with finite bounds
        (diagonal Gaussian policy, :class:`companion.rl.GaussianActorCritic`, whose KL in the
        Fisher-vector product and the line search is the closed-form KL between Gaussians).
    config : TRPOConfig or None
        Hyperparameters; ``None`` uses ``TRPOConfig()``.
    seed : int, default 0
        Seeds the network initialisation, the environments and the action sampling (private
        generators; no global random state is touched). Evaluation ``k`` uses seed
        ``10_000 * (seed + 1) + k``.
    progress : bool, default True
        Show a ``tqdm.auto`` progress bar over the updates.
    callback : callable or None
        ``callback(record, policy)`` after every update (and its evaluation); return True to
        stop. Its run time is excluded from ``wall_time``.

    Returns
    -------
    policy : companion.rl.ActorCritic or companion.rl.GaussianActorCritic
        The trained policy and value function.
    history : companion.rl.History
        One dict per update; keys and formulas in the module docstring.

    Raises
    ------
    ValueError
        If ``config`` is not a :class:`TRPOConfig`, ``seed`` is not a non-negative integer, or
        the environment's spaces are not among those above (the message names the space).
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

    Used in :doc:`/book/trpo` and :doc:`/book/continuous_actions`.
    """
    clock = TrainingClock()
    cfg = TRPOConfig() if config is None else config
    if not isinstance(cfg, TRPOConfig):
        raise ValueError(f"config: must be a TRPOConfig or None, got {type(cfg).__name__}")
    seed = check_int(seed, "seed", low=0)
    env = make_vec_env(env_id, cfg.num_envs, seed=seed)
    try:
        check_env_spaces(env, env_id)
        return _train(env, env_id, cfg, seed, progress, callback, clock)
    finally:
        env.close()


def _train(env, env_id, cfg, seed, progress, callback, clock):
    policy = make_actor_critic(env.single_observation_space, env.single_action_space,
                               hidden=cfg.hidden, seed=seed, norm_obs=cfg.norm_obs,
                               log_std_init=cfg.log_std_init)
    vf_optimizer = torch.optim.Adam(policy.critic.parameters(), lr=cfg.vf_lr)
    generator = torch.Generator().manual_seed(seed)  # action sampling and value-fit minibatches
    collector = RolloutCollector(env)
    evaluate_when_due = EvaluationSchedule(env_id, cfg.eval_every, cfg.eval_episodes, seed)
    history = History()
    steps_per_update = cfg.num_envs * cfg.num_steps
    n_updates = math.ceil(cfg.total_timesteps / steps_per_update)

    for update in tqdm(range(n_updates), disable=not progress, desc=f"TRPO {env_id}", unit="update"):
        # 1. collect num_steps steps of every copy with pi_old
        rollout = collector.collect(policy, cfg.num_steps, generator)
        # 2. advantages (GAE) and returns of the valid transitions
        batch = _batch(policy, rollout, cfg)
        # 3. update: natural-gradient step with line search (steps 2-5), then the value fit (6)
        step_info = _policy_step(policy, batch, cfg)
        value_loss = _fit_value(policy, vf_optimizer, batch, cfg, generator)
        if policy.obs_norm is not None:  # fixed while pi_old collected and was optimised on
            policy.obs_norm.update(batch["obs"].numpy())
        # 4. log; evaluation and callback off the clock
        record = {
            "update": update,
            "env_steps": (update + 1) * steps_per_update,
            "wall_time": clock.seconds(),
            **step_info,
            "value_loss": value_loss,
            "episode_return": float(np.mean(rollout.episode_returns)) if rollout.episode_returns
            else float("nan"),
            "episodes": len(rollout.episode_returns),
        }
        with clock.paused():
            record["eval_return"], record["eval_return_std"] = evaluate_when_due(
                policy, record["env_steps"])
            history.append(record)
            stop = cfg.stop_return is not None and record["eval_return"] >= cfg.stop_return
            if callback is not None:
                stop = bool(callback(record, policy)) or stop
        if stop:
            break
    return policy, history
