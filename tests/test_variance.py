"""Tests for companion.variance: closed forms, brute-force enumeration, simulation, bad input."""

import numpy as np
import pytest

from companion.estimators import single_step_is
from companion.mdp import (
    TabularMDP,
    policy_quantities,
    policy_value,
    random_mdp,
    sample_trajectories,
    softmax_policy,
)
from companion.policy_gradient import surrogate_objective
from companion.variance import (
    chi_square_divergence,
    estimator_moments,
    log_weight_moment,
    population_ess_fraction,
)

Z = 4.0  # tolerance in standard errors for the statistical checks


def one_state(n_actions=2):
    return TabularMDP(np.ones((1, n_actions, 1)), np.zeros((1, n_actions)), gamma=1.0,
                      initial=[1.0])


def brute_force_moment(mdp, pi, mu, horizon, order):
    """E_mu[w^k] by enumerating every path (s_0, a_0, s_1, ...) with its probability and weight."""
    S, A = pi.shape

    def paths(s, t, prob, weight):
        if t == horizon or mdp.terminal[s]:
            yield prob, weight
            return
        for a in range(A):
            for s_next in range(S):
                p = mu[s, a] * mdp.P[s, a, s_next]
                if p > 0:
                    yield from paths(s_next, t + 1, prob * p, weight * (pi[s, a] / mu[s, a]) ** order)

    return sum(prob * weight for s0 in range(S) if mdp.initial[s0] > 0
               for prob, weight in paths(s0, 0, mdp.initial[s0], 1.0))


# ------------------------------------------------------------------------------------------------
# chi_square_divergence
# ------------------------------------------------------------------------------------------------
def test_chi_square_closed_forms():
    assert chi_square_divergence([0.6, 0.4], [0.5, 0.5]) == pytest.approx(0.04)
    delta = 0.15
    assert chi_square_divergence([0.5 + delta, 0.5 - delta], [0.5, 0.5]) == pytest.approx(
        4 * delta**2)
    out = chi_square_divergence([[0.2, 0.8], [0.3, 0.7]], [[0.2, 0.8], [0.5, 0.5]])
    assert out.shape == (2,)
    assert out == pytest.approx([0.0, 0.2**2 / 0.5 * 2])


def test_chi_square_is_excess_second_moment():
    rng = np.random.default_rng(0)
    pi, mu = rng.dirichlet(np.ones(4)), rng.dirichlet(np.ones(4))
    assert chi_square_divergence(pi, mu) == pytest.approx(np.sum(mu * (pi / mu) ** 2) - 1)


def test_chi_square_zero_behaviour_probability_of_unused_action_is_fine():
    assert chi_square_divergence([1.0, 0.0], [0.5, 0.5]) == pytest.approx(1.0)
    assert chi_square_divergence([1.0, 0.0, 0.0], [0.5, 0.5, 0.0]) == pytest.approx(1.0)


@pytest.mark.parametrize("pi, mu, match", [
    ([0.5, 0.5], [1.0, 0.0], "action 1"),
    ([[0.5, 0.5], [0.5, 0.5]], [[0.5, 0.5], [0.0, 1.0]], "state 1, action 0"),
    ([0.5, 0.5], [0.5, 0.3, 0.2], "mu: shape .3,. does not match pi's shape"),
    ([0.5, 0.6], [0.5, 0.5], "sum to 1"),
    ([np.nan, 1.0], [0.5, 0.5], "NaN"),
    ([1.5, -0.5], [0.5, 0.5], r"\[0, 1\]"),
])
def test_chi_square_bad_input(pi, mu, match):
    with pytest.raises(ValueError, match=match):
        chi_square_divergence(pi, mu)


# ------------------------------------------------------------------------------------------------
# log_weight_moment
# ------------------------------------------------------------------------------------------------
def test_one_state_second_moment_is_the_closed_form():
    pi, mu = np.array([[0.6, 0.4]]), np.array([[0.5, 0.5]])
    logs = log_weight_moment(one_state(), pi, mu, horizon=1000, per_horizon=True)
    T = np.arange(1, 1001)
    np.testing.assert_allclose(logs, T * np.log1p(chi_square_divergence(pi[0], mu[0])),
                               rtol=1e-12)
    assert np.isfinite(logs[-1])          # 1.04^1000 is about 1e17; 1.2^10000 would be fine too


