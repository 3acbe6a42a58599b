"""Tests for companion.estimators: closed forms, loop references, stability, unbiasedness."""

import itertools
import math
import statistics

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from companion import estimators as est_mod
from companion.estimators import (
    Estimate,
    ordinary_is,
    per_decision_is,
    single_step_is,
    trajectory_is,
    weighted_is,
    weighted_per_decision_is,
    weighted_trajectory_is,
)
from companion.mdp import (
    policy_quantities,
    policy_value,
    random_mdp,
    sample_trajectories,
    softmax_policy,
)
from companion.policy_gradient import surrogate_objective

SETTINGS = settings(max_examples=40, derandomize=True, deadline=None)
OPE = [trajectory_is, weighted_trajectory_is, per_decision_is, weighted_per_decision_is]


# --- plain-Python references (written independently of the vectorised code) -------------------


def ref_ope(rewards, log_ratios, gamma, lengths):
    """All four estimates and the per-trajectory terms with explicit loops and math.exp."""
    n = len(rewards)
    horizon = len(rewards[0])
    w, G, pd = [], [], []
    for i in range(n):
        lw, g, p, disc = 0.0, 0.0, 0.0, 1.0
        for t in range(lengths[i]):
            lw += log_ratios[i][t]
            g += disc * rewards[i][t]
            p += disc * math.exp(lw) * rewards[i][t]
            disc *= gamma
        w.append(math.exp(lw))
        G.append(g)
        pd.append(p)
    ois = sum(wi * gi for wi, gi in zip(w, G, strict=True)) / n
    wis = sum(wi * gi for wi, gi in zip(w, G, strict=True)) / sum(w)
    pdis = sum(pd) / n
    wpdis, disc = 0.0, 1.0
    psi = [0.0] * n  # delta-method influence of each trajectory on WPDIS
    for t in range(horizon):
        num = den = 0.0
        rho, r = [], []
        for i in range(n):
            prefix = sum(log_ratios[i][k] for k in range(min(t + 1, lengths[i])))
            rho.append(math.exp(prefix))
            r.append(rewards[i][t] if t < lengths[i] else 0.0)
            num += rho[i] * r[i]
            den += rho[i]
        if den > 0:
            wpdis += disc * num / den
            for i in range(n):  # gamma^t rho_{i,0:t} (r_it - r_hat_t) / mean_j rho_{j,0:t}
                psi[i] += disc * rho[i] * (r[i] - num / den) / (den / n)
        disc *= gamma
    nan = float("nan")
    se = {
        "ois": statistics.stdev([wi * gi for wi, gi in zip(w, G, strict=True)]) / math.sqrt(n)
        if n > 1 else nan,
        "wis": math.sqrt(sum((wi * (gi - wis)) ** 2 for wi, gi in zip(w, G, strict=True)))
        / sum(w) if n > 1 else nan,
        "pdis": statistics.stdev(pd) / math.sqrt(n) if n > 1 else nan,
        "wpdis": math.sqrt(sum(p * p for p in psi)) / n if n > 1 else nan,
    }
    return {"ois": ois, "wis": wis, "pdis": pdis, "wpdis": wpdis, "w": w, "G": G, "pd": pd,
            "se": se}


def ref_wpdis_log_space(rewards, log_ratios, gamma, mask=None):
    """WPDIS estimate, stderr and terms, step by step, with each step's largest log prefix weight
    subtracted before exponentiating (for weights beyond float64, where the loop cannot go)."""
    n, horizon = rewards.shape
    real = np.ones((n, horizon), dtype=bool) if mask is None else mask
    prefix = np.cumsum(np.where(real, log_ratios, 0.0), axis=1)
    r = np.where(real, rewards, 0.0)
    est, terms, psi = 0.0, np.zeros(n), np.zeros(n)
    for t in range(horizon):
        if np.all(prefix[:, t] == -np.inf):
            continue  # no trajectory reaches step t under the target policy: it contributes 0
        w = np.exp(prefix[:, t] - prefix[:, t].max())
        r_hat = np.dot(w, r[:, t]) / w.sum()
        est += gamma**t * r_hat
        terms += gamma**t * w * r[:, t] / w.mean()
        psi += gamma**t * w * (r[:, t] - r_hat) / w.mean()
    return est, math.sqrt(np.dot(psi, psi)) / n, terms


