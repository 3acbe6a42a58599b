"""Tests for companion.diagnostics: ESS, Pareto k-hat (cross-checked with ArviZ), the report."""

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from companion.diagnostics import (
    WeightReport,
    effective_sample_size,
    khat_threshold,
    pareto_khat,
    running_mean,
    weight_report,
)

SETTINGS = settings(max_examples=50, derandomize=True, deadline=None)

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # arviz announces its refactor with a FutureWarning
    import arviz as az


# --- effective sample size ---------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 7, 1000])
@pytest.mark.parametrize("value", [1e-300, 0.37, 1.0, 5e250])
def test_ess_equal_weights_is_exactly_n(n, value):
    assert effective_sample_size(np.full(n, value)) == n
    assert effective_sample_size(np.full(n, math.log(value) + 2000.0), log=True) == n


def test_ess_closed_forms():
    assert effective_sample_size([0.0, 0.0, 5.0]) == 1.0
    assert effective_sample_size([1.0, 3.0]) == pytest.approx(16.0 / 10.0)


@SETTINGS
@given(arrays(np.float64, st.integers(1, 40), elements=st.floats(0, 1e100)).filter(
    lambda w: w.max() > 0))
def test_ess_between_1_and_n(w):
    ess = effective_sample_size(w)
    assert 1.0 <= ess <= len(w)
    assert effective_sample_size(7.5 * w) == pytest.approx(ess, rel=1e-9)


def test_ess_log_weights_never_overflow():
    lw = np.array([5000.0, 5000.0 + math.log(3.0)])
    assert effective_sample_size(lw, log=True) == pytest.approx(1.6)


# --- Pareto k-hat ------------------------------------------------------------------------------


def arviz_khat(w):
    with np.errstate(divide="ignore"):  # zero weights -> log weight -inf
        lw = np.log(np.asarray(w, dtype=float))
    _, k = az.psislw(lw.copy(), reff=1.0, normalize=False)
    return float(k)


WEIGHT_SAMPLES = {
    "pareto k=0.8": lambda rng: rng.pareto(1 / 0.8, 4000) + 1,
    "pareto k=0.3": lambda rng: rng.pareto(1 / 0.3, 1000) + 1,
    "lognormal sd=1": lambda rng: rng.lognormal(0.0, 1.0, 500),
    "lognormal sd=3": lambda rng: rng.lognormal(0.0, 3.0, 10_000),
    "exponential": lambda rng: rng.exponential(size=300),
    "uniform (bounded)": lambda rng: rng.random(50),
    "half-cauchy k=1": lambda rng: np.abs(rng.standard_cauchy(2000)),
    "gaussian ratio": lambda rng: np.exp(rng.normal(size=25) * 0.5),
    "many zeros": lambda rng: np.where(rng.random(400) < 0.5, 0.0, rng.lognormal(0, 1, 400)),
    "huge scale": lambda rng: 1e200 * rng.lognormal(0.0, 2.0, 1000),
}


@pytest.mark.parametrize("name", sorted(WEIGHT_SAMPLES))
def test_pareto_khat_matches_arviz(name):
    rng = np.random.default_rng(2024)
    w = WEIGHT_SAMPLES[name](rng)
    assert pareto_khat(w) == pytest.approx(arviz_khat(w), abs=1e-6)
    with np.errstate(divide="ignore"):
        lw = np.log(w)
    assert pareto_khat(lw, log=True) == pytest.approx(arviz_khat(w), abs=1e-6)


def test_pareto_khat_huge_log_weights():
    rng = np.random.default_rng(5)
    lw = rng.normal(size=2000) * 2.0 + 1e4  # exp would overflow; khat is scale free
    assert pareto_khat(lw, log=True) == pytest.approx(pareto_khat(np.exp(lw - 1e4)), abs=1e-12)


def test_pareto_khat_recovers_tail_index():
    rng = np.random.default_rng(0)
    for k in (0.2, 0.5, 0.9):
        estimates = [pareto_khat(rng.pareto(1 / k, 20_000) + 1) for _ in range(5)]
        assert abs(np.mean(estimates) - k) < 0.1


def test_pareto_khat_no_tail_is_minus_inf():
    assert pareto_khat(np.ones(100)) == -math.inf
    w = np.r_[np.zeros(50), np.full(50, 3.0)]  # deterministic target: weights in {0, c}
    assert pareto_khat(w) == -math.inf


