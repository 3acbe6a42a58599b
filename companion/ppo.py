r"""Proximal Policy Optimization (PPO, clipped surrogate) in PyTorch.

PPO (Schulman et al. 2017) reuses one batch collected by :math:`\pi_{\theta_\text{old}}` for several
epochs of minibatch gradient steps on the clipped importance-sampled surrogate

.. math::

    L^\text{CLIP}(\theta) = \frac1B \sum_{i=1}^B
        \min\!\big(\rho_i(\theta) \hat A_i,\;
                   \operatorname{clip}(\rho_i(\theta), 1-\epsilon, 1+\epsilon)\, \hat A_i\big),
    \qquad
    \rho_i(\theta) = \exp\big(\log\pi_\theta(a_i \mid s_i) - \log\pi_{\theta_\text{old}}(a_i \mid s_i)\big).

The single ratio :math:`\rho_i` ignores the change in the state distribution, so the surrogate is
only trustworthy while :math:`\pi_\theta` stays close to :math:`\pi_{\theta_\text{old}}`. The clip
does **not** keep :math:`\rho_i` inside :math:`[1-\epsilon, 1+\epsilon]`: it only removes the
gradient that would push :math:`\rho_i` further in the direction the advantage favours. Ratios do
leave the interval (through the shared parameters and the other minibatches); the history below
measures by how much.

Implementation details (each one matters; numbered for reference)
-----------------------------------------------------------------
1. Vectorised environments with next-step autoreset (:func:`companion.rl.make_vec_env`); the reset
   step that follows every episode end is masked out of the loss.
2. Separate tanh MLPs for policy and value with orthogonal initialisation (gain :math:`\sqrt2`,
   policy head 0.01, value head 1) (:class:`companion.rl.ActorCritic`).
3. Generalised advantage estimation with the terminated / truncated distinction: a truncated episode
   bootstraps from the value of its true final observation (:func:`companion.rl.gae`).
4. Advantage normalisation per minibatch (mean 0, standard deviation 1).
5. Several epochs over the batch, reshuffled into minibatches each epoch.
6. Loss :math:`-L^\text{CLIP} + c_v \tfrac12 (V_\phi(s) - \hat R)^2 - c_e \mathcal H(\pi_\theta)`
   (value loss and entropy bonus), one Adam optimiser over both networks.
7. Global gradient clipping: all gradients are rescaled together so that their joint
   :math:`\ell_2` norm is at most ``max_grad_norm``.
8. Linear annealing of the learning rate (and optionally of :math:`\epsilon`) to zero over the
   planned number of updates.
9. Rollouts under ``torch.inference_mode``; values of the whole rollout in one forward pass.

PPO history keys
----------------
:func:`train_ppo` (alias ``companion.ppo.train``) returns a :class:`PPOHistory`: a list with one dict per update and a
``.to_dict_of_arrays()`` method. Every diagnostic of the optimisation phase is aggregated over the
**whole update**: all epochs and all minibatches, i.e. over the multiset of
:math:`K = (\text{epochs}) \times (\text{valid transitions})` minibatch evaluations
:math:`(\rho_k, \hat A_k)`, where :math:`\rho_k` is the ratio at the moment that minibatch was
used (before its gradient step) and :math:`\hat A_k` the (normalised) advantage it was weighted by.

``update``
    index of the update, 0, 1, 2, ...
``env_steps``
    environment steps so far: ``num_envs * num_steps * (update + 1)``. This counts every call to
    ``step`` in every copy, including the reset step after each episode end, so it slightly
    over-counts real transitions.
``wall_time``
    seconds of training since :func:`train_ppo` was called (``time.perf_counter``), at the end of this
    update, **excluding** time spent in evaluation and in the callback.
``learning_rate``, ``clip_eps``
    the values used in this update (after annealing); ``clip_eps`` is nan for the unclipped
    surrogate.
``approx_kl_k1``
    :math:`\frac1K\sum_k (-\log\rho_k)`, an unbiased but noisy estimate of
    :math:`\mathrm{KL}(\pi_{\theta_\text{old}} \| \pi_\theta)` (it can be negative).
``approx_kl_k3``
    :math:`\frac1K\sum_k \big((\rho_k - 1) - \log\rho_k\big)`, unbiased and never negative.
``clip_fraction``
    :math:`\frac1K\sum_k \mathbb 1\{|\rho_k - 1| > \epsilon\}`, the fraction of ratios outside the
    interval (0 for the unclipped surrogate).
``clip_active_fraction``
    :math:`\frac1K\sum_k \mathbb 1\{(\rho_k > 1+\epsilon \wedge \hat A_k > 0) \vee
    (\rho_k < 1-\epsilon \wedge \hat A_k < 0)\}`, where the clip binds and the sample contributes
    zero gradient.
``ratio_min``, ``ratio_max``, ``ratio_mean``
    :math:`\min_k \rho_k`, :math:`\max_k \rho_k`, :math:`\frac1K\sum_k\rho_k`.
``ratio_q05``, ``ratio_q25``, ``ratio_q50``, ``ratio_q75``, ``ratio_q95``
    empirical quantiles (linear interpolation) of :math:`\{\rho_k\}`.
``ratio_sample``
    a float32 array of at most ``ratio_sample_size`` ratios drawn uniformly without replacement
    from :math:`\{\rho_k\}` (by a generator separate from training), for histograms.
``kl_final``
    exact :math:`\frac1B\sum_{i}\mathrm{KL}(\pi_{\theta_\text{old}}(\cdot|s_i) \|
    \pi_{\theta_\text{new}}(\cdot|s_i))` over the batch states after the last epoch.
``policy_loss``
    :math:`\frac1M\sum_m (-L^\text{CLIP}_m)`, mean over the :math:`M` minibatch steps of the update.
``value_loss``
    :math:`\frac1M\sum_m \frac{1}{2|b_m|}\sum_{i\in b_m}(V_\phi(s_i) - \hat R_i)^2`.
``entropy``
    :math:`\frac1M\sum_m \frac{1}{|b_m|}\sum_{i\in b_m}\mathcal H(\pi_\theta(\cdot|s_i))`.
``loss``
    :math:`\frac1M\sum_m \big(\text{policy loss} + c_v\,\text{value loss} - c_e\,\text{entropy}\big)_m`.
``grad_norm``
    mean over the minibatch steps of the global gradient norm before clipping.
``n_minibatch_steps``
    :math:`M` (smaller than ``update_epochs * num_minibatches`` only when ``target_kl`` stopped
    the epochs early).
``explained_variance``
    :math:`1 - \operatorname{Var}[\hat R - V_{\phi_\text{old}}] / \operatorname{Var}[\hat R]` over the
    valid transitions of the batch, with the values predicted during the rollout (nan if
    :math:`\operatorname{Var}[\hat R] = 0`). 1 is perfect, 0 no better than a constant.
``episode_return``, ``episodes``
    mean undiscounted return of the training episodes that ended during this rollout (nan if none),
    and how many ended.
``eval_return``, ``eval_return_std``
    mean and standard deviation of :func:`companion.rl.evaluate_policy` when an evaluation ran after
    this update (``eval_every``), nan otherwise.

See chapter 6 (PPO).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from .rl import ActorCritic, _UpdateEnd, gae, make_vec_env, sample_categorical

# ``gae`` is importable from here too (``from companion.ppo import gae``) but documented in
# companion.rl, where it lives.
__all__ = ["clipped_surrogate", "PPOConfig", "PPOHistory", "train_ppo"]


# --------------------------------------------------------------------------------------------------
# the loss
# --------------------------------------------------------------------------------------------------
def _check_clip_eps(clip_eps):
    if clip_eps is None:
        return None
    if isinstance(clip_eps, bool) or not isinstance(clip_eps, (int, float, np.floating)):
        raise ValueError(f"clip_eps must be a float in (0, 1) or None, got {clip_eps!r}")
    if not (0.0 < float(clip_eps) < 1.0):
        raise ValueError(f"clip_eps must lie in (0, 1) or be None, got {clip_eps!r}")
    return float(clip_eps)


def _ratio_diagnostics(log_ratio: torch.Tensor, advantages: torch.Tensor, clip_eps):
    """Diagnostics of a set of log ratios (floats). Formulas: module docstring."""
    with torch.no_grad():
        log_ratio = log_ratio.detach().double()
        ratio = log_ratio.exp()
        adv = advantages.detach()
        out = {
            "approx_kl_k1": float((-log_ratio).mean()),
            "approx_kl_k3": float(((ratio - 1.0) - log_ratio).mean()),
        }
        if clip_eps is None:
            out["clip_fraction"] = 0.0
            out["clip_active_fraction"] = 0.0
        else:
            out["clip_fraction"] = float(((ratio - 1.0).abs() > clip_eps).double().mean())
            active = ((ratio > 1.0 + clip_eps) & (adv > 0)) | ((ratio < 1.0 - clip_eps) & (adv < 0))
            out["clip_active_fraction"] = float(active.double().mean())
        out["ratio_min"] = float(ratio.min())
        out["ratio_max"] = float(ratio.max())
        out["ratio_mean"] = float(ratio.mean())
    return out


def _surrogate_loss(log_ratio, advantages, clip_eps):
    ratio = log_ratio.exp()
    surr = ratio * advantages
    if clip_eps is None:
        return -surr.mean()
    clipped = ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps) * advantages
    return -torch.minimum(surr, clipped).mean()


def clipped_surrogate(log_ratio: torch.Tensor, advantages: torch.Tensor, clip_eps: float | None):
    r"""PPO's clipped surrogate loss and its diagnostics.

    .. math::

        \ell(\theta) = -\frac1B \sum_{i=1}^B \min\!\big(\rho_i \hat A_i,\;
            \operatorname{clip}(\rho_i, 1-\epsilon, 1+\epsilon)\, \hat A_i\big),
        \qquad \rho_i = e^{\log\rho_i}.

    With ``clip_eps=None`` it is the plain importance-sampled surrogate
    :math:`-\frac1B\sum_i \rho_i \hat A_i`. The gradient with respect to :math:`\rho_i` is
    exactly zero where the clip binds in the direction the advantage favours
    (:math:`\rho_i > 1+\epsilon` with :math:`\hat A_i > 0`, or :math:`\rho_i < 1-\epsilon` with
    :math:`\hat A_i < 0`) and :math:`-\hat A_i / B` everywhere else, including ratios outside the
    interval on the unfavourable side: the clip is a one-sided brake, not a bound on
    :math:`\rho_i`.

    Parameters
    ----------
    log_ratio : torch.Tensor, shape (B,)
        :math:`\log\pi_\theta(a_i|s_i) - \log\pi_{\theta_\text{old}}(a_i|s_i)`, differentiable
        in :math:`\theta`.
    advantages : torch.Tensor, shape (B,)
        :math:`\hat A_i` (already normalised if desired); treated as constants.
    clip_eps : float in (0, 1) or None
        :math:`\epsilon`; None for the unclipped surrogate.

    Returns
    -------
    loss : torch.Tensor
        Scalar :math:`\ell(\theta)`, to be minimised.
    info : dict of float
        ``approx_kl_k1``, ``approx_kl_k3``, ``clip_fraction``, ``clip_active_fraction``,
        ``ratio_min``, ``ratio_max``, ``ratio_mean`` over this batch (formulas in the module
        docstring).

    Raises
    ------
    ValueError
        If the inputs are not 1-D tensors of the same non-zero length, contain NaN or inf (naming
        the index), or ``clip_eps`` is not in (0, 1) or None.

    Examples
    --------
    >>> log_ratio = torch.log(torch.tensor([0.5, 1.0, 1.5, 1.5]))
    >>> adv = torch.tensor([1.0, 1.0, 1.0, -1.0])
    >>> loss, info = clipped_surrogate(log_ratio, adv, clip_eps=0.2)
    >>> round(loss.item(), 4)   # -(0.5 + 1.0 + 1.2 - 1.5) / 4
    -0.3
    >>> info["clip_fraction"], info["clip_active_fraction"]
    (0.75, 0.25)

    See chapter 6 (PPO), the clipped surrogate.
    """
    clip_eps = _check_clip_eps(clip_eps)
    for name, x in (("log_ratio", log_ratio), ("advantages", advantages)):
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim != 1 or x.numel() == 0:
            raise ValueError(f"{name} must be a non-empty 1-D tensor, got shape {tuple(x.shape)}")
        bad = ~torch.isfinite(x.detach())
        if bad.any():
            raise ValueError(f"{name} has a non-finite value at index {int(bad.nonzero()[0, 0])}")
    if log_ratio.shape != advantages.shape:
        raise ValueError(
            f"advantages must have the shape of log_ratio {tuple(log_ratio.shape)}, "
            f"got {tuple(advantages.shape)}"
        )
    advantages = advantages.detach()
    loss = _surrogate_loss(log_ratio, advantages, clip_eps)
    return loss, _ratio_diagnostics(log_ratio, advantages, clip_eps)


# --------------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------------
@dataclass
class PPOConfig:
    """Hyperparameters of :func:`train_ppo`; the defaults are tuned for CartPole-v1.

    With the defaults, CartPole-v1 reaches a deterministic evaluation return of 475 after a
    median of about 18,000 environment steps (a few seconds of one CPU thread), and stays there at
    the end of the 100,000-step budget (benchmarks/ppo_cartpole.py). They follow the
    rl-baselines3-zoo CartPole settings (gamma 0.98, lambda 0.8, annealed learning rate and clip),
    with a larger batch from more environment copies and fewer gradient steps per environment
    step: 20 Adam steps per 512 transitions instead of 20 per 256. In the tuning runs the two
    choices that mattered most for *staying* solved were a 64-unit network and an initial
    learning rate of at most 1.5e-3; 32 units or 2e-3 solved as fast but ended some seeds below 475.
    The "usual range" is what practitioners use across classic-control, MuJoCo and Atari tasks.

    See chapter 6 (PPO) for the role of each.
    """

    total_timesteps: int = 100_000
    """Environment-step budget; training runs ``ceil(total_timesteps / batch)`` updates with
    ``batch = num_envs * num_steps``. Usual range: 1e5 (CartPole) to 1e7 (Atari)."""

    num_envs: int = 16
    """Parallel environment copies. Usual range 1 to 64; more copies give decorrelated data and
    cheaper steps (one vectorised numpy call steps them all)."""

    num_steps: int = 32
    """Steps collected per copy per update (rollout length T). Usual range 32 to 2048; the batch
    is ``num_envs * num_steps``."""

    update_epochs: int = 10
    """Passes over each batch. Usual range 3 to 20; more epochs reuse data harder and move the
    policy further from the one that collected it (larger ratios)."""

    num_minibatches: int = 2
    """Minibatches per epoch. Usual range 1 to 32; each epoch is a random partition of the batch."""

    learning_rate: float = 1.5e-3
    """Adam step size at the start. Usual range 1e-4 to 3e-3."""

    anneal_lr: bool = True
    """Decay the step size linearly to 0 over the planned updates: ``lr * (1 - k / n_updates)``
    at update k."""

    gamma: float = 0.98
    """Discount factor. Usual range 0.95 to 0.999."""

    lam: float = 0.8
    """GAE lambda. Usual range 0.8 to 0.98; lower trades variance for bias."""

    clip_eps: float | None = 0.2
    """PPO clip epsilon (its initial value when ``anneal_clip``). Usual range 0.1 to 0.3. None: the
    unclipped importance-sampled surrogate (an ablation: nothing then limits how far the epochs
    push the ratios)."""

    anneal_clip: bool = True
    """Decay ``clip_eps`` linearly to 0 like the learning rate (rl-baselines3-zoo's ``lin_0.2``).
    Set False for a fixed interval, e.g. when studying how often ratios leave it."""

    norm_adv: bool = True
    """Normalise advantages to mean 0, standard deviation 1 within each minibatch."""

    ent_coef: float = 0.0
    """Weight of the entropy bonus. Usual range 0 to 0.01."""

    vf_coef: float = 0.5
    """Weight of the value loss. Usual range 0.25 to 1."""

    max_grad_norm: float = 0.5
    """Global gradient-norm clip over both networks. Usual range 0.5 to 10."""

    hidden: int | tuple[int, ...] = 64
    """Hidden widths of both MLPs (int: two layers of that width). Usual range 32 to 256."""

    adam_eps: float = 1e-5
    """Adam's epsilon (1e-5 as in the reference implementations; PyTorch's default is 1e-8)."""

    target_kl: float | None = None
    """If set, stop the epochs of an update early once the epoch's mean k3 KL estimate exceeds
    it. Usual values 0.01 to 0.05; None disables."""

    eval_every: int = 0
    """Evaluate the deterministic policy after the first update at or beyond every multiple of
    this many environment steps (0: never). Evaluation time is excluded from ``wall_time``."""

    eval_episodes: int = 10
    """Episodes per evaluation (:func:`companion.rl.evaluate_policy`)."""

    stop_return: float | None = None
    """If set (with ``eval_every``), stop training at the first evaluation whose mean return
    reaches it (e.g. 475 for CartPole-v1)."""

    ratio_sample_size: int = 1000
    """How many raw ratios to keep per update in ``ratio_sample`` (for histograms); 0 keeps none."""

    def __post_init__(self):
        for name in ("total_timesteps", "num_envs", "num_steps", "update_epochs",
                     "num_minibatches", "eval_episodes"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        for name in ("eval_every", "ratio_sample_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {v!r}")
        if self.num_minibatches > self.num_envs * self.num_steps:
            raise ValueError(
                f"num_minibatches ({self.num_minibatches}) must not exceed the batch size "
                f"num_envs * num_steps ({self.num_envs * self.num_steps})"
            )
        for name in ("gamma", "lam"):
            v = float(getattr(self, name))
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {v!r}")
        _check_clip_eps(self.clip_eps)
        for name in ("learning_rate", "max_grad_norm", "adam_eps"):
            v = float(getattr(self, name))
            if not (v > 0.0 and math.isfinite(v)):
                raise ValueError(f"{name} must be a positive finite number, got {v!r}")
        for name in ("ent_coef", "vf_coef"):
            v = float(getattr(self, name))
            if not (v >= 0.0 and math.isfinite(v)):
                raise ValueError(f"{name} must be a non-negative finite number, got {v!r}")
        if self.target_kl is not None and not float(self.target_kl) > 0.0:
            raise ValueError(f"target_kl must be positive or None, got {self.target_kl!r}")
        if self.stop_return is not None and self.eval_every == 0:
            raise ValueError("stop_return needs eval_every > 0 (it is checked at evaluations)")


class PPOHistory(list):
    """One dict per update (keys and formulas in the :mod:`companion.ppo` docstring)."""

    def to_dict_of_arrays(self) -> dict:
        """Scalar keys as 1-D numpy arrays over updates; ``ratio_sample`` as a list of arrays."""
        if not self:
            return {}
        out = {}
        for key in self[0]:
            values = [rec[key] for rec in self]
            if key == "ratio_sample":
                out[key] = values
            else:
                out[key] = np.asarray(values)
        return out


# --------------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------------
def _explained_variance(values: np.ndarray, returns: np.ndarray) -> float:
    var = returns.var()
    if var == 0:
        return float("nan")
    return float(1.0 - (returns - values).var() / var)


def _clip_global_grad_norm(params, max_norm):
    """Rescale all gradients together so that their joint l2 norm is at most ``max_norm``.

    Same result as ``torch.nn.utils.clip_grad_norm_`` (norm of the concatenated gradients,
    coefficient ``max_norm / (norm + 1e-6)`` capped at 1), with less overhead for small networks.
    Returns the norm before clipping.
    """
    grads = [p.grad for p in params if p.grad is not None]
    total = torch.linalg.vector_norm(torch.cat([g.reshape(-1) for g in grads]))
    coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
    torch._foreach_mul_(grads, coef)  # one call instead of a Python loop over the tensors
    return total


def train_ppo(env_id: str = "CartPole-v1", config: PPOConfig | None = None, seed: int = 0,
              progress: bool = True,
              callback: Callable[[dict, ActorCritic], bool | None] | None = None):
    r"""Train a categorical PPO agent on a discrete-action gymnasium environment.

    Each update collects ``num_steps`` steps from ``num_envs`` copies with
    :math:`\pi_{\theta_\text{old}}`, computes GAE advantages and returns, and then takes
    ``update_epochs * num_minibatches`` Adam steps on

    .. math::

        \ell = -L^\text{CLIP}(\theta) + c_v\,\tfrac12\big(V_\phi(s) - \hat R\big)^2
               - c_e\,\mathcal H\big(\pi_\theta(\cdot\mid s)\big)

    (averaged over the minibatch), with the details listed in the module docstring. Also available
    as ``companion.ppo.train``.

    Parameters
    ----------
    env_id : str, default "CartPole-v1"
        Gymnasium id of an environment with a flat ``Box`` observation space and a ``Discrete``
        action space.
    config : PPOConfig or None
        Hyperparameters; None uses ``PPOConfig()``.
    seed : int, default 0
        Seeds the network initialisation, action sampling and minibatch shuffling (private
        ``torch.Generator``) and the environments. Global random state is not touched.
    progress : bool, default True
        Show a ``tqdm.auto`` progress bar over environment steps.
    callback : callable or None
        ``callback(record, policy)`` after every update (and its evaluation); return True to stop.
        Its run time is excluded from ``wall_time``.

    Returns
    -------
    policy : ActorCritic
        The trained network (in eval mode).
    history : PPOHistory
        One dict per update; keys and formulas in the module docstring.

    Raises
    ------
    ValueError
        If ``config`` is not a PPOConfig, ``seed`` is not an integer, or the environment does not
        have a flat Box observation space and a Discrete action space.

    Examples
    --------
    >>> cfg = PPOConfig(total_timesteps=1024, num_envs=4, num_steps=64, update_epochs=2)
    >>> policy, history = train_ppo("CartPole-v1", cfg, seed=0, progress=False)
    >>> len(history), history[-1]["env_steps"]
    (4, 1024)
    >>> sorted(k for k in history[0] if k.startswith("approx_kl"))
    ['approx_kl_k1', 'approx_kl_k3']

    See chapter 6 (PPO).
    """
    t_start = time.perf_counter()
    cfg = PPOConfig() if config is None else config
    if not isinstance(cfg, PPOConfig):
        raise ValueError(f"config must be a PPOConfig or None, got {type(cfg).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    seed = int(seed)

    env = make_vec_env(env_id, cfg.num_envs, seed)
    try:
        return _train(env, env_id, cfg, seed, progress, callback, t_start)
    finally:
        env.close()


def _train(env, env_id, cfg, seed, progress, callback, t_start):
    import gymnasium as gym

    obs_space, act_space = env.single_observation_space, env.single_action_space
    if not isinstance(act_space, gym.spaces.Discrete):
        raise ValueError(f"env_id {env_id!r} must have a Discrete action space, got {act_space}")
    if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
        raise ValueError(f"env_id {env_id!r} must have a flat Box observation space, got {obs_space}")

    N, T = cfg.num_envs, cfg.num_steps
    obs_dim, n_actions = obs_space.shape[0], int(act_space.n)
    batch = N * T
    n_updates = math.ceil(cfg.total_timesteps / batch)
    gen = torch.Generator().manual_seed(seed)
    sample_rng = np.random.default_rng([seed, 1])

    policy = ActorCritic(obs_dim, n_actions, hidden=cfg.hidden, seed=seed)
    actor, critic = policy.actor, policy.critic
    params = list(policy.parameters())
    try:  # the fused CPU kernel is about three times cheaper than the per-tensor loop
        optimizer = torch.optim.Adam(params, lr=cfg.learning_rate, eps=cfg.adam_eps, fused=True)
    except (RuntimeError, TypeError):
        optimizer = torch.optim.Adam(params, lr=cfg.learning_rate, eps=cfg.adam_eps)

    obs_buf = np.zeros((T + 1, N, obs_dim), dtype=np.float32)
    act_buf = np.zeros((T, N), dtype=np.int64)
    rew_buf = np.zeros((T, N), dtype=np.float64)
    term_buf = np.zeros((T, N), dtype=bool)
    trunc_buf = np.zeros((T, N), dtype=bool)
    valid_buf = np.zeros((T, N), dtype=bool)
    logits_buf = torch.zeros((T, N, n_actions))

    obs, _ = env.reset()
    prev_done = np.zeros(N, dtype=bool)  # the next step of these copies is a reset step
    ep_return = np.zeros(N)
    history = PPOHistory()
    end_update = _UpdateEnd(env_id, cfg.eval_every, cfg.eval_episodes, cfg.stop_return, seed,
                            callback)
    bar = tqdm(total=n_updates * batch, disable=not progress, unit="step", desc=f"PPO {env_id}")

    try:
        for update in range(n_updates):
            frac = 1.0 - update / n_updates
            lr = cfg.learning_rate * (frac if cfg.anneal_lr else 1.0)
            for group in optimizer.param_groups:
                group["lr"] = lr
            clip_eps = cfg.clip_eps
            if clip_eps is not None and cfg.anneal_clip:
                clip_eps = clip_eps * frac

            # ---- 1. rollout with pi_old ----------------------------------------------------------
            finished = []
            with torch.inference_mode():
                for t in range(T):
                    obs_buf[t] = obs
                    valid_buf[t] = ~prev_done
                    logits = actor(torch.from_numpy(obs_buf[t]))
                    logits_buf[t] = logits
                    action = sample_categorical(logits, gen).numpy()
                    act_buf[t] = action
                    obs, reward, terminated, truncated, _ = env.step(action)
                    rew_buf[t] = reward
                    term_buf[t] = terminated
                    trunc_buf[t] = truncated
                    prev_done = terminated | truncated
                    ep_return += reward
                    if prev_done.any():
                        finished.extend(ep_return[prev_done].tolist())
                        ep_return[prev_done] = 0.0
                obs_buf[T] = obs
                all_obs = torch.from_numpy(obs_buf)
                values = critic(all_obs.reshape(-1, obs_dim)).reshape(T + 1, N).numpy()
                logp_all = torch.log_softmax(logits_buf, dim=-1)
                old_logp = logp_all.gather(-1, torch.from_numpy(act_buf)[..., None]).squeeze(-1)

            # ---- 2. advantages (GAE; truncation bootstraps from V(final obs) = values[t+1]) ------
            adv, ret = gae(rew_buf, values[:T], term_buf | trunc_buf, trunc_buf, values[T],
                           cfg.gamma, cfg.lam)
            valid = valid_buf.reshape(-1)
            idx = np.flatnonzero(valid)
            b_obs = all_obs[:T].reshape(-1, obs_dim)[idx]
            b_act = torch.from_numpy(act_buf.reshape(-1)[idx])
            b_logp = old_logp.reshape(-1)[idx].clone()
            b_adv = torch.from_numpy(adv.reshape(-1)[idx]).float()
            b_ret = torch.from_numpy(ret.reshape(-1)[idx]).float()
            explained_var = _explained_variance(values[:T].reshape(-1)[idx], ret.reshape(-1)[idx])
            old_logits = logits_buf.reshape(-1, n_actions)[idx].clone()

            # ---- 3. epochs of minibatch steps ------------------------------------------------------
            M = idx.size
            mb_size = math.ceil(M / cfg.num_minibatches)
            log_ratios, used_adv = [], []
            loss_keys = ("policy_loss", "value_loss", "entropy", "loss", "grad_norm")
            sums = torch.zeros(len(loss_keys), dtype=torch.float64)
            n_steps = 0
            for _epoch in range(cfg.update_epochs):
                if cfg.num_minibatches == 1:  # one full-batch step: the order is irrelevant
                    minibatches = [slice(None)]
                else:
                    minibatches = torch.randperm(M, generator=gen).split(mb_size)
                epoch_lr = []
                for mb in minibatches:
                    mb_obs = b_obs[mb]
                    logp_all = torch.log_softmax(actor(mb_obs), dim=-1)
                    new_logp = logp_all.gather(1, b_act[mb].unsqueeze(1)).squeeze(1)
                    # without an entropy bonus the entropy is a diagnostic only: no graph needed
                    lp = logp_all if cfg.ent_coef > 0 else logp_all.detach()
                    entropy = -(lp.exp() * lp).sum(-1).mean()
                    log_ratio = new_logp - b_logp[mb]
                    mb_adv = b_adv[mb]
                    if cfg.norm_adv and mb_adv.numel() > 1:
                        mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)
                    pg_loss = _surrogate_loss(log_ratio, mb_adv, clip_eps)
                    v_loss = 0.5 * (critic(mb_obs).squeeze(-1) - b_ret[mb]).pow(2).mean()
                    loss = pg_loss + cfg.vf_coef * v_loss - cfg.ent_coef * entropy

                    for p in params:  # = optimizer.zero_grad(), without its profiling hooks
                        p.grad = None
                    loss.backward()
                    grad_norm = _clip_global_grad_norm(params, cfg.max_grad_norm)
                    optimizer.step()

                    log_ratios.append(log_ratio.detach())
                    used_adv.append(mb_adv.detach())
                    epoch_lr.append(log_ratio.detach())
                    sums += torch.stack([pg_loss, v_loss, entropy, loss, grad_norm]).detach()
                    n_steps += 1
                if cfg.target_kl is not None:
                    lr_e = torch.cat(epoch_lr)
                    if float(((lr_e.exp() - 1.0) - lr_e).mean()) > cfg.target_kl:
                        break

            # ---- 4. diagnostics over the whole update ---------------------------------------------
            all_lr = torch.cat(log_ratios)
            diag = _ratio_diagnostics(all_lr, torch.cat(used_adv), clip_eps)
            ratios = all_lr.double().exp().numpy()
            q = np.quantile(ratios, [0.05, 0.25, 0.5, 0.75, 0.95])
            k = min(cfg.ratio_sample_size, ratios.size)
            sample = sample_rng.choice(ratios, size=k, replace=False).astype(np.float32)
            with torch.no_grad():
                new_logp_all = torch.log_softmax(actor(b_obs), dim=-1)
                old_lp = torch.log_softmax(old_logits, dim=-1)
                kl_final = float((old_lp.exp() * (old_lp - new_logp_all)).sum(-1).mean())

            now = time.perf_counter()
            record = {
                "update": update,
                "env_steps": (update + 1) * batch,
                "wall_time": now - t_start - end_update.excluded,
                "learning_rate": lr,
                "clip_eps": float("nan") if clip_eps is None else clip_eps,
                **diag,
                "ratio_q05": float(q[0]), "ratio_q25": float(q[1]), "ratio_q50": float(q[2]),
                "ratio_q75": float(q[3]), "ratio_q95": float(q[4]),
                "ratio_sample": sample,
                "kl_final": kl_final,
                **{key: float(val) / n_steps for key, val in zip(loss_keys, sums.tolist(), strict=True)},
                "n_minibatch_steps": n_steps,
                "explained_variance": explained_var,
                "episode_return": float(np.mean(finished)) if finished else float("nan"),
                "episodes": len(finished),
                "eval_return": float("nan"),
                "eval_return_std": float("nan"),
            }
            bar.update(batch)

            # ---- 5. evaluation and callback (excluded from wall_time) -----------------------------
            stop = end_update(record, policy, history, bar)
            if stop:
                break
    finally:
        bar.close()
    policy.eval()
    return policy, history


train = train_ppo
"""Alias of :func:`train_ppo`, so that ``companion.ppo.train`` reads like ``companion.trpo.train``."""
