"""Tests for continuous actions: the closed forms of companion.continuous against
torch.distributions and scipy, the diagonal Gaussian policy (companion.rl.GaussianActorCritic),
observation normalisation, action clipping, TRPO's Fisher-vector product against the Hessian of
the closed-form KL, that a fixed KL does not bound the ratio, short PPO and TRPO runs on
Pendulum-v1, and the action spaces the trainers refuse."""

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from scipy.stats import norm
from torch.distributions import Independent, Normal, kl_divergence

from companion.continuous import gaussian_kl, gaussian_log_ratio, mean_shift_ratio_tail
from companion.ppo import PPOConfig, train_ppo
from companion.rl import (
    GaussianActorCritic,
    RolloutCollector,
    RunningMeanStd,
    env_action,
    evaluate_policy,
    make_actor_critic,
    make_vec_env,
)
from companion.trpo import TRPOConfig, make_fisher_vector_product, train_trpo

torch.set_num_threads(1)


def _two_gaussians(seed, batch=7, d=3):
    rng = np.random.default_rng(seed)
    mu_o, mu_n = rng.normal(size=(batch, d)), rng.normal(size=(batch, d))
    sd_o, sd_n = np.exp(rng.normal(scale=0.5, size=d)), np.exp(rng.normal(scale=0.5, size=d))
    a = mu_o + sd_o * rng.normal(size=(batch, d)) * 3  # reach into the tails too
    return a, mu_o, sd_o, mu_n, sd_n