def test_khat_threshold():
    assert khat_threshold(100) == pytest.approx(0.5)
    assert khat_threshold(1000) == pytest.approx(1 - 1 / 3)
    assert khat_threshold(10**6) == 0.7
    assert khat_threshold(np.int64(10)) == pytest.approx(0.0)
    for bad in (1, 0, 2.5, True, "100"):
        with pytest.raises(ValueError, match=r"n: must be an integer >= 2"):
            khat_threshold(bad)


# --- report ------------------------------------------------------------------------------------


def test_weight_report_fields_and_rendering():
    rng = np.random.default_rng(1)
    w = rng.lognormal(0.0, 1.0, 1000)
    rep = weight_report(w)
    assert isinstance(rep, WeightReport)
    assert rep.n == 1000
    assert rep.ess == pytest.approx(effective_sample_size(w))
    assert rep.ess_fraction == pytest.approx(rep.ess / 1000)
    assert rep.max_share == pytest.approx(w.max() / w.sum())
    assert rep.khat == pytest.approx(pareto_khat(w))
    assert rep.khat_threshold == pytest.approx(khat_threshold(1000))
    assert rep.verdict.startswith("reliable")
    text, page = str(rep), rep._repr_html_()
    assert "ESS" in text and "verdict" in text and f"{rep.khat:.3f}" in text
    assert page.startswith("<table>") and "</table>" in page and "verdict" in page
    # log weights give the same report, even when the weights would overflow
    rep_log = weight_report(np.log(w) + 3000.0, log=True)
    assert rep_log.ess == pytest.approx(rep.ess) and rep_log.khat == pytest.approx(rep.khat)


def test_weight_report_verdicts():
    rng = np.random.default_rng(3)
    assert weight_report(np.abs(rng.standard_cauchy(5000)) ** 2).verdict.startswith(
        "unreliable: k-hat > 0.7")
    assert weight_report(np.ones(30)).verdict.startswith("reliable as far as the tail")
    small = weight_report([1.0, 2.0, 3.0])
    assert math.isnan(small.khat) and small.verdict.startswith("too few")
    assert weight_report([1.0]).n == 1  # one weight: ESS 1, no threshold, no crash


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [effective_sample_size, pareto_khat, weight_report])
def test_bad_input(fn):
    good = np.ones(30)
    with pytest.raises(ValueError, match=r"w:.*empty"):
        fn([])
    with pytest.raises(ValueError, match=r"w:.*NaN.*index 3"):
        fn(np.r_[good[:3], np.nan, good[4:]])
    with pytest.raises(ValueError, match=r"w:.*inf"):
        fn(np.r_[good, np.inf])
    with pytest.raises(ValueError, match=r"w:.*>= 0.*index 0"):
        fn(np.r_[-1.0, good])
    with pytest.raises(ValueError, match=r"w:.*1-D"):
        fn(np.ones((3, 10)))
    with pytest.raises(ValueError, match=r"w:.*all weights are zero"):
        fn(np.zeros(30))
    with pytest.raises(ValueError, match=r"w:.*NaN or \+inf"):
        fn(np.r_[good, np.inf], log=True)


def test_pareto_khat_too_few():
    with pytest.raises(ValueError, match=r"w: pareto_khat needs at least 21"):
        pareto_khat(np.arange(1.0, 21.0))
    assert np.isfinite(pareto_khat(np.arange(1.0, 22.0)))


def test_running_mean_matches_a_loop_over_prefixes():
    rng = np.random.default_rng(7)
    x = rng.lognormal(3.0, 1.5, size=50) + 1e6  # a large offset: the running sums must stay exact
    count, mean, se = running_mean(x)
    assert count.tolist() == list(range(1, 51))
    for k in range(1, 51):
        prefix = x[:k]
        assert mean[k - 1] == pytest.approx(prefix.mean(), rel=1e-14)
        want = prefix.std(ddof=1) / np.sqrt(k) if k > 1 else 0.0
        assert se[k - 1] == pytest.approx(want, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("bad, match", [([], "empty"), ([[1.0]], "1-D"), ([1.0, np.nan], "NaN")])
def test_running_mean_rejects_bad_terms(bad, match):
    with pytest.raises(ValueError, match=f"terms: .*{match}"):
        running_mean(bad)
