"""Tests for companion.blackjack: exact DP values, the gymnasium-driven episodes and the simulator."""

from fractions import Fraction
from functools import lru_cache

import numpy as np
import pytest
from scipy import stats

from companion.blackjack import (
    EXAMPLE_5_4_STATE,
    EXAMPLE_5_4_VALUE,
    HIT,
    STICK,
    exact_second_moment,
    exact_value,
    example_5_4_policies,
    gym_episodes,
    ordinary_is_variance,
    random_policy,
    simulate_episodes,
    threshold_policy,
)

PI, MU = example_5_4_policies()
N_GYM = 5_000


@pytest.fixture(scope="module")
def gym_behaviour():
    return gym_episodes(N_GYM, PI, MU, rng=2024)


@pytest.fixture(scope="module")
def sim_behaviour():
    return simulate_episodes(400_000, PI, MU, rng=7)


# ------------------------------------------------------------------ an independent exact oracle
# Example 5.4 played out in exact rational arithmetic, written from the rules alone (it shares no
# code with companion.blackjack): infinite deck, an ace counts 11 while that does not bust the
# hand, the dealer draws to 17 or more (standing on a soft 17), a bust loses at once.
_CARD = {c: Fraction(1, 13) for c in range(1, 10)} | {10: Fraction(4, 13)}


def _soft(raw, ace):
    return raw + 10 if ace and raw + 10 <= 21 else raw


@lru_cache(maxsize=None)
def _dealer_law(raw, ace):
    """Law of the dealer's final score (0 for a bust) from a hand of raw sum ``raw``."""
    if raw > 21:
        return {0: Fraction(1)}
    if _soft(raw, ace) >= 17:
        return {_soft(raw, ace): Fraction(1)}
    law = {}
    for c, p in _CARD.items():
        for k, q in _dealer_law(raw + c, ace or c == 1).items():
            law[k] = law.get(k, Fraction(0)) + p * q
    return law


def _dealer_showing(card):
    law = {}
    for hidden, p in _CARD.items():
        for k, q in _dealer_law(card + hidden, card == 1 or hidden == 1).items():
            law[k] = law.get(k, Fraction(0)) + p * q
    return law


@lru_cache(maxsize=None)
def _return_law(raw, ace, showing, factor):
    """Sum, over the episodes of the target (hit below 20) from the player's hand, of
    Pr(episode) * factor**(number of decisions), by return g in {-1, 0, 1}. With factor 1 this
    is the law of G under the target; with factor pi^2/mu = 2 per decision (the behaviour hits
    with probability 1/2) the g**2-weighted sum is E_mu[w^2 G^2]."""
    law = dict.fromkeys((-1, 0, 1), Fraction(0))
    player = _soft(raw, ace)
    if player >= 20:                                   # the target sticks
        for dealer, q in _dealer_showing(showing).items():
            g = 1 if dealer == 0 or player > dealer else (0 if player == dealer else -1)
            law[g] += factor * q
        return law
    for c, p in _CARD.items():                         # the target hits
        if raw + c > 21:
            law[-1] += factor * p
        else:
            for g, q in _return_law(raw + c, ace or c == 1, showing, factor).items():
                law[g] += factor * p * q
    return law


def _example_5_4_law(factor):
    s, d, usable = EXAMPLE_5_4_STATE          # a usable ace: raw sum s - 10
    assert usable
    return _return_law(s - 10, True, d, Fraction(factor))


# ------------------------------------------------------------------ exact values
def test_exact_value_matches_rational_oracle_and_sutton_barto():
    law = _example_5_4_law(1)
    assert sum(law.values()) == 1                      # the oracle is a distribution
    v_exact = sum(g * q for g, q in law.items())
    v = exact_value(PI)
    assert v == pytest.approx(float(v_exact), rel=1e-12, abs=0)
    assert abs(v - EXAMPLE_5_4_VALUE) < 1e-4     # S&B's mean of 1e8 episodes (s.e. about 1e-4)
    # the state is not a natural, so Sutton & Barto's natural rule changes nothing
    assert exact_value(PI, sab=True) == pytest.approx(v, abs=1e-15)