def test_order_one_is_zero_and_fourth_moment_closed_form():
    pi, mu = np.array([[0.7, 0.2, 0.1]]), np.array([[0.3, 0.3, 0.4]])
    assert log_weight_moment(one_state(3), pi, mu, 50, order=1) == pytest.approx(0.0, abs=1e-12)
    m4 = np.sum(mu * (pi / mu) ** 4)
    assert log_weight_moment(one_state(3), pi, mu, 7, order=4) == pytest.approx(7 * np.log(m4))


@pytest.mark.parametrize("n_terminal", [0, 1])
@pytest.mark.parametrize("order", [2, 3, 0.5])
def test_matches_brute_force_enumeration(n_terminal, order):
    mdp = random_mdp(3, 2, rng=7, gamma=0.9, n_terminal=n_terminal)
    rng = np.random.default_rng(1)
    pi = softmax_policy(rng.normal(size=(3, 2)))
    mu = softmax_policy(rng.normal(size=(3, 2)))
    for H in (1, 2, 4):
        exact = brute_force_moment(mdp, pi, mu, H, order)
        assert np.exp(log_weight_moment(mdp, pi, mu, H, order)) == pytest.approx(exact, rel=1e-10)


def test_per_horizon_agrees_with_single_calls():
    mdp = random_mdp(4, 3, rng=3, n_terminal=1)
    rng = np.random.default_rng(2)
    pi, mu = softmax_policy(rng.normal(size=(4, 3))), softmax_policy(rng.normal(size=(4, 3)))
    logs = log_weight_moment(mdp, pi, mu, 6, per_horizon=True)
    assert logs.shape == (6,)
    for h in range(1, 7):
        assert logs[h - 1] == pytest.approx(log_weight_moment(mdp, pi, mu, h))


def test_matches_simulation_within_standard_error():
    mdp = random_mdp(5, 3, rng=11, gamma=0.95)
    rng = np.random.default_rng(5)
    mu = softmax_policy(rng.normal(scale=0.3, size=(5, 3)))
    pi = softmax_policy(rng.normal(scale=0.3, size=(5, 3)))
    H, n = 8, 200_000
    traj = sample_trajectories(mdp, mu, n, H, rng=6, target=pi)
    w2 = np.exp(2 * traj.log_rho.sum(axis=1))
    m2 = np.exp(log_weight_moment(mdp, pi, mu, H))
    m4 = np.exp(log_weight_moment(mdp, pi, mu, H, order=4))
    se = np.sqrt((m4 - m2**2) / n)                  # exact standard error of the sample mean of w^2
    assert abs(w2.mean() - m2) < Z * se


def test_target_with_zero_probabilities_is_allowed():
    pi, mu = np.array([[1.0, 0.0]]), np.array([[0.5, 0.5]])
    assert log_weight_moment(one_state(), pi, mu, 3) == pytest.approx(3 * np.log(2.0))


def test_bad_input():
    mdp = one_state()
    pi, mu = np.array([[0.6, 0.4]]), np.array([[0.5, 0.5]])
    with pytest.raises(ValueError, match="state 0, action 1"):
        log_weight_moment(mdp, pi, np.array([[1.0, 0.0]]), 3)
    with pytest.raises(ValueError, match="horizon"):
        log_weight_moment(mdp, pi, mu, 0)
    with pytest.raises(ValueError, match="horizon"):
        log_weight_moment(mdp, pi, mu, None)
    with pytest.raises(ValueError, match="order"):
        log_weight_moment(mdp, pi, mu, 3, order=-1)
    with pytest.raises(ValueError, match="order"):
        log_weight_moment(mdp, pi, mu, 3, order="two")
    with pytest.raises(ValueError, match="mdp"):
        log_weight_moment("not an mdp", pi, mu, 3)
    with pytest.raises(ValueError, match="shape"):
        log_weight_moment(mdp, np.array([[0.6, 0.4], [0.5, 0.5]]), mu, 3)


# ------------------------------------------------------------------------------------------------
# population_ess_fraction
# ------------------------------------------------------------------------------------------------
def test_population_ess_fraction_is_one_over_second_moment():
    pi, mu = np.array([[0.6, 0.4]]), np.array([[0.5, 0.5]])
    assert population_ess_fraction(one_state(), pi, mu, 30) == pytest.approx(1.04**-30)
    assert population_ess_fraction(one_state(), mu, mu, 30, n=10) == (pytest.approx(1.0), 0.0)


