r"""Shared deep-RL pieces for the PPO and TRPO chapters.

This module holds what both trust-region style algorithms need and nothing algorithm specific:

- :func:`make_vec_env` builds a vectorised gymnasium environment with **next-step autoreset**
  (described below), using gymnasium's numpy-vectorised implementation when the environment has one
  (CartPole-v1 does) and a synchronous vector of copies otherwise.
- :class:`ActorCritic` is the policy :math:`\pi_\theta(a \mid s)` (a categorical distribution over
  discrete actions) and the value function :math:`V_\phi(s)`, two separate tanh MLPs with
  orthogonal initialisation.
- :func:`gae` computes generalised advantage estimates and value targets from a rollout, with the
  distinction between an episode that *terminated* (no bootstrap) and one that was *truncated* by a
  time limit (bootstrap from the value of the true final observation).
- :func:`evaluate_policy` runs a policy for a number of episodes and reports the mean and standard
  deviation of the undiscounted return. The trainers call it on a schedule through the private
  ``_UpdateEnd``, which also runs the user's callback and keeps both off the training clock.

Autoreset convention
--------------------
Every environment returned by :func:`make_vec_env` uses gymnasium's ``AutoresetMode.NEXT_STEP``:
when sub-environment ``i`` ends an episode at step ``t`` (``terminated[i] or truncated[i]``), the
observation returned at ``t`` is the **true final observation** of that episode. The *next* call to
``step`` ignores the action for ``i``, resets it, and returns the first observation of a new episode
with reward 0 and ``terminated = truncated = False``. That extra call is not a transition of the MDP;
a rollout must drop it from the loss (the trainers in :mod:`companion.ppo` and :mod:`companion.trpo`
keep a boolean ``valid`` mask for this). In exchange, the value of the final observation of a
truncated episode is simply the value of the next observation in the rollout, which is what
:func:`gae` uses.

See chapter 6 (PPO) and chapter 7 (TRPO).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from torch import nn

__all__ = ["ActorCritic", "make_vec_env", "gae", "evaluate_policy"]


# --------------------------------------------------------------------------------------------------
# small input checks (raise ValueError naming the argument)
# --------------------------------------------------------------------------------------------------
def _check_positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_unit_interval(value, name):
    value = float(value)
    if not (0.0 <= value <= 1.0):
        raise ValueError(f"{name} must lie in [0, 1], got {value!r}")
    return value


def _as_numpy(x, name, dtype=np.float64):
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    try:
        arr = np.asarray(x, dtype=dtype)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a numeric array, got {type(x).__name__}") from err
    return arr


def _check_finite(arr, name):
    bad = ~np.isfinite(arr)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        where = f"step t={idx[0]}, env {idx[1]}" if len(idx) == 2 else f"index {idx}"
        raise ValueError(f"{name} contains a non-finite value at {where}")


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
        A registered gymnasium id with a discrete action space, e.g. ``"CartPole-v1"``.
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

    See chapter 6 (PPO).
    """
    num_envs = _check_positive_int(num_envs, "num_envs")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    try:
        spec = gym.spec(env_id)
    except gym.error.Error as err:
        raise ValueError(f"env_id {env_id!r} is not a registered gymnasium environment") from err
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
    env.reset(seed=int(seed))
    env.action_space.seed(int(seed))
    return env


