"""Tests for companion.traces: loop references, closed forms, exact fixed points, statistics."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from companion.estimators import per_decision_is
from companion.mdp import (
    policy_quantities,
    q_values,
    random_mdp,
    sample_trajectories,
    softmax_policy,
    state_values,
    uniform_policy,
)
from companion.traces import (
    VTraceTargets,
    _nstep_parts,
    nstep_fixed_point,
    retrace_operator,
    retrace_targets,
    tabular_q_evaluation,
    tabular_v_evaluation,
    trace_operator,
    vtrace_operator,
    vtrace_policy,
    vtrace_targets,
)

SETTINGS = settings(max_examples=40, derandomize=True, deadline=None)


# --- plain-Python references (the sum forms of the papers, not the backward recursions) -------


def ref_retrace(r, q, v_next, lr, gamma, lam, c_bar, length):
    """Munos et al. (2016): Q_t + sum_k gamma^(k-t) (prod_{j=t+1}^k c_j) delta_k."""
    out = []
    for t in range(length):
        total, trace = q[t], 1.0
        for k in range(t, length):
            if k > t:
                trace *= lam * min(c_bar, math.exp(lr[k]))
            total += gamma ** (k - t) * trace * (r[k] + gamma * v_next[k] - q[k])
        out.append(total)
    return out


def ref_vtrace(r, V, V1, lr, gamma, rho_bar, c_bar, lam, length):
    """Espeholt et al. (2018), eq. 1: V_t + sum_k gamma^(k-t) (prod_{j=t}^{k-1} c_j) rho_k delta_k."""
    out = []
    for t in range(length):
        total, trace = V[t], 1.0
        for k in range(t, length):
            if k > t:
                trace *= lam * min(c_bar, math.exp(lr[k - 1]))
            rho_k = min(rho_bar, math.exp(lr[k]))
            total += gamma ** (k - t) * trace * rho_k * (r[k] + gamma * V1[k] - V[k])
        out.append(total)
    return out


def batches():
    @st.composite
    def batch(draw):
        n = draw(st.integers(1, 4))
        horizon = draw(st.integers(1, 6))
        shape = (n, horizon)
        arrays = [np.array(draw(st.lists(st.floats(-2, 2), min_size=n * horizon,
                                         max_size=n * horizon))).reshape(shape) for _ in range(4)]
        lengths = np.array(draw(st.lists(st.integers(1, horizon), min_size=n, max_size=n)))
        gamma = draw(st.sampled_from([0.0, 0.5, 0.9, 1.0]))
        lam = draw(st.sampled_from([0.0, 0.5, 1.0]))
        level = draw(st.sampled_from([0.5, 1.0, 2.0, np.inf]))
        return arrays, lengths, gamma, lam, level
    return batch()


def mask_of(lengths, horizon):
    return np.arange(horizon)[None, :] < np.asarray(lengths)[:, None]


# --- sample-based targets ---------------------------------------------------------------------


@given(batches())
@SETTINGS
def test_retrace_targets_match_sum_form(batch):
    (r, q, v, lr), lengths, gamma, lam, c_bar = batch
    mask = mask_of(lengths, r.shape[1])
    got = retrace_targets(np.where(mask, r, np.nan), q, v, lr, gamma, lam, c_bar, mask)
    for i in range(r.shape[0]):
        ref = ref_retrace(r[i], q[i], v[i], lr[i], gamma, lam, c_bar, lengths[i])
        np.testing.assert_allclose(got[i, : lengths[i]], ref, rtol=1e-9, atol=1e-9)
        assert np.all(got[i, lengths[i]:] == 0.0)


@given(batches(), st.sampled_from([0.5, 1.0, 3.0, np.inf]))
@SETTINGS
def test_vtrace_targets_match_sum_form(batch, rho_bar):
    (r, V, V1, lr), lengths, gamma, lam, c_bar = batch
    mask = mask_of(lengths, r.shape[1])
    out = vtrace_targets(r, V, V1, lr, gamma, rho_bar, c_bar, lam, mask)
    assert isinstance(out, VTraceTargets)
    for i in range(r.shape[0]):
        L = lengths[i]
        ref = ref_vtrace(r[i], V[i], V1[i], lr[i], gamma, rho_bar, c_bar, lam, L)
        np.testing.assert_allclose(out.vs[i, :L], ref, rtol=1e-9, atol=1e-9)
        # advantage: rho_t (r_t + gamma v_{t+1} - V_t), v_{t+1} = V1_t + (vs_{t+1} - V_{t+1})
        nxt = [V1[i, t] + (ref[t + 1] - V[i, t + 1] if t + 1 < L else 0.0) for t in range(L)]
        adv = [min(rho_bar, math.exp(lr[i, t])) * (r[i, t] + gamma * nxt[t] - V[i, t])
               for t in range(L)]
        np.testing.assert_allclose(out.pg_advantages[i, :L], adv, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("rho_bar, c_bar", [(1.0, 1.0), (2.0, 1.0), (np.inf, np.inf), (1.0, 5.0)])
def test_vtrace_on_policy_is_the_n_step_return(rho_bar, c_bar):
    """pi = mu (all log ratios 0) and rho_bar, c_bar >= 1: v_t = sum_k gamma^k r_{t+k} + gamma^n V."""
    rng = np.random.default_rng(0)
    n, T, gamma = 5, 7, 0.9
    r, V = rng.normal(size=(n, T)), rng.normal(size=(n, T))
    boot = rng.normal(size=n)
    V1 = np.concatenate([V[:, 1:], boot[:, None]], axis=1)       # consistent successor values
    out = vtrace_targets(r, V, V1, np.zeros((n, T)), gamma, rho_bar, c_bar)
    for t in range(T):
        k = np.arange(T - t)
        expected = r[:, t:] @ gamma**k + gamma ** (T - t) * boot
        np.testing.assert_allclose(out.vs[:, t], expected, rtol=1e-12)


def test_vtrace_untruncated_with_zero_values_is_per_decision_is():
    rng = np.random.default_rng(1)
    r, lr = rng.normal(size=(50, 8)), rng.normal(scale=0.5, size=(50, 8))
    zero = np.zeros_like(r)
    out = vtrace_targets(r, zero, zero, lr, 0.95, rho_bar=np.inf, c_bar=np.inf)
    np.testing.assert_allclose(out.vs[:, 0], per_decision_is(r, lr, 0.95).terms, rtol=1e-12)


def test_retrace_special_cases():
    rng = np.random.default_rng(2)
    r, q, v, lr = (rng.normal(size=(6, 5)) for _ in range(4))
    # lam = 0: the one-step (expected SARSA) target
    np.testing.assert_allclose(retrace_targets(r, q, v, lr, 0.9, lam=0.0), r + 0.9 * v)
    # on-policy with q consistent with v (v_next_t = q_{t+1} + 0): the full discounted return
    # plus the final bootstrap, whatever q is in the middle
    v_cons = np.concatenate([q[:, 1:], v[:, -1:]], axis=1)
    got = retrace_targets(r, q, v_cons, np.zeros_like(r), 0.9)
    expected = r @ 0.9 ** np.arange(5) + 0.9**5 * v[:, -1]
    np.testing.assert_allclose(got[:, 0], expected, rtol=1e-12)


@given(batches(), st.integers(1, 7))
@SETTINGS
def test_nstep_targets_loop(batch, n_step):
    """The uncorrected n-step targets that tabular_q_evaluation(method="n_step") averages."""
    (r, v, _, _), lengths, gamma, _, _ = batch
    mask = mask_of(lengths, r.shape[1])
    part, last, disc = _nstep_parts(np.where(mask, r, 0.0), mask, n_step, gamma)
    got = np.where(mask, part + disc * np.take_along_axis(v, last, axis=1), 0.0)
    for i in range(r.shape[0]):
        for t in range(lengths[i]):
            m = min(n_step, lengths[i] - t)
            ref = sum(gamma**k * r[i, t + k] for k in range(m)) + gamma**m * v[i, t + m - 1]
            assert got[i, t] == pytest.approx(ref, rel=1e-9, abs=1e-9)


# --- exact operators --------------------------------------------------------------------------


def problem(seed, S=6, A=3, gamma=0.9, n_terminal=0, scale=2.0):
    rng = np.random.default_rng(seed)
    mdp = random_mdp(S, A, rng, gamma=gamma, n_terminal=n_terminal)
    pi = softmax_policy(rng.normal(scale=scale, size=(S, A)))
    return mdp, pi, rng


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("lam", [1.0, 0.6])
def test_retrace_converges_to_q_pi_from_any_full_support_behaviour(seed, lam):
    mdp, pi, rng = problem(seed, n_terminal=seed % 2)
    q_pi = q_values(mdp, pi)
    live = ~mdp.terminal
    behaviours = [uniform_policy(6, 3),
                  softmax_policy(rng.normal(scale=3.0, size=(6, 3))),      # far from pi
                  softmax_policy(-np.log(pi) * 2.0)]                       # prefers pi's rare actions
    for mu in behaviours:
        q = rng.normal(scale=10.0, size=(6, 3))
        err = np.abs(q - q_pi)[live].max()
        for _ in range(250):
            q = retrace_operator(mdp, q, pi, mu, lam=lam)
            new_err = np.abs(q - q_pi)[live].max()
            assert new_err <= mdp.gamma * err + 1e-12          # a gamma-contraction around Q^pi
            err = new_err
        assert err < 1e-9


def test_trace_operator_fixed_point_and_special_traces():
    mdp, pi, rng = problem(5)
    mu = softmax_policy(rng.normal(size=(6, 3)))
    q_pi = q_values(mdp, pi)
    for c in (np.zeros((6, 3)), np.full((6, 3), 0.3), rng.uniform(0, 1, size=(6, 3))):
        np.testing.assert_allclose(trace_operator(mdp, q_pi, pi, mu, c), q_pi, atol=1e-10)
    q0 = rng.normal(size=(6, 3))
    # c = pi / mu (importance sampling): one application gives Q^pi exactly
    np.testing.assert_allclose(retrace_operator(mdp, q0, pi, mu, c_bar=np.inf), q_pi, atol=1e-9)
    # c = 0 (lam = 0): the one-step Bellman operator T^pi
    T = mdp.R + mdp.gamma * np.einsum("sat,t->sa", mdp.P, (pi * q0).sum(axis=1))
    np.testing.assert_allclose(retrace_operator(mdp, q0, pi, mu, lam=0.0), T, atol=1e-12)


def linear_part(operator, q_ref):
    """The matrix of the affine map Q -> operator(Q) (columns: unit perturbations of Q)."""
    base = operator(q_ref)
    cols = []
    for k in range(q_ref.size):
        e = np.zeros(q_ref.size)
        e[k] = 1.0
        cols.append((operator(q_ref + e.reshape(q_ref.shape)) - base).ravel())
    return np.array(cols).T


def test_retrace_is_a_contraction_where_q_lambda_is_not():
    """Every trace table fixes Q^pi; only safe traces make the operator contract for every mu."""
    rng = np.random.default_rng(3)
    mdp = random_mdp(6, 3, rng, gamma=0.99, alpha=0.1)
    pi = np.zeros((6, 3))
    pi[np.arange(6), rng.integers(0, 3, 6)] = 1.0          # deterministic target
    mu = uniform_policy(6, 3)
    q_pi = q_values(mdp, pi)
    ret = linear_part(lambda q: retrace_operator(mdp, q, pi, mu), q_pi)
    assert np.abs(ret).sum(axis=1).max() <= mdp.gamma + 1e-9           # sup-norm modulus <= gamma
    q_lam = linear_part(lambda q: trace_operator(mdp, q, pi, mu, np.ones((6, 3))), q_pi)
    assert np.abs(q_lam).sum(axis=1).max() > 10                         # no sup-norm contraction
    assert np.abs(np.linalg.eigvals(q_lam)).max() > 1.0                 # ... and it diverges here
    np.testing.assert_allclose(trace_operator(mdp, q_pi, pi, mu, np.ones((6, 3))), q_pi,
                               atol=1e-9)                               # though Q^pi is fixed


@pytest.mark.parametrize("seed", range(3))
def test_vtrace_fixed_point_is_value_of_truncated_policy(seed):
    mdp, pi, rng = problem(10 + seed, n_terminal=seed % 2)
    mu = softmax_policy(rng.normal(size=(6, 3)))
    max_ratio = float((pi / mu).max())
    v_pi = state_values(mdp, pi)
    for rho_bar in (0.3, 1.0, 0.5 * max_ratio):
        assert rho_bar < max_ratio
        pi_trunc = vtrace_policy(pi, mu, rho_bar)
        v_trunc = state_values(mdp, pi_trunc)
        assert np.abs(v_trunc - v_pi).max() > 1e-3             # truncation really biases
        # Espeholt et al. (2018), theorem 1: modulus at most 1 - (1 - gamma) min_s E_mu[rho_bar_t]
        eta = 1 - (1 - mdp.gamma) * np.minimum(rho_bar * mu, pi).sum(axis=1).min()
        for c_bar in (1.0, 0.5):                                 # c_bar: speed, not the limit
            v = np.zeros(6)
            err = np.abs(v - v_trunc).max()
            while err > 1e-8:
                v = vtrace_operator(mdp, v, pi, mu, rho_bar=rho_bar, c_bar=min(c_bar, rho_bar))
                new_err = np.abs(v - v_trunc).max()
                assert new_err <= eta * err + 1e-12
                err = new_err
            # and V^{pi_rho_bar} is exactly fixed
            np.testing.assert_allclose(vtrace_operator(mdp, v_trunc, pi, mu, rho_bar, c_bar),
                                       v_trunc, atol=1e-10)
    # rho_bar at least the largest ratio: no truncation, the fixed point is V^pi
    np.testing.assert_allclose(vtrace_operator(mdp, v_pi, pi, mu, rho_bar=max_ratio), v_pi,
                               atol=1e-10)


def test_vtrace_policy_limits():
    rng = np.random.default_rng(3)
    pi = softmax_policy(rng.normal(size=(4, 3)))
    mu = softmax_policy(rng.normal(size=(4, 3)))
    np.testing.assert_allclose(vtrace_policy(pi, mu, (pi / mu).max()), pi, rtol=1e-12)
    np.testing.assert_allclose(vtrace_policy(pi, mu, np.inf), pi, rtol=1e-12)
    np.testing.assert_allclose(vtrace_policy(pi, mu, 1e-9), mu, rtol=1e-6)
    np.testing.assert_allclose(vtrace_policy(pi, mu, 1.0).sum(axis=1), 1.0)


def test_nstep_fixed_point_against_recursion_and_limits():
    mdp, pi, rng = problem(7, gamma=0.85, n_terminal=1)
    mu = softmax_policy(rng.normal(size=(6, 3)))
    live = ~mdp.terminal

    def T_n(q, n):       # T_1 Q = r + gamma P pi Q, T_n Q = r + gamma P mu T_{n-1} Q
        out = q
        for k in range(n):
            policy = pi if k == 0 else mu
            v = np.where(live, (policy * out).sum(axis=1), 0.0)
            out = np.where(live[:, None], mdp.R + mdp.gamma * np.einsum("sat,t->sa", mdp.P, v), 0)
        return out

    for n in (1, 2, 5):
        q_n = nstep_fixed_point(mdp, pi, mu, n)
        np.testing.assert_allclose(T_n(q_n, n), q_n, atol=1e-10)
    np.testing.assert_allclose(nstep_fixed_point(mdp, pi, mu, 1), q_values(mdp, pi), atol=1e-10)
    np.testing.assert_allclose(nstep_fixed_point(mdp, pi, mu, 400), q_values(mdp, mu), atol=1e-8)


# --- batch evaluation from a fixed buffer -----------------------------------------------------


@pytest.fixture(scope="module")
def buffer():
    mdp, pi, rng = problem(20, gamma=0.9)
    mu = uniform_policy(6, 3)
    groups_n, per_group = 40, 40
    traj = sample_trajectories(mdp, mu, n=groups_n * per_group, horizon=31, rng=rng, target=pi)
    groups = np.repeat(np.arange(groups_n), per_group)
    return mdp, pi, mu, traj, groups


def z_scores(estimates, exact):
    """Max |mean - exact| / s.e. over the table, from independent replications (groups)."""
    se = estimates.std(axis=0, ddof=1) / math.sqrt(estimates.shape[0])
    return float(np.max(np.abs(estimates.mean(axis=0) - exact) / se))


def test_batch_one_step_and_retrace_converge_to_q_pi(buffer):
    mdp, pi, mu, traj, groups = buffer
    q_pi = q_values(mdp, pi)
    for kwargs in ({"method": "one_step"}, {"method": "retrace"}, {"method": "retrace", "lam": 0.5}):
        Q = tabular_q_evaluation(traj, pi, mdp.gamma, groups=groups, **kwargs)
        # finite-batch bias of the fixed point is O(1/n), far below 4 s.e. of the mean here
        assert z_scores(Q, q_pi) < 4.5, kwargs


def test_batch_uncorrected_n_step_converges_to_the_wrong_q(buffer):
    mdp, pi, mu, traj, groups = buffer
    Q = tabular_q_evaluation(traj, pi, mdp.gamma, method="n_step", n_step=4, groups=groups)
    assert z_scores(Q, nstep_fixed_point(mdp, pi, mu, 4)) < 4.5      # where theory says
    assert z_scores(Q, q_values(mdp, pi)) > 20                        # not Q^pi


def test_batch_vtrace_converges_to_truncated_policy_value(buffer):
    mdp, pi, mu, traj, groups = buffer
    V = tabular_v_evaluation(traj, 6, mdp.gamma, rho_bar=1.0, groups=groups)
    assert z_scores(V, state_values(mdp, vtrace_policy(pi, mu, 1.0))) < 4.5   # V^{pi_rho_bar}
    assert z_scores(V, state_values(mdp, pi)) > 4.5                            # not V^pi


def test_batch_solution_equals_plain_iteration():
    """The direct solve gives the limit of 'compute targets, average per entry, repeat'."""
    mdp, pi, rng = problem(23, gamma=0.8, n_terminal=1)
    mu = softmax_policy(rng.normal(size=(6, 3)))
    traj = sample_trajectories(mdp, mu, n=300, horizon=15, rng=rng, target=pi)
    s, a, r, m = traj.states[:, :-1], traj.actions[:, :-1], traj.rewards[:, :-1], traj.mask[:, :-1]
    s1, alive1, lr = traj.states[:, 1:], traj.mask[:, 1:] & m, traj.log_rho[:, :-1]
    q = np.zeros((6, 3))
    v = np.zeros(6)
    for _ in range(400):
        v_next = np.where(alive1, (pi * q).sum(axis=1)[s1], 0.0)
        y = retrace_targets(r, q[s, a], v_next, lr, mdp.gamma, lam=0.8, mask=m)
        sums = np.zeros((6, 3))
        np.add.at(sums, (s[m], a[m]), y[m])
        counts = np.zeros((6, 3))
        np.add.at(counts, (s[m], a[m]), 1.0)
        q = np.where(counts > 0, sums / np.maximum(counts, 1), q)
        out = vtrace_targets(r, v[s], np.where(alive1, v[s1], 0.0), lr, mdp.gamma, mask=m)
        v = np.where(np.bincount(s[m], minlength=6) > 0,
                     np.bincount(s[m], weights=out.vs[m], minlength=6)
                     / np.maximum(np.bincount(s[m], minlength=6), 1), v)
    np.testing.assert_allclose(tabular_q_evaluation(traj, pi, mdp.gamma, lam=0.8), q, atol=1e-9)
    np.testing.assert_allclose(tabular_v_evaluation(traj, 6, mdp.gamma), v, atol=1e-9)


def test_batch_single_table_equals_its_group():
    mdp, pi, rng = problem(21, gamma=0.7)
    mu = uniform_policy(6, 3)
    traj = sample_trajectories(mdp, mu, n=100, horizon=12, rng=rng, target=pi)
    one = tabular_q_evaluation(traj, pi, mdp.gamma)
    grouped = tabular_q_evaluation(traj, pi, mdp.gamma, groups=np.zeros(100, dtype=int), n_groups=2)
    np.testing.assert_allclose(grouped[0], one, atol=1e-12)
    assert np.all(grouped[1] == 0.0)          # a group without data keeps q0


def test_batch_with_terminal_states():
    mdp, pi, rng = problem(22, gamma=1.0, n_terminal=1)
    mu = uniform_policy(6, 3)
    traj = sample_trajectories(mdp, mu, n=3000, horizon=80, rng=rng, target=pi)
    assert traj.terminated.mean() > 0.99
    Q = tabular_q_evaluation(traj, pi, mdp.gamma)
    q_pi = policy_quantities(mdp, pi).Q
    assert np.abs(Q - q_pi)[~mdp.terminal].max() < 0.3      # 3000 episodes; s.e. about 0.05


def test_batch_untruncated_traces_diverge_loudly(buffer):
    mdp, pi, mu, traj, groups = buffer
    # c = rho (c_bar = inf): on some of these 40 small batches the empirical operator expands
    with pytest.raises(ValueError, match=r"traj:.*diverges for group \d+.*spectral radius"):
        tabular_q_evaluation(traj, pi, mdp.gamma, c_bar=np.inf, groups=groups)


# --- bad input --------------------------------------------------------------------------------


def test_targets_bad_input():
    z = np.zeros((3, 4))
    bad = z.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"q_taken:.*NaN.*trajectory 1, step 2"):
        retrace_targets(z, bad, z, z, 0.9)
    with pytest.raises(ValueError, match=r"log_ratios:.*\+inf.*trajectory 1, step 2"):
        retrace_targets(z, z, z, np.where(np.isnan(bad), np.inf, 0.0), 0.9)
    with pytest.raises(ValueError, match=r"v_next:.*shape"):
        retrace_targets(z, z, z[:, :3], z, 0.9)
    with pytest.raises(ValueError, match=r"gamma:"):
        retrace_targets(z, z, z, z, 1.5)
    with pytest.raises(ValueError, match=r"lam:"):
        retrace_targets(z, z, z, z, 0.9, lam=-0.1)
    with pytest.raises(ValueError, match=r"c_bar:"):
        retrace_targets(z, z, z, z, 0.9, c_bar=0.0)
    with pytest.raises(ValueError, match=r"rho_bar:"):
        vtrace_targets(z, z, z, z, 0.9, rho_bar=-1.0)
    with pytest.raises(ValueError, match=r"next_values:.*NaN.*trajectory 1, step 2"):
        vtrace_targets(z, z, bad, z, 0.9)
    with pytest.raises(ValueError, match=r"mask:.*suffix"):
        vtrace_targets(z, z, z, z, 0.9, mask=np.array([[True, False, True, True]] * 3))
    with pytest.raises(ValueError, match=r"rewards:.*empty"):
        retrace_targets(np.zeros((0, 4)), np.zeros((0, 4)), np.zeros((0, 4)), np.zeros((0, 4)), 0.9)
    with pytest.raises(ValueError, match=r"log_ratios:.*overflow.*c_bar"):
        retrace_targets(np.ones((1, 3)), np.zeros((1, 3)), np.zeros((1, 3)),
                        np.full((1, 3), 500.0), 1.0, c_bar=np.inf)
    # NaN on padding is ignored
    mask = np.ones((3, 4), dtype=bool)
    mask[1, 2:] = False
    assert np.all(retrace_targets(z, bad, z, z, 0.9, mask=mask) == 0.0)


def test_operators_bad_input():
    mdp, pi, rng = problem(30)
    mu = uniform_policy(6, 3)
    with pytest.raises(ValueError, match=r"mdp:"):
        retrace_operator("not an mdp", np.zeros((6, 3)), pi, mu)
    with pytest.raises(ValueError, match=r"q:.*shape"):
        retrace_operator(mdp, np.zeros((6, 2)), pi, mu)
    with pytest.raises(ValueError, match=r"traces:.*>= 0"):
        trace_operator(mdp, np.zeros((6, 3)), pi, mu, -np.ones((6, 3)))
    with pytest.raises(ValueError, match=r"mu"):
        retrace_operator(mdp, np.zeros((6, 3)), pi, np.full((6, 3), 0.5))
    with pytest.raises(ValueError, match=r"v:.*shape"):
        vtrace_operator(mdp, np.zeros(5), pi, mu)
    with pytest.raises(ValueError, match=r"mu: no action of state 1"):
        vtrace_policy([[1.0, 0.0], [1.0, 0.0]], [[0.5, 0.5], [0.0, 1.0]])
    with pytest.raises(ValueError, match=r"rho_bar:"):
        vtrace_policy(pi, mu, 0.0)
    with pytest.raises(ValueError, match=r"n_step:"):
        nstep_fixed_point(mdp, pi, mu, 1.5)


def test_batch_bad_input():
    mdp, pi, rng = problem(31)
    mu = uniform_policy(6, 3)
    traj = sample_trajectories(mdp, mu, n=10, horizon=5, rng=rng, target=pi)
    with pytest.raises(ValueError, match=r"method:"):
        tabular_q_evaluation(traj, pi, 0.9, method="q_lambda")
    with pytest.raises(ValueError, match=r"traj:.*Trajectories"):
        tabular_q_evaluation({"states": 0}, pi, 0.9)
    short = sample_trajectories(mdp, mu, n=10, horizon=1, rng=rng, target=pi)
    with pytest.raises(ValueError, match=r"traj:.*horizon >= 2"):
        tabular_q_evaluation(short, pi, 0.9)
    with pytest.raises(ValueError, match=r"groups:"):
        tabular_q_evaluation(traj, pi, 0.9, groups=np.arange(9))
    with pytest.raises(ValueError, match=r"n_states:"):
        tabular_v_evaluation(traj, 0, 0.9)
    no_target = sample_trajectories(mdp, mu, n=10, horizon=5, rng=rng)
    with pytest.raises(ValueError, match=r"logp_target"):
        tabular_v_evaluation(no_target, 6, 0.9)
    pi_gap = pi.copy()
    mu_gap = np.tile([0.5, 0.5, 0.0], (6, 1))
    gap = sample_trajectories(mdp, mu_gap, n=10, horizon=5, rng=rng, target=pi_gap)
    assert np.isfinite(tabular_q_evaluation(gap, pi, 0.9)).all()   # unvisited action: kept at q0
