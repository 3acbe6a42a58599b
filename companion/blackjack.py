r"""Off-policy evaluation in blackjack: Sutton & Barto's Example 5.4, exactly and by simulation.

Three pieces, all using gymnasium's ``Blackjack-v1`` rules:

* :func:`gym_episodes` drives the real gymnasium environment, optionally started from a chosen
  state (the unwrapped env's ``player`` and ``dealer`` hands are set after ``reset``; the dealer's
  hidden card is drawn from the env's own ``np_random``);
* :func:`simulate_episodes` is a vectorised NumPy simulator of the same rules, for large
  experiments (Figure 5.3: 100 runs of 10,000 episodes);
* :func:`exact_value` and :func:`exact_second_moment` compute, by dynamic programming over the
  infinite deck, the value of a state under a policy and the second moment
  :math:`\mathbb{E}_\mu[\rho^2 G^2]` of the ordinary importance-sampling term, so the mean squared
  error of ordinary IS, :math:`\operatorname{Var}_\mu(\rho G) / n`, can be drawn exactly.

Rules (checked against gymnasium's source). Cards are drawn with replacement from
``[1, 2, ..., 9, 10, 10, 10, 10]`` (a 10-valued card has probability 4/13); an ace counts 11 while
that does not bust the hand. Reward +1 / 0 / -1 for win / draw / loss, all at the end (no
discount). The player busts at once when the sum exceeds 21; after a stick the dealer draws until
their sum is 17 or more (standing on a soft 17). With the default ``sab=False, natural=False`` a
player's natural (ace + 10-card) is scored like any 21, so it only draws when the dealer reaches
21 too. Sutton & Barto (Example 5.1) say a natural wins unless the dealer also has one, which is
``sab=True``. The two rule sets differ only for a natural, so for Example 5.4's state (a soft 13,
not a natural) they give the same game; both are implemented here (``sab`` argument).

Action coding: gymnasium's, ``0 = STICK`` and ``1 = HIT``. A policy is an array of shape
(32, 11, 2) holding the probability of *hitting* in the observation
``(player_sum, dealer_card, usable_ace)``; see :func:`threshold_policy` and
:func:`random_policy`.

Used in :doc:`/book/weighted_is` (which reproduces Sutton & Barto's Figure 5.3) and the
``weighted_is`` assignment.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import numpy as np

from ._validation import check_int, check_unit_interval, finite_array

__all__ = [
    "STICK",
    "HIT",
    "BlackjackState",
    "EXAMPLE_5_4_STATE",
    "EXAMPLE_5_4_VALUE",
    "BlackjackEpisodes",
    "threshold_policy",
    "random_policy",
    "example_5_4_policies",
    "gym_episodes",
    "simulate_episodes",
    "exact_value",
    "exact_second_moment",
    "ordinary_is_variance",
]

STICK = 0
"""gymnasium's action for *stick* (Sutton & Barto list *hit* first; gymnasium does not)."""
HIT = 1
"""gymnasium's action for *hit*."""

EXAMPLE_5_4_VALUE = -0.27726
"""The value of Example 5.4's state under the target as quoted by Sutton & Barto, who estimated it
from 100 million on-policy episodes; :func:`exact_value` computes it exactly. Used in
:doc:`/book/weighted_is`."""

_CARD_P = np.array([0.0] + [1 / 13] * 9 + [4 / 13])  # _CARD_P[c] = Pr(card value c), c = 1..10
_POLICY_SHAPE = (32, 11, 2)


class BlackjackState(NamedTuple):
    """A blackjack observation as gymnasium reports it.

    Attributes
    ----------
    player_sum : int
        The player's current sum, 4 to 21 (12 to 21 with a usable ace).
    dealer_card : int
        The dealer's showing card, 1 (ace) to 10.
    usable_ace : bool
        Whether the player holds an ace counted as 11.
    """

    player_sum: int
    dealer_card: int
    usable_ace: bool


EXAMPLE_5_4_STATE = BlackjackState(player_sum=13, dealer_card=2, usable_ace=True)
"""Sutton & Barto's Example 5.4: player sum 13 with a usable ace, dealer showing a deuce."""