def test_dealer_distribution_showing_two():
    from companion.blackjack import _dealer_distribution, _dealer_final

    dist, p_nat = _dealer_distribution(2)
    assert dist.sum() == pytest.approx(1.0) and p_nat == 0.0
    assert dist[0] == pytest.approx(0.3536, abs=5e-5)  # the textbook bust rate with a deuce up
    score, _ = _dealer_final(np.random.default_rng(0), np.full(200_000, 2))
    freq = np.bincount(score, minlength=22) / score.size
    se = np.sqrt(dist * (1 - dist) / score.size)
    assert np.all(np.abs(freq - dist) <= 4 * se + 1e-12)


def test_on_policy_gymnasium_monte_carlo_agrees_with_exact_value():
    ep = gym_episodes(4_000, PI, PI, rng=11)
    G = ep.returns
    se = G.std(ddof=1) / np.sqrt(G.size)
    assert abs(G.mean() - exact_value(PI)) < 4 * se
    np.testing.assert_array_equal(ep.log_weights, 0.0)  # on-policy: every ratio is 1
    sticks = ep.mask & (ep.actions == STICK)
    assert np.all(ep.player_sums[sticks] >= 20), "the target sticks only on 20 or 21"
    hits = ep.mask & (ep.actions == HIT)
    assert np.all(ep.player_sums[hits] < 20)


def test_behaviour_value_and_random_deal_against_simulation():
    ep = simulate_episodes(100_000, MU, MU, rng=3)
    se = ep.returns.std(ddof=1) / np.sqrt(ep.returns.size)
    assert abs(ep.returns.mean() - exact_value(MU)) < 4 * se
    for sab in (False, True):
        ep = simulate_episodes(100_000, PI, PI, rng=4, start=None, sab=sab)
        se = ep.returns.std(ddof=1) / np.sqrt(ep.returns.size)
        assert abs(ep.returns.mean() - exact_value(PI, start=None, sab=sab)) < 4 * se


def test_natural_rules():
    stick = threshold_policy(4)  # always stick
    natural = (21, 10, True)     # ace + 10 against a ten showing
    # Sutton & Barto: a natural wins unless the dealer also has one (hidden ace: 1/13)
    assert exact_value(stick, natural, sab=True) == pytest.approx(12 / 13)
    # gymnasium's default: a natural is an ordinary 21, so it also draws with a dealer's 21
    assert exact_value(stick, natural, sab=False) < 12 / 13
    for sab in (False, True):
        g = gym_episodes(1_500, stick, stick, rng=5, start=natural, sab=sab).returns
        s = simulate_episodes(200_000, stick, stick, rng=6, start=natural, sab=sab).returns
        v = exact_value(stick, natural, sab=sab)
        for x in (g, s):
            assert abs(x.mean() - v) < 4 * x.std(ddof=1) / np.sqrt(x.size) + 1e-12


# ------------------------------------------------------------------ off-policy quantities
def test_second_moment_and_ordinary_is_against_simulation(sim_behaviour):
    ep = sim_behaviour
    x = np.exp(ep.log_weights) * ep.returns
    v, m = exact_value(PI), exact_second_moment(PI, MU)
    m_exact = sum(g * g * q for g, q in _example_5_4_law(2).items())
    assert m == pytest.approx(float(m_exact), rel=1e-12, abs=0)
    var = ordinary_is_variance(PI, MU)
    assert var == pytest.approx(m - v**2)
    # ordinary IS is unbiased, with the exact standard error sqrt(var / n)
    assert abs(x.mean() - v) < 4 * np.sqrt(var / x.size)
    assert abs((x**2).mean() - m) < 4 * (x**2).std(ddof=1) / np.sqrt(x.size)
    # on-policy every weight is 1, so the second moment is E[G^2] = Pr(not a draw), G in {-1, 0, 1}
    p_draw = _example_5_4_law(1)[0]
    assert 0 < p_draw < 1
    assert exact_second_moment(PI, PI) == pytest.approx(1 - float(p_draw), rel=1e-12, abs=0)
    draws = simulate_episodes(100_000, PI, PI, rng=8).returns == 0
    assert abs(draws.mean() - float(p_draw)) < 4 * np.sqrt(float(p_draw * (1 - p_draw)) / draws.size)