# --------------------------------------------------------------------------------------------------
# the network
# --------------------------------------------------------------------------------------------------
def _mlp(sizes, out_gain, generator):
    layers = []
    for i in range(len(sizes) - 1):
        # skip_init: no default (global-RNG) initialisation before the orthogonal one below
        linear = torch.nn.utils.skip_init(nn.Linear, sizes[i], sizes[i + 1])
        last = i == len(sizes) - 2
        nn.init.orthogonal_(linear.weight, gain=out_gain if last else math.sqrt(2.0),
                            generator=generator)
        nn.init.zeros_(linear.bias)
        layers.append(linear)
        if not last:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


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
        Seed of a private ``torch.Generator`` used for the initialisation (global torch state is
        not touched). ``None`` draws from torch's default generator.

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

    See chapter 6 (PPO).
    """

    def __init__(self, obs_dim: int, n_actions: int, hidden: int | Sequence[int] = 64,
                 seed: int | None = None):
        super().__init__()
        obs_dim = _check_positive_int(obs_dim, "obs_dim")
        n_actions = _check_positive_int(n_actions, "n_actions")
        widths = (hidden, hidden) if isinstance(hidden, (int, np.integer)) else tuple(hidden)
        if len(widths) == 0:
            raise ValueError("hidden must name at least one hidden layer width")
        widths = tuple(_check_positive_int(h, "hidden") for h in widths)
        generator = None
        if seed is not None:
            generator = torch.Generator().manual_seed(int(seed))
        self.obs_dim, self.n_actions, self.hidden = obs_dim, n_actions, widths
        self.actor = _mlp((obs_dim, *widths, n_actions), 0.01, generator)
        self.critic = _mlp((obs_dim, *widths, 1), 1.0, generator)

    @staticmethod
    def _obs(obs):
        if not isinstance(obs, torch.Tensor):
            obs = torch.as_tensor(np.asarray(obs), dtype=torch.float32)
        return obs.float()

    def logits(self, obs) -> torch.Tensor:
        """Unnormalised action log-probabilities :math:`f_\\theta(s)`, shape ``(B, n_actions)``."""
        return self.actor(self._obs(obs))

    def distribution(self, obs) -> torch.distributions.Categorical:
        """The policy :math:`\\pi_\\theta(\\cdot \\mid s)` for a batch of observations ``(B, obs_dim)``."""
        return torch.distributions.Categorical(logits=self.logits(obs))

    def value(self, obs) -> torch.Tensor:
        """State values :math:`V_\\phi(s)`, shape ``(B,)``."""
        return self.critic(self._obs(obs)).squeeze(-1)

    def act(self, obs, deterministic: bool = False,
            generator: torch.Generator | None = None) -> torch.Tensor:
        """Actions for a batch of observations, shape ``(B,)`` (int64), without gradients.

        ``deterministic=True`` takes the most probable action; otherwise actions are sampled
        (from ``generator`` when given, by inverting the cumulative distribution).
        """
        with torch.no_grad():
            logits = self.logits(obs)
            if deterministic:
                return logits.argmax(-1)
            return sample_categorical(logits, generator)

    def forward(self, obs):
        """Return ``(logits, values)`` for a batch of observations."""
        obs = self._obs(obs)
        return self.actor(obs), self.critic(obs).squeeze(-1)


def sample_categorical(logits: torch.Tensor, generator: torch.Generator | None = None):
    """Sample one action per row of ``logits`` (``(B, K)``) by inverting the CDF.

    Uses ``generator`` for the uniforms, so no global random state is involved. Not exported;
    shared by the PPO and TRPO trainers.
    """
    cdf = torch.softmax(logits, dim=-1).cumsum(-1)
    u = torch.rand(logits.shape[0], 1, generator=generator, dtype=cdf.dtype)
    return (u > cdf[:, :-1]).sum(-1)


# --------------------------------------------------------------------------------------------------
# generalised advantage estimation
# --------------------------------------------------------------------------------------------------
def gae(rewards, values, dones, truncations, last_values, gamma: float, lam: float):
    r"""Generalised advantage estimates and value targets for a vectorised rollout.

    With :math:`V_{T} :=` ``last_values`` and :math:`V_{t+1} :=` ``values[t+1]`` otherwise,

    .. math::

        \delta_t &= r_t + \gamma\,(1 - \mathrm{term}_t)\, V_{t+1} - V_t,
        \qquad \mathrm{term}_t = \mathrm{done}_t \wedge \neg\,\mathrm{trunc}_t, \\
        A_t &= \delta_t + \gamma \lambda\, (1 - \mathrm{done}_t)\, A_{t+1}, \qquad A_T := 0, \\
        R_t &= A_t + V_t .

    A terminated episode contributes no bootstrap value; a truncated one bootstraps from
    :math:`V_{t+1}`, and in both cases the recursion stops at the episode boundary.

    **Which value is used on truncation.** :math:`V_{t+1}` is the value of the observation that
    follows step ``t`` in the rollout. With next-step autoreset (every environment from
    :func:`make_vec_env`), that observation *is* the true final observation of the truncated
    episode, so pass ``truncations`` as the environment reports them. With same-step autoreset
    (where the observation after a done step is already the next episode's first one), fold the
    bootstrap into the reward instead: ``rewards[t] += gamma * V(final_obs)`` and pass
    ``truncations[t] = False`` with ``dones[t] = True``.

    The values at a next-step reset step (the step after a done) are meaningless as transitions;
    their advantages are computed but must be masked out by the caller. They never leak into
    earlier steps because ``done`` cuts the recursion.

    Parameters
    ----------
    rewards : array_like or torch.Tensor, shape (T, N)
        Reward received after the action at step ``t`` in environment ``n``.
    values : array_like or torch.Tensor, shape (T, N)
        :math:`V(s_t)` for the observation at which the action at step ``t`` was taken.
    dones : array_like of bool, shape (T, N)
        True if the episode ended at step ``t`` for any reason (terminated or truncated).
    truncations : array_like of bool, shape (T, N)
        True if the episode was cut by a time limit at step ``t`` (a subset of ``dones``).
    last_values : array_like or torch.Tensor, shape (N,)
        :math:`V(s_T)` for the observation after the last step of the rollout.
    gamma : float
        Discount factor in [0, 1].
    lam : float
        GAE parameter :math:`\lambda` in [0, 1]; 0 gives one-step TD errors, 1 Monte-Carlo returns
        minus the baseline.

    Returns
    -------
    advantages, returns : ndarray or torch.Tensor, shape (T, N)
        :math:`A_t` and :math:`R_t`. Torch tensors (dtype of ``values``) if ``values`` is a tensor,
        float64 numpy arrays otherwise.

    Raises
    ------
    ValueError
        If shapes disagree, the rollout is empty, values or rewards are not finite (naming step and
        environment), a truncation is not also a done, or ``gamma`` / ``lam`` lie outside [0, 1].

    Examples
    --------
    One environment, three steps, an episode that terminates at t = 1, a new one cut at t = 2:

    >>> adv, ret = gae(rewards=[[1.0], [1.0], [1.0]], values=[[0.5], [0.5], [0.5]],
    ...                dones=[[False], [True], [True]], truncations=[[False], [False], [True]],
    ...                last_values=[2.0], gamma=0.9, lam=1.0)
    >>> adv.ravel().round(3).tolist()
    [1.4, 0.5, 2.3]
    >>> ret.ravel().round(3).tolist()
    [1.9, 1.0, 2.8]

    See chapter 6 (PPO), the advantage estimator.
    """
    gamma = _check_unit_interval(gamma, "gamma")
    lam = _check_unit_interval(lam, "lam")
    as_torch = isinstance(values, torch.Tensor)
    out_dtype = values.dtype if as_torch else None
    r = _as_numpy(rewards, "rewards")
    v = _as_numpy(values, "values")
    d = _as_numpy(dones, "dones", dtype=bool)
    tr = _as_numpy(truncations, "truncations", dtype=bool)
    last = _as_numpy(last_values, "last_values")
    if v.ndim != 2:
        raise ValueError(f"values must have shape (T, N), got shape {v.shape}")
    if v.shape[0] == 0 or v.shape[1] == 0:
        raise ValueError(f"values must be a non-empty (T, N) array, got shape {v.shape}")
    for name, arr in (("rewards", r), ("dones", d), ("truncations", tr)):
        if arr.shape != v.shape:
            raise ValueError(f"{name} must have the shape of values {v.shape}, got {arr.shape}")
    if last.shape != (v.shape[1],):
        raise ValueError(f"last_values must have shape ({v.shape[1]},), got {last.shape}")
    _check_finite(r, "rewards")
    _check_finite(v, "values")
    if not np.isfinite(last).all():
        raise ValueError(f"last_values contains a non-finite value at env {int(np.argmin(np.isfinite(last)))}")
    bad = tr & ~d
    if bad.any():
        t, n = (int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"truncations is True but dones is False at step t={t}, env {n}")

    T = v.shape[0]
    not_term = 1.0 - (d & ~tr)
    not_done = 1.0 - d
    next_v = np.concatenate([v[1:], last[None]], axis=0)
    delta = r + gamma * not_term * next_v - v
    adv = np.zeros_like(v)
    running = np.zeros(v.shape[1])
    coef = gamma * lam
    for t in range(T - 1, -1, -1):
        running = delta[t] + coef * not_done[t] * running
        adv[t] = running
    ret = adv + v
    if as_torch:
        return torch.as_tensor(adv, dtype=out_dtype), torch.as_tensor(ret, dtype=out_dtype)
    return adv, ret


# --------------------------------------------------------------------------------------------------
# evaluation
# --------------------------------------------------------------------------------------------------
def evaluate_policy(policy, env_id: str = "CartPole-v1", episodes: int = 10, seed: int = 0,
                    deterministic: bool = True) -> tuple[float, float]:
    r"""Mean and standard deviation of the undiscounted return over ``episodes`` episodes.

    .. math::

        \bar G = \frac1n \sum_{i=1}^n G_i, \qquad
        s = \sqrt{\frac1n \sum_{i=1}^n (G_i - \bar G)^2}, \qquad G_i = \sum_t r^{(i)}_t,

    (the population standard deviation, as Stable-Baselines3 reports). The episodes run in
    parallel, one per copy of a :func:`make_vec_env` environment seeded with ``seed``, and each copy
    contributes its first episode only.

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
    >>> net = ActorCritic(4, 2, hidden=8, seed=0)
    >>> mean, std = evaluate_policy(net, "CartPole-v1", episodes=3, seed=0)
    >>> 0 < mean < 100
    True

    See chapter 6 (PPO).
    """
    episodes = _check_positive_int(episodes, "episodes")
    if not callable(getattr(policy, "act", None)):
        raise ValueError("policy must have an act(obs, deterministic, generator) method")
    env = make_vec_env(env_id, episodes, seed)
    generator = torch.Generator().manual_seed(int(seed))
    try:
        obs, _ = env.reset()
        returns = np.zeros(episodes)
        running = np.ones(episodes, dtype=bool)
        with torch.inference_mode():
            while running.any():
                obs_t = torch.as_tensor(obs, dtype=torch.float32)
                actions = policy.act(obs_t, deterministic=deterministic, generator=generator)
                obs, reward, terminated, truncated, _ = env.step(np.asarray(actions))
                returns += np.where(running, reward, 0.0)
                running &= ~(np.asarray(terminated) | np.asarray(truncated))
    finally:
        env.close()
    return float(returns.mean()), float(returns.std())


class _UpdateEnd:
    """What :func:`companion.ppo.train_ppo` and :func:`companion.trpo.train_trpo` do after each
    update: evaluate the policy when due, store the record, run the user's callback.

    An evaluation (:func:`evaluate_policy`, ``episodes`` episodes, evaluation seed
    ``10_000 * (seed + 1) + k`` for the k-th evaluation) runs after the first update at or past
    every multiple of ``every`` environment steps (never when ``every`` is 0) and fills the
    record's ``eval_return`` and ``eval_return_std``. The time spent in evaluations and in the
    callback accumulates in :attr:`excluded`, which the trainers subtract from ``wall_time``.
    """

    def __init__(self, env_id: str, every: int, episodes: int, stop_return: float | None,
                 seed: int, callback: Callable | None):
        self.env_id, self.every, self.episodes = env_id, every, episodes
        self.stop_return, self.seed, self.callback = stop_return, seed, callback
        self.next_eval = every if every else None
        self.n_evals = 0
        #: seconds spent in evaluations and callbacks so far
        self.excluded = 0.0

    def __call__(self, record: dict, policy, history: list, bar) -> bool:
        """Evaluate if due, append ``record`` to ``history``, run the callback; True to stop
        (the evaluation reached ``stop_return`` or the callback returned a true value)."""
        stop = False
        if self.next_eval is not None and record["env_steps"] >= self.next_eval:
            t0 = time.perf_counter()
            mean, std = evaluate_policy(policy, self.env_id, self.episodes,
                                        seed=10_000 * (self.seed + 1) + self.n_evals)
            self.n_evals += 1
            while self.next_eval <= record["env_steps"]:
                self.next_eval += self.every
            record["eval_return"], record["eval_return_std"] = mean, std
            bar.set_postfix(eval_return=f"{mean:.1f}", refresh=False)
            stop = self.stop_return is not None and mean >= self.stop_return
            self.excluded += time.perf_counter() - t0
        history.append(record)
        if self.callback is not None:
            t0 = time.perf_counter()
            stop = bool(self.callback(record, policy)) or stop
            self.excluded += time.perf_counter() - t0
        return stop