@dataclass(frozen=True, eq=False)
class BlackjackEpisodes:
    """A batch of blackjack episodes padded to a common length ``T``, ready for
    ``companion.estimators`` (``trajectory_is(ep.rewards, ep.log_ratios, mask=ep.mask)``).

    Used in :doc:`/book/weighted_is` and the ``weighted_is`` assignment.

    Attributes
    ----------
    rewards : ndarray, shape (n, T)
        ``r_t``; only the last real step can be non-zero (+1, 0 or -1).
    log_ratios : ndarray, shape (n, T)
        ``log pi(a_t|s_t) - log mu(a_t|s_t)``; ``-inf`` where the target never takes ``a_t``
        (weight 0); 0 on padding.
    mask : ndarray of bool, shape (n, T)
        True on real steps (a suffix of padding).
    actions : ndarray of int, shape (n, T)
        gymnasium coding (0 stick, 1 hit); 0 on padding.
    player_sums : ndarray of int, shape (n, T)
        The player's sum when ``a_t`` was chosen; 0 on padding.
    """

    rewards: np.ndarray
    log_ratios: np.ndarray
    mask: np.ndarray
    actions: np.ndarray
    player_sums: np.ndarray

    @property
    def returns(self) -> np.ndarray:
        """Episode returns ``G``, shape (n,)."""
        return self.rewards.sum(axis=1)

    @property
    def log_weights(self) -> np.ndarray:
        """Trajectory log weights ``log rho_{0:T-1}``, shape (n,) (``-inf`` for weight 0)."""
        return np.where(self.mask, self.log_ratios, 0.0).sum(axis=1)

    @property
    def lengths(self) -> np.ndarray:
        """Number of decisions in each episode, shape (n,)."""
        return self.mask.sum(axis=1)


# ---------------------------------------------------------------------------------------------
# policies and validation
# ---------------------------------------------------------------------------------------------
def threshold_policy(stick_on=20):
    r"""The deterministic policy that sticks on ``stick_on`` or more and hits otherwise.

    .. math::

        \pi(\text{hit} \mid s) = \mathbb{1}[\text{player\_sum} < \text{stick\_on}].

    ``threshold_policy(20)`` is Sutton & Barto's target policy (stick only on 20 or 21).

    Parameters
    ----------
    stick_on : int, default 20
        Smallest player sum at which to stick, 4 to 22 (22: always hit).

    Returns
    -------
    ndarray, shape (32, 11, 2)
        Probability of hitting, indexed by the observation ``(player_sum, dealer_card, usable_ace)``.

    Raises
    ------
    ValueError
        If ``stick_on`` is not an integer in [4, 22].

    Examples
    --------
    >>> pi = threshold_policy(20)
    >>> float(pi[19, 2, 1]), float(pi[20, 2, 1])
    (1.0, 0.0)
    """
    if check_int(stick_on, "stick_on", low=4) > 22:
        raise ValueError(f"stick_on: must be an integer in [4, 22], got {stick_on!r}")
    p = np.zeros(_POLICY_SHAPE)
    p[: int(stick_on)] = 1.0
    return p


def random_policy(p_hit=0.5):
    r"""The policy that hits with probability ``p_hit`` in every state.

    .. math::

        \mu(\text{hit} \mid s) = p_\text{hit}, \qquad \mu(\text{stick} \mid s) = 1 - p_\text{hit}.

    Parameters
    ----------
    p_hit : float, default 0.5
        In [0, 1]. Sutton & Barto's behaviour policy uses 1/2.

    Returns
    -------
    ndarray, shape (32, 11, 2)

    Raises
    ------
    ValueError
        If ``p_hit`` is outside [0, 1] or NaN.

    Examples
    --------
    >>> float(random_policy()[13, 2, 1])
    0.5
    """
    return np.full(_POLICY_SHAPE, check_unit_interval(p_hit, "p_hit"))


