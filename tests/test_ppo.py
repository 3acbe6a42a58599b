"""Tests for companion.ppo: the clipped surrogate against hand-computed values and its gradient,
the configuration checks, the history's aggregation over the whole update, and (slow) that PPO
solves CartPole-v1."""

import math
import time

import numpy as np
import pytest
import torch

import companion
from companion.ppo import PPOConfig, PPOHistory, clipped_surrogate, train_ppo

torch.set_num_threads(1)


# --------------------------------------------------------------------------------------------------
# the loss
# --------------------------------------------------------------------------------------------------
def test_clipped_surrogate_hand_computed():
    eps = 0.2
    ratio = torch.tensor([0.5, 0.9, 1.0, 1.1, 1.5, 0.5, 1.5, 0.7])
    adv = torch.tensor([2.0, 1.0, -1.0, 3.0, 1.0, -2.0, -1.0, 0.0])
    # min(r A, clip(r) A) by hand, entry by entry
    terms = [0.5 * 2.0,    # r < 1-eps, A > 0: unclipped term is smaller (not favourable)
             0.9 * 1.0,    # inside
             -1.0,         # inside
             1.1 * 3.0,    # inside
             1.2 * 1.0,    # r > 1+eps, A > 0: clipped (favourable direction)
             0.8 * -2.0,   # r < 1-eps, A < 0: clipped (favourable direction)
             1.5 * -1.0,   # r > 1+eps, A < 0: unclipped term is smaller
             0.0]          # A = 0
    loss, info = clipped_surrogate(torch.log(ratio), adv, eps)
    assert loss.item() == pytest.approx(-sum(terms) / 8, rel=1e-6)
    r = ratio.double().numpy()
    assert info["approx_kl_k1"] == pytest.approx(np.mean(-np.log(r)), rel=1e-6)
    assert info["approx_kl_k3"] == pytest.approx(np.mean(r - 1 - np.log(r)), rel=1e-6)
    assert info["clip_fraction"] == pytest.approx(5 / 8)  # 0.5, 1.5, 0.5, 1.5, 0.7
    assert info["clip_active_fraction"] == pytest.approx(2 / 8)
    assert info["ratio_min"] == pytest.approx(0.5) and info["ratio_max"] == pytest.approx(1.5)
    assert info["ratio_mean"] == pytest.approx(r.mean(), rel=1e-6)


def test_unclipped_surrogate_is_plain_importance_sampling():
    ratio = torch.tensor([0.5, 1.0, 3.0])
    adv = torch.tensor([1.0, -2.0, 0.5])
    loss, info = clipped_surrogate(torch.log(ratio), adv, None)
    assert loss.item() == pytest.approx(-(0.5 - 2.0 + 1.5) / 3)
    assert info["clip_fraction"] == 0.0 and info["clip_active_fraction"] == 0.0


def test_k3_is_nonnegative_and_k1_can_be_negative():
    log_ratio = torch.tensor([0.3, 0.1, 0.2])  # all ratios > 1
    _, info = clipped_surrogate(log_ratio, torch.ones(3), 0.2)
    assert info["approx_kl_k1"] < 0 < info["approx_kl_k3"]


def test_gradient_zero_exactly_where_clip_binds_in_favourable_direction():
    eps = 0.2
    ratio = torch.tensor([1.5, 1.3, 0.6, 0.7, 1.5, 0.6, 1.1, 0.9, 1.0, 1.19, 0.81],
                         dtype=torch.float64)
    adv = torch.tensor([1.0, 2.0, -1.0, -0.5, -1.0, 1.0, 1.0, -1.0, 2.0, 1.0, -1.0],
                       dtype=torch.float64)
    binds = ((ratio > 1 + eps) & (adv > 0)) | ((ratio < 1 - eps) & (adv < 0))
    assert binds.tolist() == [True, True, True, True] + [False] * 7
    log_ratio = torch.log(ratio).requires_grad_(True)
    loss, _ = clipped_surrogate(log_ratio, adv, eps)
    loss.backward()
    grad = log_ratio.grad
    # d/d log r of -(1/B) r A is -(1/B) r A where the unclipped term is selected
    expected = torch.where(binds, torch.zeros_like(ratio), -ratio * adv / len(ratio))
    assert torch.equal(grad[binds], torch.zeros(int(binds.sum()), dtype=torch.float64))
    assert (grad[~binds] != 0).all()
    torch.testing.assert_close(grad, expected)


