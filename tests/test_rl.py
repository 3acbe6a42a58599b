"""Tests for companion.rl: GAE against a plain loop, truncation bootstrapping, the network, the
vector environment's autoreset convention and evaluate_policy."""

import math

import numpy as np
import pytest
import torch

from companion.rl import ActorCritic, evaluate_policy, gae, make_vec_env

torch.set_num_threads(1)


def gae_loop(rewards, values, dones, truncations, last_values, gamma, lam):
    """Textbook GAE, one environment and one step at a time, in plain Python."""
    T, N = len(rewards), len(rewards[0])
    adv = [[0.0] * N for _ in range(T)]
    for n in range(N):
        running = 0.0
        for t in reversed(range(T)):
            next_value = last_values[n] if t == T - 1 else values[t + 1][n]
            terminated = dones[t][n] and not truncations[t][n]
            if terminated:
                delta = rewards[t][n] - values[t][n]
            else:
                delta = rewards[t][n] + gamma * next_value - values[t][n]
            if dones[t][n]:
                running = 0.0
            running = delta + gamma * lam * running
            adv[t][n] = running
    ret = [[adv[t][n] + values[t][n] for n in range(N)] for t in range(T)]
    return np.array(adv), np.array(ret)


def random_rollout(rng, T=23, N=5, p_done=0.15, p_trunc=0.5):
    rewards = rng.normal(size=(T, N))
    values = rng.normal(size=(T, N))
    dones = rng.random((T, N)) < p_done
    truncations = dones & (rng.random((T, N)) < p_trunc)
    last_values = rng.normal(size=N)
    return rewards, values, dones, truncations, last_values


