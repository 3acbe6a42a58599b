"""Tests for companion.wis_experiments: running estimates and exact finite-n moments."""

from itertools import product

import numpy as np
import pytest

from companion.estimators import (
    per_decision_is,
    trajectory_is,
    weighted_per_decision_is,
    weighted_trajectory_is,
)
from companion.wis_experiments import (
    running_estimates,
    running_per_decision,
    weighted_is_bias_limit,
    weighted_is_exact,
)

F = np.array([1.0, 0.0, 2.0])
P = np.array([0.1, 0.2, 0.7])
Q = np.array([0.6, 0.3, 0.1])


# ------------------------------------------------------------------ running_estimates
def incremental(w, G):
    """Sutton & Barto's incremental rule (eq. 5.8), one episode at a time, V_0 = 0."""
    C, V, out = 0.0, 0.0, []
    for wi, gi in zip(w, G, strict=True):
        C += wi
        if wi > 0:
            V += wi / C * (gi - V)
        out.append(V)
    return np.array(out)


def test_running_estimates_match_incremental_rule_and_plain_means():
    rng = np.random.default_rng(0)
    w = rng.exponential(size=(3, 50)) * (rng.random((3, 50)) < 0.4)
    w[:, :3] = 0.0  # start with zero weights: estimate 0 until the first positive one
    G = rng.normal(size=(3, 50))
    est = running_estimates(w, G)
    for r in range(3):
        np.testing.assert_allclose(est.weighted[r], incremental(w[r], G[r]), atol=1e-12)
        np.testing.assert_allclose(est.ordinary[r], np.cumsum(w[r] * G[r]) / np.arange(1, 51))
    assert np.all(est.weighted[:, :3] == 0.0)


def test_running_estimates_log_weights_agree():
    rng = np.random.default_rng(1)
    w = rng.exponential(size=40)
    G = rng.normal(size=40)
    a = running_estimates(w, G)
    b = running_estimates(np.log(w), G, log=True)
    np.testing.assert_allclose(a.ordinary, b.ordinary, rtol=1e-12)
    np.testing.assert_allclose(a.weighted, b.weighted, rtol=1e-12)
    # huge log weights: the weighted estimate is unchanged, the ordinary one cannot be represented
    with pytest.raises(ValueError, match="overflows"):
        running_estimates(np.log(w) + 5000.0, G, log=True)


def test_running_estimates_weighted_inside_range():
    rng = np.random.default_rng(2)
    w = rng.pareto(0.8, size=(200, 10))
    G = rng.uniform(-1, 1, size=(200, 10))
    est = running_estimates(w, G).weighted[:, -1]
    assert np.all(est >= G.min(axis=1) - 1e-12) and np.all(est <= G.max(axis=1) + 1e-12)


@pytest.mark.parametrize(
    "w, G, match",
    [
        ([1.0, -1.0], [0.0, 1.0], "w: weights must be >= 0"),
        ([1.0, np.nan], [0.0, 1.0], "w"),
        ([1.0, 1.0], [0.0, np.inf], "G"),
        ([1.0, 1.0, 1.0], [0.0, 1.0], "shape"),
        (1.0, 2.0, "episode axis"),
        ([], [], "empty"),
    ],
)
def test_running_estimates_rejects_bad_input(w, G, match):
    with pytest.raises(ValueError, match=match):
        running_estimates(w, G)


# ------------------------------------------------------------------ exact moments
def brute_force(f, p, q, n):
    """Mean and second moment of WIS by enumerating all K^n ordered samples."""
    w = p / q
    mean = second = 0.0
    for idx in product(range(len(f)), repeat=n):
        idx = list(idx)
        prob = np.prod(q[idx])
        den = w[idx].sum()
        est = (w[idx] * f[idx]).sum() / den if den > 0 else 0.0
        mean += prob * est
        second += prob * est**2
    return mean, second


@pytest.mark.parametrize("n", [1, 2, 5])
def test_exact_moments_match_brute_force(n):
    m = weighted_is_exact(F, P, Q, n)
    mean, second = brute_force(F, P, Q, n)
    assert m.mean == pytest.approx(mean, abs=1e-12)
    assert m.variance == pytest.approx(second - mean**2, abs=1e-12)
    assert m.mse == pytest.approx(m.variance + m.bias**2)
    assert m.value == pytest.approx(1.5)


def test_exact_moments_with_zero_target_probability_use_zero_convention():
    f, p, q = np.array([3.0, 1.0]), np.array([0.0, 1.0]), np.array([0.5, 0.5])
    m = weighted_is_exact(f, p, q, 3)
    mean, _ = brute_force(f, p, q, 3)
    assert m.mean == pytest.approx(mean) and m.mean == pytest.approx(1 - 0.5**3)


