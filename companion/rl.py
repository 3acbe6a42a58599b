r"""Shared deep-RL pieces for the PPO and TRPO chapters.

This module holds what both trust-region style trainers need and nothing algorithm specific, so that
each convention lives in one place:

- :func:`make_vec_env` builds a vectorised gymnasium environment with **next-step autoreset**
  (described below), using gymnasium's numpy-vectorised implementation when the environment has one
  (CartPole-v1 does) and a synchronous vector of copies otherwise.
- :class:`ActorCritic` is the policy :math:`\pi_\theta(a \mid s)` (a categorical distribution over
  discrete actions) and the value function :math:`V_\phi(s)`, two separate tanh MLPs with
  orthogonal initialisation; :class:`GaussianActorCritic` is the same for continuous (``Box``)
  actions, a diagonal Gaussian policy with a state-independent log standard deviation and, when
  asked, observation normalisation by :class:`RunningMeanStd`. The trainers only use a policy's
  ``distribution`` (a ``torch.distributions`` object: ``log_prob``, ``entropy``,
  ``kl_divergence``), ``value``, ``act`` and ``actor`` (the policy's parameters), and
  :func:`make_actor_critic` is the one place that picks the class from the action space.
- :class:`RolloutCollector` steps the environment copies with a policy and returns a
  :class:`Rollout`: observations, actions, rewards, gymnasium's ``terminated`` and ``truncated``
  flags, the mask of real transitions, and the returns of the episodes that ended.
- :func:`gae` computes generalised advantage estimates and value targets from a rollout, on
  gymnasium's terms: a *terminated* episode has no future value, a *truncated* one bootstraps from
  the value of its true final observation.
- :func:`evaluate_policy` runs a policy for a number of episodes and reports the mean and standard
  deviation of the undiscounted return; :func:`explained_variance` scores a value function.
- :class:`History` is what the trainers return: one dict per update.

The trainers also share some plumbing, importable from here but not re-exported by ``companion``:
``TrainingClock`` (wall-clock time with evaluations and callbacks taken out),
``EvaluationSchedule`` (an evaluation every so many environment steps), and
``check_env_spaces`` and ``check_common_config`` (the checks of the environment and of the
configuration fields that PPO and TRPO share).

Continuous actions
------------------
For a ``Box`` action space the policy's sample :math:`a` is stored in the rollout as drawn, and
the log-probability, the importance ratio and the KL are those of this unclipped sample. Only
the action *sent to the environment* is clipped to the bounds, :math:`\operatorname{clip}(a,
\text{low}, \text{high})` (:func:`env_action`), in :class:`RolloutCollector` and
:func:`evaluate_policy` alike. Clipping inside the policy would put a point mass on each bound,
where the Gaussian density is not defined.

Autoreset convention
--------------------
Every environment returned by :func:`make_vec_env` uses gymnasium's ``AutoresetMode.NEXT_STEP``:
when sub-environment ``i`` ends an episode at step ``t`` (``terminated[i] or truncated[i]``), the
observation returned at ``t`` is the **true final observation** of that episode. The *next* call to
``step`` ignores the action for ``i``, resets it, and returns the first observation of a new episode
with reward 0 and ``terminated = truncated = False``. That extra call is not a transition of the MDP;
:class:`RolloutCollector` marks it ``valid = False`` and the trainers drop it from every loss and
statistic. In exchange, the value of the final observation of a truncated episode is simply the
value of the next observation in the rollout, which is what :func:`gae` uses.

Gymnasium sets ``terminated`` and ``truncated`` independently: CartPole's pole can fall on the
500th step, which is also the time limit, and then both are true. Such a step is terminal: the
episode has no future to bootstrap from.

Used in :doc:`/book/ppo`, :doc:`/book/trpo`, :doc:`/book/continuous_actions` and the ``ppo`` assignment.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from torch import nn

from ._validation import (
    as_float_array,
    check_finite,
    check_int,
    check_positive,
    check_real,
    check_rollout_array,
    check_same_shape,
    check_unit_interval,
)

__all__ = [
    "ActorCritic",
    "GaussianActorCritic",
    "RunningMeanStd",
    "make_actor_critic",
    "env_action",
    "make_vec_env",
    "Rollout",
    "RolloutCollector",
    "gae",
    "explained_variance",
    "evaluate_policy",
    "History",
]


# --------------------------------------------------------------------------------------------------
# environments
# --------------------------------------------------------------------------------------------------
def make_vec_env(env_id: str, num_envs: int, seed: int = 0) -> gym.vector.VectorEnv:
    """Build a seeded vectorised gymnasium environment with next-step autoreset.

    Uses ``gym.make_vec(env_id, num_envs, vectorization_mode="vector_entry_point")`` when the
    environment registers a natively vectorised implementation with next-step autoreset (CartPole-v1
    does: all copies are stepped by one numpy computation), and ``vectorization_mode="sync"``
    otherwise. Either way the autoreset mode is ``AutoresetMode.NEXT_STEP`` (see the module
    docstring): the observation returned with ``terminated`` or ``truncated`` is the true final
    observation, and the following step is a reset step to be masked out of any loss.

    The environment is reset once with ``seed`` before it is returned, so a later ``env.reset()``
    without a seed continues a reproducible random stream. The action space is seeded too.

    Parameters
    ----------
    env_id : str
        A registered gymnasium id, e.g. ``"CartPole-v1"``.
    num_envs : int
        Number of parallel copies, at least 1.
    seed : int, default 0
        Seed for the environments' random number generator.

    Returns
    -------
    gymnasium.vector.VectorEnv
        Observations have shape ``(num_envs, obs_dim)``; ``metadata["autoreset_mode"]`` is
        ``AutoresetMode.NEXT_STEP``.

    Raises
    ------
    ValueError
        If ``num_envs`` is not a positive integer, ``seed`` is not an integer, or ``env_id`` is
        not registered.

    Examples
    --------
    >>> env = make_vec_env("CartPole-v1", num_envs=4, seed=0)
    >>> obs, _ = env.reset()
    >>> obs.shape
    (4, 4)
    >>> env.metadata["autoreset_mode"].name
    'NEXT_STEP'
    >>> env.close()

    Used in :doc:`/book/trpo`.
    """
    num_envs = check_int(num_envs, "num_envs")
    seed = check_int(seed, "seed", low=0)
    try:
        spec = gym.spec(env_id)
    except gym.error.Error as err:
        raise ValueError(f"env_id: {env_id!r} is not a registered gymnasium environment") from err
    env = None
    if getattr(spec, "vector_entry_point", None) is not None:
        env = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point")
        if env.metadata.get("autoreset_mode") != AutoresetMode.NEXT_STEP:
            env.close()
            env = None
    if env is None:
        env = gym.make_vec(
            env_id,
            num_envs=num_envs,
            vectorization_mode="sync",
            vector_kwargs={"autoreset_mode": AutoresetMode.NEXT_STEP},
        )
    env.reset(seed=seed)
    env.action_space.seed(seed)
    return env


# --------------------------------------------------------------------------------------------------
# the network
# --------------------------------------------------------------------------------------------------
def _mlp(sizes: Sequence[int], out_gain: float) -> nn.Sequential:
    """tanh MLP; orthogonal weights (gain sqrt 2, last layer ``out_gain``) and zero biases."""
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        last = i == len(sizes) - 2
        linear = nn.Linear(n_in, n_out)
        nn.init.orthogonal_(linear.weight, gain=out_gain if last else math.sqrt(2.0))
        nn.init.zeros_(linear.bias)
        layers.append(linear)
        if not last:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


def _actor_and_critic(obs_dim: int, widths: tuple[int, ...], out_dim: int,
                      seed: int | None) -> tuple[nn.Sequential, nn.Sequential]:
    """The actor MLP (``out_dim`` outputs, last-layer gain 0.01) and the critic MLP (one output,
    gain 1), initialised from ``seed`` (when given) without touching torch's global random state."""
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        actor = _mlp((obs_dim, *widths, out_dim), out_gain=0.01)
        critic = _mlp((obs_dim, *widths, 1), out_gain=1.0)
    return actor, critic


