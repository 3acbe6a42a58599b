"""Tests for companion.policy_gradient: estimators against exact gradients from dynamic programming."""

import numpy as np
import pytest

from companion.mdp import (
    TabularMDP,
    policy_gradient_exact,
    policy_value,
    random_mdp,
    sample_trajectories,
    softmax_policy,
)
from companion.policy_gradient import (
    per_decision_gradient,
    prefix_weighted_gradient,
    prefix_weighted_gradient_expectation,
    score_function,
    surrogate_gradient_exact,
    surrogate_objective,
    trajectory_is_gradient,
)

H = 4
N = 20_000
Z = 4.0  # tolerance in standard errors per component (6 components, a handful of estimators)


@pytest.fixture(scope="module")
def setting():
    mdp = random_mdp(3, 2, rng=2024, gamma=0.9)
    rng = np.random.default_rng(1)
    theta = rng.normal(scale=0.5, size=(3, 2))
    mu = softmax_policy(rng.normal(scale=0.5, size=(3, 2)))
    traj = sample_trajectories(mdp, mu, n=N, horizon=H, rng=3)
    return mdp, theta, mu, traj


def assert_within(est, truth, z=Z):
    err = np.abs(est.estimate - truth)
    assert np.all(err <= z * est.stderr + 1e-12), (est.estimate, truth, est.stderr)


# ------------------------------------------------------------------ score function
def test_score_function_matches_finite_differences():
    theta = np.random.default_rng(0).normal(size=(3, 4))
    eps = 1e-6
    for s, a in [(0, 0), (1, 3), (2, 1)]:
        fd = np.zeros_like(theta)
        for i, j in np.ndindex(*theta.shape):
            e = np.zeros_like(theta)
            e[i, j] = eps
            fd[i, j] = (np.log(softmax_policy(theta + e)[s, a])
                        - np.log(softmax_policy(theta - e)[s, a])) / (2 * eps)
        np.testing.assert_allclose(score_function(theta, s, a), fd, atol=1e-8)
    batch = score_function(theta, np.array([[0, 1]]), np.array([[2, 3]]))
    assert batch.shape == (1, 2, 3, 4)
    np.testing.assert_allclose(batch[0, 1], score_function(theta, 1, 3))
    np.testing.assert_allclose(batch.sum(-1), 0.0, atol=1e-12)


def test_score_function_rejects_bad_input():
    theta = np.zeros((3, 4))
    with pytest.raises(ValueError, match=r"^actions: shape \(2,\) does not match states' shape"):
        score_function(theta, np.array([0]), np.array([0, 1]))
    with pytest.raises(ValueError, match=r"^states: must be an integer array"):
        score_function(theta, 0.0, 1)
    with pytest.raises(ValueError, match=r"^actions: must lie in \[0, 4\)"):
        score_function(theta, 0, 4)


def test_vectorised_terms_match_a_plain_loop(setting):
    mdp, theta, mu, traj = setting
    pi = softmax_policy(theta)
    est = per_decision_gradient(traj, theta, mdp.gamma)
    for i in range(5):
        g = np.zeros((3, 2))
        for t in range(H):
            if not traj.mask[i, t]:
                continue
            inner = 0.0
            for tp in range(t, H):
                if traj.mask[i, tp]:
                    rho = np.prod([pi[traj.states[i, k], traj.actions[i, k]]
                                   / mu[traj.states[i, k], traj.actions[i, k]]
                                   for k in range(tp + 1)])
                    inner += mdp.gamma**tp * rho * traj.rewards[i, tp]
            g += score_function(theta, traj.states[i, t], traj.actions[i, t]) * inner
        np.testing.assert_allclose(est.terms[i], g, atol=1e-12)


# ------------------------------------------------------------------ unbiasedness
def test_per_decision_and_trajectory_forms_are_unbiased(setting):
    mdp, theta, _, traj = setting
    truth = policy_gradient_exact(mdp, theta, horizon=H)
    assert_within(per_decision_gradient(traj, theta, mdp.gamma), truth)
    assert_within(trajectory_is_gradient(traj, theta, mdp.gamma), truth)


def test_unbiased_with_terminal_states():
    mdp = random_mdp(4, 2, rng=9, gamma=1.0, n_terminal=1)
    theta = np.random.default_rng(5).normal(scale=0.5, size=(4, 2))
    mu = softmax_policy(np.zeros((4, 2)))
    traj = sample_trajectories(mdp, mu, n=N, horizon=5, rng=6)
    assert not np.all(traj.mask), "some episodes terminate early"
    truth = policy_gradient_exact(mdp, theta, horizon=5)
    assert_within(per_decision_gradient(traj, theta, mdp.gamma), truth)
    assert_within(trajectory_is_gradient(traj, theta, mdp.gamma), truth)


