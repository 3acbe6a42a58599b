"""Tests for companion.one_state: Sutton & Barto's Example 5.5 (infinite variance)."""

import numpy as np
import pytest
from scipy import stats

from companion.mdp import policy_value, sample_trajectories
from companion.one_state import (
    one_state_episodes,
    one_state_running,
    one_state_second_moment,
    sutton_barto_one_state_mdp,
    sutton_barto_one_state_policies,
)


def test_sutton_barto_example_5_5():
    mdp = sutton_barto_one_state_mdp()
    pi, mu = sutton_barto_one_state_policies()
    assert policy_value(mdp, pi) == pytest.approx(1.0)
    assert policy_value(mdp, mu) == pytest.approx(0.05 / 0.55)
    traj = sample_trajectories(mdp, mu, n=4000, horizon=60, rng=3, target=pi)
    G = traj.rewards.sum(1)
    assert set(np.unique(G)) <= {0.0, 1.0}, "returns are 0 or 1 as in the book"
    assert np.all(traj.terminated), "behaviour episodes end quickly (continue w.p. 0.45)"
    # an episode has nonzero weight only if every action was 'left'; then rho = 2^T
    w = np.exp(traj.log_rho.sum(1))
    all_left = np.array([np.all(a[m] == 0) for a, m in zip(traj.actions, traj.mask, strict=True)])
    np.testing.assert_allclose(w[all_left], 2.0 ** traj.mask.sum(1)[all_left])
    assert np.all(w[~all_left] == 0.0)
    on = sample_trajectories(mdp, pi, n=200, horizon=200, rng=4)
    assert np.all(on.rewards.sum(1)[on.terminated] == 1.0)


def _classes(x):
    """Classes 0, 2, 4, 8, >= 16 of the values rho * G."""
    return np.minimum(np.where(x > 0, np.round(np.log2(np.maximum(x, 1.0))), 0), 4).astype(int)


def test_one_state_episodes_match_the_mdp_simulator():
    mdp = sutton_barto_one_state_mdp()
    pi, mu = sutton_barto_one_state_policies()
    n = 40_000
    traj = sample_trajectories(mdp, mu, n=n, horizon=40, rng=4, target=pi)
    assert traj.terminated.all()
    ref = np.exp(traj.log_rho.sum(axis=1)) * traj.rewards.sum(axis=1)
    w, G, length = one_state_episodes(n, rng=5)
    table = np.array([np.bincount(_classes(ref), minlength=5), np.bincount(_classes(w * G), minlength=5)])
    assert stats.chi2_contingency(table).pvalue > 1e-3
    assert np.all(G == (w > 0)) and np.all(w[w > 0] == 2.0 ** length[w > 0])
    lengths_ref = traj.mask.sum(axis=1)
    assert abs(length.mean() - lengths_ref.mean()) < 4 * np.hypot(length.std(), lengths_ref.std()) / np.sqrt(n)


def test_one_state_running_first_checkpoint_distribution_and_weighted_value():
    runs = one_state_running(20_000, 1, [1], rng=6)
    w, G, _ = one_state_episodes(20_000, rng=7)
    table = np.array([np.bincount(_classes(runs.ordinary[:, 0]), minlength=5),
                      np.bincount(_classes(w * G), minlength=5)])
    assert stats.chi2_contingency(table).pvalue > 1e-3
    runs = one_state_running(50, 5_000, np.arange(1, 5_001), rng=8)
    k = np.arange(1, 5_001)
    after = k[None, :] >= runs.first_positive[:, None]
    assert np.all(runs.weighted[after] == 1.0) and np.all(runs.weighted[~after] == 0.0)
    sums = runs.ordinary * k  # sums of powers of two >= 2
    assert np.allclose(sums, np.round(sums)) and np.all(np.round(sums) % 2 == 0)
    assert np.all(runs.second_moment * k >= sums)
    first = runs.first_positive
    assert abs(first.mean() - 11) < 4 * np.sqrt(110) / np.sqrt(first.size)


def test_one_state_running_rejects_bad_input():
    with pytest.raises(ValueError, match="n_runs"):
        one_state_running(0, 10, [1], rng=0)
    with pytest.raises(ValueError, match="checkpoints"):
        one_state_running(1, 10, [11], rng=0)
    with pytest.raises(ValueError, match="checkpoints"):
        one_state_running(1, 10, [1.5], rng=0)
    with pytest.raises(ValueError, match="n"):
        one_state_episodes(-3, rng=0)


def test_second_moment_partial_sums_closed_form_and_recursion():
    K = np.arange(30)
    direct = np.cumsum(0.05 * 0.45**K * 4.0 ** (K + 1))
    np.testing.assert_allclose(one_state_second_moment(K), direct, rtol=1e-12)
    # recursion on the MDP: m_H = sum_a mu(a) rho(a)^2 sum_s' P(s'|a) [r^2 or m_{H-1}]
    mdp = sutton_barto_one_state_mdp()
    pi, mu = sutton_barto_one_state_policies()
    m = 0.0
    for h in range(1, 31):
        m = sum(mu[0, a] * (pi[0, a] / mu[0, a]) ** 2
                * (mdp.P[0, a, 1] * mdp.R[0, a, 1] ** 2 + mdp.P[0, a, 0] * m) for a in range(2))
        assert m == pytest.approx(one_state_second_moment(h - 1), rel=1e-12)
    assert isinstance(one_state_second_moment(3), float)
    with pytest.raises(ValueError, match="max_left_stays"):
        one_state_second_moment([-1])