def example_5_4_policies():
    """Target and behaviour policies of Sutton & Barto's Example 5.4.

    The target sticks only on 20 or 21; the behaviour hits or sticks with probability 1/2 each.

    .. math::

        \\pi(\\text{hit} \\mid s) = \\mathbb{1}[\\text{sum} < 20], \\qquad \\mu(\\text{hit} \\mid s) = 1/2.

    Returns
    -------
    target, behavior : ndarray, shape (32, 11, 2)
        Probabilities of hitting.

    Examples
    --------
    >>> pi, mu = example_5_4_policies()
    >>> float(pi[13, 2, 1]), float(mu[13, 2, 1])
    (1.0, 0.5)

    Used in :doc:`/book/weighted_is` and the ``weighted_is`` assignment.
    """
    return threshold_policy(20), random_policy(0.5)


def _check_policy(p, name):
    arr = finite_array(p, name)
    if arr.shape != _POLICY_SHAPE:
        raise ValueError(f"{name}: must be an array of hit probabilities of shape {_POLICY_SHAPE} "
                         f"(player_sum, dealer_card, usable_ace), got shape {arr.shape}")
    outside = (arr < 0) | (arr > 1)
    if outside.any():
        idx = tuple(int(i) for i in np.argwhere(outside)[0])
        raise ValueError(f"{name}: probability {float(arr[idx])!r} outside [0, 1] at index {idx}")
    return arr


def _check_support(target, behavior):
    """Behaviour must give positive probability to every action the target may take."""
    bad = ((target > 0) & (behavior == 0)) | ((target < 1) & (behavior == 1))
    # only states the game can reach matter: sums 4..21, dealer 1..10
    bad[:4] = False
    bad[22:] = False
    bad[:, 0] = False
    bad[:12, :, 1] = False
    if np.any(bad):
        s, d, u = (int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"behavior: behaviour probability 0 where the target's is positive, in "
                         f"state (player_sum={s}, dealer_card={d}, usable_ace={u})")


def _check_start(start):
    """Return (raw_sum, has_ace, dealer_card, hand) for a chosen start, or None."""
    if start is None:
        return None
    try:
        s, d, u = start
    except (TypeError, ValueError) as err:
        raise ValueError("start: must be (player_sum, dealer_card, usable_ace) or None") from err
    s, d, u = check_int(s, "start.player_sum"), check_int(d, "start.dealer_card"), bool(u)
    if d > 10:
        raise ValueError(f"start.dealer_card: must be an integer in [1, 10], got {d!r}")
    if u:
        if not 12 <= s <= 21:
            raise ValueError(f"start.player_sum: must be in [12, 21] with a usable ace, got {s}")
        hand = [1, s - 11]  # [1, 10] for a soft 21: a natural
        return s - 10, True, d, hand
    if not 4 <= s <= 21:
        raise ValueError(f"start.player_sum: must be in [4, 21], got {s}")
    hand = [10, 9, 2] if s == 21 else [min(10, s - 2), s - min(10, s - 2)]
    return s, False, d, hand


def _max_steps(start_info):
    raw = 2 if start_info is None else start_info[0]
    return 22 - raw  # at most 21 - raw non-busting hits, then one final action


def _log_ratio(target_hit, behavior_hit, hit):
    """log pi(a|s) - log mu(a|s) for the taken action (``hit`` boolean array)."""
    p = np.where(hit, target_hit, 1.0 - target_hit)
    q = np.where(hit, behavior_hit, 1.0 - behavior_hit)
    with np.errstate(divide="ignore"):
        return np.log(p) - np.log(q)


