"""Tests of companion.bandits: closed forms, unbiasedness against the exact gradient, the
vectorised training loop against a plain loop, and input checks."""

from __future__ import annotations

import numpy as np
import pytest

from companion.bandits import (
    BanditBatch,
    GaussianBandit,
    bandit_gradient,
    bandit_gradient_exact,
    bandit_policy,
    bandit_value,
    sample_bandit,
    train_softmax_bandit,
)

BANDIT = GaussianBandit(np.linspace(0.0, 1.0, 5), sd=1.0)


def test_policy_is_a_stable_softmax():
    pi = bandit_policy([[0.0, 0.0], [1000.0, 0.0]])
    assert np.allclose(pi, [[0.5, 0.5], [1.0, 0.0]])
    assert np.all(np.isfinite(pi))


def test_value_and_gradient_match_finite_differences():
    theta = np.array([0.3, -1.0, 0.5, 2.0, 0.0])
    g = bandit_gradient_exact(BANDIT, theta)
    eps = 1e-6
    fd = np.array([(bandit_value(BANDIT, theta + eps * e) - bandit_value(BANDIT, theta - eps * e))
                   / (2 * eps) for e in np.eye(5)])
    assert np.allclose(g, fd, atol=1e-8)
    assert abs(g.sum()) < 1e-12
    # batch of logits: one row per run
    both = bandit_gradient_exact(BANDIT, np.stack([theta, np.zeros(5)]))
    assert np.allclose(both[0], g)
    assert np.allclose(bandit_value(BANDIT, np.zeros((2, 5))), [0.5, 0.5])


def test_sampling_frequencies_and_rewards():
    mu = np.array([0.1, 0.2, 0.3, 0.25, 0.15])
    n = 200_000
    batch = sample_bandit(BANDIT, mu, n, rng=0)
    freq = np.bincount(batch.actions, minlength=5) / n
    se = np.sqrt(mu * (1 - mu) / n)
    assert np.all(np.abs(freq - mu) < 4 * se)  # 5 comparisons at 4 SE
    resid = batch.rewards - BANDIT.means[batch.actions]
    assert abs(resid.mean()) < 4 / np.sqrt(n) and abs(resid.std() - 1.0) < 0.01
    assert np.allclose(batch.logp_behavior, np.log(mu[batch.actions]))


def test_zero_probability_arms_are_never_pulled():
    batch = sample_bandit(BANDIT, [0.0, 0.5, 0.0, 0.5, 0.0], 10_000, rng=1)
    assert set(np.unique(batch.actions)) == {1, 3}


def test_reweighted_gradient_is_unbiased_and_naive_is_not():
    mu = bandit_policy(np.zeros(5))
    theta = np.array([-1.0, -0.5, 0.0, 0.5, 1.0])
    pi = bandit_policy(theta)
    batch = sample_bandit(BANDIT, mu, 100_000, rng=2)
    exact = bandit_gradient_exact(BANDIT, theta)
    g = bandit_gradient(batch, theta)
    assert np.all(np.abs(g.estimate - exact) < 4 * g.stderr)
    naive = bandit_gradient(batch, theta, correction="none")
    naive_mean = (mu * BANDIT.means)[:, None] * (np.eye(5) - pi)  # E_mu[r (e_a - pi)] per arm
    naive_mean = naive_mean.sum(axis=0)
    assert np.all(np.abs(naive.estimate - naive_mean) < 4 * naive.stderr)
    assert np.max(np.abs(naive.estimate - exact) / naive.stderr) > 10


def test_on_policy_ratio_is_one():
    theta = np.array([0.2, -0.3, 0.0, 1.0, 0.4])
    batch = sample_bandit(BANDIT, bandit_policy(theta), 50, rng=3)
    a = bandit_gradient(batch, theta)
    b = bandit_gradient(batch, theta, correction="none")
    assert np.allclose(a.terms, b.terms)
    # the terms are r_i (e_{a_i} - pi)
    manual = batch.rewards[:, None] * (np.eye(5)[batch.actions] - bandit_policy(theta))
    assert np.allclose(a.terms, manual)


def test_several_runs_agree_with_one_run_at_a_time():
    rng = np.random.default_rng(4)
    thetas = rng.normal(size=(3, 5))
    batch = sample_bandit(BANDIT, bandit_policy(np.zeros((3, 5))), 40, rng=5)
    g = bandit_gradient(batch, thetas)
    assert g.estimate.shape == (3, 5) and g.terms.shape == (40, 3, 5)
    for r in range(3):
        one = BanditBatch(batch.actions[r], batch.rewards[r], batch.logp_behavior[r])
        gr = bandit_gradient(one, thetas[r])
        assert np.allclose(gr.estimate, g.estimate[r])
        assert np.allclose(gr.stderr, g.stderr[r])


