"""Tests for companion.marginalized: exact enumeration of tiny MDPs, plain-loop references,
unbiasedness with exact ratios, the tabular estimator's identities, and bad input."""

import itertools
import math

import numpy as np
import pytest

from companion.estimators import per_decision_is
from companion.marginalized import (
    TabularModel,
    cramer_rao_bound,
    doubly_robust_variance,
    fit_tabular_model,
    history_mdp,
    marginalized_is,
    marginalized_variance,
    per_decision_variance,
    state_distribution_ratios,
    tabular_marginalized_is,
    tabular_model_values,
    tabular_state_ratios,
)
from companion.mdp import (
    TabularMDP,
    Trajectories,
    policy_quantities,
    policy_value,
    random_mdp,
    sample_trajectories,
    softmax_policy,
)

# --- problems ------------------------------------------------------------------------------


def sas_mdp(seed=0, gamma=0.9):
    """Three states (the last terminal), two actions, rewards r(s, a, s') that depend on s'."""
    rng = np.random.default_rng(seed)
    P = rng.dirichlet(np.ones(3), size=(3, 2))
    R = rng.normal(size=(3, 2, 3))
    return TabularMDP(P, R, gamma, initial=[0.3, 0.7, 0.0], terminal=[False, False, True])


def policies(mdp, seed=1):
    rng = np.random.default_rng(seed)
    shape = (mdp.n_states, mdp.n_actions)
    return softmax_policy(rng.normal(size=shape)), softmax_policy(0.5 * rng.normal(size=shape))


def coin_mdp(heads=(0.3, 0.7)):
    """The coin game: action a wins reward 1 with probability heads[a]; the state is the last
    outcome (0 tails, 1 heads)."""
    q = np.asarray(heads)
    P = np.zeros((2, 2, 2))
    P[:, :, 1], P[:, :, 0] = q, 1 - q
    R = np.zeros((2, 2, 2))
    R[:, :, 1] = 1.0
    return TabularMDP(P, R, 1.0, initial=[1.0, 0.0])


PROBLEMS = [
    pytest.param(lambda: sas_mdp(0), id="r(s,a,s'), terminal"),
    pytest.param(lambda: random_mdp(3, 2, rng=4, gamma=1.0), id="r(s,a), recurring"),
    pytest.param(lambda: random_mdp(3, 3, rng=5, gamma=0.8, n_terminal=1), id="three actions"),
]


# --- exact enumeration of every path -----------------------------------------------------------


def paths(mdp, horizon):
    """Every path (s_0, a_0, s_1, ..., up to termination or the horizon) as a list of
    (s, a, r, s') steps, with its probability as a function of the policy."""
    R = mdp.R if mdp.R.ndim == 3 else np.repeat(mdp.R[:, :, None], mdp.n_states, axis=2)

    def extend(prefix, s):
        if len(prefix) == horizon or mdp.terminal[s]:
            yield prefix
            return
        for a in range(mdp.n_actions):
            for s2 in range(mdp.n_states):
                if mdp.P[s, a, s2] > 0:
                    yield from extend(prefix + [(s, a, float(R[s, a, s2]), s2)], s2)

    for s0 in range(mdp.n_states):
        if mdp.initial[s0] > 0:
            for path in extend([], s0):
                yield s0, path


def path_prob(mdp, policy, s0, path):
    p = mdp.initial[s0]
    for s, a, _, s2 in path:
        p *= policy[s, a] * mdp.P[s, a, s2]
    return p


def enumerated_occupancy(mdp, policy, horizon):
    d = np.zeros((horizon, mdp.n_states))
    for s0, path in paths(mdp, horizon):
        p = path_prob(mdp, policy, s0, path)
        for t, (s, *_) in enumerate(path):
            d[t, s] += p
    return d