def test_exact_moments_match_monte_carlo():
    rng = np.random.default_rng(3)
    n, reps = 8, 200_000
    x = rng.choice(3, p=Q, size=(reps, n))
    w = (P / Q)[x]
    est = (w * F[x]).sum(1) / w.sum(1)
    m = weighted_is_exact(F, P, Q, n)
    assert abs(est.mean() - m.mean) < 4 * est.std(ddof=1) / np.sqrt(reps)
    assert abs(est.var() - m.variance) < 0.02 * m.variance


def test_bias_is_of_order_one_over_n():
    c = weighted_is_bias_limit(F, P, Q)
    w = P / Q
    assert c == pytest.approx(-(Q * w**2) @ (F - 1.5))
    n_bias = [n * weighted_is_exact(F, P, Q, n).bias for n in (200, 400)]
    assert abs(n_bias[1] - c) < abs(n_bias[0] - c) < 0.05 * abs(c)
    assert weighted_is_bias_limit([2.0, 2.0, 2.0], P, Q) == 0.0


@pytest.mark.parametrize(
    "f, p, q, n, match",
    [
        (F, P, Q, 0, "n: must be a positive integer"),
        (F, P, Q, 2.5, "n: must be a positive integer"),
        (F, P, [0.5, 0.5, 0.1], 2, "q: probabilities must sum to 1"),
        (F, [0.1, 0.2, 0.7], [1.0, 0.0, 0.0], 2, "q: behaviour probability 0 at outcome 1 where p is 0.2"),
        (F, [1.2, -0.2, 0.0], Q, 2, r"p: probability 1.2 outside \[0, 1\] at index 0"),
        (F[:2], P, Q, 2, "shape"),
        (F, P, Q, 10_000, "count vectors"),
    ],
)
def test_exact_moments_reject_bad_input(f, p, q, n, match):
    with pytest.raises(ValueError, match=match):
        weighted_is_exact(f, p, q, n)


# ------------------------------------------------------------------ running_per_decision
def test_running_per_decision_matches_batch_estimators():
    rng = np.random.default_rng(9)
    n, T = 300, 6
    rewards = rng.normal(size=(n, T))
    log_ratios = rng.normal(scale=0.5, size=(n, T))
    log_ratios[rng.random((n, T)) < 0.05] = -np.inf
    lengths = rng.integers(1, T + 1, size=n)
    mask = np.arange(T)[None, :] < lengths[:, None]
    cps = np.array([1, 10, 150, n])
    pd, wpd = running_per_decision(rewards, log_ratios, cps, gamma=0.9, mask=mask)
    for j, k in enumerate(cps):
        args = (rewards[:k], log_ratios[:k], 0.9, mask[:k])
        assert pd[j] == pytest.approx(per_decision_is(*args).estimate, rel=1e-10)
        if np.any(np.isfinite(log_ratios[:k, 0])):
            assert wpd[j] == pytest.approx(weighted_per_decision_is(*args).estimate, rel=1e-10)


def test_running_per_decision_terminal_rewards_reduce_to_trajectory_is():
    rng = np.random.default_rng(10)
    n, T = 200, 4
    lengths = rng.integers(1, T + 1, size=n)
    mask = np.arange(T)[None, :] < lengths[:, None]
    rewards = np.where(np.arange(T)[None, :] == lengths[:, None] - 1, rng.choice([-1.0, 1.0], size=(n, 1)), 0.0)
    log_ratios = np.log(rng.choice([0.5, 2.0], size=(n, T)))
    pd, _ = running_per_decision(rewards, log_ratios, [n], mask=mask)
    assert pd[0] == pytest.approx(trajectory_is(rewards, log_ratios, mask=mask).estimate, rel=1e-12)
    assert weighted_trajectory_is(rewards, log_ratios, mask=mask).estimate != pytest.approx(
        running_per_decision(rewards, log_ratios, [n], mask=mask)[1][0])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"checkpoints": [0]}, "checkpoints"),
        ({"checkpoints": [1], "gamma": 1.5}, "gamma"),
        ({"checkpoints": [1], "mask": np.ones((2, 3), dtype=int)}, "mask"),
        ({"checkpoints": [1], "mask": np.array([[True, False, True]] * 2)}, "mask:.*suffix"),
    ],
)
def test_running_per_decision_rejects_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        running_per_decision(np.zeros((2, 3)), np.zeros((2, 3)), **kwargs)