def batch_strategy():
    @st.composite
    def batch(draw):
        n = draw(st.integers(1, 6))
        horizon = draw(st.integers(1, 6))
        floats = st.floats(-3, 3, allow_nan=False)
        rewards = draw(st.lists(st.lists(floats, min_size=horizon, max_size=horizon),
                                min_size=n, max_size=n))
        lr = draw(st.lists(st.lists(st.floats(-2, 2), min_size=horizon, max_size=horizon),
                           min_size=n, max_size=n))
        lengths = draw(st.lists(st.integers(1, horizon), min_size=n, max_size=n))
        gamma = draw(st.sampled_from([0.0, 0.5, 0.9, 1.0]))
        return np.array(rewards), np.array(lr), np.array(lengths), gamma
    return batch()


def mask_of(lengths, horizon):
    return np.arange(horizon)[None, :] < np.asarray(lengths)[:, None]


# --- plain expectations ------------------------------------------------------------------------


def test_unit_weights_give_plain_mean():
    f = np.array([1.0, 4.0, -2.0, 7.0])
    for fn in (ordinary_is, weighted_is):
        e = fn(f, np.ones(4))
        assert e.estimate == pytest.approx(f.mean(), abs=1e-12)
        np.testing.assert_allclose(e.terms, f, rtol=1e-12)
    # ordinary: the sample sd over sqrt(n); weighted: the delta method, with w = 1 the plug-in
    # sd (ddof=0) over sqrt(n)
    assert ordinary_is(f, np.ones(4)).stderr == pytest.approx(f.std(ddof=1) / 2.0, rel=1e-12)
    assert weighted_is(f, np.ones(4)).stderr == pytest.approx(f.std(ddof=0) / 2.0, rel=1e-12)


def test_estimate_object():
    e = ordinary_is([1.0, 3.0], [1.0, 1.0])
    assert isinstance(e, Estimate) and float(e) == 2.0 and e.n == 2
    assert "ordinary_is" in repr(e)
    assert math.isnan(ordinary_is([1.0], [1.0]).stderr)  # documented: n == 1


@SETTINGS
@given(st.lists(st.tuples(st.floats(-100, 100), st.floats(0.01, 100)), min_size=1, max_size=30),
       st.floats(1e-3, 1e3), st.floats(-700, 700))
def test_weighted_is_invariant_to_scaling(pairs, scale, log_shift):
    f = np.array([p[0] for p in pairs])
    w = np.array([p[1] for p in pairs])
    base = weighted_is(f, w).estimate
    assert weighted_is(f, scale * w).estimate == pytest.approx(base, rel=1e-9, abs=1e-9)
    assert weighted_is(f, np.log(w) + log_shift, log=True).estimate == pytest.approx(
        base, rel=1e-9, abs=1e-9)
    assert f.min() - 1e-9 <= base <= f.max() + 1e-9  # always inside the observed range


def test_ordinary_is_log_weights_and_overflow():
    assert ordinary_is([2.0, 2.0], np.log([0.5, 1.5]), log=True).estimate == pytest.approx(2.0)
    with pytest.raises(ValueError, match=r"w:.*overflow"):
        ordinary_is([1.0, 1.0], [0.0, 800.0], log=True)