def test_population_ess_fraction_stderr_matches_repeated_batches():
    from companion.diagnostics import effective_sample_size

    mdp = random_mdp(4, 3, rng=12)
    rng = np.random.default_rng(13)
    theta = rng.normal(scale=0.5, size=(4, 3))
    mu = softmax_policy(theta)
    pi = softmax_policy(theta + rng.normal(scale=0.3, size=(4, 3)))
    H, n, reps = 6, 500, 400
    frac, se = population_ess_fraction(mdp, pi, mu, H, n=n)
    traj = sample_trajectories(mdp, mu, n * reps, H, rng=14, target=pi)
    w = np.exp(traj.log_rho.sum(axis=1)).reshape(reps, n)
    log_ess = np.log([effective_sample_size(row) / n for row in w])
    assert abs(log_ess.mean() - np.log(frac)) < Z * se / np.sqrt(reps) + 2 * se**2  # O(1/n) bias
    assert log_ess.std(ddof=1) == pytest.approx(se, rel=0.15)   # sd of a sd: ~ 1/sqrt(2 reps)


def test_population_ess_fraction_bad_n():
    pi, mu = np.array([[0.6, 0.4]]), np.array([[0.5, 0.5]])
    with pytest.raises(ValueError, match="n: must be a positive integer"):
        population_ess_fraction(one_state(), pi, mu, 3, n=0)


# ------------------------------------------------------------------------------------------------
# estimator_moments
# ------------------------------------------------------------------------------------------------
def enumerate_episodes(mdp, mu, horizon):
    """Every episode from mu: its probability, states, actions, next states and mask (padded)."""
    S, A = mu.shape
    out = []

    def walk(s, prob, steps):
        if len(steps) == horizon or mdp.terminal[s]:
            out.append((prob, steps))
            return
        for a in range(A):
            for s_next in range(S):
                p = mu[s, a] * mdp.P[s, a, s_next]
                if p > 0:
                    walk(s_next, prob * p, steps + [(s, a, s_next)])

    for s0 in np.flatnonzero(mdp.initial):
        walk(s0, mdp.initial[s0], [])
    n = len(out)
    prob = np.array([q for q, _ in out])
    states, actions, nxt = (np.zeros((n, horizon), dtype=int) for _ in range(3))
    mask = np.zeros((n, horizon), dtype=bool)
    for i, (_, steps) in enumerate(out):
        for t, (s, a, s_next) in enumerate(steps):
            states[i, t], actions[i, t], nxt[i, t], mask[i, t] = s, a, s_next, True
    return prob, states, actions, nxt, mask


@pytest.fixture(scope="module")
def moment_setting():
    """A random MDP with a terminal state and rewards r(s, a, s'), all its episodes of 4 steps."""
    rng = np.random.default_rng(31)
    base = random_mdp(3, 2, rng=rng, gamma=0.8, n_terminal=1)
    R = rng.uniform(-1, 1, size=(3, 2, 3))
    mdp = TabularMDP(base.P, R, base.gamma, base.initial, base.terminal)
    mu = softmax_policy(rng.normal(size=(3, 2)))
    pi = softmax_policy(rng.normal(size=(3, 2)))
    H = 4
    q_hat = rng.normal(size=(H, 3, 2))                  # any model: DR stays unbiased
    adv = policy_quantities(mdp, mu, horizon=H).A
    return mdp, pi, mu, H, q_hat, adv, enumerate_episodes(mdp, mu, H)


def test_estimator_moments_match_enumeration_of_the_companion_estimators(moment_setting):
    """Mean and variance of each estimator's term, computed over every episode with its
    probability, with the companion's own estimator functions."""
    import companion as cp

    mdp, pi, mu, H, q_hat, adv, (prob, s, a, s_next, mask) = moment_setting
    assert prob.sum() == pytest.approx(1.0) and not mask.all()   # some episodes end early
    t = np.arange(H)
    rewards = np.where(mask, mdp.R[s, a, s_next], 0.0)
    log_rho = np.where(mask, np.log(pi[s, a]) - np.log(mu[s, a]), 0.0)
    v_hat = np.einsum("tsa,sa->ts", q_hat, pi)
    terms = {
        "trajectory": cp.trajectory_is(rewards, log_rho, mdp.gamma, mask).terms,
        "per-decision": cp.per_decision_is(rewards, log_rho, mdp.gamma, mask).terms,
        "doubly-robust": cp.doubly_robust(rewards, log_rho, q_hat[t, s, a], v_hat[t, s],
                                          mdp.gamma, mask).terms,
        "single-step": cp.single_step_is(rewards, log_rho, adv[t, s, a], mdp.gamma, mask).terms,
    }
    for kind, x in terms.items():
        mean = prob @ x
        var = prob @ (x - mean) ** 2
        got = estimator_moments(mdp, pi, mu, H, kind, q_hat=q_hat, advantages=adv)
        assert got == pytest.approx((mean, var), rel=1e-10, abs=1e-12), kind


