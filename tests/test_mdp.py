"""Tests for companion.mdp: exact solvers against each other, finite differences and simulation."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from companion.mdp import (
    TabularMDP,
    discounted_visitation,
    mix_policies,
    policy_gradient_exact,
    policy_quantities,
    policy_value,
    q_values,
    random_mdp,
    sample_trajectories,
    softmax_policy,
    state_values,
    uniform_policy,
)


@pytest.fixture
def small():
    mdp = random_mdp(4, 3, rng=7, gamma=0.9)
    pi = softmax_policy(np.random.default_rng(8).normal(size=(4, 3)))
    return mdp, pi


def episodic_mdp():
    return random_mdp(5, 2, rng=3, gamma=1.0, n_terminal=1)


# ------------------------------------------------------------------ validation
def test_rejects_bad_inputs():
    P = np.full((2, 2, 2), 0.5)
    R = np.zeros((2, 2))
    with pytest.raises(ValueError, match=r"P: probabilities must sum to 1, got 0.9 at row \(0, 0\)"):
        TabularMDP(P * 0.9, R, 0.9, [1.0, 0.0])
    bad = P.copy()
    bad[0, 1] = [1.5, -0.5]
    with pytest.raises(ValueError, match=r"P: probability 1.5 outside \[0, 1\] at index \(0, 1, 0\)"):
        TabularMDP(bad, R, 0.9, [1.0, 0.0])
    nan = P.copy()
    nan[1, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"P: NaN or inf at index \(1, 0, 0\)"):
        TabularMDP(nan, R, 0.9, [1.0, 0.0])
    with pytest.raises(ValueError, match="R: expected shape"):
        TabularMDP(P, np.zeros((3, 2)), 0.9, [1.0, 0.0])
    with pytest.raises(ValueError, match=r"gamma: must be in \[0, 1\], got 1.5"):
        TabularMDP(P, R, 1.5, [1.0, 0.0])
    with pytest.raises(ValueError, match="initial: expected shape"):
        TabularMDP(P, R, 0.9, [1.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="initial: probabilities must sum to 1, got 0.6"):
        TabularMDP(P, R, 0.9, [0.3, 0.3])
    with pytest.raises(ValueError, match="initial: puts mass 0.5 on terminal state 1"):
        TabularMDP(P, R, 0.9, [0.5, 0.5], terminal=[False, True])


def test_rejects_bad_policies_and_horizon(small):
    mdp, pi = small
    with pytest.raises(ValueError, match=r"pi: expected shape \(n_states, n_actions\)"):
        policy_value(mdp, pi[:, :2])
    with pytest.raises(ValueError, match="pi: probabilities must sum to 1"):
        policy_value(mdp, pi * 0.5)
    with pytest.raises(ValueError, match="horizon: must be a positive integer, got 0"):
        policy_value(mdp, pi, horizon=0)
    with pytest.raises(ValueError, match="horizon: must be a positive integer, got 3.0"):
        policy_value(mdp, pi, horizon=3.0)
    with pytest.raises(ValueError, match="behavior: expected shape"):
        sample_trajectories(mdp, pi[:2], n=3, horizon=2, rng=0)
    with pytest.raises(ValueError, match="n: must be a positive integer"):
        sample_trajectories(mdp, pi, n=0, horizon=2, rng=0)
    with pytest.raises(ValueError, match=r"alpha: must be in \[0, 1\]"):
        mix_policies(pi, pi, 1.5)


def test_gamma_one_without_termination_raises():
    mdp = random_mdp(3, 2, rng=0, gamma=1.0)
    with pytest.raises(ValueError, match="pi: the return is not finite"):
        policy_value(mdp, uniform_policy(3, 2))
    assert np.isfinite(policy_value(mdp, uniform_policy(3, 2), horizon=10))


# ------------------------------------------------------------------ exact solvers
def test_bellman_consistency(small):
    mdp, pi = small
    q = policy_quantities(mdp, pi)
    np.testing.assert_allclose(q.V, (pi * q.Q).sum(1), atol=1e-12)
    np.testing.assert_allclose(q.Q, mdp.R + mdp.gamma * mdp.P @ q.V, atol=1e-12)
    np.testing.assert_allclose((pi * q.A).sum(1), 0.0, atol=1e-12)
    # d sums to 1 / (1 - gamma) without terminal states, and J = d . r_pi
    assert q.d.sum() == pytest.approx(1 / (1 - mdp.gamma))
    assert q.J == pytest.approx(q.d @ (pi * mdp.R).sum(1))
    np.testing.assert_allclose(discounted_visitation(mdp, pi, normalize=True).sum(), 1.0)
    np.testing.assert_allclose(state_values(mdp, pi), q.V)
    np.testing.assert_allclose(q_values(mdp, pi), q.Q)


def test_long_finite_horizon_converges_to_linear_solve(small):
    mdp, pi = small
    assert policy_value(mdp, pi, horizon=400) == pytest.approx(policy_value(mdp, pi), rel=1e-12)
    np.testing.assert_allclose(policy_gradient_exact(mdp, np.log(pi), horizon=400),
                               policy_gradient_exact(mdp, np.log(pi)), atol=1e-12)


def test_finite_horizon_against_brute_force_enumeration(small):
    mdp, pi = small
    H = 3
    S, A = pi.shape
    total = 0.0
    # enumerate (s0, a0, s1, a1, s2, a2)
    for idx in np.ndindex(*(S, A) * H):
        prob, ret = mdp.initial[idx[0]], 0.0
        for t in range(H):
            s, a = idx[2 * t], idx[2 * t + 1]
            prob *= pi[s, a]
            ret += mdp.gamma**t * mdp.R[s, a]
            if t + 1 < H:
                prob *= mdp.P[s, a, idx[2 * t + 2]]
        total += prob * ret
    assert policy_value(mdp, pi, horizon=H) == pytest.approx(total, rel=1e-12)


@pytest.mark.parametrize("horizon", [None, 3, 6])
@pytest.mark.parametrize("which", ["discounted", "episodic"])
def test_exact_gradient_matches_finite_differences(horizon, which):
    mdp = random_mdp(4, 3, rng=1, gamma=0.8) if which == "discounted" else episodic_mdp()
    theta = np.random.default_rng(2).normal(size=(mdp.n_states, mdp.n_actions))
    grad = policy_gradient_exact(mdp, theta, horizon)
    eps = 1e-6
    fd = np.zeros_like(theta)
    for s, a in np.ndindex(*theta.shape):
        e = np.zeros_like(theta)
        e[s, a] = eps
        fd[s, a] = (policy_value(mdp, softmax_policy(theta + e), horizon)
                    - policy_value(mdp, softmax_policy(theta - e), horizon)) / (2 * eps)
    np.testing.assert_allclose(grad, fd, atol=1e-7)


def test_episodic_terminal_states_have_zero_value():
    mdp = episodic_mdp()
    q = policy_quantities(mdp, uniform_policy(5, 2))
    assert q.V[-1] == 0.0 and np.all(q.Q[-1] == 0.0) and q.d[-1] == 0.0


# ------------------------------------------------------------------ sampling
def test_monte_carlo_return_matches_exact(small):
    mdp, pi = small
    H = 6
    traj = sample_trajectories(mdp, pi, n=20_000, horizon=H, rng=11)
    G = (traj.rewards * mdp.gamma ** np.arange(H)).sum(1)
    se = G.std(ddof=1) / np.sqrt(G.size)
    assert abs(G.mean() - policy_value(mdp, pi, horizon=H)) < 4 * se


def test_sampled_state_frequencies_match_occupancy():
    mdp = episodic_mdp()
    mu = uniform_policy(5, 2)
    H = 4
    traj = sample_trajectories(mdp, mu, n=20_000, horizon=H, rng=5)
    occ = policy_quantities(mdp, mu, H).occupancy
    for t in range(H):
        counts = np.bincount(traj.states[traj.mask[:, t], t], minlength=5) / traj.n
        se = np.sqrt(occ[t] * (1 - occ[t]) / traj.n) + 1e-12
        assert np.all(np.abs(counts - occ[t]) < 4 * se + 1e-9), t


def test_trajectory_arrays_are_consistent():
    mdp = episodic_mdp()
    mu = uniform_policy(5, 2)
    pi = softmax_policy(np.random.default_rng(0).normal(size=(5, 2)))
    traj = sample_trajectories(mdp, mu, n=500, horizon=8, rng=0, target=pi)
    m = traj.mask
    assert m.shape == traj.states.shape == traj.rewards.shape == (500, 8)
    assert not np.any(m[:, 1:] & ~m[:, :-1]), "padding must be a suffix"
    assert np.all(m[:, 0])
    np.testing.assert_allclose(traj.logp_behavior[m], np.log(0.5))
    np.testing.assert_allclose(traj.logp_target[m], np.log(pi[traj.states, traj.actions])[m])
    np.testing.assert_allclose(traj.log_rho[~m], 0.0)
    assert not np.any(mdp.terminal[traj.states[m]])
    # an episode that stopped before the horizon terminated
    short = m.sum(1) < 8
    assert np.all(traj.terminated[short])
    # same seed, same batch
    again = sample_trajectories(mdp, mu, n=500, horizon=8, rng=0, target=pi)
    np.testing.assert_array_equal(again.actions, traj.actions)


def test_log_rho_requires_target(small):
    mdp, pi = small
    with pytest.raises(ValueError, match="logp_target: log_rho needs it"):
        _ = sample_trajectories(mdp, pi, n=2, horizon=2, rng=0).log_rho


# ------------------------------------------------------------------ properties
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), S=st.integers(1, 5), A=st.integers(1, 4),
       gamma=st.floats(0.0, 0.95))
def test_value_bounds_and_softmax_rows(seed, S, A, gamma):
    mdp = random_mdp(S, A, rng=seed, gamma=gamma)
    theta = np.random.default_rng(seed).normal(size=(S, A)) * 3
    pi = softmax_policy(theta)
    np.testing.assert_allclose(pi.sum(1), 1.0)
    J = policy_value(mdp, pi)
    assert -1e-12 <= J <= 1 / (1 - gamma) + 1e-9
    # the exact gradient's rows sum to zero (softmax is invariant to adding a constant per row)
    np.testing.assert_allclose(policy_gradient_exact(mdp, theta).sum(1), 0.0, atol=1e-9)