@pytest.mark.parametrize("fn", [ordinary_is, weighted_is])
def test_plain_bad_input(fn):
    with pytest.raises(ValueError, match=r"w:.*shape"):
        fn([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match=r"f:.*NaN.*index 1"):
        fn([1.0, np.nan], [1.0, 1.0])
    with pytest.raises(ValueError, match=r"w:.*>= 0"):
        fn([1.0, 1.0], [1.0, -1.0])
    with pytest.raises(ValueError, match=r"f:.*empty"):
        fn([], [])
    with pytest.raises(ValueError, match=r"w:.*inf"):
        fn([1.0, 1.0], [1.0, np.inf])
    with pytest.raises(ValueError, match=r"w:.*all weights are zero"):
        fn([1.0, 1.0], [0.0, 0.0])


# --- OPE estimators vs the loop reference ------------------------------------------------------


@SETTINGS
@given(batch_strategy())
def test_ope_matches_loop_reference(batch):
    rewards, lr, lengths, gamma = batch
    horizon = rewards.shape[1]
    mask = mask_of(lengths, horizon)
    garbage_r, garbage_lr = rewards.copy(), lr.copy()
    garbage_r[~mask] = np.nan  # padding is ignored, whatever it holds
    garbage_lr[~mask] = np.inf
    ref = ref_ope(rewards.tolist(), lr.tolist(), gamma, lengths.tolist())
    for r_in, lr_in in ((rewards, lr), (garbage_r, garbage_lr)):
        got = {k: f(r_in, lr_in, gamma, mask) for k, f in
               zip(["ois", "wis", "pdis", "wpdis"], OPE, strict=True)}
        for key, e in got.items():
            assert e.estimate == pytest.approx(ref[key], rel=1e-9, abs=1e-9), key
            assert e.terms.mean() == pytest.approx(e.estimate, rel=1e-9, abs=1e-9), key
            assert e.stderr == pytest.approx(ref["se"][key], rel=1e-9, abs=1e-9, nan_ok=True), key
            assert np.isfinite(e.stderr) or e.n == 1
        np.testing.assert_allclose(got["ois"].terms,
                                   np.multiply(ref["w"], ref["G"]), rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(got["pdis"].terms, ref["pd"], rtol=1e-9, atol=1e-9)


def test_wpdis_extreme_weights_across_blocks():
    """A whole block of rows (the estimators work on blocks of about 65,000 elements) has weight
    zero from step 1 on, the other rows tiny weights (log about -800, below float64's range):
    the per-step max-subtraction still gives the log-space reference."""
    rng = np.random.default_rng(3)
    n, horizon = 20_000, 7  # three blocks of rows
    rewards = rng.random((n, horizon))
    lr = rng.normal(0, 1.0, (n, horizon)) - 800.0 / horizon
    lr[: est_mod._BLOCK_SIZE // horizon, 1] = -np.inf
    est, se, terms = ref_wpdis_log_space(rewards, lr, 0.9)
    e = weighted_per_decision_is(rewards, lr, 0.9)
    assert np.isfinite(e.estimate) and e.estimate == pytest.approx(est, rel=1e-12)
    assert e.stderr == pytest.approx(se, rel=1e-10)
    np.testing.assert_allclose(e.terms, terms, rtol=1e-10)


def test_results_do_not_depend_on_the_blocks():
    """A batch of several blocks, with masks and with far larger weights in a later block, gives
    the same results as each trajectory alone (the per-trajectory terms) and as the log-space
    reference."""
    rng = np.random.default_rng(4)
    n, horizon = 3000, 50  # 1310 rows per block: three blocks
    rewards = rng.random((n, horizon))
    lr = rng.normal(0, 0.3, (n, horizon))
    lr[2800] += 5.0  # the last block holds far larger weights than the first
    mask = np.arange(horizon) < rng.integers(1, horizon + 1, size=n)[:, None]
    for fn in (trajectory_is, per_decision_is):
        e = fn(rewards, lr, 0.95, mask)
        alone = [fn(rewards[i:i + 1], lr[i:i + 1], 0.95, mask[i:i + 1]).estimate for i in range(n)]
        np.testing.assert_allclose(e.terms, alone, rtol=1e-12)
    est, se, terms = ref_wpdis_log_space(rewards, lr, 0.95, mask)
    e = weighted_per_decision_is(rewards, lr, 0.95, mask)
    assert e.estimate == pytest.approx(est, rel=1e-12)
    assert e.stderr == pytest.approx(se, rel=1e-10)
    np.testing.assert_allclose(e.terms, terms, rtol=1e-10)


def test_memory_layouts_and_read_only_inputs(recwarn):
    """Strided, Fortran-ordered, reversed and read-only inputs give the results of C-contiguous
    ones, without warnings."""
    rng = np.random.default_rng(11)
    rewards = rng.random((30, 16))
    lr = rng.normal(0, 0.3, (30, 16))
    mask = np.arange(16) < rng.integers(1, 17, size=30)[:, None]
    views = {
        "fortran": lambda a: np.asfortranarray(a),
        "strided": lambda a: np.repeat(a, 2, axis=1)[:, ::2],
        "transposed twice": lambda a: a.T.copy().T,
    }
    for fn in OPE:
        want = fn(rewards, lr, 0.95, mask)
        for name, view in views.items():
            got = fn(view(rewards), view(lr), 0.95, view(mask))
            assert got.estimate == pytest.approx(want.estimate, rel=1e-12), (fn.__name__, name)
            np.testing.assert_allclose(got.terms, want.terms, rtol=1e-12)
        ro_r, ro_lr = rewards.copy(), lr.copy()
        ro_r.flags.writeable = ro_lr.flags.writeable = False
        got = fn(ro_r, ro_lr, 0.95, mask)
        assert got.estimate == pytest.approx(want.estimate, rel=1e-12)
        rev = fn(rewards[::-1], lr[::-1], 0.95, mask[::-1])  # negative row stride
        assert rev.estimate == pytest.approx(want.estimate, rel=1e-12)
    assert not [str(w.message) for w in recwarn]


@SETTINGS
@given(batch_strategy(), st.floats(-5, 5))
def test_constant_reward(batch, c):
    """Weighted estimators of a constant reward c give c * sum_t gamma^t exactly (any weights)."""
    _, lr, _, gamma = batch
    n, horizon = lr.shape
    rewards = np.full((n, horizon), c)
    expected = c * sum(gamma**t for t in range(horizon))
    for fn in (weighted_trajectory_is, weighted_per_decision_is):
        assert fn(rewards, lr, gamma).estimate == pytest.approx(expected, rel=1e-9, abs=1e-9)
    ones = np.zeros_like(lr)  # on-policy: every estimator is the plain average
    for fn in OPE:
        assert fn(rewards, ones, gamma).estimate == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_horizon_one_wpdis_equals_wis_and_last_reward_pdis_equals_is():
    rng = np.random.default_rng(0)
    f, lw = rng.normal(size=30), rng.normal(size=30)
    a = weighted_per_decision_is(f[:, None], lw[:, None])
    b = weighted_is(f, lw, log=True)
    assert a.estimate == pytest.approx(b.estimate) and a.stderr == pytest.approx(b.stderr)
    rewards = np.zeros((30, 4))
    rewards[:, -1] = f
    lr = rng.normal(size=(30, 4))
    assert per_decision_is(rewards, lr).estimate == pytest.approx(trajectory_is(rewards, lr).estimate)


def test_stderr_formulas():
    rng = np.random.default_rng(1)
    rewards, lr = rng.random((40, 5)), rng.normal(0, 0.5, (40, 5))
    w = np.exp(lr.sum(1))
    G = rewards @ 0.9 ** np.arange(5)
    e = trajectory_is(rewards, lr, 0.9)
    assert e.stderr == pytest.approx(np.std(w * G, ddof=1) / math.sqrt(40))
    e = weighted_trajectory_is(rewards, lr, 0.9)
    assert e.stderr == pytest.approx(math.sqrt(np.sum((w * (G - e.estimate)) ** 2)) / w.sum())


# --- long trajectories: no overflow or underflow -----------------------------------------------


def test_10000_steps_ratios_1_2_or_0_8():
    rng = np.random.default_rng(7)
    n, horizon = 5, 10_000
    ratios = rng.choice([1.2, 0.8], size=(n, horizon), p=[0.8, 0.2])
    lr = np.log(ratios)
    rewards = rng.random((n, horizon))
    gamma = 0.9999
    lw = lr.sum(axis=1)
    assert lw.max() > 750  # the largest weight really is beyond float64
    # reference in exact log-space arithmetic
    G = rewards @ gamma ** np.arange(horizon)
    shifted = [math.exp(x - max(lw)) for x in lw]
    wis_ref = sum(s * g for s, g in zip(shifted, G, strict=True)) / sum(shifted)
    assert weighted_trajectory_is(rewards, lr, gamma).estimate == pytest.approx(wis_ref, rel=1e-10)
    prefix = np.cumsum(lr, axis=1)
    wpdis_ref = 0.0
    for t in range(horizon):
        col = prefix[:, t] - prefix[:, t].max()
        wpdis_ref += gamma**t * np.dot(np.exp(col), rewards[:, t]) / np.exp(col).sum()
    e = weighted_per_decision_is(rewards, lr, gamma)
    assert e.estimate == pytest.approx(wpdis_ref, rel=1e-10)
    assert np.isfinite(e.stderr) and np.all(np.isfinite(e.terms))
    _, se_ref, terms_ref = ref_wpdis_log_space(rewards, lr, gamma)
    assert e.stderr == pytest.approx(se_ref, rel=1e-8)
    np.testing.assert_allclose(e.terms, terms_ref, rtol=1e-8)
    # ordinary estimators: the weights cannot be represented -> a clear error, never inf/nan
    for fn in (trajectory_is, per_decision_is):
        with pytest.raises(ValueError, match=r"log_ratios:.*overflow.*weighted") as err:
            fn(rewards, lr, gamma)
        # the message names the largest log weight, a finite number beyond exp's range
        largest = float(err.value.args[0].split("largest log weight ")[1].split(";")[0])
        assert 709.8 < largest < lw.max() + 1.0


def test_10000_steps_ratio_0_8_underflows_to_exact_zero():
    lr = np.full((3, 10_000), math.log(0.8))
    rewards = np.ones((3, 10_000))
    e = trajectory_is(rewards, lr)  # true value 0.8**10000 * 10000 ~ 1e-965: 0.0 in float64
    assert e.estimate == 0.0 and e.stderr == 0.0
    # per-decision: the early steps still count; exact value sum_t 0.8**(t+1) = 4 (1 - 0.8**10000)
    assert per_decision_is(rewards, lr).estimate == pytest.approx(4.0, rel=1e-12)
    assert weighted_trajectory_is(rewards, lr).estimate == pytest.approx(10_000.0)
    assert weighted_per_decision_is(rewards, lr).estimate == pytest.approx(10_000.0)


def test_10000_steps_ratio_1_2_all_same_weighted_is_exact():
    lr = np.full((3, 10_000), math.log(1.2))
    rewards = np.tile(np.array([[1.0], [2.0], [3.0]]), (1, 10_000))
    assert weighted_trajectory_is(rewards, lr).estimate == pytest.approx(20_000.0)
    assert weighted_per_decision_is(rewards, lr).estimate == pytest.approx(20_000.0)


# --- statistical unbiasedness on a synthetic problem -------------------------------------------

MU = np.array([0.5, 0.3, 0.2])  # behaviour policy over 3 actions, the same at every step
PI = np.array([0.2, 0.3, 0.5])  # target policy
HORIZON = 4
GAMMA = 0.9


def synthetic_reward(actions):
    """r_t = a_t + 1[a_t == a_{t-1}]: the return depends on the whole action sequence."""
    rewards = actions.astype(float)
    rewards[..., 1:] += actions[..., 1:] == actions[..., :-1]
    return rewards


def exact_value():
    total = 0.0
    for seq in itertools.product(range(3), repeat=HORIZON):
        a = np.array(seq)
        total += np.prod(PI[a]) * np.sum(GAMMA ** np.arange(HORIZON) * synthetic_reward(a))
    return total


def test_unbiased_on_synthetic_problem():
    rng = np.random.default_rng(12345)
    n = 20_000
    actions = rng.choice(3, size=(n, HORIZON), p=MU)
    rewards = synthetic_reward(actions)
    lr = np.log(PI[actions]) - np.log(MU[actions])
    v = exact_value()
    for fn in (trajectory_is, per_decision_is):
        e = fn(rewards, lr, GAMMA)
        assert abs(e.estimate - v) < 4 * e.stderr, (fn.__name__, e, v)
    # weighted: biased, O(1/n); at this n the bias is far below the standard error
    for fn in (weighted_trajectory_is, weighted_per_decision_is):
        e = fn(rewards, lr, GAMMA)
        assert abs(e.estimate - v) < 4 * e.stderr, (fn.__name__, e, v)
    # and per-decision IS has the smaller standard error here
    assert per_decision_is(rewards, lr, GAMMA).stderr < trajectory_is(rewards, lr, GAMMA).stderr


def test_stderr_is_calibrated_for_wpdis():
    """The delta-method stderr of WPDIS matches the spread over independent repetitions."""
    rng = np.random.default_rng(99)
    reps, n = 200, 500
    estimates, stderrs = [], []
    for _ in range(reps):
        actions = rng.choice(3, size=(n, HORIZON), p=MU)
        lr = np.log(PI[actions]) - np.log(MU[actions])
        e = weighted_per_decision_is(synthetic_reward(actions), lr, GAMMA)
        estimates.append(e.estimate)
        stderrs.append(e.stderr)
    ratio = np.mean(stderrs) / np.std(estimates, ddof=1)
    assert 0.8 < ratio < 1.2  # sd of a sd estimate from 200 reps is ~5%


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", OPE)
def test_ope_bad_input(fn):
    r, lr = np.zeros((3, 4)), np.zeros((3, 4))
    bad_r = r.copy()
    bad_r[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"rewards:.*NaN.*trajectory 1, step 2"):
        fn(bad_r, lr)
    bad_r[1, 2] = np.inf
    with pytest.raises(ValueError, match=r"rewards:.*inf.*trajectory 1, step 2"):
        fn(bad_r, lr, 0.0)  # even where the discount is 0
    bad_lr = lr.copy()
    bad_lr[2, 0] = np.inf
    with pytest.raises(ValueError, match=r"log_ratios:.*\+inf.*trajectory 2, step 0"):
        fn(r, bad_lr)
    bad_lr[2, 0] = np.nan
    with pytest.raises(ValueError, match=r"log_ratios:.*NaN.*trajectory 2, step 0"):
        fn(r, bad_lr)
    with pytest.raises(ValueError, match=r"log_ratios:.*shape"):
        fn(r, lr[:, :3])
    with pytest.raises(ValueError, match=r"rewards:.*empty"):
        fn(np.zeros((0, 4)), np.zeros((0, 4)))
    with pytest.raises(ValueError, match=r"rewards:.*2-D"):
        fn(np.zeros(4), np.zeros(4))
    with pytest.raises(ValueError, match=r"gamma:.*\[0, 1\]"):
        fn(r, lr, gamma=1.5)
    with pytest.raises(ValueError, match=r"mask:.*suffix.*trajectory 0"):
        fn(r, lr, mask=np.array([[True, False, True, True]] * 3))


@pytest.mark.parametrize("fn", [weighted_trajectory_is, weighted_per_decision_is])
def test_weighted_all_zero_weights_raises(fn):
    with pytest.raises(ValueError, match=r"log_ratios:.*weight zero.*0/0"):
        fn(np.ones((2, 3)), np.full((2, 3), -np.inf))


def test_wpdis_steps_nobody_reaches_contribute_zero():
    # both trajectories leave the target's support at step 1: steps >= 1 contribute 0
    lr = np.array([[0.0, -np.inf, 0.0], [0.0, -np.inf, 0.0]])
    e = weighted_per_decision_is(np.ones((2, 3)), lr)
    assert e.estimate == 1.0
    assert e.stderr == 0.0  # both trajectories have the same weight and reward where they count


# --- doubly robust (on_off_policy) ---------------------------------------------------------------


def ref_doubly_robust(rewards, log_ratios, q_hat, v_hat, gamma, lengths):
    """The backward recursion v_t = V(s_t) + rho_t (r_t + gamma v_{t+1} - Q(s_t, a_t)), by loops."""
    terms = []
    for i in range(len(rewards)):
        v = 0.0
        for t in reversed(range(lengths[i])):
            v = v_hat[i][t] + math.exp(log_ratios[i][t]) * (rewards[i][t] + gamma * v - q_hat[i][t])
        terms.append(v)
    return terms


@given(batch_strategy(), st.integers(0, 2**31 - 1))
@SETTINGS
def test_doubly_robust_matches_recursion_and_reduces_to_pdis(batch, seed):
    rewards, lr, lengths, gamma = batch
    rng = np.random.default_rng(seed)
    q_hat, v_hat = rng.normal(size=rewards.shape), rng.normal(size=rewards.shape)
    mask = mask_of(lengths, rewards.shape[1])
    padded = [np.where(mask, x, np.nan) for x in (rewards, lr, q_hat, v_hat)]  # padding ignored
    e = est_mod.doubly_robust(*padded, gamma=gamma, mask=mask)
    ref = ref_doubly_robust(rewards, lr, q_hat, v_hat, gamma, lengths)
    np.testing.assert_allclose(e.terms, ref, rtol=1e-9, atol=1e-9)
    assert e.estimate == pytest.approx(np.mean(ref), rel=1e-9, abs=1e-9)
    zero = np.zeros_like(rewards)
    no_model = est_mod.doubly_robust(rewards, lr, zero, zero, gamma, mask)
    np.testing.assert_allclose(no_model.terms, per_decision_is(rewards, lr, gamma, mask).terms,
                               rtol=1e-12, atol=1e-12)


def _dr_problem(seed, n):
    """A random tabular MDP, target/behaviour policies, exact finite-horizon answers, a batch."""
    rng = np.random.default_rng(seed)
    mdp = random_mdp(5, 3, rng, gamma=0.9)
    pi = softmax_policy(rng.normal(scale=1.5, size=(5, 3)))
    mu = softmax_policy(rng.normal(scale=0.5, size=(5, 3)))
    horizon = 12
    exact = policy_quantities(mdp, pi, horizon=horizon)
    traj = sample_trajectories(mdp, mu, n=n, horizon=horizon, rng=rng, target=pi)
    return mdp, pi, exact, traj, horizon


def _along(traj, table, horizon):
    """Values of a time-indexed table Q[t, s, a] (or stationary Q[s, a]) along each trajectory."""
    t = np.broadcast_to(np.arange(horizon), traj.states.shape)
    if table.ndim == 3:
        return table[t, traj.states, traj.actions]
    return table[traj.states, traj.actions]


def test_doubly_robust_unbiased_with_a_wrong_model():
    mdp, pi, exact, traj, horizon = _dr_problem(seed=2024, n=40_000)
    wrong_q = np.random.default_rng(7).uniform(-5.0, 5.0, size=(5, 3))   # unrelated to Q^pi
    wrong_v = (pi * wrong_q).sum(axis=1)                                  # consistent with pi
    q_hat, v_hat = _along(traj, wrong_q, horizon), wrong_v[traj.states]
    e = est_mod.doubly_robust(traj.rewards, traj.log_rho, q_hat, v_hat, mdp.gamma, traj.mask)
    assert abs(e.estimate - exact.J) < 4 * e.stderr, (e, exact.J)
    # an inconsistent V-hat (not E_pi Q-hat) breaks the control variate: biased
    bad_v = wrong_v[traj.states] + 1.0
    e_bad = est_mod.doubly_robust(traj.rewards, traj.log_rho, q_hat, bad_v, mdp.gamma, traj.mask)
    assert abs(e_bad.estimate - exact.J) > 10 * e_bad.stderr


def test_doubly_robust_good_model_cuts_variance_below_pdis():
    mdp, pi, exact, traj, horizon = _dr_problem(seed=11, n=20_000)
    rng = np.random.default_rng(3)
    # a good but imperfect model: the exact time-indexed Q^pi plus 10% noise on each entry
    q_model = exact.Q * (1.0 + 0.1 * rng.normal(size=exact.Q.shape))
    v_model = np.einsum("sa,tsa->ts", pi, q_model)
    t = np.broadcast_to(np.arange(horizon), traj.states.shape)
    q_hat, v_hat = _along(traj, q_model, horizon), v_model[t, traj.states]
    dr = est_mod.doubly_robust(traj.rewards, traj.log_rho, q_hat, v_hat, mdp.gamma, traj.mask)
    pdis = per_decision_is(traj.rewards, traj.log_rho, mdp.gamma, traj.mask)
    assert abs(dr.estimate - exact.J) < 4 * dr.stderr
    # sample variances from 20,000 terms: relative s.e. of each variance is a few percent
    assert np.var(dr.terms) < 0.25 * np.var(pdis.terms), (np.var(dr.terms), np.var(pdis.terms))
    # the exact model removes every variance due to the actions; what is left is smaller still
    q_exact = _along(traj, exact.Q, horizon)
    v_exact = exact.V[:-1][t, traj.states]
    dr_exact = est_mod.doubly_robust(traj.rewards, traj.log_rho, q_exact, v_exact, mdp.gamma,
                                     traj.mask)
    assert np.var(dr_exact.terms) < np.var(dr.terms)


def test_doubly_robust_bad_input():
    r, lr = np.zeros((3, 4)), np.zeros((3, 4))
    q, v = np.zeros((3, 4)), np.zeros((3, 4))
    with pytest.raises(ValueError, match=r"q_hat:.*shape"):
        est_mod.doubly_robust(r, lr, q[:, :3], v)
    with pytest.raises(ValueError, match=r"v_hat:.*2-D"):
        est_mod.doubly_robust(r, lr, q, np.zeros(4))
    bad = v.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"v_hat:.*NaN.*trajectory 2, step 1"):
        est_mod.doubly_robust(r, lr, q, bad)
    with pytest.raises(ValueError, match=r"q_hat:.*inf.*trajectory 2, step 1"):
        est_mod.doubly_robust(r, lr, np.where(bad == bad, q, np.inf), v)
    # ... but NaN on a padded step is ignored
    mask = np.ones((3, 4), dtype=bool)
    mask[2, 1:] = False
    assert est_mod.doubly_robust(r, lr, q, bad, mask=mask).estimate == 0.0
    bad_lr = lr.copy()
    bad_lr[0, 3] = np.nan
    with pytest.raises(ValueError, match=r"log_ratios:.*NaN.*trajectory 0, step 3"):
        est_mod.doubly_robust(r, bad_lr, q, v)
    with pytest.raises(ValueError, match=r"gamma:"):
        est_mod.doubly_robust(r, lr, q, v, gamma=-0.1)
    with pytest.raises(ValueError, match=r"log_ratios:.*overflow"):
        est_mod.doubly_robust(np.ones((1, 2)), np.full((1, 2), 400.0), q[:1, :2], v[:1, :2])


# --- the single-ratio estimator (per-step weights) -------------------------------------------

Z = 4.0  # tolerance in standard errors for the statistical checks


def test_single_step_estimates_the_surrogate_not_the_value(surrogate_setting):
    mdp, pi, mu, H, traj, adv = surrogate_setting
    est = single_step_is(traj.rewards, traj.log_rho, adv, gamma=mdp.gamma)
    L = surrogate_objective(mdp, pi, mu, horizon=H)
    J = policy_value(mdp, pi, horizon=H)
    assert abs(est.estimate - L) < Z * est.stderr
    assert abs(est.estimate - J) > 2 * Z * est.stderr   # far from J(pi): the bias is visible


def test_single_step_on_policy_is_the_monte_carlo_return(surrogate_setting):
    mdp, pi, mu, H, traj, adv = surrogate_setting
    est = single_step_is(traj.rewards, np.zeros_like(traj.log_rho), adv, gamma=mdp.gamma)
    np.testing.assert_allclose(est.terms, traj.rewards @ mdp.gamma ** np.arange(H))
    assert abs(est.estimate - policy_value(mdp, mu, horizon=H)) < Z * est.stderr


def test_single_step_matches_a_plain_loop():
    rng = np.random.default_rng(3)
    r, lr, adv = rng.normal(size=(5, 4)), rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
    mask = np.ones((5, 4), dtype=bool)
    mask[1, 2:] = False
    mask[3, 1:] = False
    r_pad = np.where(mask, r, np.nan)                # padding may hold anything
    est = single_step_is(r_pad, lr, adv, gamma=0.8, mask=mask)
    loop = [sum(0.8**t * (r[i, t] + (np.exp(lr[i, t]) - 1) * adv[i, t]) for t in range(4) if mask[i, t])
            for i in range(5)]
    np.testing.assert_allclose(est.terms, loop)
    assert est.estimate == pytest.approx(np.mean(loop))
    assert est.stderr == pytest.approx(np.std(loop, ddof=1) / np.sqrt(5))
    assert est.n == 5


def test_single_step_zero_ratio_is_allowed():
    est = single_step_is([[1.0, 1.0]], [[-np.inf, 0.0]], [[5.0, 1.0]])
    assert est.estimate == pytest.approx(2.0 - 5.0)
    assert np.isnan(est.stderr)


@pytest.mark.parametrize("kwargs, match", [
    (dict(rewards=np.zeros((2, 3)), log_ratios=np.zeros((2, 2)), advantages=np.zeros((2, 3))),
     "log_ratios: shape"),
    (dict(rewards=np.zeros((2, 3)), log_ratios=np.zeros((2, 3)), advantages=np.zeros((3, 3))),
     "advantages: shape"),
    (dict(rewards=np.zeros((0, 3)), log_ratios=np.zeros((0, 3)), advantages=np.zeros((0, 3))),
     "empty"),
    (dict(rewards=[[0.0, np.nan]], log_ratios=[[0.0, 0.0]], advantages=[[0.0, 0.0]]),
     "rewards: NaN or inf at trajectory 0, step 1"),
    (dict(rewards=[[0.0, 0.0]], log_ratios=[[0.0, 0.0]], advantages=[[np.inf, 0.0]]),
     "advantages: NaN or inf at trajectory 0, step 0"),
    (dict(rewards=[[0.0, 0.0]], log_ratios=[[0.0, np.inf]], advantages=[[0.0, 0.0]]),
     "log_ratios: NaN or \\+inf at trajectory 0, step 1"),
    (dict(rewards=[[0.0, 0.0]], log_ratios=[[0.0, 800.0]], advantages=[[0.0, 1.0]]),
     "overflows float64 at trajectory 0, step 1"),
    (dict(rewards=[[0.0, 0.0]], log_ratios=[[0.0, 0.0]], advantages=[[0.0, 0.0]], gamma=1.5),
     "gamma"),
    (dict(rewards=[[0.0, 0.0]], log_ratios=[[0.0, 0.0]], advantages=[[0.0, 0.0]],
          mask=np.array([[False, True]])), "suffix"),
])
def test_single_step_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        single_step_is(**kwargs)