def moments(mdp, mu, horizon, term):
    """Mean and variance under mu of term(path), summed over the enumerated paths."""
    m1 = m2 = 0.0
    for s0, path in paths(mdp, horizon):
        p, y = path_prob(mdp, mu, s0, path), term(s0, path)
        m1 += p * y
        m2 += p * y * y
    return m1, m2 - m1 * m1


def pdis_term(mdp, pi, mu):
    def term(s0, path):
        total, prefix = 0.0, 1.0
        for t, (s, a, r, _) in enumerate(path):
            prefix *= pi[s, a] / mu[s, a]
            total += mdp.gamma**t * prefix * r
        return total
    return term


# --- state_distribution_ratios -----------------------------------------------------------------


@pytest.mark.parametrize("make", PROBLEMS)
def test_state_ratios_match_enumeration(make):
    mdp = make()
    pi, mu = policies(mdp)
    H = 4
    d_pi, d_mu = enumerated_occupancy(mdp, pi, H), enumerated_occupancy(mdp, mu, H)
    expected = np.divide(d_pi, d_mu, out=np.zeros_like(d_pi), where=d_mu > 0)
    w = state_distribution_ratios(mdp, pi, mu, H)
    np.testing.assert_allclose(w, expected, rtol=1e-12, atol=1e-15)
    assert np.all(w[0][mdp.initial > 0] == 1.0)
    assert np.all(w[:, mdp.terminal] == 0.0)          # both distributions are 0 there


def test_state_ratios_are_zero_where_neither_policy_goes():
    coin = coin_mdp()
    tree, origin = history_mdp(coin, depth=3)
    pi, mu = np.full((2, 2), [0.75, 0.25])[origin], np.full((2, 2), 0.5)[origin]
    w = state_distribution_ratios(tree, pi, mu, horizon=3)
    assert np.all(w[0, 1:] == 0.0) and np.all(w[1, 5:] == 0.0)   # nodes of other depths
    np.testing.assert_allclose(w[1, 1:5], [1.5, 1.5, 0.5, 0.5])   # pi(a) / mu(a)


def test_support_violation_names_the_step_and_the_state():
    tree, origin = history_mdp(coin_mdp(), depth=3)
    pi = np.full((2, 2), [0.75, 0.25])[origin]
    mu = np.full((2, 2), 0.5)[origin]
    mu[0] = [1.0, 0.0]                   # the behaviour never takes action 1 at the root
    with pytest.raises(ValueError, match=r"^mu: d\^mu_t\(s\) = 0 < d\^pi_t\(s\) = 0\.075 at "
                                         r"step 1, state 3"):
        state_distribution_ratios(tree, pi, mu, horizon=2)
    # the action ratio fails at the root already, and the functions that need it say so
    with pytest.raises(ValueError, match="^mu: behaviour probability 0 at state 0, action 1"):
        marginalized_variance(tree, pi, mu, horizon=2)


def test_state_support_follows_from_action_support():
    """With mu > 0 wherever pi > 0, no step and state can lack support (random problems)."""
    for seed in range(20):
        mdp = random_mdp(4, 3, rng=seed, alpha=0.2, n_terminal=1)
        pi, mu = policies(mdp, seed)
        pi[np.random.default_rng(seed).random(pi.shape) < 0.3] = 0.0   # sparse target
        pi[pi.sum(axis=1) == 0, 0] = 1.0
        pi /= pi.sum(axis=1, keepdims=True)
        assert np.all(np.isfinite(state_distribution_ratios(mdp, pi, mu, horizon=6)))


@pytest.mark.parametrize("horizon", [0, -1, 2.5, True, "3", None, np.nan])
def test_horizon_must_be_a_positive_integer(horizon):
    mdp = sas_mdp()
    pi, mu = policies(mdp)
    for fn in (state_distribution_ratios, per_decision_variance, marginalized_variance,
               cramer_rao_bound, doubly_robust_variance):
        with pytest.raises(ValueError, match="^horizon: must be a positive integer"):
            fn(mdp, pi, mu, horizon)