# --------------------------------------------------------------------------------------------------
# closed forms
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_log_ratio_of_diagonal_gaussians_matches_torch_and_scipy(seed):
    a, mu_o, sd_o, mu_n, sd_n = _two_gaussians(seed)
    ours = gaussian_log_ratio(a, mu_o, sd_o, mu_n, sd_n)
    by_scipy = (norm.logpdf(a, mu_n, sd_n) - norm.logpdf(a, mu_o, sd_o)).sum(-1)
    t = lambda x: torch.as_tensor(np.broadcast_to(x, a.shape).copy())  # noqa: E731
    old, new = Independent(Normal(t(mu_o), t(sd_o)), 1), Independent(Normal(t(mu_n), t(sd_n)), 1)
    by_torch = (new.log_prob(t(a)) - old.log_prob(t(a))).numpy()
    np.testing.assert_allclose(ours, by_scipy, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ours, by_torch, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kl_of_diagonal_gaussians_matches_torch_and_is_the_mean_negative_log_ratio(seed):
    _, mu_o, sd_o, mu_n, sd_n = _two_gaussians(seed, batch=2)
    ours = gaussian_kl(mu_o, sd_o, mu_n, sd_n)
    t = lambda x: torch.as_tensor(np.broadcast_to(x, mu_o.shape).copy())  # noqa: E731
    by_torch = kl_divergence(Independent(Normal(t(mu_o), t(sd_o)), 1),
                             Independent(Normal(t(mu_n), t(sd_n)), 1)).numpy()
    np.testing.assert_allclose(ours, by_torch, rtol=1e-12)
    # KL = E_old[-log rho]: Monte Carlo within 4 standard errors
    rng = np.random.default_rng(seed + 10)
    n = 200_000
    a = mu_o[0] + sd_o * rng.normal(size=(n, len(sd_o)))
    minus_log_ratio = -gaussian_log_ratio(a, mu_o[0], sd_o, mu_n[0], sd_n)
    se = minus_log_ratio.std() / math.sqrt(n)
    assert abs(minus_log_ratio.mean() - ours[0]) < 4 * se


def test_closed_forms_bad_input():
    with pytest.raises(ValueError, match="std_new: standard deviations must be positive"):
        gaussian_log_ratio([[0.0]], [0.0], [1.0], [0.0], [0.0])
    with pytest.raises(ValueError, match="need a last axis of action coordinates"):
        gaussian_kl(0.0, 1.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="shapes do not broadcast"):
        gaussian_kl([0.0, 1.0], [1.0, 1.0, 1.0], [0.0], [1.0])
    with pytest.raises(ValueError, match="actions"):
        gaussian_log_ratio([[np.nan]], [0.0], [1.0], [0.0], [1.0])
    with pytest.raises(ValueError, match="kl: must be positive"):
        mean_shift_ratio_tail(0.0)
    with pytest.raises(ValueError, match="clip_eps"):
        mean_shift_ratio_tail(0.01, clip_eps=1.5)


# --------------------------------------------------------------------------------------------------
# a fixed KL does not bound the ratio
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("d", [1, 4])
def test_at_a_fixed_kl_the_ratio_exceeds_any_bound(d):
    """Worked example: move every mean by the same amount so that KL = 0.01 exactly; for every
    bound M the action a = mu_old + sigma z, z = (log M + KL) / sqrt(2 KL) + 1 in each
    coordinate, has a ratio above M, and its probability under pi_old is positive."""
    kl, sigma = 0.01, 0.7
    shift = sigma * math.sqrt(2 * kl / d)  # sum_j shift^2 / (2 sigma^2) = kl
    mu_o, mu_n = np.zeros(d), np.full(d, shift)
    assert gaussian_kl(mu_o, sigma, mu_n, sigma) == pytest.approx(kl, rel=1e-12)
    for bound in (10.0, 1e3, 1e6):
        # log rho(mu_old + sigma z) = (shift / sigma) * sum_j z_j - kl; equal z_j = z / sqrt(d)
        z = (math.log(bound) + kl) / math.sqrt(2 * kl) + 1.0
        a = mu_o + sigma * np.full(d, z / math.sqrt(d))
        assert gaussian_log_ratio(a, mu_o, sigma, mu_n, sigma) > math.log(bound)
    # ... and P(rho > 10) > 0 (about 1e-60; for 1e3 it underflows double precision)
    assert mean_shift_ratio_tail(kl, bound=10.0)["above_bound"] > 0


def test_mean_shift_tail_probabilities_match_sampling():
    kl, eps, n = 0.02, 0.2, 400_000
    rng = np.random.default_rng(0)
    shift = math.sqrt(2 * kl)  # sigma 1, one coordinate
    a = rng.normal(size=(n, 1))
    ratio = np.exp(gaussian_log_ratio(a, [0.0], [1.0], [shift], [1.0]))
    p = mean_shift_ratio_tail(kl, clip_eps=eps, bound=2.0)
    for key, hits in (("above", ratio > 1 + eps), ("below", ratio < 1 - eps),
                      ("outside", np.abs(ratio - 1) > eps), ("above_bound", ratio > 2.0)):
        se = math.sqrt(p[key] * (1 - p[key]) / n)
        assert abs(hits.mean() - p[key]) < 4 * se, key


# --------------------------------------------------------------------------------------------------
# the Gaussian policy
# --------------------------------------------------------------------------------------------------
def test_gaussian_policy_log_ratio_and_kl_match_the_closed_forms():
    old = GaussianActorCritic(3, 2, hidden=8, seed=0, log_std_init=-0.3)
    new = GaussianActorCritic(3, 2, hidden=8, seed=1, log_std_init=0.2)
    obs = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    actions = old.act(obs, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        d_old, d_new = old.distribution(obs), new.distribution(obs)
        log_ratio = (d_new.log_prob(actions) - d_old.log_prob(actions)).double().numpy()
        kl = kl_divergence(d_old, d_new).double().numpy()
        mu_o, mu_n = old.mean(obs).double().numpy(), new.mean(obs).double().numpy()
        sd_o = old.actor.log_std.exp().double().numpy()
        sd_n = new.actor.log_std.exp().double().numpy()
    a = actions.double().numpy()
    np.testing.assert_allclose(log_ratio, gaussian_log_ratio(a, mu_o, sd_o, mu_n, sd_n), atol=1e-5)
    np.testing.assert_allclose(kl, gaussian_kl(mu_o, sd_o, mu_n, sd_n), atol=1e-6)


def test_gaussian_policy_shapes_init_and_sampling():
    net = GaussianActorCritic(3, 2, hidden=16, seed=0, log_std_init=math.log(0.5))
    # log_std belongs to the actor (theta for TRPO), not to the critic
    assert any(p is net.actor.log_std for p in net.actor.parameters())
    assert not any(p is net.actor.log_std for p in net.critic.parameters())
    obs = torch.zeros(20_000, 3)
    assert net.distribution(obs).batch_shape == (20_000,)
    assert net.distribution(obs).event_shape == (2,)
    mean = net.act(obs[:1], deterministic=True)
    assert float(mean.abs().max()) == 0.0  # zero biases, zero input: the mean is 0
    a = net.act(obs, generator=torch.Generator().manual_seed(0))
    n = len(a)
    # sample mean within 4 standard errors of 0, sample std within 4 se of 0.5
    assert float(a.mean(0).abs().max()) < 4 * 0.5 / math.sqrt(n)
    assert float((a.std(0) - 0.5).abs().max()) < 4 * 0.5 / math.sqrt(2 * n)
    again = net.act(obs, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, again)


def test_gaussian_policy_bad_input():
    with pytest.raises(ValueError, match="action_dim: must be a positive integer"):
        GaussianActorCritic(3, 0)
    with pytest.raises(ValueError, match="log_std_init"):
        GaussianActorCritic(3, 1, log_std_init=float("nan"))


# --------------------------------------------------------------------------------------------------
# observation normalisation and action clipping
# --------------------------------------------------------------------------------------------------
def test_running_mean_std_matches_numpy_over_all_batches():
    rng = np.random.default_rng(0)
    batches = [rng.normal(loc=[1.0, -5.0], scale=[0.1, 3.0], size=(n, 2)) for n in (1, 7, 100, 3)]
    norm_ = RunningMeanStd(2, clip=5.0)
    for b in batches:
        norm_.update(b)
    x = np.concatenate(batches)
    np.testing.assert_allclose(norm_.mean.numpy(), x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(norm_.var.numpy(), x.var(0), rtol=1e-10)
    assert float(norm_.count) == len(x)
    z = norm_(torch.as_tensor(x, dtype=torch.float32)).double().numpy()
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(z.std(0), 1.0, atol=1e-5)
    far = norm_(torch.tensor([[1e6, -1e6]]))
    assert far.tolist() == [[5.0, -5.0]]  # clipped


def test_running_mean_std_bad_input():
    with pytest.raises(ValueError, match="dim: must be a positive integer"):
        RunningMeanStd(0)
    with pytest.raises(ValueError, match=r"x: expected shape \(B, 2\)"):
        RunningMeanStd(2).update(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="x"):
        RunningMeanStd(1).update(np.array([[np.inf]]))


def test_collector_stores_unclipped_samples_and_the_environment_gets_clipped_actions():
    env = make_vec_env("Pendulum-v1", num_envs=2, seed=0)
    policy = GaussianActorCritic(3, 1, hidden=8, seed=0, log_std_init=math.log(3.0))
    rollout = RolloutCollector(env).collect(policy, 50, torch.Generator().manual_seed(0))
    env.close()
    assert rollout.actions.dtype == np.float32 and rollout.actions.shape == (50, 2, 1)
    assert np.abs(rollout.actions).max() > 2.0  # the samples themselves are kept
    # Pendulum's reward -(theta^2 + 0.1 thetadot^2 + 0.001 u^2) with u the clipped action
    theta = np.arctan2(rollout.obs[:-1, :, 1], rollout.obs[:-1, :, 0])
    u = env_action(gym.spaces.Box(-2.0, 2.0, (1,)), rollout.actions)[..., 0]
    expected = -(theta**2 + 0.1 * rollout.obs[:-1, :, 2] ** 2 + 0.001 * u**2)
    np.testing.assert_allclose(rollout.rewards, expected, rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------------------------------
# TRPO's Fisher-vector product is the Hessian of the closed-form Gaussian KL
# --------------------------------------------------------------------------------------------------
def test_fisher_vector_product_of_a_gaussian_policy_is_the_hessian_of_the_closed_form_kl():
    torch.manual_seed(0)
    W = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    log_std = torch.tensor([-0.2, 0.3], dtype=torch.float64, requires_grad=True)
    obs = torch.randn(5, 3, dtype=torch.float64)

    def dist_fn(o):
        mean = o @ W.T
        return Independent(Normal(mean, log_std.exp().expand_as(mean)), 1)

    def closed_form_mean_kl(theta):  # eq. cont-kl written out, old = current parameters
        W_new, log_std_new = theta[:6].reshape(2, 3), theta[6:]
        mu_o, mu_n = obs @ W.detach().T, obs @ W_new.T
        sd_o, sd_n = log_std.detach().exp(), log_std_new.exp()
        kl = torch.log(sd_n / sd_o) + (sd_o**2 + (mu_o - mu_n) ** 2) / (2 * sd_n**2) - 0.5
        return kl.sum(-1).mean()

    theta0 = torch.cat([W.detach().reshape(-1), log_std.detach()])
    hessian = torch.autograd.functional.hessian(closed_form_mean_kl, theta0)
    fvp = make_fisher_vector_product(dist_fn, obs, [W, log_std], damping=0.0)
    columns = torch.stack([fvp(e) for e in torch.eye(8, dtype=torch.float64)], dim=1)
    torch.testing.assert_close(columns, hessian)
    # the log-std block is 2 I / B * B: d^2/dl^2 of sum_j (l_j - l_j_old + e^{2(l_old - l)}/2 - 1/2) = 2
    torch.testing.assert_close(hessian[6:, 6:], 2.0 * torch.eye(2, dtype=torch.float64))


# --------------------------------------------------------------------------------------------------
# the trainers on Pendulum-v1
# --------------------------------------------------------------------------------------------------
def test_ppo_on_pendulum_smoke():
    cfg = PPOConfig(total_timesteps=2048, num_envs=4, num_steps=128, update_epochs=2,
                    gamma=0.9, norm_obs=True, reward_scale=0.1, anneal_clip=False,
                    eval_every=1024, eval_episodes=2)
    policy, history = train_ppo("Pendulum-v1", cfg, seed=0, progress=False)
    _, cartpole = train_ppo("CartPole-v1", PPOConfig(total_timesteps=512, num_envs=4,
                                                      num_steps=128), progress=False)
    assert isinstance(policy, GaussianActorCritic)
    assert len(history) == 4 and set(history[0]) == set(cartpole[0])
    for record in history:
        assert 0 <= record["clip_fraction"] <= 1 and record["approx_kl_k3"] >= 0
        assert record["kl_final"] >= 0 and len(record["ratio_sample"]) == cfg.ratio_sample_size
        assert record["ratio_q05"] <= record["ratio_q50"] <= record["ratio_q95"]
    assert history[0]["episodes"] == 0 and history[1]["episodes"] == 4  # 200-step episodes
    assert float(policy.obs_norm.count) == 4 * 4 * 128 - 4 * 2  # reset steps are not counted
    assert -1700 < history[-1]["eval_return"] <= 0
    _, again = train_ppo("Pendulum-v1", cfg, seed=0, progress=False)
    assert [r["kl_final"] for r in again] == [r["kl_final"] for r in history]


def test_trpo_on_pendulum_smoke_keeps_the_mean_gaussian_kl_within_delta():
    cfg = TRPOConfig(total_timesteps=3 * 1024, num_envs=4, num_steps=256, gamma=0.9,
                     norm_obs=True, reward_scale=0.1, delta=0.01)
    steps = []

    def record_log_std(record, policy):
        steps.append(policy.actor.log_std.detach().clone())

    policy, history = train_trpo("Pendulum-v1", cfg, seed=0, progress=False,
                                 callback=record_log_std)
    assert isinstance(policy, GaussianActorCritic) and len(history) == 3
    for record in history:
        assert 0 <= record["kl"] <= cfg.delta and record["max_kl"] >= record["kl"]
    assert not all(record["rejected"] for record in history)
    # the policy step moves the log standard deviation too (it is part of theta); it starts at 0
    assert any(not torch.equal(log_std, torch.zeros(1)) for log_std in steps)
    mean, _ = evaluate_policy(policy, "Pendulum-v1", episodes=2, seed=0)
    assert -1700 < mean <= 0


# --------------------------------------------------------------------------------------------------
# what the trainers refuse
# --------------------------------------------------------------------------------------------------
class _TwoByTwoBoxActions(gym.Env):
    observation_space = gym.spaces.Box(-1.0, 1.0, (2,))
    action_space = gym.spaces.Box(-1.0, 1.0, (2, 2))

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, dtype=np.float32), {}

    def step(self, action):
        return np.zeros(2, dtype=np.float32), 0.0, True, False, {}


gym.register("TwoByTwoBoxActions-v0", entry_point=_TwoByTwoBoxActions, max_episode_steps=10)


@pytest.mark.parametrize("space, match", [
    (gym.spaces.MultiDiscrete([2, 3]), r"action_space: .*got MultiDiscrete"),
    (gym.spaces.Box(-1.0, 1.0, (2, 2)), r"action_space: .*got Box\(-1.0, 1.0, \(2, 2\)"),
    (gym.spaces.Box(-np.inf, np.inf, (1,)), r"action_space: .*finite bounds, got Box\(-inf"),
])
def test_make_actor_critic_names_an_action_space_it_cannot_handle(space, match):
    with pytest.raises(ValueError, match=match):
        make_actor_critic(gym.spaces.Box(-1.0, 1.0, (3,)), space)


@pytest.mark.parametrize("train, config", [(train_ppo, PPOConfig), (train_trpo, TRPOConfig)])
def test_trainers_name_the_environment_and_the_space_they_cannot_handle(train, config):
    cfg = config(total_timesteps=128, num_envs=2, num_steps=64)
    with pytest.raises(ValueError, match=r"env_id: 'TwoByTwoBoxActions-v0': action_space: "
                                         r".*got Box\(-1.0, 1.0, \(2, 2\)"):
        train("TwoByTwoBoxActions-v0", cfg, progress=False)
    with pytest.raises(ValueError, match=r"env_id: 'FrozenLake-v1': observation_space: "
                                         r"must be a one-dimensional Box, got Discrete\(16\)"):
        train("FrozenLake-v1", cfg, progress=False)
    with pytest.raises(ValueError, match="reward_scale: must be > 0"):
        config(reward_scale=0.0)


def test_pendulum_settings_are_valid_configs_and_take_overrides():
    for config in (PPOConfig, TRPOConfig):
        cfg = config.pendulum(total_timesteps=1234)
        assert isinstance(cfg, config) and cfg.total_timesteps == 1234
        assert cfg.norm_obs and cfg.lam == 0.95 and cfg.reward_scale == 0.1
        assert config().norm_obs is False and config().reward_scale == 1.0  # CartPole unchanged
        with pytest.raises(ValueError, match="gamma"):
            config.pendulum(gamma=1.5)
    ppo = PPOConfig.pendulum()  # the documented PPO setting (benchmarks/README.md)
    assert (ppo.num_envs, ppo.num_steps, ppo.num_minibatches, ppo.gamma) == (16, 128, 8, 0.95)
    assert ppo.anneal_lr and not ppo.anneal_clip and ppo.log_std_init == 0.5
    assert TRPOConfig.pendulum().gamma == 0.9