def test_prefix_weighted_gradient_matches_its_q_mu_expectation(setting):
    mdp, theta, mu, traj = setting
    assert_within(prefix_weighted_gradient(traj, theta, mdp.gamma),
                  prefix_weighted_gradient_expectation(mdp, theta, mu, horizon=H))


def bias_mdp():
    """State 0 -> (a0) state 1 or (a1) terminal with reward 0.5; in state 1, a0 pays 1, a1 pays 0."""
    P = np.zeros((3, 2, 3))
    P[0, 0, 1] = 1.0
    P[0, 1, 2] = 1.0
    P[1, :, 2] = 1.0
    P[2, :, 2] = 1.0
    R = np.array([[0.0, 0.5], [1.0, 0.0], [0.0, 0.0]])
    return TabularMDP(P, R, gamma=1.0, initial=[1.0, 0.0, 0.0], terminal=[False, False, True])


def test_prefix_weighted_gradient_is_biased():
    mdp = bias_mdp()
    theta = np.array([[0.0, 0.0], [np.log(9.0), 0.0], [0.0, 0.0]])  # pi picks the paying action
    mu = np.array([[0.5, 0.5], [0.1, 0.9], [0.5, 0.5]])             # mu mostly does not
    traj = sample_trajectories(mdp, mu, n=5_000, horizon=2, rng=0)
    truth = policy_gradient_exact(mdp, theta, horizon=2)
    np.testing.assert_allclose(truth[0], [0.1, -0.1])  # 0.5 * (Q^pi(0, a0) - V^pi(0)) = 0.5 * 0.2
    prefix = prefix_weighted_gradient(traj, theta, mdp.gamma)
    gap = abs(prefix.estimate[0, 0] - truth[0, 0]) / prefix.stderr[0, 0]
    assert gap > 6, gap
    # ... and the bias is exactly the Q^mu-for-Q^pi substitution
    np.testing.assert_allclose(prefix_weighted_gradient_expectation(mdp, theta, mu, horizon=2)[0],
                               [-0.1, 0.1])
    assert_within(prefix, prefix_weighted_gradient_expectation(mdp, theta, mu, horizon=2))
    # the per-decision form on the same data is fine
    assert_within(per_decision_gradient(traj, theta, mdp.gamma), truth)


# ------------------------------------------------------------------ the surrogate objective
@pytest.mark.parametrize("horizon", [None, 5])
def test_surrogate_matches_J_to_first_order_at_mu(horizon):
    mdp = random_mdp(4, 3, rng=12, gamma=0.9)
    theta = np.random.default_rng(13).normal(size=(4, 3))
    mu = softmax_policy(theta)
    assert surrogate_objective(mdp, mu, mu, horizon) == pytest.approx(
        policy_value(mdp, mu, horizon), rel=1e-12)
    np.testing.assert_allclose(surrogate_gradient_exact(mdp, theta, mu, horizon),
                               policy_gradient_exact(mdp, theta, horizon), atol=1e-12)
    # the exact surrogate gradient is the derivative of surrogate_objective
    eps = 1e-6
    direction = np.random.default_rng(14).normal(size=theta.shape)
    theta2 = theta + 0.7 * direction
    fd = (surrogate_objective(mdp, softmax_policy(theta2 + eps * direction), mu, horizon)
          - surrogate_objective(mdp, softmax_policy(theta2 - eps * direction), mu, horizon)) / (2 * eps)
    assert fd == pytest.approx(np.sum(surrogate_gradient_exact(mdp, theta2, mu, horizon)
                                      * direction), rel=1e-6)
    # the gap L - J is second order: shrinking the step by 10 shrinks it by about 100
    gaps = [abs(surrogate_objective(mdp, softmax_policy(theta + h * direction), mu, horizon)
                - policy_value(mdp, softmax_policy(theta + h * direction), horizon))
            for h in (1e-2, 1e-3)]
    assert 50 < gaps[0] / gaps[1] < 200


# ------------------------------------------------------------------ input checks
def test_bad_inputs_raise(setting):
    mdp, theta, mu, traj = setting
    with pytest.raises(ValueError, match=r"gamma: must be in \[0, 1\]"):
        per_decision_gradient(traj, theta, 1.5)
    with pytest.raises(ValueError, match=r"logits: NaN or inf at index \(0, 0\)"):
        per_decision_gradient(traj, np.full((3, 2), np.nan), mdp.gamma)
    with pytest.raises(ValueError, match=r"traj.states: a state outside \[0, 2\)"):
        per_decision_gradient(traj, np.zeros((2, 2)), mdp.gamma)
    with pytest.raises(ValueError, match="traj: must be a companion.mdp.Trajectories"):
        per_decision_gradient(traj.states, theta, mdp.gamma)
    with pytest.raises(ValueError, match="mu: probabilities must sum to 1"):
        surrogate_objective(mdp, mu, mu * 0.5)