# ---------------------------------------------------------------------------------------------
# gymnasium-driven episodes
# ---------------------------------------------------------------------------------------------
def gym_episodes(n, target, behavior, rng, start=EXAMPLE_5_4_STATE,
                 sab=False) -> BlackjackEpisodes:
    r"""Episodes of gymnasium's ``Blackjack-v1`` under ``behavior``, with log ratios for ``target``.

    Each episode resets the env, then (if ``start`` is given) replaces the hands: the player's by
    ``[1, sum - 11]`` (usable ace) or two non-ace cards with the right sum, the dealer's by
    ``[dealer_card, hidden]`` with ``hidden`` drawn from the env's own ``np_random``. Actions
    :math:`a_t \sim \mu(\cdot \mid s_t)` are drawn from ``rng``; the log ratio of each step is

    .. math::

        \log \rho_t = \log \pi(a_t \mid s_t) - \log \mu(a_t \mid s_t).

    Parameters
    ----------
    n : int
        Number of episodes.
    target, behavior : array_like, shape (32, 11, 2)
        Probabilities of hitting (see :func:`threshold_policy`). Pass ``behavior=target`` for
        on-policy episodes.
    rng : numpy.random.Generator or int
        Draws the behaviour's actions and seeds the env (first ``reset``).
    start : BlackjackState or tuple or None, default EXAMPLE_5_4_STATE
        Starting observation; None uses the env's own random deal.
    sab : bool, default False
        gymnasium's ``sab`` flag (Sutton & Barto's natural rule; irrelevant unless the hand is a
        natural).

    Returns
    -------
    BlackjackEpisodes
        Arrays of shape (n, T) with ``T = 22 - (raw starting sum)`` (the longest possible episode).

    Raises
    ------
    ValueError
        On a bad ``n``, policy, ``start``, or a behaviour that cannot take an action the target
        takes.

    Examples
    --------
    >>> pi, mu = example_5_4_policies()
    >>> ep = gym_episodes(3, pi, mu, rng=0)
    >>> ep.rewards.shape, bool(np.all(ep.mask[:, 0]))
    ((3, 19), True)

    See :doc:`/book/weighted_is`.
    """
    import gymnasium as gym
    from gymnasium.envs.toy_text.blackjack import draw_card

    n = check_int(n, "n")
    target = _check_policy(target, "target")
    behavior = _check_policy(behavior, "behavior")
    _check_support(target, behavior)
    info = _check_start(start)
    T = _max_steps(info)
    rng = np.random.default_rng(rng)
    rewards = np.zeros((n, T))
    log_ratios = np.zeros((n, T))
    mask = np.zeros((n, T), dtype=bool)
    actions = np.zeros((n, T), dtype=np.int64)
    sums = np.zeros((n, T), dtype=np.int64)
    env = gym.make("Blackjack-v1", natural=False, sab=bool(sab))
    base = env.unwrapped
    try:
        env.reset(seed=int(rng.integers(2**31)))
        for i in range(n):
            obs, _ = env.reset()
            if info is not None:
                base.player = list(info[3])
                base.dealer = [info[2], draw_card(base.np_random)]
                obs = base._get_obs()
            for t in range(T):
                s, d, u = (int(x) for x in obs)
                h_mu, h_pi = behavior[s, d, u], target[s, d, u]
                hit = bool(rng.random() < h_mu)
                a = HIT if hit else STICK
                p, q = (h_pi, h_mu) if hit else (1.0 - h_pi, 1.0 - h_mu)
                log_ratios[i, t] = (math.log(p) if p > 0 else -math.inf) - math.log(q)
                actions[i, t], sums[i, t], mask[i, t] = a, s, True
                obs, r, terminated, truncated, _ = env.step(a)
                rewards[i, t] = r
                if terminated or truncated:
                    break
            else:  # pragma: no cover - T is the longest possible episode
                raise RuntimeError("episode longer than the maximum possible length")
    finally:
        env.close()
    return BlackjackEpisodes(rewards, log_ratios, mask, actions, sums)


# ---------------------------------------------------------------------------------------------
# vectorised simulator
# ---------------------------------------------------------------------------------------------
def _draw(rng, size):
    """Cards from the infinite deck [1..9, 10, 10, 10, 10]."""
    return np.minimum(rng.integers(1, 14, size=size), 10)


def _effective(raw, ace):
    usable = ace & (raw + 10 <= 21)
    return np.where(usable, raw + 10, raw), usable


def _dealer_final(rng, showing):
    """Vectorised dealer play from [showing, hidden]; returns (score (0 if bust), natural)."""
    hidden = _draw(rng, showing.shape)
    raw = showing + hidden
    ace = (showing == 1) | (hidden == 1)
    natural = ace & (raw == 11)
    while True:
        eff, _ = _effective(raw, ace)
        drawing = eff < 17
        if not np.any(drawing):
            break
        c = _draw(rng, int(drawing.sum()))
        raw[drawing] += c
        ace[drawing] |= c == 1
    eff, _ = _effective(raw, ace)
    return np.where(eff > 21, 0, eff), natural


