"""Tests for companion.trpo: conjugate gradient, Fisher-vector product, line search, training, and
(slow) that TRPO solves CartPole-v1 and stays solved."""

import math

import numpy as np
import pytest
import torch
from torch.distributions import Categorical

import companion
from companion.rl import History, evaluate_policy
from companion.trpo import (
    TRPOConfig,
    backtracking_line_search,
    conjugate_gradient,
    fisher_vector_product,
    make_fisher_vector_product,
    train_trpo,
    trust_region_step,
)

torch.set_num_threads(1)


# ------------------------------------------------------------------------------------------------
# conjugate gradient
# ------------------------------------------------------------------------------------------------


def _random_spd(n, rng, cond=50.0):
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    eig = np.geomspace(1.0, cond, n)
    return (q * eig) @ q.T


@pytest.mark.parametrize("n", [1, 2, 5, 20])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_conjugate_gradient_matches_numpy_solve(n, seed):
    rng = np.random.default_rng(seed)
    A = _random_spd(n, rng)
    b = rng.standard_normal(n)
    At, bt = torch.from_numpy(A), torch.from_numpy(b)
    x = conjugate_gradient(lambda v: At @ v, bt, iters=3 * n, tol=1e-12)
    np.testing.assert_allclose(x.numpy(), np.linalg.solve(A, b), rtol=1e-7, atol=1e-9)


def test_conjugate_gradient_exact_in_n_steps_on_well_conditioned_system():
    rng = np.random.default_rng(3)
    A = _random_spd(6, rng, cond=3.0)
    b = rng.standard_normal(6)
    x = conjugate_gradient(lambda v: torch.from_numpy(A) @ v, torch.from_numpy(b), iters=6, tol=0.0)
    np.testing.assert_allclose(x.numpy(), np.linalg.solve(A, b), rtol=1e-8)


def test_conjugate_gradient_stops_at_tolerance_and_counts_products():
    calls = []
    A = torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))

    def Avp(v):
        calls.append(1)
        return A @ v

    # b is an eigenvector: one iteration solves the system exactly, then the residual is 0.
    x = conjugate_gradient(Avp, torch.tensor([0.0, 4.0, 0.0], dtype=torch.float64), iters=10)
    assert len(calls) == 1
    np.testing.assert_allclose(x.numpy(), [0.0, 2.0, 0.0])
    calls.clear()
    conjugate_gradient(
        lambda v: (calls.append(1), A @ v)[1], torch.ones(3, dtype=torch.float64), iters=2
    )
    assert len(calls) == 2


def test_conjugate_gradient_bad_input():
    A = torch.eye(2)
    with pytest.raises(ValueError, match="b must be finite; entry 1"):
        conjugate_gradient(lambda v: A @ v, torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="iters: must be a positive integer"):
        conjugate_gradient(lambda v: A @ v, torch.ones(2), iters=0)
    with pytest.raises(ValueError, match="tol: must be >= 0"):
        conjugate_gradient(lambda v: A @ v, torch.ones(2), tol=-1.0)
    with pytest.raises(ValueError, match="b must be one-dimensional"):
        conjugate_gradient(lambda v: A @ v, torch.ones(2, 1))
    with pytest.raises(ValueError, match="b is empty"):
        conjugate_gradient(lambda v: v, torch.ones(0))
    with pytest.raises(ValueError, match="positive definite"):
        conjugate_gradient(lambda v: -v, torch.ones(2))
    with pytest.raises(ValueError, match="Avp returned a non-finite"):
        conjugate_gradient(lambda v: v * float("inf"), torch.ones(2))
    with pytest.raises(ValueError, match="Avp must return a tensor of shape"):
        conjugate_gradient(lambda v: torch.ones(3), torch.ones(2))


# ------------------------------------------------------------------------------------------------
# Fisher-vector product against the full Hessian of the mean KL
# ------------------------------------------------------------------------------------------------


def _tiny_policy(seed=0):
    gen = torch.Generator().manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3)
    ).double()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64))
    obs = torch.randn(7, 3, generator=gen, dtype=torch.float64)
    return net, obs


