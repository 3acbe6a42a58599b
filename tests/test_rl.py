"""Tests for companion.rl: GAE against a plain loop and a hand-worked example, the rollout collector's
masking and episode statistics, explained variance, the network, the vector environment's autoreset
convention, evaluate_policy, and (through both trainers) that a step which is both terminated and
truncated is not bootstrapped."""

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from companion.ppo import PPOConfig, train_ppo
from companion.rl import (
    ActorCritic,
    History,
    RolloutCollector,
    evaluate_policy,
    explained_variance,
    gae,
    make_vec_env,
)
from companion.trpo import TRPOConfig, train_trpo

torch.set_num_threads(1)


# --------------------------------------------------------------------------------------------------
# GAE
# --------------------------------------------------------------------------------------------------
def gae_loop(rewards, values, terminated, truncated, last_values, gamma, lam):
    """Textbook GAE in plain Python, one environment and one step at a time."""
    T, N = len(rewards), len(rewards[0])
    adv = [[0.0] * N for _ in range(T)]
    for n in range(N):
        running = 0.0
        for t in reversed(range(T)):
            next_value = last_values[n] if t == T - 1 else values[t + 1][n]
            if terminated[t][n]:  # a terminal state has no future, whatever truncated says
                delta = rewards[t][n] - values[t][n]
            else:
                delta = rewards[t][n] + gamma * next_value - values[t][n]
            if terminated[t][n] or truncated[t][n]:  # the episode ends here: no A_{t+1}
                running = 0.0
            running = delta + gamma * lam * running
            adv[t][n] = running
    ret = [[adv[t][n] + values[t][n] for n in range(N)] for t in range(T)]
    return np.array(adv), np.array(ret)


def random_rollout(rng, T=23, N=5, p_end=0.2):
    """Independent flags, as gymnasium sets them: some steps are both terminated and truncated."""
    rewards = rng.normal(size=(T, N))
    values = rng.normal(size=(T, N))
    terminated = rng.random((T, N)) < p_end
    truncated = rng.random((T, N)) < p_end
    last_values = rng.normal(size=N)
    return rewards, values, terminated, truncated, last_values