def simulate_episodes(n, target, behavior, rng, start=EXAMPLE_5_4_STATE,
                      sab=False) -> BlackjackEpisodes:
    r"""Vectorised NumPy simulation of :func:`gym_episodes` (same rules, same output).

    Loops over the decision index only. With an infinite deck the dealer's final hand is
    independent of the player's cards, so it is drawn up front; the result has the same
    distribution as the gymnasium-driven episodes (checked by a test), not the same random stream.

    .. math::

        \log \rho_t = \log \pi(a_t \mid s_t) - \log \mu(a_t \mid s_t), \qquad
        a_t \sim \mu(\cdot \mid s_t).

    Parameters
    ----------
    n : int
        Number of episodes.
    target, behavior : array_like, shape (32, 11, 2)
        Probabilities of hitting.
    rng : numpy.random.Generator or int
    start : BlackjackState or tuple or None, default EXAMPLE_5_4_STATE
        None deals two cards to each side as gymnasium's ``reset`` does.
    sab : bool, default False
        Sutton & Barto's natural rule (a player's natural beats anything but a dealer natural).

    Returns
    -------
    BlackjackEpisodes

    Raises
    ------
    ValueError
        As :func:`gym_episodes`.

    Examples
    --------
    >>> pi, mu = example_5_4_policies()
    >>> ep = simulate_episodes(10_000, pi, mu, rng=0)
    >>> ep.rewards.shape
    (10000, 19)
    >>> set(np.unique(ep.returns).tolist()) <= {-1.0, 0.0, 1.0}
    True

    Used in :doc:`/book/weighted_is` and the ``weighted_is`` assignment.
    """
    n = check_int(n, "n")
    target = _check_policy(target, "target")
    behavior = _check_policy(behavior, "behavior")
    _check_support(target, behavior)
    info = _check_start(start)
    T = _max_steps(info)
    rng = np.random.default_rng(rng)
    if info is None:
        c1, c2, showing = _draw(rng, n), _draw(rng, n), _draw(rng, n)
        raw = c1 + c2
        ace = (c1 == 1) | (c2 == 1)
    else:
        raw = np.full(n, info[0])
        ace = np.full(n, info[1])
        showing = np.full(n, info[2])
    natural = ace & (raw == 11)
    dealer_score, dealer_natural = _dealer_final(rng, showing)
    rewards = np.zeros((n, T))
    log_ratios = np.zeros((n, T))
    mask = np.zeros((n, T), dtype=bool)
    actions = np.zeros((n, T), dtype=np.int64)
    sums = np.zeros((n, T), dtype=np.int64)
    alive = np.ones(n, dtype=bool)
    for t in range(T):
        idx = np.flatnonzero(alive)
        if idx.size == 0:
            break
        eff, usable = _effective(raw[idx], ace[idx])
        d = showing[idx]
        h_mu = behavior[eff, d, usable.astype(int)]
        h_pi = target[eff, d, usable.astype(int)]
        hit = rng.random(idx.size) < h_mu
        log_ratios[idx, t] = _log_ratio(h_pi, h_mu, hit)
        actions[idx, t] = hit.astype(np.int64)
        sums[idx, t] = eff
        mask[idx, t] = True
        # stick: compare with the dealer
        st = idx[~hit]
        p_eff = eff[~hit]
        r = np.sign(p_eff - dealer_score[st]).astype(float)
        if sab:
            nat = natural[st] & (t == 0)
            r = np.where(nat & ~dealer_natural[st], 1.0, r)
        rewards[st, t] = r
        alive[st] = False
        # hit: draw a card
        hi = idx[hit]
        c = _draw(rng, hi.size)
        raw[hi] += c
        ace[hi] |= c == 1
        bust = raw[hi] > 21
        rewards[hi[bust], t] = -1.0
        alive[hi[bust]] = False
    return BlackjackEpisodes(rewards, log_ratios, mask, actions, sums)