@pytest.mark.parametrize("gamma, lam", [(0.99, 0.95), (0.9, 0.0), (1.0, 1.0), (0.5, 0.7)])
def test_gae_matches_plain_loop(gamma, lam):
    rng = np.random.default_rng(123)
    for _ in range(5):
        r, v, d, tr, last = random_rollout(rng)
        assert d.any() and tr.any() and (d & ~tr).any()
        adv, ret = gae(r, v, d, tr, last, gamma, lam)
        adv_ref, ret_ref = gae_loop(r.tolist(), v.tolist(), d.tolist(), tr.tolist(),
                                    last.tolist(), gamma, lam)
        np.testing.assert_allclose(adv, adv_ref, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(ret, ret_ref, rtol=1e-12, atol=1e-12)


def test_gae_torch_in_torch_out():
    rng = np.random.default_rng(0)
    r, v, d, tr, last = random_rollout(rng)
    adv_np, ret_np = gae(r, v, d, tr, last, 0.99, 0.95)
    adv_t, ret_t = gae(torch.tensor(r), torch.tensor(v, dtype=torch.float32), torch.tensor(d),
                       torch.tensor(tr), torch.tensor(last), 0.99, 0.95)
    assert isinstance(adv_t, torch.Tensor) and adv_t.dtype == torch.float32
    np.testing.assert_allclose(adv_t.numpy(), adv_np, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ret_t.numpy(), ret_np, rtol=1e-5, atol=1e-5)


def test_gae_lambda_one_is_discounted_return_minus_baseline():
    # one episode of length 5 that terminates: A_t = G_t - V_t with G_t the discounted return
    r = np.array([[1.0], [2.0], [0.5], [-1.0], [3.0]])
    v = np.array([[0.3], [-0.2], [1.0], [0.0], [0.7]])
    d = np.array([[False]] * 4 + [[True]])
    gamma = 0.9
    adv, ret = gae(r, v, d, np.zeros_like(d), np.array([123.0]), gamma, 1.0)
    G = [sum(gamma ** (k - t) * r[k, 0] for k in range(t, 5)) for t in range(5)]
    np.testing.assert_allclose(ret[:, 0], G, rtol=1e-12)
    np.testing.assert_allclose(adv[:, 0], np.array(G) - v[:, 0], rtol=1e-12)


def test_truncation_bootstraps_from_final_observation_value():
    # A truncated step bootstraps from the next value (the true final observation under next-step
    # autoreset); a terminated one does not; neither lets the recursion cross the boundary.
    r = np.array([[1.0, 1.0], [0.0, 0.0], [1.0, 1.0]])
    v = np.array([[2.0, 2.0], [10.0, 10.0], [4.0, 4.0]])  # row 1: value of the final observation
    d = np.array([[True, True], [False, False], [False, False]])
    tr = np.array([[True, False], [False, False], [False, False]])  # env 0 truncated, env 1 terminated
    gamma, lam = 0.5, 0.9
    adv, _ = gae(r, v, d, tr, np.array([6.0, 6.0]), gamma, lam)
    assert adv[0, 0] == pytest.approx(1.0 + gamma * 10.0 - 2.0)  # bootstrapped: 4.0
    assert adv[0, 1] == pytest.approx(1.0 - 2.0)  # terminated: -1.0
    # the step after the boundary does not leak backwards: changing it leaves row 0 unchanged
    r2 = r.copy()
    r2[1:] += 100.0
    adv2, _ = gae(r2, v, d, tr, np.array([6.0, 6.0]), gamma, lam)
    np.testing.assert_allclose(adv2[0], adv[0])


def test_truncation_at_last_step_uses_last_values():
    r = np.ones((2, 1))
    v = np.zeros((2, 1))
    d = np.array([[False], [True]])
    adv_trunc, _ = gae(r, v, d, d, np.array([5.0]), 1.0, 1.0)
    adv_term, _ = gae(r, v, d, np.zeros_like(d), np.array([5.0]), 1.0, 1.0)
    np.testing.assert_allclose(adv_trunc[:, 0], [7.0, 6.0])
    np.testing.assert_allclose(adv_term[:, 0], [2.0, 1.0])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"values": np.zeros((3,))}, "values"),
        ({"rewards": np.zeros((4, 2))}, "rewards"),
        ({"dones": np.zeros((3, 1), bool)}, "dones"),
        ({"last_values": np.zeros(3)}, "last_values"),
        ({"gamma": 1.5}, "gamma"),
        ({"lam": -0.1}, "lam"),
        ({"values": np.zeros((0, 2))}, "values"),
    ],
)
def test_gae_bad_input(kwargs, match):
    args = {"rewards": np.zeros((3, 2)), "values": np.zeros((3, 2)),
            "dones": np.zeros((3, 2), bool), "truncations": np.zeros((3, 2), bool),
            "last_values": np.zeros(2), "gamma": 0.9, "lam": 0.9}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        gae(**args)


def test_gae_names_nonfinite_step_and_truncation_without_done():
    r = np.zeros((3, 2))
    r[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"rewards.*t=2, env 1"):
        gae(r, np.zeros((3, 2)), np.zeros((3, 2), bool), np.zeros((3, 2), bool), np.zeros(2),
            0.9, 0.9)
    tr = np.zeros((3, 2), bool)
    tr[1, 0] = True
    with pytest.raises(ValueError, match=r"truncations.*t=1, env 0"):
        gae(np.zeros((3, 2)), np.zeros((3, 2)), np.zeros((3, 2), bool), tr, np.zeros(2), 0.9, 0.9)