@pytest.mark.parametrize("gamma, lam", [(0.99, 0.95), (0.9, 0.0), (1.0, 1.0), (0.5, 0.7)])
def test_gae_matches_plain_loop(gamma, lam):
    rng = np.random.default_rng(123)
    for _ in range(5):
        r, v, term, trunc, last = random_rollout(rng)
        assert (term & trunc).any() and (term & ~trunc).any() and (trunc & ~term).any()
        adv, ret = gae(r, v, term, trunc, last, gamma, lam)
        adv_ref, ret_ref = gae_loop(r.tolist(), v.tolist(), term.tolist(), trunc.tolist(),
                                    last.tolist(), gamma, lam)
        np.testing.assert_allclose(adv, adv_ref, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(ret, ret_ref, rtol=1e-12, atol=1e-12)


def test_gae_three_steps_by_hand():
    # t = 0 an ordinary step; t = 1 terminated AND truncated (the pole falls on the time limit's
    # step); t = 2 truncated only, bootstrapping from last_values. gamma = lam = 0.5.
    #   delta_2 = 3 + 0.5 * 10 - 4 = 4                  A_2 = 4
    #   delta_1 = 2 + 0 - 2 = 0 (terminal: no V_2)      A_1 = 0 (the episode ends: no A_2)
    #   delta_0 = 1 + 0.5 * 2 - 1 = 1                   A_0 = 1 + 0.25 * A_1 = 1
    adv, ret = gae(rewards=[[1.0], [2.0], [3.0]], values=[[1.0], [2.0], [4.0]],
                   terminated=[[False], [True], [False]], truncated=[[False], [True], [True]],
                   last_values=[10.0], gamma=0.5, lam=0.5)
    np.testing.assert_allclose(adv[:, 0], [1.0, 0.0, 4.0], rtol=0, atol=1e-15)
    np.testing.assert_allclose(ret[:, 0], [2.0, 2.0, 8.0], rtol=0, atol=1e-15)
    assert adv.dtype == ret.dtype == np.float64


def test_gae_lambda_one_is_discounted_return_minus_baseline():
    # one episode of length 5 that terminates: A_t = G_t - V_t with G_t the discounted return
    r = np.array([[1.0], [2.0], [0.5], [-1.0], [3.0]])
    v = np.array([[0.3], [-0.2], [1.0], [0.0], [0.7]])
    term = np.array([[False]] * 4 + [[True]])
    gamma = 0.9
    adv, ret = gae(r, v, term, np.zeros_like(term), np.array([123.0]), gamma, 1.0)
    G = [sum(gamma ** (k - t) * r[k, 0] for k in range(t, 5)) for t in range(5)]
    np.testing.assert_allclose(ret[:, 0], G, rtol=1e-12)
    np.testing.assert_allclose(adv[:, 0], np.array(G) - v[:, 0], rtol=1e-12)


def test_truncation_bootstraps_from_final_observation_value():
    # A truncated step bootstraps from the next value (the true final observation under next-step
    # autoreset); a terminated one does not; neither lets the recursion cross the boundary.
    r = np.array([[1.0, 1.0], [0.0, 0.0], [1.0, 1.0]])
    v = np.array([[2.0, 2.0], [10.0, 10.0], [4.0, 4.0]])  # row 1: value of the final observation
    term = np.array([[False, True], [False, False], [False, False]])
    trunc = np.array([[True, False], [False, False], [False, False]])
    gamma, lam = 0.5, 0.9
    adv, _ = gae(r, v, term, trunc, np.array([6.0, 6.0]), gamma, lam)
    assert adv[0, 0] == pytest.approx(1.0 + gamma * 10.0 - 2.0)  # bootstrapped: 4.0
    assert adv[0, 1] == pytest.approx(1.0 - 2.0)  # terminated: -1.0
    # the step after the boundary does not leak backwards: changing it leaves row 0 unchanged
    r2 = r.copy()
    r2[1:] += 100.0
    adv2, _ = gae(r2, v, term, trunc, np.array([6.0, 6.0]), gamma, lam)
    np.testing.assert_array_equal(adv2[0], adv[0])


def test_truncation_at_last_step_uses_last_values():
    r, v = np.ones((2, 1)), np.zeros((2, 1))
    end = np.array([[False], [True]])
    no = np.zeros_like(end)
    adv_trunc, _ = gae(r, v, no, end, np.array([5.0]), 1.0, 1.0)
    adv_term, _ = gae(r, v, end, no, np.array([5.0]), 1.0, 1.0)
    adv_both, _ = gae(r, v, end, end, np.array([5.0]), 1.0, 1.0)
    np.testing.assert_array_equal(adv_trunc[:, 0], [7.0, 6.0])
    np.testing.assert_array_equal(adv_term[:, 0], [2.0, 1.0])
    np.testing.assert_array_equal(adv_both[:, 0], [2.0, 1.0])  # both flags: terminal


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"values": np.zeros((3,))}, r"values: must be a non-empty array of shape \(T, N\)"),
        ({"values": np.zeros((0, 2))}, "values: empty"),
        ({"rewards": np.zeros((4, 2))}, r"rewards: must have shape \(3, 2\)"),
        ({"terminated": np.zeros((3, 1), bool)}, "terminated: must have shape"),
        ({"truncated": np.zeros((3, 2), int)}, "truncated: must be a boolean array"),
        ({"terminated": [[0, 1]] * 3}, "terminated: must be a boolean array"),
        ({"last_values": np.zeros(3)}, r"last_values: must have shape \(2,\)"),
        ({"last_values": [0.0, np.inf]}, "last_values: NaN or inf at env 1"),
        ({"gamma": 1.5}, r"gamma: must be in \[0, 1\]"),
        ({"lam": -0.1}, r"lam: must be in \[0, 1\]"),
        ({"lam": "0.9"}, "lam: must be a real number"),
    ],
)
def test_gae_bad_input(kwargs, match):
    args = {"rewards": np.zeros((3, 2)), "values": np.zeros((3, 2)),
            "terminated": np.zeros((3, 2), bool), "truncated": np.zeros((3, 2), bool),
            "last_values": np.zeros(2), "gamma": 0.9, "lam": 0.9}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        gae(**args)


def test_gae_names_the_nonfinite_step_and_env():
    r = np.zeros((3, 2))
    r[2, 1] = np.nan
    flags = np.zeros((3, 2), bool)
    with pytest.raises(ValueError, match=r"rewards: NaN or inf at step 2, env 1"):
        gae(r, np.zeros((3, 2)), flags, flags, np.zeros(2), 0.9, 0.9)
    with pytest.raises(ValueError, match=r"values: NaN or inf at step 2, env 1"):
        gae(np.zeros((3, 2)), r, flags, flags, np.zeros(2), 0.9, 0.9)