def test_episodes_feed_companion_estimators(sim_behaviour):
    from companion.estimators import trajectory_is, weighted_trajectory_is

    ep = sim_behaviour
    est = trajectory_is(ep.rewards, ep.log_ratios, mask=ep.mask)
    x = np.exp(ep.log_weights) * ep.returns
    assert float(est) == pytest.approx(x.mean())
    wis = weighted_trajectory_is(ep.rewards, ep.log_ratios, mask=ep.mask)
    assert -1.0 <= float(wis) <= 1.0


# ------------------------------------------------------------------ simulator vs gymnasium
def _categories(ep):
    """Joint category of (return, episode length, weight > 0): the return and log-weight law."""
    L = np.minimum(ep.lengths, 5)
    positive = np.isfinite(ep.log_weights)
    return (ep.returns.astype(int) + 1) * 100 + L * 10 + positive


def test_simulator_matches_gymnasium_distribution(gym_behaviour, sim_behaviour):
    g, s = _categories(gym_behaviour), _categories(sim_behaviour)
    cats = np.union1d(np.unique(g), np.unique(s))
    cg = np.array([(g == c).sum() for c in cats])
    cs = np.array([(s == c).sum() for c in cats])
    # per-category two-sample check at 4 standard errors
    pg, ps = cg / g.size, cs / s.size
    p = (cg + cs) / (g.size + s.size)
    se = np.sqrt(p * (1 - p) * (1 / g.size + 1 / s.size))
    assert np.all(np.abs(pg - ps) <= 4 * se + 1e-12), list(zip(cats, pg, ps, strict=True))
    # chi-square on the categories with enough counts (the rest pooled)
    big = p * g.size >= 5  # categories expected at least 5 times in the smaller sample
    table = np.array([np.append(cg[big], cg[~big].sum()), np.append(cs[big], cs[~big].sum())])
    table = table[:, table.sum(0) > 0]
    assert stats.chi2_contingency(table).pvalue > 1e-3
    # the log ratios themselves: log 2 per step while the behaviour agreed, else -inf
    for ep in (gym_behaviour, sim_behaviour):
        lr = ep.log_ratios[ep.mask]
        assert np.all(np.isclose(lr, np.log(2.0)) | (lr == -np.inf))
        np.testing.assert_array_equal(ep.log_ratios[~ep.mask], 0.0)
        assert not np.any(ep.mask[:, 1:] & ~ep.mask[:, :-1])
        assert set(np.unique(ep.returns)) <= {-1.0, 0.0, 1.0}
        assert np.all(ep.rewards[:, :-1][ep.mask[:, 1:]] == 0.0), "rewards only at the end"


# ------------------------------------------------------------------ input checks
def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="shape"):
        exact_value(np.zeros((10, 11, 2)))
    bad = random_policy(0.5)
    bad[13, 2, 1] = 1.5
    with pytest.raises(ValueError, match=r"behavior: probability 1.5 outside \[0, 1\] at index \(13, 2, 1\)"):
        simulate_episodes(10, PI, bad, rng=0)
    bad[13, 2, 1] = np.nan
    with pytest.raises(ValueError, match=r"behavior: NaN or inf at index \(13, 2, 1\)"):
        gym_episodes(1, PI, bad, rng=0)
    with pytest.raises(ValueError, match=r"p_hit: must be in \[0, 1\]"):
        random_policy(-0.1)
    with pytest.raises(ValueError, match="behavior: behaviour probability 0 where the target's is positive"):
        exact_second_moment(PI, threshold_policy(18))
    with pytest.raises(ValueError, match=r"start.player_sum: must be in \[12, 21\] with a usable ace"):
        exact_value(PI, start=(11, 2, True))
    with pytest.raises(ValueError, match=r"start.dealer_card: must be an integer in \[1, 10\]"):
        simulate_episodes(5, PI, MU, rng=0, start=(13, 11, True))
    with pytest.raises(ValueError, match="n: must be a positive integer"):
        simulate_episodes(0, PI, MU, rng=0)
    with pytest.raises(ValueError, match=r"stick_on: must be an integer in \[4, 22\]"):
        threshold_policy(30)
    assert EXAMPLE_5_4_STATE == (13, 2, True)