@pytest.mark.parametrize("bad, match", [
    (np.full((3, 3), 1 / 3), r"^pi: expected shape \(n_states, n_actions\) = \(3, 2\)"),
    (np.full(3, 0.5), "^pi: expected a 2-D array"),
    (np.array([[0.5, np.nan], [0.5, 0.5], [0.5, 0.5]]), "^pi: NaN or inf at state 0, action 1"),
    (np.array([[1.2, -0.2], [0.5, 0.5], [0.5, 0.5]]), "^pi: probability 1.2 at state 0"),
    (np.array([[0.5, 0.5], [0.5, 0.4], [0.5, 0.5]]), "^pi: row 1 sums to 0.9"),
])
def test_bad_policies(bad, match):
    mdp = sas_mdp()
    _, mu = policies(mdp)
    with pytest.raises(ValueError, match=match):
        state_distribution_ratios(mdp, bad, mu, 2)
    with pytest.raises(ValueError, match=match.replace("pi:", "mu:")):
        state_distribution_ratios(mdp, mu, bad, 2)


def test_mdp_must_be_a_tabular_mdp():
    with pytest.raises(ValueError, match="^mdp: must be a companion.mdp.TabularMDP"):
        state_distribution_ratios({"P": 1}, [[1.0]], [[1.0]], 1)


# --- exact variances and the bound -------------------------------------------------------------


@pytest.mark.parametrize("make", PROBLEMS)
def test_exact_variances_match_enumeration(make):
    mdp = make()
    pi, mu = policies(mdp)
    H = 4
    J = policy_value(mdp, pi, horizon=H)
    mean, var = moments(mdp, mu, H, pdis_term(mdp, pi, mu))
    assert math.isclose(mean, J, rel_tol=1e-10, abs_tol=1e-12)      # unbiased
    assert math.isclose(per_decision_variance(mdp, pi, mu, H), var, rel_tol=1e-9)

    w = state_distribution_ratios(mdp, pi, mu, H)

    def mis_term(s0, path):
        return sum(mdp.gamma**t * w[t, s] * pi[s, a] / mu[s, a] * r
                   for t, (s, a, r, _) in enumerate(path))

    mean, var = moments(mdp, mu, H, mis_term)
    assert math.isclose(mean, J, rel_tol=1e-10, abs_tol=1e-12)
    assert math.isclose(marginalized_variance(mdp, pi, mu, H), var, rel_tol=1e-9)


def influence_term(mdp, pi, mu, H, state_weight):
    """V_0(s_0) + sum_t gamma^t W_t (r_t + gamma V_{t+1}(s_{t+1}) - Q_t(s_t, a_t)) with the
    weight W_t = state_weight(t, prefix, s) * rho_t, exact values of pi."""
    q = policy_quantities(mdp, pi, H)

    def term(s0, path):
        total, prefix = q.V[0, s0], 1.0
        for t, (s, a, r, s2) in enumerate(path):
            W = state_weight(t, prefix, s) * pi[s, a] / mu[s, a]
            v_next = 0.0 if mdp.terminal[s2] else q.V[t + 1, s2]
            total += mdp.gamma**t * W * (r + mdp.gamma * v_next - q.Q[t, s, a])
            prefix *= pi[s, a] / mu[s, a]
        return total
    return term


@pytest.mark.parametrize("make", PROBLEMS)
def test_bound_and_doubly_robust_variance_match_enumeration(make):
    mdp = make()
    pi, mu = policies(mdp)
    H = 4
    w = state_distribution_ratios(mdp, pi, mu, H)
    # the influence function with the state ratio (variance = the bound)
    _, var = moments(mdp, mu, H, influence_term(mdp, pi, mu, H, lambda t, pre, s: w[t, s]))
    assert math.isclose(cramer_rao_bound(mdp, pi, mu, H), var, rel_tol=1e-9)
    # doubly robust with the perfect model: the prefix product
    _, var = moments(mdp, mu, H, influence_term(mdp, pi, mu, H, lambda t, pre, s: pre))
    assert math.isclose(doubly_robust_variance(mdp, pi, mu, H), var, rel_tol=1e-9)