def test_estimator_moments_means_are_the_value_and_the_surrogate(moment_setting):
    mdp, pi, mu, H, q_hat, adv, _ = moment_setting
    J = policy_value(mdp, pi, horizon=H)
    for kind in ("trajectory", "per-decision", "doubly-robust"):
        assert estimator_moments(mdp, pi, mu, H, kind, q_hat=q_hat)[0] == pytest.approx(J)
    mean, _ = estimator_moments(mdp, pi, mu, H, "single-step", advantages=adv)
    assert mean == pytest.approx(surrogate_objective(mdp, pi, mu, horizon=H))


def test_estimator_moments_perfect_model_and_on_policy():
    """On-policy, the trajectory and per-decision terms are the Monte Carlo return; with the
    exact Q^pi the doubly robust term has less variance than the return (no action noise)."""
    mdp = random_mdp(4, 3, rng=5, gamma=0.9)
    mu = softmax_policy(np.random.default_rng(6).normal(size=(4, 3)))
    H = 6
    q = policy_quantities(mdp, mu, horizon=H)
    _, var_return = estimator_moments(mdp, mu, mu, H, "single-step", advantages=q.A)
    for kind in ("trajectory", "per-decision"):
        assert estimator_moments(mdp, mu, mu, H, kind) == pytest.approx((q.J, var_return))
    _, var_dr = estimator_moments(mdp, mu, mu, H, "doubly-robust", q_hat=q.Q)
    assert var_dr < 0.9 * var_return
    # deterministic transitions and rewards: the exact model leaves no variance at all
    P = np.zeros((2, 2, 2))
    P[:, 0, 0] = P[:, 1, 1] = 1.0
    det = TabularMDP(P, [[0.0, 1.0], [2.0, 0.5]], gamma=0.9, initial=[1.0, 0.0])
    pi, mu = np.array([[0.3, 0.7], [0.6, 0.4]]), np.full((2, 2), 0.5)
    q_pi = policy_quantities(det, pi, horizon=5).Q
    mean, var = estimator_moments(det, pi, mu, 5, "doubly-robust", q_hat=q_pi)
    assert mean == pytest.approx(policy_value(det, pi, horizon=5)) and var == pytest.approx(0.0)


def test_estimator_moments_match_simulation(surrogate_setting):
    mdp, pi, mu, H, traj, adv = surrogate_setting
    A_mu = policy_quantities(mdp, mu, horizon=H).A
    mean, var = estimator_moments(mdp, pi, mu, H, "single-step", advantages=A_mu)
    terms = single_step_is(traj.rewards, traj.log_rho, adv, gamma=mdp.gamma).terms
    n = terms.size
    assert abs(terms.mean() - mean) < Z * np.sqrt(var / n)
    se_var = np.sqrt(np.mean((terms - terms.mean()) ** 4) - terms.var() ** 2) / np.sqrt(n)
    assert abs(terms.var(ddof=1) - var) < Z * se_var


@pytest.mark.parametrize("kwargs, match", [
    (dict(estimator="weighted"), "estimator: must be one of"),
    (dict(estimator="doubly-robust"), "q_hat: the doubly-robust estimator needs"),
    (dict(estimator="single-step"), "advantages: the single-step estimator needs"),
    (dict(estimator="doubly-robust", q_hat=np.zeros((2, 1, 2))), "q_hat: expected shape"),
    (dict(estimator="single-step", advantages=np.full((3, 1, 2), np.nan)), r"advantages: NaN or inf at index \(0, 0, 0\)"),
    (dict(estimator="per-decision", horizon=0), "horizon: must be a positive integer, got 0"),
    (dict(estimator="per-decision", mu=[[1.0, 0.0]]), "mu: behaviour probability 0"),
    (dict(estimator="per-decision", pi=[[0.5, 0.6]]), "pi: probabilities must sum to 1, got 1.1"),
])
def test_estimator_moments_bad_input(kwargs, match):
    args = dict(mdp=one_state(), pi=[[0.5, 0.5]], mu=[[0.5, 0.5]], horizon=3)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        estimator_moments(**args)