def test_gradient_flows_to_network_parameters_only_outside_binding_region():
    # one-parameter "policy": log r = theta * x; the gradient in theta vanishes if every sample binds
    theta = torch.tensor(1.0, requires_grad=True)
    x = torch.tensor([0.5, 0.4])  # ratios e^0.5, e^0.4 > 1.2
    loss, _ = clipped_surrogate(theta * x, torch.tensor([1.0, 2.0]), 0.2)
    loss.backward()
    assert theta.grad.item() == 0.0
    theta.grad = None
    loss, _ = clipped_surrogate(theta * x, torch.tensor([1.0, -2.0]), 0.2)  # second one does not bind
    loss.backward()
    assert theta.grad.item() == pytest.approx(-(-2.0 * math.exp(0.4) * 0.4) / 2)


@pytest.mark.parametrize(
    "log_ratio, adv, eps, match",
    [
        (torch.zeros(3), torch.zeros(4), 0.2, "advantages"),
        (torch.zeros((2, 2)), torch.zeros((2, 2)), 0.2, "log_ratio"),
        (torch.zeros(0), torch.zeros(0), 0.2, "log_ratio"),
        (torch.tensor([0.0, float("nan")]), torch.zeros(2), 0.2, "log_ratio.*index 1"),
        (torch.zeros(2), torch.tensor([float("inf"), 0.0]), 0.2, "advantages.*index 0"),
        (torch.zeros(2), torch.zeros(2), 1.5, "clip_eps"),
        (torch.zeros(2), torch.zeros(2), 0.0, "clip_eps"),
        (np.zeros(2), torch.zeros(2), 0.2, "log_ratio"),
    ],
)
def test_clipped_surrogate_bad_input(log_ratio, adv, eps, match):
    with pytest.raises(ValueError, match=match):
        clipped_surrogate(log_ratio, adv, eps)


def test_global_gradient_clipping_matches_torch():
    from companion.ppo import _clip_global_grad_norm
    from companion.rl import ActorCritic

    nets = [ActorCritic(4, 2, hidden=8, seed=0) for _ in range(2)]
    obs = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    for net in nets:
        (100 * net.value(obs).sum() + net.logits(obs).sum()).backward()
    ours = _clip_global_grad_norm(list(nets[0].parameters()), 0.5)
    ref = torch.nn.utils.clip_grad_norm_(list(nets[1].parameters()), 0.5)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-6) and ours.item() > 0.5
    for a, b in zip(nets[0].parameters(), nets[1].parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad)
    joint = torch.linalg.vector_norm(torch.cat([p.grad.reshape(-1) for p in nets[0].parameters()]))
    assert joint.item() == pytest.approx(0.5, rel=1e-4)


# --------------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_envs": 0}, "num_envs"),
        ({"num_steps": 2.5}, "num_steps"),
        ({"update_epochs": 0}, "update_epochs"),
        ({"num_minibatches": 10_000}, "num_minibatches"),
        ({"gamma": 1.1}, "gamma"),
        ({"lam": -0.5}, "lam"),
        ({"clip_eps": 0.0}, "clip_eps"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"max_grad_norm": float("inf")}, "max_grad_norm"),
        ({"ent_coef": -0.1}, "ent_coef"),
        ({"target_kl": 0.0}, "target_kl"),
        ({"eval_every": -1}, "eval_every"),
        ({"stop_return": 475.0}, "stop_return"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PPOConfig(**kwargs)


def test_config_fields_are_documented():
    import ast
    import inspect

    source = inspect.getsource(PPOConfig)
    body = ast.parse(source).body[0].body
    documented = {
        stmt.target.id
        for stmt, nxt in zip(body, body[1:], strict=False)
        if isinstance(stmt, ast.AnnAssign) and isinstance(nxt, ast.Expr)
        and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)
    }
    fields = set(PPOConfig.__dataclass_fields__)
    assert fields == documented