@pytest.mark.parametrize("make", PROBLEMS)
def test_bound_is_below_doubly_robust_with_a_perfect_model(make):
    """Cauchy-Schwarz: E[rho_{0:t-1}^2 ; s_t = s] >= d^pi_t(s)^2 / d^mu_t(s)."""
    mdp = make()
    pi, mu = policies(mdp)
    for H in (1, 3, 8):
        assert cramer_rao_bound(mdp, pi, mu, H) <= doubly_robust_variance(mdp, pi, mu, H) * (
            1 + 1e-12)


def test_exact_ratios_know_the_dynamics_and_can_beat_the_bound():
    """The bound is for estimators that learn the dynamics from the data; MIS with exact ratios
    knows them (through w), and on some problems its variance is below the bound."""
    rng = np.random.default_rng(0)
    for _ in range(100):
        S, A = int(rng.integers(1, 4)), int(rng.integers(2, 4))
        mdp = random_mdp(S, A, rng, gamma=float(rng.choice([1.0, 0.9])),
                         alpha=float(rng.choice([0.2, 1.0])))
        pi = softmax_policy(2 * rng.normal(size=(S, A)))
        mu = softmax_policy(2 * rng.normal(size=(S, A)))
        H = int(rng.integers(1, 6))
        if marginalized_variance(mdp, pi, mu, H) < cramer_rao_bound(mdp, pi, mu, H):
            return
    raise AssertionError("no problem where exact ratios beat the bound")


def test_on_policy_the_bound_is_below_the_variance_of_the_return():
    mdp = sas_mdp(2)
    pi, _ = policies(mdp)
    _, var_return = moments(mdp, pi, 4, pdis_term(mdp, pi, pi))    # ratios 1: the return
    assert cramer_rao_bound(mdp, pi, pi, 4) < var_return


def test_tree_bound_equals_doubly_robust_and_the_closed_form():
    """In the coin game's history tree both are c sum_t (1 + chi^2)^t, and MIS is PDIS."""
    heads, pi_row, mu_row = np.array([0.3, 0.7]), np.array([0.75, 0.25]), np.array([0.4, 0.6])
    coin = coin_mdp(heads)
    tree, origin = history_mdp(coin, depth=4)
    pi, mu = np.tile(pi_row, (2, 1))[origin], np.tile(mu_row, (2, 1))[origin]
    chi2 = np.sum((pi_row - mu_row) ** 2 / mu_row)
    c = np.sum(pi_row**2 / mu_row * heads * (1 - heads))
    for h in range(1, 5):
        closed = c * sum((1 + chi2) ** t for t in range(h))
        assert math.isclose(cramer_rao_bound(tree, pi, mu, h), closed, rel_tol=1e-10)
        assert math.isclose(doubly_robust_variance(tree, pi, mu, h), closed, rel_tol=1e-10)
        assert math.isclose(marginalized_variance(tree, pi, mu, h),
                            per_decision_variance(tree, pi, mu, h), rel_tol=1e-10)
        # the Markov version of the same game: the bound grows linearly
        p1, m1 = pi_row @ heads, mu_row @ heads
        chi2_state = (p1 - m1) ** 2 / m1 + (p1 - m1) ** 2 / (1 - m1)
        markov = cramer_rao_bound(coin, np.tile(pi_row, (2, 1)), np.tile(mu_row, (2, 1)), h)
        assert math.isclose(markov, c * (1 + (h - 1) * (1 + chi2_state)), rel_tol=1e-10)