def _kl_hessian(net, obs):
    names = [name for name, _ in net.named_parameters()]
    shapes = [p.shape for p in net.parameters()]
    theta0 = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    logp_old = torch.log_softmax(net(obs), -1).detach()

    def mean_kl(theta):
        chunks = torch.split(theta, [math.prod(s) for s in shapes])
        params = {n: c.reshape(s) for n, c, s in zip(names, chunks, shapes, strict=True)}
        logp = torch.log_softmax(torch.func.functional_call(net, params, (obs,)), -1)
        return (logp_old.exp() * (logp_old - logp)).sum(-1).mean()

    return torch.autograd.functional.hessian(mean_kl, theta0), theta0.numel()


@pytest.mark.parametrize("damping", [0.0, 0.1])
def test_fisher_vector_product_matches_full_kl_hessian(damping):
    net, obs = _tiny_policy()
    H, n = _kl_hessian(net, obs)
    dist_fn = lambda o: Categorical(logits=net(o))  # noqa: E731
    fvp = make_fisher_vector_product(dist_fn, obs, list(net.parameters()), damping=damping)
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        v = torch.randn(n, generator=gen, dtype=torch.float64)
        expected = H @ v + damping * v
        torch.testing.assert_close(fvp(v), expected, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(
            fisher_vector_product(dist_fn, obs, list(net.parameters()), v, damping),
            expected,
            rtol=1e-10,
            atol=1e-12,
        )
    # the Hessian of the KL at theta_old is the Fisher matrix: symmetric positive semi-definite
    torch.testing.assert_close(H, H.T)
    assert torch.linalg.eigvalsh(H).min() > -1e-10


def test_fisher_matrix_of_softmax_logits_closed_form():
    # pi = softmax(theta) with no state dependence: F = diag(p) - p p^T exactly.
    theta = torch.tensor([0.3, -1.0, 0.5], dtype=torch.float64, requires_grad=True)
    obs = torch.zeros(5, 1, dtype=torch.float64)
    fvp = make_fisher_vector_product(
        lambda o: Categorical(logits=theta.expand(o.shape[0], 3)), obs, [theta], damping=0.0
    )
    p = torch.softmax(theta.detach(), 0)
    F = torch.diag(p) - torch.outer(p, p)
    for j in range(3):
        e = torch.zeros(3, dtype=torch.float64)
        e[j] = 1.0
        torch.testing.assert_close(fvp(e), F[:, j])


def test_fisher_matrix_of_gaussian_mean_closed_form():
    # pi = N(theta, sigma^2 I): KL(old || new) = |theta - theta_old|^2 / (2 sigma^2), so F = I / sigma^2
    from torch.distributions import Independent, Normal

    theta = torch.tensor([0.5, -0.2], dtype=torch.float64, requires_grad=True)
    sigma = 0.5
    dist_fn = lambda o: Independent(Normal(theta.expand(o.shape[0], 2), sigma), 1)  # noqa: E731
    v = torch.tensor([1.0, -3.0], dtype=torch.float64)
    Fv = fisher_vector_product(dist_fn, torch.zeros(4, 1), [theta], v, damping=0.01)
    torch.testing.assert_close(Fv, v / sigma**2 + 0.01 * v)


def test_fisher_vector_product_bad_input():
    net, obs = _tiny_policy()
    dist_fn = lambda o: Categorical(logits=net(o))  # noqa: E731
    params = list(net.parameters())
    n = sum(p.numel() for p in params)
    with pytest.raises(ValueError, match="damping: must be >= 0"):
        make_fisher_vector_product(dist_fn, obs, params, damping=-0.1)
    with pytest.raises(ValueError, match="params is empty"):
        make_fisher_vector_product(dist_fn, obs, [], damping=0.1)
    with pytest.raises(ValueError, match="obs"):
        make_fisher_vector_product(dist_fn, obs[:0], params)
    with pytest.raises(ValueError, match="dist_fn must return"):
        make_fisher_vector_product(
            lambda o: torch.distributions.Bernoulli(logits=net(o)[:, 0]), obs, params
        )
    fvp = make_fisher_vector_product(dist_fn, obs, params)
    with pytest.raises(ValueError, match=r"v must have shape"):
        fvp(torch.ones(n + 1, dtype=torch.float64))
    v = torch.ones(n, dtype=torch.float64)
    v[4] = float("inf")
    with pytest.raises(ValueError, match="v must be finite; entry 4"):
        fvp(v)


# ------------------------------------------------------------------------------------------------
# step size and line search
# ------------------------------------------------------------------------------------------------


def test_trust_region_step_hits_quadratic_kl_delta():
    rng = np.random.default_rng(0)
    F = torch.from_numpy(_random_spd(5, rng))
    s = torch.from_numpy(rng.standard_normal(5))
    step = trust_region_step(s, F @ s, delta=0.02)
    assert float(0.5 * step @ F @ step) == pytest.approx(0.02, rel=1e-12)
    with pytest.raises(ValueError, match="delta: must be > 0"):
        trust_region_step(s, F @ s, delta=0.0)
    with pytest.raises(ValueError, match="delta: must be finite"):
        trust_region_step(s, F @ s, delta=float("nan"))
    with pytest.raises(ValueError, match="Fs must be finite"):
        trust_region_step(s, torch.full((5,), float("nan"), dtype=torch.float64), delta=0.01)
    with pytest.raises(ValueError, match=r"s\^T F s"):
        trust_region_step(s, -s, delta=0.01)


def _quadratic_problem(curvature=1.0):
    """Mean KL 0.5 c |theta|^2 (max KL twice that), surrogate g^T theta - 0.5 |theta|^2."""
    g = torch.tensor([1.0, 2.0], dtype=torch.float64)

    def evaluate(theta):
        kl = 0.5 * curvature * float(theta @ theta)
        return float(g @ theta - 0.5 * theta @ theta), kl, 2.0 * kl

    return g, evaluate


def test_line_search_backtracks_until_kl_constraint_holds():
    g, evaluate = _quadratic_problem(curvature=1.0)
    delta = 0.01
    full_step = 0.5 * g  # KL of the full step = 0.5 * 0.25 * 5 = 0.625 >> delta
    res = backtracking_line_search(
        evaluate,
        torch.zeros(2, dtype=torch.float64),
        full_step,
        float(g @ full_step),
        delta,
        max_backtracks=10,
        shrink=0.5,
    )
    assert res.accepted
    # KL of 0.5^k full step is 0.625 / 4^k: first at most 0.01 is k = 3 (0.00977)
    assert res.n_backtracks == 3
    assert res.step_fraction == 0.125
    assert res.mean_kl <= delta
    assert res.mean_kl == pytest.approx(0.625 / 64)
    assert res.max_kl == pytest.approx(2 * res.mean_kl)
    torch.testing.assert_close(res.theta, 0.125 * full_step)
    # every refused candidate violated the constraint; the accepted one satisfies it and improves
    assert [t[2] > delta for t in res.trials] == [True, True, True, False]
    assert res.actual_improvement > 0
    assert res.expected_improvement == pytest.approx(0.125 * float(g @ full_step))


def test_line_search_rejects_when_surrogate_never_improves():
    g, evaluate = _quadratic_problem()
    theta_old = torch.tensor([0.1, -0.2], dtype=torch.float64)
    bad_step = -0.01 * g  # a descent direction of the surrogate: never improves, KL always tiny
    res = backtracking_line_search(evaluate, theta_old, bad_step, 0.05, delta=1.0, max_backtracks=4)
    assert not res.accepted
    assert res.n_backtracks == 4 and len(res.trials) == 5
    assert res.step_fraction == 0.0 and res.mean_kl == 0.0 and res.actual_improvement == 0.0
    torch.testing.assert_close(res.theta, theta_old)
    assert all(t[1] <= 0 for t in res.trials)


def test_line_search_rejects_when_kl_never_small_enough():
    # the KL is bounded below by 0.5 away from theta_old (e.g. a policy that jumps): nothing passes
    def evaluate(theta):
        return float(theta.sum()), 0.0 if float(theta.abs().sum()) == 0 else 0.5, 0.5

    res = backtracking_line_search(
        evaluate, torch.zeros(3), torch.ones(3), 3.0, delta=0.01, max_backtracks=5, shrink=0.8
    )
    assert not res.accepted
    assert all(t[2] > 0.01 for t in res.trials)
    torch.testing.assert_close(res.theta, torch.zeros(3))


def test_line_search_bad_input():
    _, evaluate = _quadratic_problem()
    z = torch.zeros(2, dtype=torch.float64)
    with pytest.raises(ValueError, match="delta"):
        backtracking_line_search(evaluate, z, z + 1, 1.0, delta=-0.01)
    with pytest.raises(ValueError, match=r"shrink: must be in \(0, 1\)"):
        backtracking_line_search(evaluate, z, z + 1, 1.0, delta=0.01, shrink=1.0)
    with pytest.raises(ValueError, match="max_backtracks: must be a non-negative integer"):
        backtracking_line_search(evaluate, z, z + 1, 1.0, delta=0.01, max_backtracks=-1)
    with pytest.raises(ValueError, match="full_step must be finite"):
        backtracking_line_search(evaluate, z, z + float("nan"), 1.0, delta=0.01)
    with pytest.raises(ValueError, match="same shape"):
        backtracking_line_search(evaluate, z, torch.ones(3, dtype=torch.float64), 1.0, delta=0.01)
    with pytest.raises(ValueError, match="expected_improvement: must be finite"):
        backtracking_line_search(evaluate, z, z + 1, float("inf"), delta=0.01)


# ------------------------------------------------------------------------------------------------
# training
# ------------------------------------------------------------------------------------------------

HISTORY_KEYS = {
    "update",
    "env_steps",
    "wall_time",
    "kl",
    "max_kl",
    "n_backtracks",
    "step_fraction",
    "expected_improvement",
    "actual_improvement",
    "improvement_ratio",
    "rejected",
    "value_loss",
    "entropy",
    "grad_norm",
    "episode_return",
    "episodes",
    "eval_return",
    "eval_return_std",
}


@pytest.fixture(scope="module")
def short_run():
    cfg = TRPOConfig(total_timesteps=12 * 1024, num_envs=8, num_steps=128, eval_every=4096)
    policy, history = train_trpo("CartPole-v1", cfg, seed=3, progress=False)
    return cfg, policy, history


def test_every_accepted_step_satisfies_the_mean_kl_constraint(short_run):
    cfg, _, history = short_run
    assert isinstance(history, History) and len(history) == 12
    for row in history:
        assert set(row) == HISTORY_KEYS
        if row["rejected"]:
            assert row["kl"] == 0.0 and row["max_kl"] == 0.0 and row["step_fraction"] == 0.0
            assert row["n_backtracks"] == cfg.max_backtracks
        else:
            assert 0.0 < row["kl"] <= cfg.delta
            assert row["step_fraction"] == pytest.approx(
                cfg.backtrack_shrink ** row["n_backtracks"]
            )
            assert row["actual_improvement"] > 0
            assert row["improvement_ratio"] == pytest.approx(
                row["actual_improvement"] / row["expected_improvement"]
            )
        # the max over states bounds the mean; only the mean is constrained
        assert row["max_kl"] >= row["kl"]
    d = history.to_dict_of_arrays()
    np.testing.assert_array_equal(d["env_steps"], 1024 * np.arange(1, 13))
    assert np.isfinite(d["value_loss"]).all() and (d["entropy"] > 0).all()
    assert (d["entropy"] <= math.log(2) + 1e-6).all()
    # evaluations after the updates that pass 4096, 8192 and 12288 steps
    assert np.flatnonzero(~np.isnan(d["eval_return"])).tolist() == [3, 7, 11]
    # learning happens: training episodes get longer
    assert np.nanmean(d["episode_return"][-3:]) > 2 * np.nanmean(d["episode_return"][:2])


def test_full_steps_reach_most_of_the_trust_region(short_run):
    # with damping 0.1 the quadratic model 1/2 s^T (F + 0.1 I) s = delta overestimates the KL a
    # little, so an accepted full step has an exact mean KL a bit below delta, never above
    cfg, _, history = short_run
    full = [r for r in history if not r["rejected"] and r["n_backtracks"] == 0]
    assert full, "expected at least one full step"
    for row in full:
        assert 0.3 * cfg.delta < row["kl"] <= cfg.delta


def test_small_trust_region_makes_the_local_models_accurate():
    # For a small delta and almost no damping, the quadratic model of the mean KL and the linear
    # model of the surrogate are accurate: the accepted step alpha^k * full_step has an exact mean
    # KL of alpha^(2k) * delta and improves the surrogate by the predicted amount, within 20 %.
    # (A step scaled wrongly, a prediction missing the step fraction, or a wrong sign fails.)
    cfg = TRPOConfig(total_timesteps=6 * 1024, num_envs=8, num_steps=128, delta=1e-4,
                     cg_damping=1e-3)
    _, history = train_trpo("CartPole-v1", cfg, seed=3, progress=False)
    accepted = [r for r in history if not r["rejected"]]
    assert len(accepted) == len(history)
    for row in accepted:
        kl_model = cfg.backtrack_shrink ** (2 * row["n_backtracks"]) * cfg.delta
        assert 0.8 < row["kl"] / kl_model < 1.2
        assert 0.8 < row["improvement_ratio"] < 1.2


def test_train_is_reproducible_and_quiet(capsys):
    cfg = TRPOConfig(total_timesteps=2048, num_envs=4, num_steps=256)
    state = torch.get_rng_state()
    p1, h1 = train_trpo("CartPole-v1", cfg, seed=7, progress=False)
    p2, h2 = train_trpo("CartPole-v1", cfg, seed=7, progress=False)
    assert torch.equal(torch.get_rng_state(), state)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    for a, b in zip(h1, h2, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            if key != "wall_time":
                np.testing.assert_array_equal(a[key], b[key])
    for a, b in zip(p1.parameters(), p2.parameters(), strict=True):
        assert torch.equal(a, b)


def test_callback_can_stop_training():
    seen = []

    def callback(record, policy):
        seen.append(record["update"])
        return record["update"] == 1

    _, history = train_trpo(
        "CartPole-v1",
        TRPOConfig(total_timesteps=8192, num_envs=4, num_steps=128),
        seed=0,
        progress=False,
        callback=callback,
    )
    assert seen == [0, 1] and len(history) == 2


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"delta": 0.0}, "delta: must be > 0"),
        ({"delta": -0.01}, "delta: must be > 0"),
        ({"delta": float("inf")}, "delta: must be finite"),
        ({"cg_iters": 0}, "cg_iters: must be a positive integer"),
        ({"cg_damping": -1.0}, "cg_damping: must be >= 0"),
        ({"gamma": 1.5}, r"gamma: must be in \[0, 1\]"),
        ({"lam": -0.1}, r"lam: must be in \[0, 1\]"),
        ({"backtrack_shrink": 1.0}, r"backtrack_shrink: must be in \(0, 1\)"),
        ({"max_backtracks": -1}, "max_backtracks: must be a non-negative integer"),
        ({"num_envs": 0}, "num_envs: must be a positive integer"),
        ({"vf_lr": 0.0}, "vf_lr: must be > 0"),
        ({"hidden": 0}, "hidden: must be a positive integer"),
        ({"hidden": (16, 0)}, "hidden: must be a positive integer"),
        ({"stop_return": float("nan"), "eval_every": 10}, "stop_return: must be finite"),
        ({"stop_return": 475.0}, "stop_return: needs eval_every > 0"),
    ],
)
def test_config_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TRPOConfig(**kwargs)