# --------------------------------------------------------------------------------------------------
# training: short runs
# --------------------------------------------------------------------------------------------------
SMALL = dict(total_timesteps=768, num_envs=4, num_steps=64, update_epochs=3, num_minibatches=2,
             ratio_sample_size=10**6)


def test_train_history_is_aggregated_over_the_whole_update():
    cfg = PPOConfig(**SMALL)
    _, history = train_ppo("CartPole-v1", cfg, seed=0, progress=False)
    assert isinstance(history, PPOHistory) and len(history) == 3
    for rec in history:
        assert rec["n_minibatch_steps"] == cfg.update_epochs * cfg.num_minibatches
        # with a sample cap above K, ratio_sample holds every (epoch, transition) ratio
        r = rec["ratio_sample"].astype(np.float64)
        assert r.size % cfg.update_epochs == 0
        valid = r.size // cfg.update_epochs
        assert cfg.num_envs * cfg.num_steps - rec["episodes"] - cfg.num_envs <= valid
        assert valid <= cfg.num_envs * cfg.num_steps
        # the first minibatch of the update sees pi_theta = pi_old, so exactly-one ratios are in
        # the aggregate: min <= 1 <= max (last-minibatch-only statistics would usually miss them)
        # (up to float rounding: the rollout evaluated the actor on a different batch shape)
        assert rec["ratio_min"] <= 1.0 + 1e-6 and rec["ratio_max"] >= 1.0 - 1e-6
        assert np.sum(np.abs(r - 1.0) < 1e-6) >= valid // cfg.num_minibatches
        eps = rec["clip_eps"]
        assert rec["approx_kl_k3"] == pytest.approx(np.mean(r - 1 - np.log(r)), rel=1e-4, abs=1e-7)
        assert rec["approx_kl_k1"] == pytest.approx(np.mean(-np.log(r)), rel=1e-4, abs=1e-6)
        assert rec["clip_fraction"] == pytest.approx(np.mean(np.abs(r - 1) > eps), abs=1e-3)
        q = np.quantile(r, [0.05, 0.25, 0.5, 0.75, 0.95])
        got = [rec[f"ratio_q{p:02d}"] for p in (5, 25, 50, 75, 95)]
        np.testing.assert_allclose(got, q, rtol=1e-5)
        assert rec["ratio_min"] == pytest.approx(r.min(), rel=1e-6)
        assert rec["ratio_max"] == pytest.approx(r.max(), rel=1e-6)
        assert rec["kl_final"] >= 0
        assert -1.0 <= rec["explained_variance"] <= 1.0 or math.isnan(rec["explained_variance"])
    d = history.to_dict_of_arrays()
    np.testing.assert_array_equal(d["env_steps"], [256, 512, 768])
    assert np.all(np.diff(d["wall_time"]) > 0)
    # learning rate annealed linearly: lr * (1 - k / n_updates)
    np.testing.assert_allclose(d["learning_rate"], cfg.learning_rate * np.array([1, 2 / 3, 1 / 3]))


def test_train_is_reproducible_and_leaves_global_rng_alone():
    cfg = PPOConfig(**{**SMALL, "ratio_sample_size": 50})
    state = torch.get_rng_state()
    np_state = np.random.get_state()[1].copy()  # noqa: NPY002 (checking it is untouched)
    p1, h1 = train_ppo("CartPole-v1", cfg, seed=3, progress=False)
    assert torch.equal(torch.get_rng_state(), state)
    np.testing.assert_array_equal(np.random.get_state()[1], np_state)  # noqa: NPY002
    p2, h2 = train_ppo("CartPole-v1", cfg, seed=3, progress=False)
    for a, b in zip(h1, h2, strict=True):
        for key in a:
            if key != "wall_time":
                np.testing.assert_array_equal(a[key], b[key])
    for a, b in zip(p1.parameters(), p2.parameters(), strict=True):
        assert torch.equal(a, b)
    _, h3 = train_ppo("CartPole-v1", cfg, seed=4, progress=False)
    assert h3[-1]["loss"] != h1[-1]["loss"]