def test_training_loop_matches_a_plain_loop():
    bandit = GaussianBandit([0.0, 0.3, 1.0], sd=0.5)
    lr, epochs, bs = 0.7, 3, 6
    h = train_softmax_bandit(bandit, n_runs=2, n_batches=2, batch_size=bs, epochs=epochs,
                             lr=lr, rng=11)
    rng = np.random.default_rng(11)
    theta = np.zeros((2, 3))
    for b in range(2):
        mu = bandit_policy(theta)
        batch = sample_bandit(bandit, mu, bs, rng)
        for e in range(epochs):
            for r in range(2):
                pi = bandit_policy(theta[r])
                rho = pi[batch.actions[r]] / mu[r, batch.actions[r]]
                if e == 0:
                    assert np.allclose(rho, 1.0)
                g = np.mean(rho[:, None] * batch.rewards[r][:, None]
                            * (np.eye(3)[batch.actions[r]] - pi), axis=0)
                theta[r] = theta[r] + lr * g
        assert np.allclose(h.J[:, b + 1], bandit_value(bandit, theta))
    assert np.allclose(h.logits, theta)
    assert np.allclose(h.ess_fraction[:, :, 0], 1.0)
    assert np.all((h.ess_fraction > 0) & (h.ess_fraction <= 1 + 1e-12))
    assert h.pulls.tolist() == [0, 6, 12]


def test_training_is_reproducible_and_improves():
    kw = dict(n_runs=50, n_batches=30, batch_size=20, epochs=1, lr=1.0)
    a = train_softmax_bandit(BANDIT, rng=0, **kw)
    b = train_softmax_bandit(BANDIT, rng=0, **kw)
    assert np.array_equal(a.J, b.J)
    gain = a.J[:, -1] - a.J[:, 0]
    assert gain.mean() > 4 * gain.std(ddof=1) / np.sqrt(50)


@pytest.mark.parametrize(
    "call, word",
    [
        (lambda: GaussianBandit([1.0]), "means"),
        (lambda: GaussianBandit([0.0, np.nan]), "means"),
        (lambda: GaussianBandit([0.0, 1.0], sd=-1.0), "sd"),
        (lambda: bandit_value(BANDIT, np.zeros(4)), "logits"),
        (lambda: bandit_policy(np.zeros((2, 2, 2))), "logits"),
        (lambda: sample_bandit(BANDIT, [0.5, 0.5, 0.0, 0.0, 0.1], 3, rng=0), "behavior"),
        (lambda: sample_bandit(BANDIT, [1.5, -0.5, 0.0, 0.0, 0.0], 3, rng=0), "behavior"),
        (lambda: sample_bandit(BANDIT, np.full(5, 0.2), 0, rng=0), "n"),
        (lambda: bandit_gradient(sample_bandit(BANDIT, np.full(5, 0.2), 3, rng=0), np.zeros(5),
                                 correction="clip"), "correction"),
        (lambda: bandit_gradient(BanditBatch(np.array([4]), np.array([1.0]), np.array([0.0])),
                                 np.zeros(4)), "batch.actions"),
        (lambda: bandit_gradient(sample_bandit(BANDIT, np.full(5, 0.2), 3, rng=0),
                                 np.zeros((2, 5))), "logits"),
        (lambda: bandit_gradient(BanditBatch(np.array([0]), np.array([1.0]),
                                             np.array([-np.inf])), np.zeros(5)),
         "batch.logp_behavior"),
        (lambda: bandit_gradient((1, 2, 3), np.zeros(5)), "batch"),
        (lambda: train_softmax_bandit(BANDIT, n_runs=1, n_batches=1, batch_size=1, epochs=0,
                                      lr=1.0, rng=0), "epochs"),
        (lambda: train_softmax_bandit(BANDIT, n_runs=1, n_batches=1, batch_size=1, epochs=1,
                                      lr=-1.0, rng=0), "lr"),
        (lambda: train_softmax_bandit(BANDIT, n_runs=1, n_batches=1, batch_size=1, epochs=1,
                                      lr=1.0, rng=0, logits0=np.zeros(3)), "logits0"),
    ],
)
def test_bad_input_raises_naming_the_argument(call, word):
    with pytest.raises(ValueError, match=word):
        call()