def test_exact_variances_match_sampled_estimators():
    mdp = random_mdp(4, 2, rng=7, gamma=1.0)
    pi, mu = policies(mdp, 8)
    H, n = 6, 100_000
    traj = sample_trajectories(mdp, mu, n, H, rng=9, target=pi)
    w = state_distribution_ratios(mdp, pi, mu, H)
    for terms, exact in (
        (per_decision_is(traj.rewards, traj.log_rho).terms, per_decision_variance(mdp, pi, mu, H)),
        (marginalized_is(traj.rewards, w[np.arange(H), traj.states], traj.log_rho).terms,
         marginalized_variance(mdp, pi, mu, H)),
    ):
        s2 = terms.var(ddof=1)
        se = math.sqrt((np.mean((terms - terms.mean()) ** 4) - s2**2) / n)   # se of s^2
        assert abs(s2 - exact) < 4 * se


def test_pdis_variance_grows_at_the_largest_eigenvalue_of_k():
    mdp = random_mdp(4, 2, rng=3, gamma=1.0)
    pi, mu = policies(mdp, 4)
    lam = max(abs(np.linalg.eigvals(np.einsum("sa,sat->st", pi**2 / mu, mdp.P))))
    v = [per_decision_variance(mdp, pi, mu, h) for h in (150, 200)]
    assert math.isclose(math.log(v[1] / v[0]) / 50, math.log(lam), rel_tol=1e-3)


# --- marginalized_is ---------------------------------------------------------------------------


def loop_mis(rewards, ratios, log_ratios, gamma, mask):
    terms = []
    for i in range(len(rewards)):
        total = 0.0
        for t in range(len(rewards[i])):
            if mask[i][t]:
                total += gamma**t * ratios[i][t] * math.exp(log_ratios[i][t]) * rewards[i][t]
        terms.append(total)
    return terms


@pytest.mark.parametrize("seed", range(5))
def test_marginalized_is_matches_a_plain_loop(seed):
    rng = np.random.default_rng(seed)
    n, T = rng.integers(1, 8), rng.integers(1, 7)
    r, w, lr = rng.normal(size=(n, T)), rng.exponential(size=(n, T)), rng.normal(size=(n, T))
    lengths = rng.integers(1, T + 1, size=n)
    mask = np.arange(T)[None, :] < lengths[:, None]
    r[~mask], w[~mask], lr[~mask] = np.nan, -1.0, np.inf   # padding may hold anything
    gamma = float(rng.uniform(0.5, 1.0))
    e = marginalized_is(r, w, lr, gamma, mask)
    terms = loop_mis(r, w, lr, gamma, mask)
    np.testing.assert_allclose(e.terms, terms, rtol=1e-12)
    assert math.isclose(e.estimate, sum(terms) / n, rel_tol=1e-12)
    if n > 1:
        assert math.isclose(e.stderr, np.std(terms, ddof=1) / math.sqrt(n), rel_tol=1e-10)
    else:
        assert math.isnan(e.stderr)


@pytest.mark.parametrize("make", PROBLEMS)
def test_marginalized_is_with_exact_ratios_is_unbiased(make):
    """200 batches of 100 episodes: the mean of the batch estimates is within 4 standard errors
    of J(pi) (a fixed seed; 4 s.e. fail by chance with probability 6e-5)."""
    mdp = make()
    pi, mu = policies(mdp)
    H, batches, n = 6, 200, 100
    w = state_distribution_ratios(mdp, pi, mu, H)
    traj = sample_trajectories(mdp, mu, batches * n, H, rng=11, target=pi)
    ratios = w[np.arange(H), traj.states]
    estimates = np.array([
        marginalized_is(traj.rewards[b], ratios[b], traj.log_rho[b], mdp.gamma,
                        traj.mask[b]).estimate
        for b in (slice(k * n, (k + 1) * n) for k in range(batches))])
    z = (estimates.mean() - policy_value(mdp, pi, horizon=H)) / (
        estimates.std(ddof=1) / math.sqrt(batches))
    assert abs(z) < 4