class ActorCritic(nn.Module):
    r"""Categorical policy and state-value function as two separate tanh MLPs.

    .. math::

        \pi_\theta(\cdot \mid s) = \operatorname{softmax}\big(f_\theta(s)\big), \qquad
        V_\phi(s) = g_\phi(s),

    where :math:`f_\theta` and :math:`g_\phi` are MLPs with tanh hidden layers that share no
    parameters. Weights are initialised orthogonally with gain :math:`\sqrt 2` in the hidden layers,
    0.01 in the policy head (so the initial policy is almost uniform) and 1 in the value head; all
    biases start at zero.

    Parameters
    ----------
    obs_dim : int
        Size of the (flat) observation vector.
    n_actions : int
        Number of discrete actions.
    hidden : int or sequence of int, default 64
        Hidden layer widths. An int ``h`` means two hidden layers of width ``h``.
    seed : int or None, default None
        Seed of the initialisation. It is drawn inside ``torch.random.fork_rng()``, so torch's
        global random state is the same afterwards. ``None`` draws from (and advances) the global
        state.
    norm_obs : bool, default False
        Normalise observations by a :class:`RunningMeanStd` (attribute ``obs_norm``, None when
        False) before both networks; the trainers update its statistics.

    Raises
    ------
    ValueError
        If ``obs_dim``, ``n_actions`` or a hidden width is not a positive integer.

    Examples
    --------
    >>> net = ActorCritic(obs_dim=4, n_actions=2, hidden=16, seed=0)
    >>> obs = torch.zeros(3, 4)
    >>> net.distribution(obs).probs.shape, net.value(obs).shape
    (torch.Size([3, 2]), torch.Size([3]))
    >>> net.act(obs, deterministic=True).tolist()
    [0, 0, 0]

    Used in :doc:`/book/ppo`, :doc:`/book/trpo` and :doc:`/book/continuous_actions`.
    """

    def __init__(self, obs_dim: int, n_actions: int, hidden: int | Sequence[int] = 64,
                 seed: int | None = None, norm_obs: bool = False):
        super().__init__()
        obs_dim = check_int(obs_dim, "obs_dim")
        n_actions = check_int(n_actions, "n_actions")
        widths = _check_hidden(hidden)
        self.obs_dim, self.n_actions, self.hidden = obs_dim, n_actions, widths
        self.obs_norm = RunningMeanStd(obs_dim) if norm_obs else None
        self.actor, self.critic = _actor_and_critic(obs_dim, widths, n_actions, seed)

    def _obs(self, obs) -> torch.Tensor:
        return _as_obs_tensor(obs, self.obs_norm)

    def logits(self, obs) -> torch.Tensor:
        """Unnormalised action log-probabilities :math:`f_\\theta(s)`, shape ``(..., n_actions)``."""
        return self.actor(self._obs(obs))

    def distribution(self, obs) -> torch.distributions.Categorical:
        """The policy :math:`\\pi_\\theta(\\cdot \\mid s)` for a batch of observations ``(..., obs_dim)``."""
        return torch.distributions.Categorical(logits=self.logits(obs))

    def value(self, obs) -> torch.Tensor:
        """State values :math:`V_\\phi(s)`, shape ``(...)`` for observations ``(..., obs_dim)``."""
        return self.critic(self._obs(obs)).squeeze(-1)

    def act(self, obs, deterministic: bool = False,
            generator: torch.Generator | None = None) -> torch.Tensor:
        """Actions for a batch of observations ``(B, obs_dim)``, shape ``(B,)`` (int64), without
        gradients: the most probable action if ``deterministic``, otherwise a draw from
        :math:`\\pi_\\theta(\\cdot \\mid s)` by ``torch.multinomial`` with ``generator``."""
        with torch.no_grad():
            logits = self.logits(obs)
            if deterministic:
                return logits.argmax(-1)
            return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)