# ---------------------------------------------------------------------------------------------
# exact dynamic programming
# ---------------------------------------------------------------------------------------------
@lru_cache(maxsize=None)
def _dealer_distribution(showing):
    """Pr(dealer final score = k) for k in 0 (bust), 17..21, as a read-only array of length 22; and
    Pr(dealer natural). Memoised recursion over the dealer's (raw sum, holds an ace)."""

    @lru_cache(maxsize=None)
    def play(raw, ace):
        eff = raw + 10 if ace and raw + 10 <= 21 else raw
        out = np.zeros(22)
        if eff >= 17:
            out[0 if eff > 21 else eff] = 1.0
            return out
        for c in range(1, 11):
            out += _CARD_P[c] * play(raw + c, ace or c == 1)
        return out

    dist = sum(_CARD_P[h] * play(showing + h, showing == 1 or h == 1) for h in range(1, 11))
    dist.setflags(write=False)
    p_nat = _CARD_P[10] if showing == 1 else (_CARD_P[1] if showing == 10 else 0.0)
    return dist, p_nat


def _stick_outcomes(player_eff, dealer, natural, sab):
    """Pr(reward = +1), Pr(reward = -1) on sticking with sum ``player_eff``."""
    dist, p_nat = dealer
    scores = np.arange(22)
    if natural and sab:
        return 1.0 - p_nat, 0.0
    win = dist[scores < player_eff].sum()
    lose = dist[scores > player_eff].sum()
    return float(win), float(lose)


def _dp(raw0, ace0, showing, natural0, c_stick, c_hit, power, sab):
    r"""Generic recursion  X(s) = c_stick(s) E[R^power | stick] + c_hit(s) sum_c p_c X'(s + c),
    where a bust contributes (-1)^power. ``c_stick, c_hit`` are (32, 11, 2) coefficient arrays."""
    dealer = _dealer_distribution(showing)
    memo = {}

    def x(raw, ace, first):
        key = (raw, ace, first)
        if key in memo:
            return memo[key]
        eff = raw + 10 if ace and raw + 10 <= 21 else raw
        u = int(ace and raw + 10 <= 21)
        cs, ch = c_stick[eff, showing, u], c_hit[eff, showing, u]
        total = 0.0
        if cs != 0.0:
            win, lose = _stick_outcomes(eff, dealer, natural0 and first, sab)
            total += cs * (win + (-1.0) ** power * lose)
        if ch != 0.0:
            acc = 0.0
            for c in range(1, 11):
                if raw + c > 21:
                    acc += _CARD_P[c] * (-1.0) ** power
                else:
                    acc += _CARD_P[c] * x(raw + c, ace or c == 1, False)
            total += ch * acc
        memo[key] = total
        return total

    return x(raw0, ace0, True)


def _over_starts(start, fn):
    info = _check_start(start)
    if info is not None:
        raw, ace, d, _ = info
        return fn(raw, ace, d, ace and raw == 11)
    # gymnasium's deal: two player cards and the dealer's showing card, i.i.d. from the deck
    starts = {}
    for c1, c2, d in itertools.product(range(1, 11), repeat=3):
        ace = c1 == 1 or c2 == 1
        key = (c1 + c2, ace, d, ace and c1 + c2 == 11)
        starts[key] = starts.get(key, 0.0) + _CARD_P[c1] * _CARD_P[c2] * _CARD_P[d]
    return sum(p * fn(*key) for key, p in starts.items())