# --------------------------------------------------------------------------------------------------
# explained variance
# --------------------------------------------------------------------------------------------------
def test_explained_variance_on_known_arrays():
    returns = np.array([1.0, 2.0, 4.0])
    assert explained_variance(returns, returns) == 1.0  # perfect
    assert explained_variance(np.full(3, returns.mean()), returns) == pytest.approx(0.0, abs=1e-15)
    # residuals (0, 0, 1): Var = 2/9; Var(returns) = 14/9
    assert explained_variance([1.0, 2.0, 3.0], returns) == pytest.approx(6 / 7, rel=1e-15)
    # a value function worse than a constant: residuals (-3, 0, 3), Var = 6 = 54/9; below -1
    assert explained_variance([4.0, 2.0, 1.0], returns) == pytest.approx(-20 / 7, rel=1e-15)
    assert explained_variance(-10 * returns, returns) < -100
    assert math.isnan(explained_variance([1.0, 2.0], [3.0, 3.0]))  # constant returns
    with pytest.raises(ValueError, match="returns: shape"):
        explained_variance([1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="values: NaN or inf at index 1"):
        explained_variance([1.0, np.nan], [1.0, 2.0])


# --------------------------------------------------------------------------------------------------
# the rollout collector
# --------------------------------------------------------------------------------------------------
class _Scripted:
    """A 'policy' that balances CartPole with a linear controller (or always pushes left)."""

    def __init__(self, balance):
        self.balance = balance

    def act(self, obs, deterministic=True, generator=None):
        obs = torch.as_tensor(obs)
        if self.balance:
            return (obs[:, 2] + 0.5 * obs[:, 3] > 0).long()
        return torch.zeros(obs.shape[0], dtype=torch.long)


def test_collector_masks_reset_steps_and_counts_episodes():
    env = make_vec_env("CartPole-v1", num_envs=3, seed=0)
    collector = RolloutCollector(env)
    first = collector.collect(_Scripted(False), num_steps=40)  # the pole falls after ~10 steps
    second = collector.collect(_Scripted(False), num_steps=40)
    env.close()
    for rollout in (first, second):
        end = rollout.terminated | rollout.truncated
        assert rollout.obs.shape == (41, 3, 4) and rollout.obs.dtype == np.float32
        assert rollout.actions.shape == (40, 3) and rollout.actions.dtype == np.int64
        # the step after every episode end, and only it, is a reset step: reward 0, no flags
        np.testing.assert_array_equal(rollout.valid[1:], ~end[:-1])
        assert (rollout.rewards[~rollout.valid] == 0).all() and not end[~rollout.valid].any()
        assert not rollout.truncated.any()  # no 500-step episodes here
    assert first.valid[0].all()  # fresh episodes after the reset
    # the state carries over: the same observation, and a reset step after an end at t = 39
    np.testing.assert_array_equal(second.obs[0], first.obs[-1])
    np.testing.assert_array_equal(second.valid[0], ~(first.terminated | first.truncated)[-1])
    # CartPole pays 1 per real step, so each finished episode's return is its number of valid
    # steps, counting those it had in the first rollout; listed in the order the episodes ended
    valid = np.concatenate([first.valid, second.valid])
    ends = np.concatenate([first.terminated | first.truncated, second.terminated | second.truncated])
    expected, length = [], np.zeros(3)
    for t in range(len(valid)):
        length += valid[t]
        expected.extend(length[ends[t]].tolist())
        length[ends[t]] = 0
    assert first.episode_returns + second.episode_returns == expected
    assert len(first.episode_returns) >= 6 and all(8 <= r <= 12 for r in expected)


def test_collector_returns_of_full_length_episodes():
    env = make_vec_env("CartPole-v1", num_envs=2, seed=0)
    collector = RolloutCollector(env)
    rollout = collector.collect(_Scripted(True), num_steps=503)
    env.close()
    # the controller balances until the time limit: truncated (not terminated) at step 499
    assert rollout.truncated[499].all() and not rollout.terminated.any()
    assert rollout.episode_returns == [500.0, 500.0]
    assert not rollout.valid[500].any() and rollout.valid[501:].all()


# --------------------------------------------------------------------------------------------------
# terminated and truncated on the same step: no bootstrap, in both trainers
# --------------------------------------------------------------------------------------------------
class EndsAtOnce(gym.Env):
    """Every episode is one step long, pays 1 and ends *both* terminated and truncated (as
    CartPole does when the pole falls on the time limit's step). So every state's value is 1; a
    trainer that bootstrapped from the final observation would learn V = 1 + gamma V, i.e. more
    than 1, growing towards 1 / (1 - gamma)."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.np_random.uniform(-1, 1, 2).astype(np.float32), {}

    def step(self, action):
        return self.np_random.uniform(-1, 1, 2).astype(np.float32), 1.0, True, True, {}


@pytest.fixture(scope="module")
def ends_at_once():
    if "EndsAtOnce-v0" not in gym.registry:
        gym.register("EndsAtOnce-v0", entry_point=EndsAtOnce)
    return "EndsAtOnce-v0"


@pytest.mark.parametrize("trainer", ["ppo", "trpo"])
def test_trainers_do_not_bootstrap_a_terminated_and_truncated_step(ends_at_once, trainer):
    env = make_vec_env(ends_at_once, num_envs=2, seed=0)
    rollout = RolloutCollector(env).collect(_Scripted(False), num_steps=6)
    env.close()
    assert (rollout.terminated & rollout.truncated)[rollout.valid].all()
    assert rollout.episode_returns == [1.0] * 6
    if trainer == "ppo":
        cfg = PPOConfig(total_timesteps=8192, num_envs=8, num_steps=32, learning_rate=1e-2,
                        anneal_lr=False, gamma=0.9, hidden=16)
        policy, history = train_ppo(ends_at_once, cfg, seed=0, progress=False)
    else:
        cfg = TRPOConfig(total_timesteps=8192, num_envs=8, num_steps=32, vf_lr=1e-2, gamma=0.9,
                         hidden=16)
        policy, history = train_trpo(ends_at_once, cfg, seed=0, progress=False)
    obs = torch.rand(1000, 2, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        values = policy.value(obs)
    # the targets are exactly 1 (bootstrapping would make them 1 + 0.9 V, about 1.9 once V ~ 1)
    assert abs(values.mean() - 1.0) < 0.05 and (values - 1.0).abs().max() < 0.25
    assert history[-1]["episode_return"] == 1.0


# --------------------------------------------------------------------------------------------------
# the network, the environments, evaluation, history
# --------------------------------------------------------------------------------------------------
def test_actor_critic_init_and_shapes():
    net = ActorCritic(4, 3, hidden=(16, 8), seed=0)
    obs = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))
    assert net.distribution(obs).probs.shape == (5, 3)
    assert net.value(obs).shape == (5,)
    assert net.value(obs.reshape(5, 1, 4)).shape == (5, 1)  # leading dimensions are kept
    # hidden layers orthogonal with gain sqrt(2): W W^T = 2 I for the wide-to-narrow layer
    w = net.actor[2].weight.detach()  # (8, 16)
    np.testing.assert_allclose((w @ w.T).numpy(), 2.0 * np.eye(8), atol=1e-5)
    # policy head gain 0.01 -> nearly uniform initial policy; biases zero
    probs = net.distribution(obs).probs
    assert torch.allclose(probs, torch.full_like(probs, 1 / 3), atol=0.01)
    assert all(float(m.bias.detach().abs().max()) == 0.0 for m in net.modules()
               if isinstance(m, torch.nn.Linear))
    # separate networks: no shared parameters
    assert not set(map(id, net.actor.parameters())) & set(map(id, net.critic.parameters()))
    # same seed -> same weights, another seed -> other weights; global RNG untouched
    state = torch.get_rng_state()
    net2 = ActorCritic(4, 3, hidden=(16, 8), seed=0)
    net3 = ActorCritic(4, 3, hidden=(16, 8), seed=1)
    assert torch.equal(torch.get_rng_state(), state)
    for a, b, c in zip(net.parameters(), net2.parameters(), net3.parameters(), strict=True):
        assert torch.equal(a, b)
        assert a.abs().max() == 0 or not torch.equal(a, c)


def test_actor_critic_sampling_frequencies():
    net = ActorCritic(2, 3, hidden=4, seed=0)
    with torch.no_grad():
        net.actor[-1].weight.zero_()
        net.actor[-1].bias.copy_(torch.log(torch.tensor([0.2, 0.3, 0.5])))
    n = 20_000
    acts = net.act(torch.zeros(n, 2), generator=torch.Generator().manual_seed(0))
    freq = np.bincount(acts.numpy(), minlength=3) / n
    p = np.array([0.2, 0.3, 0.5])
    assert np.all(np.abs(freq - p) < 4 * np.sqrt(p * (1 - p) / n))
    assert net.act(torch.zeros(1, 2), deterministic=True).item() == 2
    again = net.act(torch.zeros(n, 2), generator=torch.Generator().manual_seed(0))
    assert torch.equal(acts, again)


@pytest.mark.parametrize("kwargs, match", [({"obs_dim": 0}, "obs_dim: must be a positive integer"),
                                           ({"n_actions": 1.5}, "n_actions"),
                                           ({"hidden": (8, 0)}, "hidden"),
                                           ({"hidden": ()}, "hidden")])
def test_actor_critic_bad_input(kwargs, match):
    args = {"obs_dim": 4, "n_actions": 2}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        ActorCritic(**args)


def test_make_vec_env_next_step_autoreset_and_truncation():
    env = make_vec_env("CartPole-v1", num_envs=3, seed=0)
    assert env.metadata["autoreset_mode"].name == "NEXT_STEP"
    obs, _ = env.reset()
    assert obs.shape == (3, 4)
    # a hand-made balancing controller keeps the pole up until the 500-step time limit
    for t in range(500):
        action = (obs[:, 2] + 0.5 * obs[:, 3] > 0).astype(np.int64)
        obs, reward, terminated, truncated, _ = env.step(action)
        if t < 499:
            assert not truncated.any()
    assert truncated.all() and not terminated.any()
    final_obs = obs.copy()
    assert np.abs(final_obs[:, 2]).max() < 0.21  # still a live state: worth bootstrapping
    obs, reward, terminated, truncated, _ = env.step(np.zeros(3, dtype=np.int64))  # reset step
    np.testing.assert_array_equal(reward, 0.0)
    assert not (terminated | truncated).any()
    assert np.abs(obs).max() <= 0.05  # a fresh initial state
    env.close()


def test_make_vec_env_is_reproducible_and_validates():
    a = make_vec_env("CartPole-v1", 2, seed=7).reset()[0]
    b = make_vec_env("CartPole-v1", 2, seed=7).reset()[0]
    c = make_vec_env("CartPole-v1", 2, seed=8).reset()[0]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    with pytest.raises(ValueError, match="num_envs: must be a positive integer"):
        make_vec_env("CartPole-v1", 0)
    with pytest.raises(ValueError, match="seed: must be a non-negative integer"):
        make_vec_env("CartPole-v1", 1, seed=1.5)
    with pytest.raises(ValueError, match="env_id: 'NoSuchEnv-v9'"):
        make_vec_env("NoSuchEnv-v9", 1)
    env = make_vec_env("Acrobot-v1", 2, seed=0)  # no vector entry point: synchronous fallback
    assert env.metadata["autoreset_mode"].name == "NEXT_STEP"
    env.close()


def test_evaluate_policy_counts_one_episode_per_copy():
    mean, std = evaluate_policy(_Scripted(True), "CartPole-v1", episodes=4, seed=0)
    assert (mean, std) == (500.0, 0.0)
    # pushing left: each copy's first episode, by hand with the same seeded environments
    env = make_vec_env("CartPole-v1", 6, seed=3)
    env.reset()
    lengths, running = np.zeros(6), np.ones(6, dtype=bool)
    while running.any():
        _, _, term, trunc, _ = env.step(np.zeros(6, dtype=np.int64))
        lengths += running
        running &= ~(term | trunc)
    env.close()
    mean, std = evaluate_policy(_Scripted(False), "CartPole-v1", episodes=6, seed=3)
    assert (mean, std) == (lengths.mean(), lengths.std())
    assert evaluate_policy(_Scripted(False), "CartPole-v1", episodes=6, seed=3) == (mean, std)
    with pytest.raises(ValueError, match="episodes"):
        evaluate_policy(_Scripted(True), "CartPole-v1", episodes=0)
    with pytest.raises(ValueError, match="policy: must have an act"):
        evaluate_policy(object(), "CartPole-v1")


def test_evaluate_policy_stochastic_is_seeded():
    net = ActorCritic(4, 2, hidden=8, seed=0)
    a = evaluate_policy(net, "CartPole-v1", episodes=5, seed=1, deterministic=False)
    b = evaluate_policy(net, "CartPole-v1", episodes=5, seed=1, deterministic=False)
    assert a == b and math.isfinite(a[0])


def test_history_to_dict_of_arrays():
    h = History([{"a": 1, "b": np.array([1.0, 2.0])}, {"a": 2, "b": np.array([3.0])}])
    d = h.to_dict_of_arrays()
    np.testing.assert_array_equal(d["a"], [1, 2])
    assert isinstance(d["b"], list) and [len(x) for x in d["b"]] == [2, 1]
    assert History().to_dict_of_arrays() == {}