def test_actor_critic_init_and_shapes():
    net = ActorCritic(4, 3, hidden=(16, 8), seed=0)
    obs = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))
    assert net.distribution(obs).probs.shape == (5, 3)
    assert net.value(obs).shape == (5,)
    # hidden layers orthogonal with gain sqrt(2): W W^T = 2 I for the wide-to-narrow layer
    w = net.actor[2].weight.detach()  # (8, 16)
    np.testing.assert_allclose((w @ w.T).numpy(), 2.0 * np.eye(8), atol=1e-5)
    # policy head gain 0.01 -> nearly uniform initial policy; biases zero
    probs = net.distribution(obs).probs
    assert torch.allclose(probs, torch.full_like(probs, 1 / 3), atol=0.01)
    assert all(float(m.bias.detach().abs().max()) == 0.0 for m in net.modules() if hasattr(m, "bias")
               and m.bias is not None)
    # separate networks: no shared parameters
    assert not set(map(id, net.actor.parameters())) & set(map(id, net.critic.parameters()))
    # same seed -> same weights; global RNG untouched
    state = torch.get_rng_state()
    net2 = ActorCritic(4, 3, hidden=(16, 8), seed=0)
    assert torch.equal(torch.get_rng_state(), state)
    for a, b in zip(net.parameters(), net2.parameters(), strict=True):
        assert torch.equal(a, b)


def test_actor_critic_sampling_frequencies():
    net = ActorCritic(2, 3, hidden=4, seed=0)
    with torch.no_grad():
        net.actor[-1].weight.zero_()
        net.actor[-1].bias.copy_(torch.log(torch.tensor([0.2, 0.3, 0.5])))
    n = 20_000
    acts = net.act(torch.zeros(n, 2), generator=torch.Generator().manual_seed(0))
    freq = np.bincount(acts.numpy(), minlength=3) / n
    se = np.sqrt(np.array([0.2, 0.3, 0.5]) * (1 - np.array([0.2, 0.3, 0.5])) / n)
    assert np.all(np.abs(freq - [0.2, 0.3, 0.5]) < 4 * se)
    assert net.act(torch.zeros(1, 2), deterministic=True).item() == 2


@pytest.mark.parametrize("kwargs, match", [({"obs_dim": 0}, "obs_dim"),
                                           ({"n_actions": 1.5}, "n_actions"),
                                           ({"hidden": (8, 0)}, "hidden")])
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
    with pytest.raises(ValueError, match="num_envs"):
        make_vec_env("CartPole-v1", 0)
    with pytest.raises(ValueError, match="env_id"):
        make_vec_env("NoSuchEnv-v9", 1)
    env = make_vec_env("Acrobot-v1", 2, seed=0)  # no vector entry point: synchronous fallback
    assert env.metadata["autoreset_mode"].name == "NEXT_STEP"
    env.close()


class _Scripted:
    """A 'policy' that balances CartPole with a linear controller (or always pushes left)."""

    def __init__(self, balance):
        self.balance = balance

    def act(self, obs, deterministic=True, generator=None):
        obs = torch.as_tensor(obs)
        if self.balance:
            return (obs[:, 2] + 0.5 * obs[:, 3] > 0).long()
        return torch.zeros(obs.shape[0], dtype=torch.long)


def test_evaluate_policy_counts_one_episode_per_copy():
    mean, std = evaluate_policy(_Scripted(True), "CartPole-v1", episodes=4, seed=0)
    assert (mean, std) == (500.0, 0.0)
    mean, std = evaluate_policy(_Scripted(False), "CartPole-v1", episodes=6, seed=3)
    assert 5 <= mean <= 15 and std >= 0
    again = evaluate_policy(_Scripted(False), "CartPole-v1", episodes=6, seed=3)
    assert again == (mean, std)
    with pytest.raises(ValueError, match="episodes"):
        evaluate_policy(_Scripted(True), "CartPole-v1", episodes=0)
    with pytest.raises(ValueError, match="policy"):
        evaluate_policy(object(), "CartPole-v1")


def test_evaluate_policy_stochastic_is_seeded():
    net = ActorCritic(4, 2, hidden=8, seed=0)
    a = evaluate_policy(net, "CartPole-v1", episodes=5, seed=1, deterministic=False)
    b = evaluate_policy(net, "CartPole-v1", episodes=5, seed=1, deterministic=False)
    assert a == b and math.isfinite(a[0])