def test_in_a_tree_marginalized_is_is_per_decision_is():
    tree, origin = history_mdp(sas_mdp(3), depth=3)
    pi, mu = (p[origin] for p in policies(sas_mdp(3)))
    traj = sample_trajectories(tree, mu, 500, 3, rng=2, target=pi)
    w = state_distribution_ratios(tree, pi, mu, 3)
    mis = marginalized_is(traj.rewards, w[np.arange(3), traj.states], traj.log_rho, 0.9,
                          traj.mask)
    pdis = per_decision_is(traj.rewards, traj.log_rho, 0.9, traj.mask)
    np.testing.assert_allclose(mis.terms, pdis.terms, rtol=1e-12, atol=1e-14)


GOOD = np.ones((2, 3))


@pytest.mark.parametrize("kwargs, match", [
    ({"rewards": np.ones((2, 4))}, r"^state_ratios: shape \(2, 3\) does not match rewards"),
    ({"log_ratios": np.zeros((3, 3))}, r"^log_ratios: shape \(3, 3\) does not match rewards"),
    ({"rewards": np.ones(3)}, "^rewards: expected a 2-D array"),
    ({"state_ratios": np.ones((2, 3, 1))}, "^state_ratios: expected a 2-D array"),
    ({"rewards": np.ones((0, 3)), "state_ratios": np.ones((0, 3)),
      "log_ratios": np.ones((0, 3))}, "^rewards: empty batch"),
    ({"rewards": [[1.0, np.nan, 1.0], [1.0, 1.0, 1.0]]},
     "^rewards: NaN or inf at trajectory 0, step 1"),
    ({"state_ratios": [[1.0, 1.0, 1.0], [1.0, 1.0, np.inf]]},
     "^state_ratios: NaN or inf at trajectory 1, step 2"),
    ({"state_ratios": [[1.0, -0.5, 1.0], [1.0, 1.0, 1.0]]},
     "^state_ratios: ratios of probabilities must be >= 0, got -0.5 at trajectory 0, step 1"),
    ({"log_ratios": [[0.0, 0.0, np.nan], [0.0, 0.0, 0.0]]},
     "^log_ratios: NaN or \\+inf at trajectory 0, step 2"),
    ({"log_ratios": [[0.0, 0.0, 0.0], [0.0, 800.0, 0.0]]},
     "^log_ratios: ratio exp\\(800\\) overflows float64 at trajectory 1, step 1"),
    ({"gamma": 1.5}, "^gamma: discount must be in"),
    ({"mask": np.ones((2, 3))}, "^mask: must be a boolean array"),
    ({"mask": np.array([[True, False, True], [True, True, True]])},
     "^mask: padding must be a suffix"),
])
def test_marginalized_is_bad_input(kwargs, match):
    args = {"rewards": GOOD, "state_ratios": GOOD, "log_ratios": np.zeros((2, 3))} | kwargs
    with pytest.raises(ValueError, match=match):
        marginalized_is(**args)


def test_marginalized_is_allows_zero_ratios_and_bad_values_on_padding():
    mask = np.array([[True, True, False], [True, False, False]])
    e = marginalized_is([[1.0, 2.0, np.nan], [3.0, np.inf, 5.0]],
                        [[0.0, 1.0, np.nan], [2.0, -1.0, 1.0]],
                        [[5.0, -np.inf, 0.0], [0.0, np.nan, 0.0]], mask=mask)
    assert e.terms.tolist() == [0.0, 6.0]


# --- history_mdp -------------------------------------------------------------------------------


@pytest.mark.parametrize("make", PROBLEMS)
def test_history_mdp_keeps_the_returns(make):
    mdp = make()
    pi, _ = policies(mdp)
    for depth in (1, 2, 3):
        tree, origin = history_mdp(mdp, depth)
        assert math.isclose(policy_value(tree, pi[origin], horizon=depth),
                            policy_value(mdp, pi, horizon=depth), rel_tol=1e-12)
        assert tree.terminal.sum() == mdp.n_states
        assert np.all(tree.P[tree.terminal].sum(axis=2) == 1.0)


