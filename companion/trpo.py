"""Trust Region Policy Optimization (TRPO) in PyTorch.

TRPO (Schulman et al. 2015) improves the importance-sampled surrogate

.. math::

    L_{\\theta_\\text{old}}(\\theta)
    = \\frac{1}{B}\\sum_{i=1}^{B} \\rho_i(\\theta)\\, \\hat A_i,
    \\qquad
    \\rho_i(\\theta) = \\exp\\bigl(\\log\\pi_\\theta(a_i \\mid s_i)
                                - \\log\\pi_{\\theta_\\text{old}}(a_i \\mid s_i)\\bigr),

subject to a bound on how far the new policy may move from the one that collected the batch:

.. math::

    \\bar D_\\mathrm{KL}(\\theta)
    = \\frac{1}{B}\\sum_{i=1}^{B}
      \\mathrm{KL}\\bigl(\\pi_{\\theta_\\text{old}}(\\cdot \\mid s_i)
                       \\,\\|\\, \\pi_\\theta(\\cdot \\mid s_i)\\bigr) \\le \\delta .

**Which constraint the code enforces.** The theory (the monotonic-improvement bound) is stated
with the *maximum* KL over all states. Like every practical TRPO, this module constrains the
*mean* KL over the visited states :math:`s_1, \\dots, s_B` of the batch, :math:`\\bar D_\\mathrm{KL}`
above. A state that is rare in the batch may therefore move much more than :math:`\\delta`. The
history records both the mean (the enforced quantity) and the maximum per-state KL over the batch
(``max_kl``), so the two can be compared.

One update (:func:`train`) is a sequence of small named steps:

1. collect ``n_steps`` transitions from each of ``num_envs`` environments with
   :math:`\\pi_{\\theta_\\text{old}}`; compute advantages with GAE (:func:`companion.rl.gae`);
2. :math:`g = \\nabla_\\theta L(\\theta_\\text{old})`;
3. solve :math:`F s = g` approximately by :func:`conjugate_gradient`, where :math:`F` is applied by
   :func:`fisher_vector_product` (the Hessian of :math:`\\bar D_\\mathrm{KL}` at
   :math:`\\theta_\\text{old}`, plus damping);
4. scale to the edge of the quadratic trust region,
   :math:`\\Delta\\theta = \\sqrt{2\\delta / s^\\top F s}\\; s` (:func:`trust_region_step`);
5. :func:`backtracking_line_search`: try :math:`\\theta_\\text{old} + \\alpha^k \\Delta\\theta`,
   :math:`k = 0, 1, \\dots`, and accept the first candidate whose *exact* mean KL is at most
   :math:`\\delta` and whose surrogate improves; if none does, keep :math:`\\theta_\\text{old}`;
6. fit the value function by a few epochs of Adam on the squared error to the GAE returns.

History keys
------------
:func:`train` returns ``history``, a :class:`TRPOHistory` (a list of one dict per update, with
``.to_dict_of_arrays()``). With :math:`\\theta_\\text{old}` the parameters that collected the batch,
:math:`\\theta_\\text{new}` those after the update (equal to :math:`\\theta_\\text{old}` when the
step is rejected) and :math:`B` the number of transitions in the batch:

``update``
    index of the update, 0, 1, 2, ...
``env_steps``
    environment steps collected so far, counted over all environments (after this update's batch).
``wall_time``
    seconds since :func:`train` started (``time.perf_counter``), at the end of this update.
``kl``
    mean KL after the step, :math:`\\frac1B \\sum_i \\mathrm{KL}(\\pi_{\\theta_\\text{old}}(\\cdot|s_i)
    \\| \\pi_{\\theta_\\text{new}}(\\cdot|s_i))` -- the constrained quantity; always
    :math:`\\le \\delta`; 0 when the step is rejected.
``max_kl``
    the largest per-state KL over the batch, :math:`\\max_i \\mathrm{KL}(\\pi_{\\theta_\\text{old}}
    (\\cdot|s_i) \\| \\pi_{\\theta_\\text{new}}(\\cdot|s_i))`. Not constrained; it can exceed
    :math:`\\delta`.
``n_backtracks``
    the :math:`k` of the accepted candidate :math:`\\theta_\\text{old} + \\alpha^k\\Delta\\theta`
    (0 = the full step was accepted); ``max_backtracks + 1`` candidates were all refused when
    ``rejected`` is true, and then it equals ``max_backtracks``.
``step_fraction``
    :math:`\\alpha^k` for the accepted step, 0 when rejected.
``expected_improvement``
    the first-order prediction :math:`g^\\top(\\theta_\\text{new} - \\theta_\\text{old})`.
``actual_improvement``
    :math:`L_{\\theta_\\text{old}}(\\theta_\\text{new}) - L_{\\theta_\\text{old}}(\\theta_\\text{old})`
    (the surrogate uses the normalised advantages when ``normalize_advantages`` is true).
``improvement_ratio``
    ``actual_improvement / expected_improvement`` (nan when rejected).
``rejected``
    ``True`` when no candidate passed the line search and the policy was left unchanged.
``value_loss``
    mean over all value-fitting minibatches of :math:`\\frac1{|b|}\\sum_{i\\in b}(V_\\phi(s_i) -
    \\hat R_i)^2`, with :math:`\\hat R_i = \\hat A_i + V(s_i)` the GAE return target.
``entropy``
    mean policy entropy over the batch before the step,
    :math:`\\frac1B\\sum_i \\mathcal H(\\pi_{\\theta_\\text{old}}(\\cdot|s_i))`.
``grad_norm``
    :math:`\\lVert g \\rVert_2`, the norm of the surrogate's gradient.
``episode_return``
    mean undiscounted return of the training episodes that ended during this batch (nan if none).

See chapter 9 (trust regions: TRPO and PPO).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch.distributions import Categorical, Distribution, Independent, Normal, kl_divergence

__all__ = [
    "conjugate_gradient",
    "make_fisher_vector_product",
    "fisher_vector_product",
    "trust_region_step",
    "LineSearchResult",
    "backtracking_line_search",
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
    """Approximately solve :math:`A x = b` for symmetric positive-definite :math:`A` by conjugate gradient.

    Only products :math:`v \\mapsto A v` are needed, never :math:`A` itself; in TRPO
    :math:`A` is the (damped) Fisher matrix, applied by :func:`fisher_vector_product`.
    Starting from :math:`x_0 = 0`, :math:`r_0 = p_0 = b`, each iteration does

    .. math::

        \\alpha_k = \\frac{r_k^\\top r_k}{p_k^\\top A p_k}, \\quad
        x_{k+1} = x_k + \\alpha_k p_k, \\quad
        r_{k+1} = r_k - \\alpha_k A p_k, \\quad
        p_{k+1} = r_{k+1} + \\frac{r_{k+1}^\\top r_{k+1}}{r_k^\\top r_k} p_k ,

    and stops after ``iters`` iterations or as soon as :math:`\\lVert r_k \\rVert_2 \\le`
    ``tol``. In exact arithmetic it solves an :math:`n \\times n` system in at most :math:`n`
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
        Stop when the residual norm :math:`\\lVert b - A x_k \\rVert_2` is at most ``tol``.

    Returns
    -------
    torch.Tensor, shape (n,)
        The approximate solution :math:`x`, same dtype as ``b``.

    Raises
    ------
    ValueError
        If ``b`` is not a finite non-empty 1-D float tensor, ``iters < 1``, ``tol < 0``, ``Avp``
        returns a tensor of the wrong shape or a non-finite one, or :math:`p^\\top A p \\le 0`
        (``A`` is not positive definite).

    Examples
    --------
    >>> import torch
    >>> A = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
    >>> b = torch.tensor([1.0, 2.0], dtype=torch.float64)
    >>> x = conjugate_gradient(lambda v: A @ v, b, iters=2)
    >>> [round(float(xi), 6) for xi in x]
    [0.090909, 0.636364]

    See chapter 9 (trust regions: TRPO and PPO).
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
    raise TypeError(
        f"distribution must be Categorical, Normal or Independent(Normal), got {type(dist).__name__}"
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
    """Build :math:`v \\mapsto (F + \\lambda_\\text{damp} I) v` by double back-propagation of the mean KL.

    The Fisher matrix of the policy equals the Hessian of the mean KL divergence from the fixed
    old policy, taken at :math:`\\theta = \\theta_\\text{old}`:

    .. math::

        F = \\nabla^2_\\theta \\, \\frac{1}{B}\\sum_{i=1}^{B}
            \\mathrm{KL}\\bigl(\\pi_{\\theta_\\text{old}}(\\cdot \\mid s_i) \\,\\|\\,
                             \\pi_\\theta(\\cdot \\mid s_i)\\bigr)
            \\Big|_{\\theta = \\theta_\\text{old}},
        \\qquad
        F v = \\nabla_\\theta \\bigl( (\\nabla_\\theta \\bar D_\\mathrm{KL})^\\top v \\bigr).

    The gradient :math:`\\nabla_\\theta \\bar D_\\mathrm{KL}` (zero in value, but not in its
    graph) is built once with ``create_graph=True``; each product is then one extra backward
    pass, so the closure is cheap to call repeatedly inside :func:`conjugate_gradient`. The
    current parameter values are taken as :math:`\\theta_\\text{old}`; do not change them while
    the closure is in use.

    Parameters
    ----------
    dist_fn : callable
        ``dist_fn(obs)`` returns the policy's action distribution for a batch of observations,
        a ``torch.distributions.Categorical`` (or ``Normal`` / ``Independent(Normal)``) with
        batch shape ``(B,)``. For :class:`companion.rl.ActorCritic` pass ``policy.distribution``.
    obs : torch.Tensor, shape (B, ...)
        The visited states :math:`s_1, \\dots, s_B`.
    params : sequence of torch.Tensor
        The policy parameters :math:`\\theta` (``requires_grad=True``); the vector ``v`` is laid
        out as their concatenated flattening, in this order.
    damping : float, default 0.1
        :math:`\\lambda_\\text{damp} \\ge 0`, added on the diagonal; keeps :math:`F` invertible
        and the conjugate-gradient step bounded.

    Returns
    -------
    callable
        ``fvp(v)`` for ``v`` of shape ``(n,)``, :math:`n` the total number of parameters, returns
        :math:`(F + \\lambda_\\text{damp} I) v`, shape ``(n,)``, detached.

    Raises
    ------
    ValueError
        If ``obs`` is empty, ``params`` is empty or not differentiable, ``damping`` is negative or
        not finite, or (when called) ``v`` has the wrong shape or is not finite.

    Examples
    --------
    >>> import torch
    >>> from torch.distributions import Categorical
    >>> net = torch.nn.Linear(3, 2)
    >>> obs = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    >>> fvp = make_fisher_vector_product(
    ...     lambda o: Categorical(logits=net(o)), obs, list(net.parameters()), damping=0.0)
    >>> n = sum(p.numel() for p in net.parameters())
    >>> v = torch.ones(n)
    >>> bool(torch.dot(v, fvp(v)) >= 0)  # F is positive semi-definite
    True

    See chapter 9 (trust regions: TRPO and PPO).
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
    """Damped Fisher-vector product :math:`(F + \\lambda_\\text{damp} I)v` at the current parameters.

    .. math::

        F v = \\nabla_\\theta \\Bigl( \\bigl(\\nabla_\\theta \\tfrac1B \\textstyle\\sum_i
              \\mathrm{KL}(\\pi_{\\theta_\\text{old}}(\\cdot|s_i) \\| \\pi_\\theta(\\cdot|s_i))
              \\bigr)^\\top v \\Bigr) \\Big|_{\\theta=\\theta_\\text{old}}

    A one-shot convenience around :func:`make_fisher_vector_product` (which see for the
    parameters); use that one when you need many products at the same parameters.

    Parameters
    ----------
    dist_fn : callable
        ``dist_fn(obs)`` returns the action distribution, batch shape ``(B,)``.
    obs : torch.Tensor, shape (B, ...)
        Visited states.
    params : sequence of torch.Tensor
        Policy parameters :math:`\\theta`.
    v : torch.Tensor, shape (n,)
        Vector in flattened-parameter space; finite.
    damping : float, default 0.1
        :math:`\\lambda_\\text{damp} \\ge 0`.

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

    See chapter 9 (trust regions: TRPO and PPO).
    """
    return make_fisher_vector_product(dist_fn, obs, params, damping)(v)


# --------------------------------------------------------------------------------------------
# Step size and line search
# --------------------------------------------------------------------------------------------


def trust_region_step(s: torch.Tensor, Fs: torch.Tensor, delta: float) -> torch.Tensor:
    """Scale a search direction to the edge of the quadratic trust region.

    With the quadratic model :math:`\\bar D_\\mathrm{KL}(\\theta_\\text{old} + \\Delta\\theta)
    \\approx \\tfrac12 \\Delta\\theta^\\top F \\Delta\\theta`, the step
    :math:`\\Delta\\theta = \\beta s` meets :math:`\\tfrac12\\Delta\\theta^\\top F\\Delta\\theta
    = \\delta` for

    .. math::

        \\beta = \\sqrt{\\frac{2\\delta}{s^\\top F s}} .

    Parameters
    ----------
    s : torch.Tensor, shape (n,)
        Search direction (the conjugate-gradient solution of :math:`F s = g`).
    Fs : torch.Tensor, shape (n,)
        :math:`F s` (as returned by the Fisher-vector product, damping included).
    delta : float
        KL radius :math:`\\delta > 0`.

    Returns
    -------
    torch.Tensor, shape (n,)
        :math:`\\Delta\\theta = \\beta s`.

    Raises
    ------
    ValueError
        If ``delta <= 0`` or not finite, ``s`` or ``Fs`` is not a finite 1-D float tensor, their
        shapes differ, or :math:`s^\\top F s \\le 0`.

    Examples
    --------
    >>> import torch
    >>> s = torch.tensor([1.0, 0.0])
    >>> step = trust_region_step(s, Fs=torch.tensor([2.0, 0.0]), delta=0.01)   # s^T F s = 2
    >>> [round(float(x), 4) for x in step]                                     # sqrt(0.02 / 2) = 0.1
    [0.1, 0.0]

    See chapter 9 (trust regions: TRPO and PPO).
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
    """Outcome of :func:`backtracking_line_search`.

    Attributes
    ----------
    theta : torch.Tensor, shape (n,)
        Parameters to use next: the accepted candidate, or ``theta_old`` when rejected.
    accepted : bool
        Whether a candidate passed both tests.
    n_backtracks : int
        :math:`k` of the accepted candidate :math:`\\theta_\\text{old} + \\alpha^k\\Delta\\theta`;
        ``max_backtracks`` when rejected.
    step_fraction : float
        :math:`\\alpha^k` of the accepted candidate; 0.0 when rejected.
    expected_improvement : float
        :math:`\\alpha^k\\, g^\\top \\Delta\\theta`, the first-order prediction for the returned
        ``theta`` (0.0 when rejected).
    actual_improvement : float
        :math:`L(\\theta) - L(\\theta_\\text{old})` for the returned ``theta`` (0.0 when rejected).
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
    """Shrink a proposed step until it satisfies the KL constraint and improves the surrogate.

    Candidates are :math:`\\theta_k = \\theta_\\text{old} + \\alpha^k \\Delta\\theta` for
    :math:`k = 0, 1, \\dots,` ``max_backtracks`` (:math:`\\alpha` = ``shrink``). The first
    candidate with

    .. math::

        \\bar D_\\mathrm{KL}(\\theta_k) \\le \\delta
        \\quad\\text{and}\\quad
        L(\\theta_k) - L(\\theta_\\text{old}) > 0

    is accepted. Both quantities are evaluated exactly on the batch, so the quadratic
    approximation behind :func:`trust_region_step` is checked, not trusted. If no candidate
    passes, the step is rejected and ``theta_old`` is returned. Note that the constraint is on the
    *mean* KL over the batch's states, not on the maximum.

    Parameters
    ----------
    evaluate : callable
        ``evaluate(theta) -> (surrogate, mean_kl, max_kl)`` for a flat parameter vector
        ``theta`` of shape ``(n,)``: the surrogate :math:`L(\\theta)`, and the mean and maximum
        over the batch of :math:`\\mathrm{KL}(\\pi_{\\theta_\\text{old}}(\\cdot|s_i) \\|
        \\pi_\\theta(\\cdot|s_i))`, as floats.
    theta_old : torch.Tensor, shape (n,)
        Current parameters.
    full_step : torch.Tensor, shape (n,)
        Proposed step :math:`\\Delta\\theta` (from :func:`trust_region_step`).
    expected_improvement : float
        First-order prediction for the full step, :math:`g^\\top \\Delta\\theta`.
    delta : float
        KL radius :math:`\\delta > 0`.
    max_backtracks : int, default 10
        Largest :math:`k` tried (``max_backtracks + 1`` candidates in all), at least 0.
    shrink : float, default 0.5
        :math:`\\alpha \\in (0, 1)`.

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
    A quadratic KL :math:`\\tfrac12\\lVert\\theta\\rVert^2` and a linear surrogate: the full step
    has KL 0.02 > 0.01, half of it has KL 0.005, so one backtrack is needed.

    >>> import torch
    >>> g = torch.tensor([1.0, 0.0])
    >>> evaluate = lambda th: (float(g @ th), float(0.5 * th @ th), float(0.5 * th @ th))
    >>> res = backtracking_line_search(evaluate, torch.zeros(2), torch.tensor([0.2, 0.0]),
    ...                                expected_improvement=0.2, delta=0.01)
    >>> res.accepted, res.n_backtracks, round(res.mean_kl, 4)
    (True, 1, 0.005)

    See chapter 9 (trust regions: TRPO and PPO).
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