def exact_value(policy, start=EXAMPLE_5_4_STATE, sab=False):
    r"""Exact value of a state (or of the random deal) under a policy, by dynamic programming.

    Over the infinite deck, with :math:`h(s)` the probability of hitting,

    .. math::

        v(s) = (1 - h(s))\, \mathbb{E}[R \mid s, \text{stick}]
             + h(s) \sum_{c=1}^{10} p_c \,\big(\mathbb{1}[\text{bust}]\,(-1)
               + \mathbb{1}[\text{no bust}]\, v(s + c)\big),

    :math:`p_c = 1/13` for :math:`c \le 9`, :math:`p_{10} = 4/13`; the dealer's final-score
    distribution is computed by the same kind of recursion.

    Parameters
    ----------
    policy : array_like, shape (32, 11, 2)
        Probabilities of hitting.
    start : BlackjackState or tuple or None, default EXAMPLE_5_4_STATE
        None averages over gymnasium's random initial deal.
    sab : bool, default False
        Sutton & Barto's natural rule.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        On a bad policy or ``start``.

    Examples
    --------
    >>> pi, mu = example_5_4_policies()
    >>> round(exact_value(pi), 7)   # Sutton & Barto's simulation: -0.27726
    -0.2772042
    >>> round(exact_value(mu), 7)
    -0.2528302

    Used in :doc:`/book/weighted_is` and the ``weighted_is`` assignment.
    """
    policy = _check_policy(policy, "policy")

    def fn(raw, ace, d, natural):
        return _dp(raw, ace, d, natural, 1.0 - policy, policy, 1, sab)

    return float(_over_starts(start, fn))


def exact_second_moment(target, behavior, start=EXAMPLE_5_4_STATE, sab=False):
    r"""Exact second moment :math:`\mathbb{E}_\mu[\rho^2 G^2]` of the ordinary-IS term.

    With :math:`\rho = \prod_t \pi(a_t|s_t) / \mu(a_t|s_t)` and one terminal reward, the second
    moment obeys the recursion

    .. math::

        m(s) = \sum_a \frac{\pi(a|s)^2}{\mu(a|s)}\, \mathbb{E}\big[G^2 \text{ or } m(s') \bigm| s, a\big],

    i.e. the value recursion with coefficients :math:`\pi^2 / \mu` and squared rewards. Then
    :math:`\operatorname{Var}_\mu(\rho G) = m - v_\pi^2` (see :func:`ordinary_is_variance`).

    Parameters
    ----------
    target, behavior : array_like, shape (32, 11, 2)
        Probabilities of hitting.
    start : BlackjackState or tuple or None, default EXAMPLE_5_4_STATE
    sab : bool, default False

    Returns
    -------
    float

    Raises
    ------
    ValueError
        On bad policies, or if ``behavior`` gives probability 0 to an action ``target`` takes.

    Examples
    --------
    >>> pi, mu = example_5_4_policies()
    >>> round(exact_second_moment(pi, mu), 6)
    10.233055

    See :doc:`/book/weighted_is` (the MSE of ordinary importance sampling).
    """
    target = _check_policy(target, "target")
    behavior = _check_policy(behavior, "behavior")
    _check_support(target, behavior)
    with np.errstate(divide="ignore", invalid="ignore"):
        c_hit = np.where(target > 0, target**2 / behavior, 0.0)
        c_stick = np.where(target < 1, (1 - target) ** 2 / (1 - behavior), 0.0)

    def fn(raw, ace, d, natural):
        return _dp(raw, ace, d, natural, c_stick, c_hit, 2, sab)

    return float(_over_starts(start, fn))


def ordinary_is_variance(target, behavior, start=EXAMPLE_5_4_STATE, sab=False):
    r"""Exact variance of one ordinary-IS term, :math:`\operatorname{Var}_\mu(\rho G)`.

    .. math::

        \operatorname{Var}_\mu(\rho G) = \mathbb{E}_\mu[\rho^2 G^2] - v_\pi(s)^2 ,

    so the mean squared error of ordinary IS from ``n`` episodes is this divided by ``n``.

    Parameters
    ----------
    target, behavior : array_like, shape (32, 11, 2)
    start : BlackjackState or tuple or None, default EXAMPLE_5_4_STATE
    sab : bool, default False

    Returns
    -------
    float

    Raises
    ------
    ValueError
        As :func:`exact_second_moment`.

    Examples
    --------
    >>> pi, mu = example_5_4_policies()
    >>> round(ordinary_is_variance(pi, mu), 6)
    10.156213
    >>> round(ordinary_is_variance(pi, mu) / 10_000, 7)   # MSE of ordinary IS after 10,000 episodes
    0.0010156

    Used in :doc:`/book/weighted_is` and the ``weighted_is`` assignment.
    """
    m = exact_second_moment(target, behavior, start, sab)
    v = exact_value(target, start, sab)
    return m - v**2