def _check_hidden(hidden) -> tuple[int, ...]:
    widths = (hidden, hidden) if isinstance(hidden, (int, np.integer)) else tuple(hidden)
    if len(widths) == 0:
        raise ValueError("hidden: must name at least one hidden layer width")
    return tuple(check_int(h, "hidden") for h in widths)


def _as_obs_tensor(obs, obs_norm) -> torch.Tensor:
    """A float32 tensor of observations, normalised by ``obs_norm`` unless it is None."""
    if not isinstance(obs, torch.Tensor):
        obs = torch.as_tensor(np.asarray(obs), dtype=torch.float32)
    obs = obs.float()
    return obs if obs_norm is None else obs_norm(obs)


class RunningMeanStd(nn.Module):
    r"""Running mean and variance of observations, and the normalisation they define.

    After batches :math:`x^{(1)}, \dots, x^{(k)}` of :math:`n` rows in all, ``mean`` and ``var``
    are the mean and the population variance of all :math:`n` rows, per coordinate. A batch
    :math:`b` of :math:`n_b` rows with mean :math:`m_b` and variance :math:`v_b` is merged into
    the statistics :math:`(n_a, m_a, v_a)` so far by (Chan, Golub and LeVeque's parallel rule)

    .. math::

        n = n_a + n_b, \qquad
        m = m_a + (m_b - m_a)\frac{n_b}{n}, \qquad
        v = \frac{n_a v_a + n_b v_b + (m_b - m_a)^2\, n_a n_b / n}{n},

    and an observation is normalised to

    .. math::

        \operatorname{clip}\!\Big(\frac{s - m}{\sqrt{v + 10^{-8}}}, -c, c\Big).

    Before the first update the statistics are :math:`m = 0`, :math:`v = 1` (the identity, up to
    the clip). They are buffers, not parameters: saved with the network, never trained. The
    trainers update them once per update, *after* the optimisation phase, so the normalisation is
    fixed while a batch is collected and optimised on, and :math:`\pi_{\theta_\text{old}}` in the
    importance ratio is exactly the policy that sampled the actions.

    We use this small module rather than gymnasium's ``NormalizeObservation`` wrapper because the
    statistics then travel with the policy: :func:`evaluate_policy` builds fresh environments
    and needs no wrapper state, and nothing changes during a rollout.

    Parameters
    ----------
    dim : int
        Size of an observation vector.
    clip : float, default 10.0
        :math:`c`, the bound on the normalised coordinates.

    Raises
    ------
    ValueError
        If ``dim`` is not a positive integer, ``clip`` is not positive, or (in :meth:`update`)
        the batch is not a non-empty ``(B, dim)`` array or not finite.

    Examples
    --------
    >>> norm = RunningMeanStd(1)
    >>> norm.update(np.array([[0.0], [2.0]]))
    >>> norm.update(np.array([[4.0], [6.0]]))       # the four values 0, 2, 4, 6
    >>> float(norm.mean[0]), float(norm.var[0])
    (3.0, 5.0)
    >>> round(float(norm(torch.tensor([[5.0]]))[0, 0]), 4)   # (5 - 3) / sqrt(5)
    0.8944

    The trainers' observation normalisation (:doc:`Continuous actions </book/continuous_actions>`).
    """

    def __init__(self, dim: int, clip: float = 10.0):
        super().__init__()
        self.dim = check_int(dim, "dim")
        self.clip = check_positive(clip, "clip")
        self.register_buffer("mean", torch.zeros(self.dim, dtype=torch.float64))
        self.register_buffer("var", torch.ones(self.dim, dtype=torch.float64))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))

    def update(self, x) -> None:
        """Merge the rows of ``x``, shape ``(B, dim)``, into the statistics."""
        x = as_float_array(x, "x", ndim=2)
        if x.shape[1] != self.dim:
            raise ValueError(f"x: expected shape (B, {self.dim}), got {x.shape}")
        check_finite(x, "x")
        n_a, n_b = float(self.count), len(x)
        m_b = torch.from_numpy(x.mean(0))
        v_b = torch.from_numpy(x.var(0))
        if n_a == 0:
            self.mean.copy_(m_b)
            self.var.copy_(v_b)
        else:
            n = n_a + n_b
            delta = m_b - self.mean
            self.var.copy_((n_a * self.var + n_b * v_b + delta**2 * n_a * n_b / n) / n)
            self.mean.add_(delta * n_b / n)
        self.count.add_(n_b)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Normalised observations, float32, same shape as ``obs``."""
        z = (obs - self.mean) / torch.sqrt(self.var + 1e-8)
        return z.clamp(-self.clip, self.clip).float()


class GaussianActorCritic(nn.Module):
    r"""Diagonal Gaussian policy with a state-independent log standard deviation, and a value
    function, for continuous (``Box``) actions.

    .. math::

        \pi_\theta(a \mid s) = \prod_{j=1}^{d} \mathcal N\big(a_j;\ \mu_{\theta,j}(s),\
            \sigma_j^2\big), \qquad \sigma_j = e^{\ell_j}, \qquad
        V_\phi(s) = g_\phi(s),

    so that

    .. math::

        \log\pi_\theta(a \mid s) = \sum_{j=1}^{d} \Big(-\frac{(a_j - \mu_{\theta,j}(s))^2}
            {2\sigma_j^2} - \ell_j - \tfrac12\log 2\pi\Big).

    The mean :math:`\mu_\theta` and the value :math:`g_\phi` are separate tanh MLPs initialised
    as in :class:`ActorCritic` (mean head gain 0.01, so the first policy is centred on 0 at every
    state). The log standard deviations :math:`\ell = (\ell_1, \dots, \ell_d)` are one trained
    vector, the same at every state (attribute ``actor.log_std``, so that ``actor.parameters()``
    is all of :math:`\theta`).

    **Why a state-independent standard deviation.** It is the usual choice (the PPO and TRPO
    papers' MuJoCo experiments, Spinning Up, CleanRL, Stable-Baselines3 without gSDE): the
    exploration noise is a handful of parameters that the policy gradient shrinks slowly and
    evenly, it cannot collapse at some states while staying wide at others, and the
    per-state KL between two such policies depends on the state only through the means,

    .. math::

        \mathrm{KL}\big(\pi_{\theta_\text{old}}(\cdot|s) \,\|\, \pi_\theta(\cdot|s)\big)
        = \sum_{j=1}^d \Big(\log\frac{\sigma_j}{\sigma^\text{old}_j}
          + \frac{(\sigma^\text{old}_j)^2 + (\mu^\text{old}_j(s) - \mu_j(s))^2}{2\sigma_j^2}
          - \frac12\Big).

    Parameters
    ----------
    obs_dim : int
        Size of the (flat) observation vector.
    action_dim : int
        :math:`d`, the number of action coordinates.
    hidden : int or sequence of int, default 64
        Hidden layer widths. An int ``h`` means two hidden layers of width ``h``.
    seed : int or None, default None
        Seed of the initialisation (drawn inside ``torch.random.fork_rng()``, as in
        :class:`ActorCritic`).
    log_std_init : float, default 0.0
        Initial :math:`\ell_j` (0: standard deviation 1).
    norm_obs : bool, default False
        Normalise observations by a :class:`RunningMeanStd` (attribute ``obs_norm``, None when
        False) before both networks; the trainers update its statistics.

    Raises
    ------
    ValueError
        If ``obs_dim``, ``action_dim`` or a hidden width is not a positive integer, or
        ``log_std_init`` is not finite.

    Examples
    --------
    >>> net = GaussianActorCritic(obs_dim=3, action_dim=2, hidden=16, seed=0, log_std_init=-1.0)
    >>> obs = torch.zeros(5, 3)
    >>> dist = net.distribution(obs)
    >>> dist.batch_shape, dist.event_shape, net.value(obs).shape
    (torch.Size([5]), torch.Size([2]), torch.Size([5]))
    >>> net.act(obs, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([5, 2])
    >>> round(float(dist.entropy().detach()[0]), 4)   # 2 * (1/2 log(2 pi e) - 1)
    0.8379

    Used in :doc:`/book/ppo`, :doc:`/book/trpo` and :doc:`/book/continuous_actions`.
    """

    def __init__(self, obs_dim: int, action_dim: int, hidden: int | Sequence[int] = 64,
                 seed: int | None = None, log_std_init: float = 0.0, norm_obs: bool = False):
        super().__init__()
        obs_dim = check_int(obs_dim, "obs_dim")
        action_dim = check_int(action_dim, "action_dim")
        log_std_init = check_real(log_std_init, "log_std_init")
        widths = _check_hidden(hidden)
        self.obs_dim, self.action_dim, self.hidden = obs_dim, action_dim, widths
        self.obs_norm = RunningMeanStd(obs_dim) if norm_obs else None
        self.actor, self.critic = _actor_and_critic(obs_dim, widths, action_dim, seed)
        # the actor is the mean MLP and the log-std vector: actor.parameters() is all of theta
        self.actor.log_std = nn.Parameter(torch.full((action_dim,), log_std_init))

    def _obs(self, obs) -> torch.Tensor:
        return _as_obs_tensor(obs, self.obs_norm)

    def mean(self, obs) -> torch.Tensor:
        """Means :math:`\\mu_\\theta(s)`, shape ``(..., action_dim)``."""
        return self.actor(self._obs(obs))

    def distribution(self, obs) -> torch.distributions.Independent:
        """The policy :math:`\\pi_\\theta(\\cdot \\mid s)` for observations ``(..., obs_dim)``: batch
        shape ``(...)``, event shape ``(action_dim,)``; ``log_prob`` and ``entropy`` sum over the
        action coordinates."""
        mean = self.mean(obs)
        std = self.actor.log_std.exp().expand_as(mean)
        return torch.distributions.Independent(torch.distributions.Normal(mean, std), 1)

    def value(self, obs) -> torch.Tensor:
        """State values :math:`V_\\phi(s)`, shape ``(...)`` for observations ``(..., obs_dim)``."""
        return self.critic(self._obs(obs)).squeeze(-1)

    def act(self, obs, deterministic: bool = False,
            generator: torch.Generator | None = None) -> torch.Tensor:
        """Actions for a batch of observations ``(B, obs_dim)``, shape ``(B, action_dim)`` (float32),
        without gradients and **not clipped** to the action space: the mean if ``deterministic``,
        otherwise :math:`\\mu_\\theta(s) + \\sigma \\odot z` with :math:`z` standard normal drawn
        by ``torch.randn`` with ``generator``."""
        with torch.no_grad():
            mean = self.mean(obs)
            if deterministic:
                return mean
            noise = torch.randn(mean.shape, generator=generator)
            return mean + self.actor.log_std.exp() * noise


def make_actor_critic(observation_space: gym.Space, action_space: gym.Space,
                      hidden: int | Sequence[int] = 64, seed: int | None = None,
                      norm_obs: bool = False, log_std_init: float = 0.0):
    """The network for an environment's spaces: :class:`ActorCritic` for a ``Discrete`` action
    space, :class:`GaussianActorCritic` for a one-dimensional ``Box`` (``log_std_init`` is used
    only then).

    Raises
    ------
    ValueError
        If ``observation_space`` is not a one-dimensional ``Box``, or ``action_space`` is neither
        ``Discrete`` nor a one-dimensional ``Box`` with finite bounds (the message names the
        space).

    Examples
    --------
    >>> make_actor_critic(gym.spaces.Box(-1, 1, (3,)), gym.spaces.Box(-2, 2, (1,)), hidden=8).action_dim
    1
    >>> make_actor_critic(gym.spaces.Box(-1, 1, (4,)), gym.spaces.Discrete(2), hidden=8).n_actions
    2

    How the trainers pick the network (:doc:`Continuous actions </book/continuous_actions>`).
    """
    _check_spaces(observation_space, action_space)
    obs_dim = observation_space.shape[0]
    if isinstance(action_space, gym.spaces.Discrete):
        return ActorCritic(obs_dim, int(action_space.n), hidden=hidden, seed=seed,
                           norm_obs=norm_obs)
    return GaussianActorCritic(obs_dim, action_space.shape[0], hidden=hidden, seed=seed,
                               log_std_init=log_std_init, norm_obs=norm_obs)


def _check_spaces(observation_space: gym.Space, action_space: gym.Space) -> None:
    if not isinstance(observation_space, gym.spaces.Box) or len(observation_space.shape) != 1:
        raise ValueError(f"observation_space: must be a one-dimensional Box, got {observation_space}")
    if isinstance(action_space, gym.spaces.Discrete):
        return
    if not (isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1
            and np.isfinite(action_space.low).all() and np.isfinite(action_space.high).all()):
        raise ValueError(f"action_space: the trainers handle Discrete and one-dimensional Box "
                         f"action spaces with finite bounds, got {action_space}")


def env_action(action_space: gym.Space, actions):
    r"""The actions sent to the environment: clipped to the bounds for a ``Box`` space,
    :math:`\operatorname{clip}(a, \text{low}, \text{high})`, unchanged otherwise.

    The policy's log-probability is that of the *unclipped* sample (see the module docstring).

    Examples
    --------
    >>> env_action(gym.spaces.Box(-2.0, 2.0, (1,)), np.array([[-3.0], [0.5], [2.5]])).ravel().tolist()
    [-2.0, 0.5, 2.0]

    How the trainers send a Gaussian action (:doc:`Continuous actions </book/continuous_actions>`).
    """
    actions = np.asarray(actions)
    if isinstance(action_space, gym.spaces.Box):
        return np.clip(actions, action_space.low, action_space.high).astype(action_space.dtype)
    return actions


# --------------------------------------------------------------------------------------------------
# rollouts
# --------------------------------------------------------------------------------------------------
@dataclass
class Rollout:
    """``T`` steps of ``N`` environment copies collected by one policy (next-step autoreset).

    Row ``t`` of each array is vector step ``t``; column ``n`` is environment copy ``n``.
    """

    obs: np.ndarray
    """``(T + 1, N, obs_dim)`` float32: ``obs[t]`` is where the action of step ``t`` was taken;
    ``obs[T]`` is the observation after the last step (for the bootstrap value)."""
    actions: np.ndarray
    """``(T, N, *action_shape)``, of the action space's dtype; for a ``Box`` space the policy's
    samples as drawn, before :func:`env_action` clips them for the environment."""
    rewards: np.ndarray
    """``(T, N)`` float64, the reward of step ``t``."""
    terminated: np.ndarray
    """``(T, N)`` bool: the episode reached a terminal state at step ``t`` (gymnasium's flag)."""
    truncated: np.ndarray
    """``(T, N)`` bool: the episode was cut at step ``t`` by a time limit (gymnasium's flag; may be
    set together with ``terminated``)."""
    valid: np.ndarray
    """``(T, N)`` bool: step ``t`` is a real transition; False for the reset step that follows
    every episode end."""
    episode_returns: list[float] = field(default_factory=list)
    """Undiscounted returns of the episodes that ended during this rollout (in the order they
    ended); an episode that began in an earlier rollout counts its earlier rewards too."""


class RolloutCollector:
    r"""Steps the ``N`` copies of a vector environment with a policy, ``num_steps`` at a time.

    The collector keeps what must survive from one rollout to the next: the current observation,
    which copies' next step is a reset step (the step after an episode end, under next-step
    autoreset), and the running return of every unfinished episode. Each call of :meth:`collect`
    returns a :class:`Rollout`; with ``valid[t, n]`` False for reset steps, a trainer gets the real
    transitions as ``rollout.obs[:-1][rollout.valid]``.

    Parameters
    ----------
    env : gymnasium.vector.VectorEnv
        A vector environment with next-step autoreset (from :func:`make_vec_env`). It is reset
        (without a seed) here, so the collector starts at fresh episodes.

    Examples
    --------
    >>> env = make_vec_env("CartPole-v1", num_envs=2, seed=0)
    >>> collector = RolloutCollector(env)
    >>> policy = ActorCritic(4, 2, hidden=8, seed=0)
    >>> rollout = collector.collect(policy, num_steps=50, generator=torch.Generator().manual_seed(0))
    >>> rollout.obs.shape, rollout.actions.shape, rollout.valid.shape
    ((51, 2, 4), (50, 2), (50, 2))
    >>> bool((~rollout.valid[1:] == (rollout.terminated | rollout.truncated)[:-1]).all())
    True
    >>> env.close()

    The collector of both trainers (:doc:`PPO </book/ppo>`, :doc:`TRPO </book/trpo>`).
    """

    def __init__(self, env: gym.vector.VectorEnv):
        self.env = env
        self.obs, _ = env.reset()
        self.reset_next = np.zeros(env.num_envs, dtype=bool)
        self.episode_return = np.zeros(env.num_envs)

    def collect(self, policy, num_steps: int, generator: torch.Generator | None = None) -> Rollout:
        """Take ``num_steps`` vector steps with actions from ``policy.act(obs, generator=...)``.

        Parameters
        ----------
        policy : ActorCritic or object with ``act(obs, deterministic, generator)``
            Maps a ``(N, obs_dim)`` float32 tensor to ``N`` actions.
        num_steps : int
            Rollout length ``T``, at least 1.
        generator : torch.Generator or None
            Source of the action sampling's randomness.

        Returns
        -------
        Rollout
        """
        num_steps = check_int(num_steps, "num_steps")
        N = self.env.num_envs
        space = self.env.single_action_space
        obs = np.empty((num_steps + 1, *np.shape(self.obs)), dtype=np.float32)
        actions = np.empty((num_steps, N, *space.shape), dtype=space.dtype)
        rewards = np.empty((num_steps, N))
        terminated = np.empty((num_steps, N), dtype=bool)
        truncated = np.empty((num_steps, N), dtype=bool)
        valid = np.empty((num_steps, N), dtype=bool)
        episode_returns = []
        for t in range(num_steps):
            obs[t] = self.obs
            valid[t] = ~self.reset_next
            actions[t] = policy.act(torch.from_numpy(obs[t]), generator=generator).numpy()
            self.obs, rewards[t], terminated[t], truncated[t], _ = self.env.step(
                env_action(space, actions[t]))
            done = terminated[t] | truncated[t]
            self.episode_return += np.where(valid[t], rewards[t], 0.0)
            episode_returns.extend(self.episode_return[done].tolist())
            self.episode_return[done] = 0.0
            self.reset_next = done
        obs[num_steps] = self.obs
        return Rollout(obs, actions, rewards, terminated, truncated, valid, episode_returns)


# --------------------------------------------------------------------------------------------------
# generalised advantage estimation
# --------------------------------------------------------------------------------------------------
def gae(rewards, values, terminated, truncated, last_values, gamma: float, lam: float):
    r"""Generalised advantage estimates and value targets for a vectorised rollout.

    With :math:`V_{t+1} :=` ``values[t+1]`` for :math:`t < T-1` and :math:`V_T :=` ``last_values``,

    .. math::

        \delta_t &= r_t + \gamma\,(1 - \mathrm{terminated}_t)\, V_{t+1} - V_t, \\
        A_t &= \delta_t + \gamma \lambda\,
               \bigl(1 - (\mathrm{terminated}_t \vee \mathrm{truncated}_t)\bigr)\, A_{t+1},
               \qquad A_T := 0, \\
        R_t &= A_t + V_t .

    The flags mean what gymnasium's mean: a *terminated* episode reached a terminal state and has no
    future value; a *truncated* one was cut by a time limit and bootstraps from :math:`V_{t+1}`; a
    step with both flags set is terminal. Either way the recursion stops at the episode end.

    **Which value is used on truncation.** :math:`V_{t+1}` is the value of the observation that
    follows step ``t`` in the rollout. With next-step autoreset (every environment from
    :func:`make_vec_env`), that observation *is* the true final observation of the truncated
    episode, so pass the flags as the environment reports them. (With same-step autoreset, where
    the observation after an episode end is already the next episode's first one, fold the
    bootstrap into the reward instead, ``rewards[t] += gamma * V(final_obs)``, and pass
    ``terminated[t] = True``.)

    The advantages at a next-step reset step (the step after an episode end) are computed but are
    not transitions: the caller masks them out. They never leak into earlier steps because the
    episode end cuts the recursion.

    Parameters
    ----------
    rewards : array_like, shape (T, N)
        Reward of step ``t`` in environment copy ``n``.
    values : array_like, shape (T, N)
        :math:`V(s_t)`, the value of the observation at which the action of step ``t`` was taken.
    terminated : array_like of bool, shape (T, N)
        The episode reached a terminal state at step ``t``.
    truncated : array_like of bool, shape (T, N)
        The episode was cut by a time limit at step ``t`` (may be set together with
        ``terminated``).
    last_values : array_like, shape (N,)
        :math:`V(s_T)`, the value of the observation after the last step of the rollout.
    gamma : float
        Discount factor in [0, 1].
    lam : float
        GAE parameter :math:`\lambda` in [0, 1]; 0 gives one-step TD errors, 1 Monte-Carlo returns
        minus the baseline.

    Returns
    -------
    advantages, returns : ndarray, shape (T, N)
        :math:`A_t` and :math:`R_t`, float64.

    Raises
    ------
    ValueError
        If ``values`` is not a non-empty (T, N) array, the other arrays do not match it in shape,
        rewards or values are not finite (naming the step and environment), a flag array is not
        boolean, or ``gamma`` / ``lam`` lie outside [0, 1].

    Examples
    --------
    One environment, three steps: an episode that terminates at t = 1, then one that is truncated
    at t = 2 and bootstraps from ``last_values``:

    >>> adv, ret = gae(rewards=[[1.0], [1.0], [1.0]], values=[[0.5], [0.5], [0.5]],
    ...                terminated=[[False], [True], [False]], truncated=[[False], [False], [True]],
    ...                last_values=[2.0], gamma=0.9, lam=1.0)
    >>> adv.ravel().round(3).tolist()
    [1.4, 0.5, 2.3]
    >>> ret.ravel().round(3).tolist()
    [1.9, 1.0, 2.8]

    Used in :doc:`/book/trpo` and the ``ppo`` assignment.
    """
    gamma = check_unit_interval(gamma, "gamma")
    lam = check_unit_interval(lam, "lam")
    values = check_rollout_array(values, "values")
    rewards = check_rollout_array(rewards, "rewards", shape=values.shape)
    terminated = check_rollout_array(terminated, "terminated", shape=values.shape, flags=True)
    truncated = check_rollout_array(truncated, "truncated", shape=values.shape, flags=True)
    last_values = check_rollout_array(last_values, "last_values", shape=values.shape[1:])

    next_values = np.concatenate([values[1:], last_values[None]])
    deltas = rewards + gamma * (1.0 - terminated) * next_values - values
    episode_ends = terminated | truncated
    advantages = np.zeros_like(values)
    running = np.zeros_like(last_values)
    for t in reversed(range(len(values))):
        running = deltas[t] + gamma * lam * (1.0 - episode_ends[t]) * running
        advantages[t] = running
    return advantages, advantages + values


def explained_variance(values, returns) -> float:
    r"""How much of the variance of the returns the value function explains.

    .. math::

        \mathrm{EV} = 1 - \frac{\operatorname{Var}[\hat R - V]}{\operatorname{Var}[\hat R]}

    (population variances over the entries). 1 is a perfect fit, 0 no better than the constant
    :math:`\bar R`, and it is unbounded below: a value function worse than a constant gives any
    negative number. nan when :math:`\operatorname{Var}[\hat R] = 0`.

    Parameters
    ----------
    values, returns : array_like, shape (B,)
        Predicted values :math:`V(s_i)` and their targets :math:`\hat R_i`.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        If the arrays are empty, differ in shape or are not finite.

    Examples
    --------
    >>> round(explained_variance([1.0, 2.0, 3.0], [1.0, 2.0, 4.0]), 6)  # 1 - (2/9) / (14/9) = 6/7
    0.857143
    >>> explained_variance([3.0, 2.0, 1.0], [1.0, 2.0, 3.0])   # worse than a constant: 1 - 4
    -3.0

    Logged by the trainers (:doc:`PPO </book/ppo>`).
    """
    values = as_float_array(values, "values", ndim=1)
    returns = as_float_array(returns, "returns", ndim=1)
    check_same_shape(values, "values", returns, "returns")
    check_finite(values, "values")
    check_finite(returns, "returns")
    var = returns.var()
    return float("nan") if var == 0 else float(1.0 - (returns - values).var() / var)


# --------------------------------------------------------------------------------------------------
# evaluation and history
# --------------------------------------------------------------------------------------------------
def evaluate_policy(policy, env_id: str = "CartPole-v1", episodes: int = 10, seed: int = 0,
                    deterministic: bool = True) -> tuple[float, float]:
    r"""Mean and standard deviation of the undiscounted return over ``episodes`` episodes.

    .. math::

        \bar G = \frac1n \sum_{i=1}^n G_i, \qquad
        s = \sqrt{\frac1n \sum_{i=1}^n (G_i - \bar G)^2}, \qquad G_i = \sum_t r^{(i)}_t,

    (the population standard deviation, as Stable-Baselines3 reports). The episodes run in
    parallel, one per copy of a :func:`make_vec_env` environment seeded with ``seed``, and each copy
    contributes its first episode only. Continuous actions are clipped to the action space's
    bounds (:func:`env_action`); ``deterministic`` then means the Gaussian's mean.

    Parameters
    ----------
    policy : ActorCritic or object with ``act(obs, deterministic, generator)``
        The policy to evaluate; ``act`` maps a ``(B, obs_dim)`` batch to ``(B,)`` actions.
    env_id : str, default "CartPole-v1"
        Gymnasium id.
    episodes : int, default 10
        Number of episodes, at least 1.
    seed : int, default 0
        Seeds the environments and, when ``deterministic`` is False, the action sampling.
    deterministic : bool, default True
        Take the most probable action instead of sampling.

    Returns
    -------
    mean, std : float
        :math:`\bar G` and :math:`s`.

    Raises
    ------
    ValueError
        If ``episodes`` is not a positive integer or ``policy`` has no ``act`` method.

    Examples
    --------
    A policy that always pushes the cart left lets the pole fall within about ten steps:

    >>> class PushLeft:
    ...     def act(self, obs, deterministic=True, generator=None):
    ...         return torch.zeros(len(obs), dtype=torch.long)
    >>> mean, std = evaluate_policy(PushLeft(), "CartPole-v1", episodes=5, seed=0)
    >>> 8 <= mean <= 11
    True

    Used in :doc:`/book/ppo`, :doc:`/book/trpo` and :doc:`/book/continuous_actions`.
    """
    episodes = check_int(episodes, "episodes")
    if not callable(getattr(policy, "act", None)):
        raise ValueError("policy: must have an act(obs, deterministic, generator) method")
    env = make_vec_env(env_id, episodes, seed)
    generator = torch.Generator().manual_seed(int(seed))
    try:
        obs, _ = env.reset()
        returns = np.zeros(episodes)
        running = np.ones(episodes, dtype=bool)
        while running.any():
            obs_t = torch.as_tensor(obs, dtype=torch.float32)
            actions = policy.act(obs_t, deterministic=deterministic, generator=generator)
            obs, reward, terminated, truncated, _ = env.step(
                env_action(env.single_action_space, actions))
            returns += np.where(running, reward, 0.0)
            running &= ~(np.asarray(terminated) | np.asarray(truncated))
    finally:
        env.close()
    return float(returns.mean()), float(returns.std())


class History(list):
    """What the trainers return: a list with one dict per update, plus array access.

    The keys and their formulas are documented in :mod:`companion.ppo` and :mod:`companion.trpo`.

    Examples
    --------
    >>> h = History([{"update": 0, "kl": 0.01}, {"update": 1, "kl": 0.02}])
    >>> h.to_dict_of_arrays()["kl"]
    array([0.01, 0.02])

    Used in :doc:`/book/ppo`, :doc:`/book/trpo` and :doc:`/book/continuous_actions`.
    """

    def to_dict_of_arrays(self) -> dict:
        """``{key: values over updates}``: a 1-D numpy array for scalar keys, a list of arrays for
        array-valued keys (such as PPO's ``ratio_sample``, whose length varies)."""
        out = {}
        for key in self[0] if self else []:
            values = [record[key] for record in self]
            out[key] = values if isinstance(values[0], np.ndarray) else np.asarray(values)
        return out


# --------------------------------------------------------------------------------------------------
# plumbing shared by the trainers
# --------------------------------------------------------------------------------------------------
class TrainingClock:
    """Seconds of training: wall-clock time since construction, minus the time spent inside
    :meth:`paused` (evaluations and callbacks)."""

    def __init__(self):
        self._start = time.perf_counter()
        self._paused = 0.0

    def seconds(self) -> float:
        """Training time so far."""
        return time.perf_counter() - self._start - self._paused

    @contextmanager
    def paused(self):
        """A block whose run time does not count as training."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._paused += time.perf_counter() - t0


class EvaluationSchedule:
    """Evaluate a policy after the first update at or past every multiple of ``every`` steps.

    Calling the schedule with the policy and the environment steps so far runs
    :func:`evaluate_policy` (deterministic actions, ``episodes`` episodes, seed
    ``10_000 * (seed + 1) + k`` for the k-th evaluation) when one is due and returns its mean and
    standard deviation; otherwise (and always when ``every`` is 0) it returns ``(nan, nan)``.
    """

    def __init__(self, env_id: str, every: int, episodes: int, seed: int):
        self.env_id, self.every, self.episodes, self.seed = env_id, every, episodes, seed
        self.next_at = every
        self.n_done = 0

    def __call__(self, policy, env_steps: int) -> tuple[float, float]:
        if self.every == 0 or env_steps < self.next_at:
            return float("nan"), float("nan")
        while self.next_at <= env_steps:
            self.next_at += self.every
        self.n_done += 1
        return evaluate_policy(policy, self.env_id, self.episodes,
                               seed=10_000 * (self.seed + 1) + self.n_done - 1)


def check_env_spaces(env: gym.vector.VectorEnv, env_id: str) -> None:
    """Raise ``ValueError("env_id: ...")``, naming the space, unless ``env`` has flat Box
    observations and Discrete or one-dimensional Box actions with finite bounds (what
    :func:`make_actor_critic` handles)."""
    try:
        _check_spaces(env.single_observation_space, env.single_action_space)
    except ValueError as err:
        raise ValueError(f"env_id: {env_id!r}: {err}") from None


def check_common_config(config) -> None:
    """Checks of the fields :class:`companion.ppo.PPOConfig` and :class:`companion.trpo.TRPOConfig`
    share; each raises ``ValueError("field: ...")``."""
    for name in ("total_timesteps", "num_envs", "num_steps", "eval_episodes"):
        check_int(getattr(config, name), name)
    check_int(config.eval_every, "eval_every", low=0)
    check_positive(config.reward_scale, "reward_scale")
    for name in ("gamma", "lam"):
        check_unit_interval(getattr(config, name), name)
    _check_hidden(config.hidden)
    if config.stop_return is not None:
        check_real(config.stop_return, "stop_return")
        if config.eval_every == 0:
            raise ValueError("stop_return: needs eval_every > 0 (it is checked at evaluations)")