def test_train_bad_input():
    with pytest.raises(ValueError, match="config: must be a TRPOConfig"):
        train_trpo("CartPole-v1", config={"delta": 0.01}, progress=False)
    with pytest.raises(ValueError, match="seed: must be a non-negative integer"):
        train_trpo("CartPole-v1", TRPOConfig(total_timesteps=128), seed=1.5, progress=False)
    with pytest.raises(ValueError, match="env_id: 'FrozenLake-v1': observation_space"):
        train_trpo("FrozenLake-v1", TRPOConfig(total_timesteps=128), progress=False)


def test_public_names():
    for name in ("conjugate_gradient", "make_fisher_vector_product", "trust_region_step",
                 "backtracking_line_search", "TRPOConfig", "train_trpo"):
        assert getattr(companion, name) is getattr(companion.trpo, name)


@pytest.mark.slow
def test_train_solves_cartpole_and_stays_solved_for_5_of_5_seeds():
    """With the defaults, for each of the seeds 0-4: a deterministic evaluation (10 episodes, every
    2,000 steps) reaches a mean return of 475 within 100,000 steps, the policy at the end of the
    100,000-step budget still evaluates at >= 475 (10 fresh episodes), and every update kept its
    mean KL within delta."""
    cfg = TRPOConfig(total_timesteps=100_000, eval_every=2_000, eval_episodes=10)
    reached, final = [], []
    for seed in range(5):
        policy, history = train_trpo("CartPole-v1", cfg, seed=seed, progress=False)
        evals = [r["eval_return"] for r in history if not math.isnan(r["eval_return"])]
        reached.append(max(evals) >= 475.0)
        final.append(evaluate_policy(policy, "CartPole-v1", episodes=10,
                                     seed=10_000 * (seed + 1) + len(evals))[0])
        assert all(r["kl"] <= cfg.delta for r in history)
        print(f"seed {seed}: best evaluation {max(evals):.1f}, final {final[-1]:.1f}, "
              f"{history[-1]['wall_time']:.1f} s")
    assert all(reached), reached
    assert min(final) >= 475.0, final