def test_history_mdp_counts_histories_and_refuses_big_trees():
    coin = coin_mdp()
    tree, origin = history_mdp(coin, depth=4)
    assert tree.n_states == 1 + 4 + 16 + 64 + 2
    assert origin.tolist()[:5] == [0, 0, 1, 0, 1]
    with pytest.raises(ValueError, match="^depth: the history tree of depth 7 has more than"):
        history_mdp(coin, depth=7)
    with pytest.raises(ValueError, match="^depth: must be a positive integer"):
        history_mdp(coin, depth=0)


# --- the tabular estimator ---------------------------------------------------------------------


def loop_model(traj, S, A):
    """Counts, mean rewards and transition frequencies with explicit loops."""
    n, T = traj.states.shape
    counts = np.zeros((T, S, A))
    rsum = np.zeros((T, S, A))
    moves = np.zeros((T, S, A, S))
    for i in range(n):
        for t in range(T):
            if traj.mask[i, t]:
                s, a = traj.states[i, t], traj.actions[i, t]
                counts[t, s, a] += 1
                rsum[t, s, a] += traj.rewards[i, t]
                if t + 1 < T and traj.mask[i, t + 1]:
                    moves[t, s, a, traj.states[i, t + 1]] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        R = np.where(counts > 0, rsum / counts, 0.0)
        P = np.where(counts[..., None] > 0, moves / counts[..., None], 0.0)
    return counts, R, P


def test_fit_tabular_model_matches_loops():
    mdp = sas_mdp(5)
    _, mu = policies(mdp)
    traj = sample_trajectories(mdp, mu, 60, 5, rng=6)
    model = fit_tabular_model(traj, 3, 2)
    counts, R, P = loop_model(traj, 3, 2)
    np.testing.assert_array_equal(model.counts, counts)
    np.testing.assert_allclose(model.R, R, rtol=1e-12)
    np.testing.assert_allclose(model.P, P, rtol=1e-12)
    np.testing.assert_allclose(model.initial, np.bincount(traj.states[:, 0], minlength=3) / 60)


def test_tabular_estimate_is_the_model_value_and_the_mean_influence_term():
    mdp = sas_mdp(7)
    pi, mu = policies(mdp)
    traj = sample_trajectories(mdp, mu, 80, 6, rng=8)
    e = tabular_marginalized_is(traj, pi, gamma=0.9)
    model = fit_tabular_model(traj, 3, 2)
    V, Q = tabular_model_values(model, pi, 0.9)
    assert math.isclose(e.estimate, model.initial @ V[0], rel_tol=1e-12)
    assert math.isclose(e.estimate, e.terms.mean(), rel_tol=1e-12)
    # the forward reading: sum_t gamma^t sum_{s,a} d_pi_hat(s) pi(a|s) r_hat_t(s, a)
    w = tabular_state_ratios(model, pi)
    d_pi_hat = w * model.counts.sum(axis=2) / model.n
    forward = sum(0.9**t * np.sum(d_pi_hat[t][:, None] * pi * model.R[t]) for t in range(6))
    assert math.isclose(e.estimate, forward, rel_tol=1e-12)


def test_tabular_ratios_approach_the_exact_ratios():
    mdp = random_mdp(3, 2, rng=12, gamma=1.0)
    pi, mu = policies(mdp, 13)
    traj = sample_trajectories(mdp, mu, 200_000, 5, rng=14)
    w_hat = tabular_state_ratios(fit_tabular_model(traj, 3, 2), pi)
    np.testing.assert_allclose(w_hat, state_distribution_ratios(mdp, pi, mu, 5), atol=0.02)


def test_with_one_action_the_tabular_estimate_is_the_mean_return():
    mdp = random_mdp(4, 1, rng=15, gamma=0.9, n_terminal=1)
    one = np.ones((4, 1))
    traj = sample_trajectories(mdp, one, 50, 8, rng=16)
    returns = (traj.rewards * traj.mask) @ 0.9 ** np.arange(8)
    assert math.isclose(tabular_marginalized_is(traj, one, 0.9).estimate, returns.mean(),
                        rel_tol=1e-12)