def test_unclipped_ablation_and_target_kl():
    cfg = PPOConfig(**{**SMALL, "clip_eps": None, "update_epochs": 8, "learning_rate": 1e-2})
    _, history = train_ppo("CartPole-v1", cfg, seed=0, progress=False)
    assert all(math.isnan(r["clip_eps"]) and r["clip_fraction"] == 0.0 for r in history)
    cfg = PPOConfig(**{**SMALL, "update_epochs": 50, "learning_rate": 1e-2, "target_kl": 1e-4})
    _, history = train_ppo("CartPole-v1", cfg, seed=0, progress=False)
    assert any(r["n_minibatch_steps"] < 50 * cfg.num_minibatches for r in history)


def test_evaluation_callback_and_excluded_time():
    cfg = PPOConfig(**{**SMALL, "total_timesteps": 2048, "eval_every": 500, "eval_episodes": 2})
    seen, pause = [], 0.3

    def callback(record, policy):
        seen.append(record["update"])
        time.sleep(pause)
        return record["update"] == 4  # stop after the fifth update

    t0 = time.perf_counter()
    _, history = train_ppo("CartPole-v1", cfg, seed=0, progress=False, callback=callback)
    elapsed = time.perf_counter() - t0
    assert seen == [0, 1, 2, 3, 4] and len(history) == 5
    evaluated = [r["env_steps"] for r in history if not math.isnan(r["eval_return"])]
    assert evaluated == [512, 1024]  # first update at or after 500 and 1000 steps (1500: none yet)
    # callback time (and evaluation time) is excluded from the wall clock
    assert history[-1]["wall_time"] + 4 * pause <= elapsed


def test_stop_return_stops_at_first_good_evaluation():
    cfg = PPOConfig(**{**SMALL, "total_timesteps": 4096, "eval_every": 256, "eval_episodes": 2,
                       "stop_return": 1.0})  # any policy scores at least 1
    _, history = train_ppo("CartPole-v1", cfg, seed=0, progress=False)
    assert len(history) == 1 and history[0]["eval_return"] >= 1.0


def test_train_rejects_bad_arguments():
    with pytest.raises(ValueError, match="config"):
        train_ppo("CartPole-v1", config={"num_envs": 2}, progress=False)
    with pytest.raises(ValueError, match="seed"):
        train_ppo("CartPole-v1", PPOConfig(**SMALL), seed=1.5, progress=False)
    with pytest.raises(ValueError, match="Pendulum-v1.*Discrete"):
        train_ppo("Pendulum-v1", PPOConfig(**SMALL), progress=False)


def test_public_names():
    assert companion.ppo.train is train_ppo
    for name in ("clipped_surrogate", "PPOConfig", "train_ppo", "gae", "evaluate_policy",
                 "ActorCritic", "make_vec_env"):
        assert hasattr(companion, name)


# --------------------------------------------------------------------------------------------------
# slow: PPO solves CartPole-v1
# --------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_ppo_solves_cartpole_for_most_seeds():
    """Deterministic evaluation return >= 475 (10 episodes) within 100,000 steps, >= 4 of 5 seeds.

    Each seed stops at its first evaluation (every 2,000 steps) that reaches 475.
    """
    cfg = PPOConfig(total_timesteps=100_000, eval_every=2_000, eval_episodes=10,
                    stop_return=475.0, ratio_sample_size=0)
    solved = []
    for seed in range(5):
        _, history = train_ppo("CartPole-v1", cfg, seed=seed, progress=False)
        best = np.nanmax([r["eval_return"] for r in history])
        solved.append(best >= 475.0)
        print(f"seed {seed}: best eval {best:.1f} after {history[-1]['env_steps']} steps, "
              f"{history[-1]['wall_time']:.1f} s")
    assert sum(solved) >= 4, solved
