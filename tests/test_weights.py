"""Tests for companion.weights: log ratios, trajectory and prefix weights, self-normalising."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from companion.weights import (
    log_ratios,
    per_decision_log_weights,
    self_normalise,
    trajectory_log_weights,
)

SETTINGS = settings(max_examples=40, derandomize=True, deadline=None)


def suffix_mask(lengths, horizon):
    return np.arange(horizon)[None, :] < np.asarray(lengths)[:, None]


# --- closed forms -------------------------------------------------------------------------------


def test_log_ratios_closed_form():
    lp_pi = np.log([[0.5, 0.2], [1.0, 0.1]])
    lp_mu = np.log([[0.25, 0.4], [0.5, 0.1]])
    np.testing.assert_allclose(np.exp(log_ratios(lp_pi, lp_mu)), [[2.0, 0.5], [2.0, 1.0]])


def test_target_zero_gives_zero_weight():
    lr = log_ratios(np.array([[-np.inf, 0.0]]), np.log([[0.5, 0.5]]))
    assert lr[0, 0] == -np.inf
    assert np.exp(trajectory_log_weights(lr))[0] == 0.0


def test_counting_factors_100_steps():
    """A trajectory of T = 100 actions has exactly 100 factors: 0.8**100 and 1.2**100."""
    lr = np.log(np.full((2, 100), [[0.8], [1.2]]))
    w = np.exp(trajectory_log_weights(lr))
    np.testing.assert_allclose(w, [0.8**100, 1.2**100], rtol=1e-10)
    assert 1.9e-10 < w[0] < 2.1e-10 and 8.2e7 < w[1] < 8.4e7


def test_mask_ignores_padding_and_prefix_holds_last_value():
    lr = np.log([[2.0, 3.0, 5.0], [2.0, 7.0, 11.0]])
    lr[1, 2] = np.nan  # padding may hold anything
    mask = suffix_mask([3, 2], 3)
    np.testing.assert_allclose(np.exp(trajectory_log_weights(lr, mask)), [30.0, 14.0])
    prefix = np.exp(per_decision_log_weights(lr, mask))
    np.testing.assert_allclose(prefix, [[2.0, 6.0, 30.0], [2.0, 14.0, 14.0]])


def test_no_overflow_10000_steps():
    lr = np.log(np.full((2, 10_000), [[1.2], [0.8]]))
    lw = trajectory_log_weights(lr)
    np.testing.assert_allclose(lw, [10_000 * math.log(1.2), 10_000 * math.log(0.8)], rtol=1e-12)
    prefix = per_decision_log_weights(lr)
    np.testing.assert_allclose(prefix[:, -1], lw, rtol=1e-12)
    np.testing.assert_allclose(prefix[:, 4_999], lw / 2, rtol=1e-12)  # half way: half the log


def test_self_normalise_huge_log_weights():
    w = self_normalise(np.array([3000.0, 3000.0, 3000.0 + math.log(2.0), -np.inf]))
    np.testing.assert_allclose(w, [0.25, 0.25, 0.5, 0.0])


# --- properties ---------------------------------------------------------------------------------


@SETTINGS
@given(
    arrays(np.float64, st.tuples(st.integers(1, 5), st.integers(1, 6)),
           elements=st.floats(-5, 5)),
    st.data(),
)
def test_prefix_weights_match_loop(lr, data):
    n, horizon = lr.shape
    lengths = data.draw(st.lists(st.integers(0, horizon), min_size=n, max_size=n))
    mask = suffix_mask(lengths, horizon)
    prefix = per_decision_log_weights(lr, mask)
    total = trajectory_log_weights(lr, mask)
    for i in range(n):
        acc = 0.0
        for t in range(horizon):
            if t < lengths[i]:
                acc += lr[i, t]
            assert prefix[i, t] == pytest.approx(acc, abs=1e-9)
        assert total[i] == pytest.approx(acc, abs=1e-9)


# --- bad input ----------------------------------------------------------------------------------


def test_behaviour_zero_where_target_positive_names_step():
    lp_pi = np.log([[0.5, 0.5, 0.5], [0.5, 0.5, 0.5]])
    lp_mu = np.log([[0.5, 0.5, 0.5], [0.5, 0.5, 0.5]])
    lp_mu[1, 2] = -np.inf
    with pytest.raises(ValueError, match=r"logp_behavior.*trajectory 1, step 2.*target's is positive"):
        log_ratios(lp_pi, lp_mu)
    # ...but not if that step is padding
    lr = log_ratios(lp_pi, lp_mu, mask=suffix_mask([3, 2], 3))
    assert lr[1, 2] == 0.0


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"logp_target": [[0.0, 0.1]], "logp_behavior": [[0.0, 0.0]]}, r"logp_target.*outside \[0, 1\]"),
        ({"logp_target": [[0.0, 0.0]], "logp_behavior": [[0.0, 0.5]]}, r"logp_behavior.*step 1"),
        ({"logp_target": [[np.nan, 0.0]], "logp_behavior": [[0.0, 0.0]]}, r"logp_target.*NaN.*step 0"),
        ({"logp_target": [[0.0, 0.0]], "logp_behavior": [[0.0, np.inf]]}, r"logp_behavior.*inf"),
        ({"logp_target": [[0.0, 0.0]], "logp_behavior": [[0.0]]}, r"logp_behavior.*shape"),
        ({"logp_target": np.zeros((0, 3)), "logp_behavior": np.zeros((0, 3))}, r"logp_target.*empty"),
        ({"logp_target": [[0.0]], "logp_behavior": [[0.0]], "mask": [[1]]}, r"mask.*boolean"),
    ],
)
def test_log_ratios_bad_input(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        log_ratios(**kwargs)


@pytest.mark.parametrize("fn", [trajectory_log_weights, per_decision_log_weights])
def test_weights_bad_input(fn):
    with pytest.raises(ValueError, match=r"log_ratios.*NaN.*trajectory 1, step 0"):
        fn(np.array([[0.0, 0.0], [np.nan, 0.0]]))
    with pytest.raises(ValueError, match=r"log_ratios.*2-D"):
        fn(np.zeros(3))
    with pytest.raises(ValueError, match=r"mask.*suffix.*trajectory 0"):
        fn(np.zeros((1, 3)), np.array([[True, False, True]]))
    with pytest.raises(ValueError, match=r"mask.*shape"):
        fn(np.zeros((1, 3)), np.array([[True, False]]))


def test_self_normalise_bad_input():
    with pytest.raises(ValueError, match=r"log_w:.*all log weights are -inf"):
        self_normalise([-np.inf, -np.inf])