def test_tabular_estimator_is_consistent_with_a_calibrated_stderr_near_the_bound():
    """400 batches of 400 episodes: the estimates centre on J(pi) (bias below 4 s.e. of the
    mean), the reported stderr matches their spread, and n x MSE is near the bound B."""
    mdp = random_mdp(3, 2, rng=17, gamma=1.0)
    pi, mu = policies(mdp, 18)
    H, batches, n = 4, 400, 400
    J, B = policy_value(mdp, pi, horizon=H), cramer_rao_bound(mdp, pi, mu, H)
    traj = sample_trajectories(mdp, mu, batches * n, H, rng=19)
    results = []
    for k in range(batches):
        rows = slice(k * n, (k + 1) * n)
        part = Trajectories(traj.states[rows], traj.actions[rows], traj.rewards[rows],
                            traj.logp_behavior[rows], None, traj.mask[rows], traj.terminated[rows])
        e = tabular_marginalized_is(part, pi)
        results.append((e.estimate, e.stderr))
    est, se = np.array(results).T
    assert abs(est.mean() - J) < 4 * est.std(ddof=1) / math.sqrt(batches)
    # the sd of 400 estimates has a relative s.e. of about 1/sqrt(800) = 3.5%
    assert abs(se.mean() / est.std(ddof=1) - 1) < 4 / math.sqrt(2 * batches)
    sq = n * (est - J) ** 2
    assert abs(sq.mean() - B) < 4 * sq.std(ddof=1) / math.sqrt(batches) + 0.05 * B


def test_tabular_pieces_bad_input():
    mdp = sas_mdp()
    pi, mu = policies(mdp)
    traj = sample_trajectories(mdp, mu, 5, 3, rng=0)
    with pytest.raises(ValueError, match="^trajectories: must be a companion.mdp.Trajectories"):
        tabular_marginalized_is({"states": traj.states}, pi)
    with pytest.raises(ValueError, match=r"^target: expected a 2-D array"):
        tabular_marginalized_is(traj, pi[0])
    with pytest.raises(ValueError, match=r"^trajectories.states: 5 at trajectory 0, step 0 is "
                                         r"not in 0..2"):
        fit_tabular_model(_with_state(traj, 5), 3, 2)
    with pytest.raises(ValueError, match="^gamma: discount must be in"):
        tabular_marginalized_is(traj, pi, gamma=-0.1)
    with pytest.raises(ValueError, match="^n_actions: must be a positive integer"):
        fit_tabular_model(traj, 3, 0)
    with pytest.raises(ValueError, match="^model: must be a TabularModel"):
        tabular_state_ratios(traj, pi)
    model = fit_tabular_model(traj, 3, 2)
    assert isinstance(model, TabularModel)
    with pytest.raises(ValueError, match=r"^target: expected shape \(n_states, n_actions\)"):
        tabular_model_values(model, np.full((3, 3), 1 / 3))
    bad = Trajectories(traj.states, traj.actions, np.where(traj.mask, np.nan, 0.0),
                       traj.logp_behavior, None, traj.mask, traj.terminated)
    with pytest.raises(ValueError, match="^trajectories.rewards: NaN or inf at trajectory 0, "
                                         "step 0"):
        fit_tabular_model(bad, 3, 2)


def _with_state(traj, s):
    states = traj.states.copy()
    states[0, 0] = s
    return Trajectories(states, traj.actions, traj.rewards, traj.logp_behavior, None, traj.mask,
                        traj.terminated)


def test_every_combination_of_tiny_batch_runs():
    """Batches where some pairs are never seen: the estimator returns a finite number."""
    mdp = sas_mdp(9)
    pi, mu = policies(mdp)
    for n, seed in itertools.product((1, 2, 3), range(5)):
        traj = sample_trajectories(mdp, mu, n, 4, rng=seed)
        e = tabular_marginalized_is(traj, pi, 0.9)
        assert np.isfinite(e.estimate) and e.n == n
