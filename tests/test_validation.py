"""The shared input rules of ``companion._validation``, and that every module applies the same rule.

Each rule is checked on both sides of its boundary, and each message must start with the
argument's name followed by a colon.
"""

import numpy as np
import pytest

import companion as cp
from companion._validation import (
    check_checkpoints,
    check_distribution,
    check_gamma,
    check_instance,
    check_int,
    check_mask,
    check_nonnegative,
    check_optional_int,
    check_policy,
    check_positive,
    check_real,
    check_support,
    check_unit_interval,
    finite_array,
)


# ------------------------------------------------------------------ scalars
@pytest.mark.parametrize("value", [1, 7, np.int64(3), np.int32(1)])
def test_check_int_accepts_integers(value):
    out = check_int(value, "n")
    assert out == int(value) and type(out) is int


@pytest.mark.parametrize("value", [0, -2, 3.0, np.float64(3.0), True, "3", None, 2.5])
def test_check_int_rejects_everything_else(value):
    with pytest.raises(ValueError, match=r"^n: must be a positive integer, got "):
        check_int(value, "n")


def test_check_int_lower_bound():
    assert check_int(0, "k", low=0) == 0
    with pytest.raises(ValueError, match=r"^k: must be a non-negative integer, got -1"):
        check_int(-1, "k", low=0)
    assert check_int(4, "stick_on", low=4) == 4
    with pytest.raises(ValueError, match=r"^stick_on: must be an integer >= 4, got 3"):
        check_int(3, "stick_on", low=4)


def test_check_optional_int():
    assert check_optional_int(None, "horizon") is None
    assert check_optional_int(5, "horizon") == 5
    with pytest.raises(ValueError, match=r"^horizon: must be a positive integer"):
        check_optional_int(0, "horizon")


@pytest.mark.parametrize("value", [0, -1.5, 2, np.float32(0.25), np.int64(-4)])
def test_check_real_accepts_finite_numbers(value):
    assert check_real(value, "x") == float(value)


@pytest.mark.parametrize("value, what", [
    (True, "a real number"), ("1.0", "a real number"), (None, "a real number"),
    (np.array([1.0]), "a real number"), (np.nan, "finite"), (np.inf, "finite"), (-np.inf, "finite"),
])
def test_check_real_rejects(value, what):
    with pytest.raises(ValueError, match=rf"^x: must be {what}"):
        check_real(value, "x")


def test_check_positive_boundary_and_infinity():
    assert check_positive(1e-300, "lr") == 1e-300
    for bad in (0, 0.0, -1e-300, np.nan):
        with pytest.raises(ValueError, match=r"^lr: must be"):
            check_positive(bad, "lr")
    with pytest.raises(ValueError, match=r"^c_bar: must be finite"):
        check_positive(np.inf, "c_bar")
    assert check_positive(np.inf, "c_bar", allow_inf=True) == np.inf
    for bad in (-np.inf, np.nan, 0.0):
        with pytest.raises(ValueError, match=r"^c_bar: must be"):
            check_positive(bad, "c_bar", allow_inf=True)


def test_check_nonnegative_boundary():
    assert check_nonnegative(0.0, "sd") == 0.0
    with pytest.raises(ValueError, match=r"^sd: must be >= 0, got -1e-300"):
        check_nonnegative(-1e-300, "sd")


def test_check_unit_interval_closed_and_open():
    assert check_unit_interval(0, "lam") == 0.0 and check_unit_interval(1, "lam") == 1.0
    for bad in (-1e-12, 1 + 1e-12, np.nan):
        with pytest.raises(ValueError, match=r"^lam: must be"):
            check_unit_interval(bad, "lam")
    assert check_unit_interval(0.5, "eps", open=True) == 0.5
    for bad in (0.0, 1.0):
        with pytest.raises(ValueError, match=r"^eps: must be in \(0, 1\), got"):
            check_unit_interval(bad, "eps", open=True)


def test_check_gamma_is_the_unit_interval_rule_named_gamma():
    assert check_gamma(np.float64(0.99)) == 0.99
    for bad in (1.5, -0.1, "0.9", True, np.nan):
        with pytest.raises(ValueError, match=r"^gamma: must be"):
            check_gamma(bad)


# ------------------------------------------------------------------ arrays
def test_finite_array_names_the_first_bad_entry():
    x = np.zeros((2, 3))
    x[1, 2] = np.nan
    x[1, 1] = np.inf  # first in C order
    with pytest.raises(ValueError, match=r"^P: NaN or inf at index \(1, 1\) \(value inf\)"):
        finite_array(x, "P")
    with pytest.raises(ValueError, match=r"^w: NaN or inf at index 3 \(value nan\)"):
        finite_array([0.0, 1.0, 2.0, np.nan], "w")
    with pytest.raises(ValueError, match=r"^P: expected a 3-D array, got shape \(2, 3\)"):
        finite_array(np.zeros((2, 3)), "P", ndim=3)
    with pytest.raises(ValueError, match=r"^P: empty array"):
        finite_array([], "P")
    with pytest.raises(ValueError, match=r"^P: cannot be converted"):
        finite_array(["a"], "P")
    out = finite_array([[1, 2]], "P", ndim=2)
    assert out.dtype == np.float64 and out.shape == (1, 2)


def test_check_distribution_rows_and_tolerances():
    rows = np.array([[0.2, 0.8], [0.5, 0.5]])
    np.testing.assert_array_equal(check_distribution(rows, "pi"), rows)
    with pytest.raises(ValueError, match=r"^pi: probabilities must sum to 1, got 0.9 at row \(1,\)"):
        check_distribution(np.array([[0.2, 0.8], [0.5, 0.4]]), "pi")
    with pytest.raises(ValueError, match=r"^p: probabilities must sum to 1, got 1.1$"):
        check_distribution(np.array([0.5, 0.6]), "p")
    with pytest.raises(ValueError, match=r"^p: probability 1.5 outside \[0, 1\] at index 0"):
        check_distribution(np.array([1.5, -0.5]), "p")
    # rounding just outside [0, 1] is forgiven and clipped away
    out = check_distribution(np.array([1 + 1e-10, -1e-10]), "p")
    assert out.min() == 0.0 and out.max() == 1.0
    with pytest.raises(ValueError, match=r"^p: probability"):
        check_distribution(np.array([1 + 1e-6, -1e-6]), "p")


def test_check_policy_shape():
    pi = np.full((3, 2), 0.5)
    np.testing.assert_array_equal(check_policy(pi, (3, 2), "mu"), pi)
    with pytest.raises(ValueError, match=r"^mu: expected shape \(n_states, n_actions\) = \(3, 2\)"):
        check_policy(pi.T, (3, 2), "mu")
    with pytest.raises(ValueError, match=r"^mu: expected a 2-D array"):
        check_policy(pi[0], (3, 2), "mu")


def test_check_support_names_the_state_and_action():
    pi = np.array([[0.5, 0.5], [0.0, 1.0]])
    mu = np.array([[0.5, 0.5], [1.0, 0.0]])
    with pytest.raises(ValueError, match=r"^mu: behaviour probability 0 at state 1, action 1 where "
                                         r"pi is 1 > 0"):
        check_support(pi, mu)
    with pytest.raises(ValueError, match=r"^q: behaviour probability 0 at outcome 2 where p"):
        check_support(np.array([0.5, 0.0, 0.5]), np.array([0.5, 0.5, 0.0]), "p", "q", axes=("outcome",))
    check_support(np.array([[1.0, 0.0]]), np.array([[0.5, 0.5]]))  # pi = 0 < mu is fine


def test_check_instance():
    mdp = cp.random_mdp(2, 2, rng=0)
    assert check_instance(mdp, cp.TabularMDP, "mdp") is mdp
    with pytest.raises(ValueError, match=r"^mdp: must be a companion.mdp.TabularMDP, got dict"):
        check_instance({}, cp.TabularMDP, "mdp")


def test_check_mask_requires_padding_as_a_suffix():
    ok = np.array([[True, True, False], [True, False, False]])
    np.testing.assert_array_equal(check_mask(ok, (2, 3)), ok)
    gap = np.array([[True, True, True], [True, False, True]])
    with pytest.raises(ValueError, match=r"^mask: padding must be a suffix.*trajectory 1 has a real "
                                         r"step 2 after a padded step 1"):
        check_mask(gap, (2, 3))
    with pytest.raises(ValueError, match=r"^mask: must be a boolean array"):
        check_mask(ok.astype(int), (2, 3))
    with pytest.raises(ValueError, match=r"^mask: shape \(2, 3\) does not match"):
        check_mask(ok, (3, 2))


def test_check_checkpoints():
    np.testing.assert_array_equal(check_checkpoints([1, 5, 10], 10, "n_episodes"), [1, 5, 10])
    for bad in ([0, 5], [1, 11]):
        with pytest.raises(ValueError, match=r"^checkpoints: must lie in \[1, n_episodes=10\]"):
            check_checkpoints(bad, 10, "n_episodes")
    for bad in ([1.0, 2.0], [], [[1, 2]]):
        with pytest.raises(ValueError, match=r"^checkpoints: expected a non-empty 1-D array"):
            check_checkpoints(bad, 10)


# ------------------------------------------------------------------ one rule across the package
_MDP = cp.random_mdp(3, 2, rng=0)
_MU = cp.uniform_policy(3, 2)
_PI = np.array([[0.9, 0.1]] * 3)
_PI_BJ, _MU_BJ = cp.example_5_4_policies()
_BANDIT = cp.GaussianBandit([0.0, 1.0])
_Z = np.zeros((2, 3))

# A count given as the float 3.0 is refused everywhere, with the same message.
_COUNTS = {
    "n (sample_trajectories)": (lambda v: cp.sample_trajectories(_MDP, _MU, v, 4, rng=0), "n"),
    "horizon (sample_trajectories)": (lambda v: cp.sample_trajectories(_MDP, _MU, 5, v, rng=0),
                                      "horizon"),
    "horizon (policy_value)": (lambda v: cp.policy_value(_MDP, _MU, horizon=v), "horizon"),
    "n_states (random_mdp)": (lambda v: cp.random_mdp(v, 2, rng=0), "n_states"),
    "n_actions (uniform_policy)": (lambda v: cp.uniform_policy(2, v), "n_actions"),
    "horizon (log_weight_moment)": (lambda v: cp.log_weight_moment(_MDP, _PI, _MU, v), "horizon"),
    "n (population_ess_fraction)": (lambda v: cp.population_ess_fraction(_MDP, _PI, _MU, 3, n=v),
                                    "n"),
    "n (simulate_episodes)": (lambda v: cp.simulate_episodes(v, _PI_BJ, _MU_BJ, rng=0), "n"),
    "n (gym_episodes)": (lambda v: cp.gym_episodes(v, _PI_BJ, _MU_BJ, rng=0), "n"),
    "n (sample_bandit)": (lambda v: cp.sample_bandit(_BANDIT, [0.5, 0.5], v, rng=0), "n"),
    "epochs (train_softmax_bandit)": (
        lambda v: cp.train_softmax_bandit(_BANDIT, n_runs=1, n_batches=1, batch_size=2, epochs=v,
                                          lr=0.1, rng=0), "epochs"),
    "n_step (nstep_fixed_point)": (lambda v: cp.nstep_fixed_point(_MDP, _PI, _MU, v), "n_step"),
    "n (weighted_is_exact)": (lambda v: cp.weighted_is_exact([0.0, 1.0], [0.5, 0.5], [0.5, 0.5], v),
                              "n"),
    "n (one_state_episodes)": (lambda v: cp.one_state_episodes(v, rng=0), "n"),
    "n_runs (one_state_running)": (lambda v: cp.one_state_running(v, 10, [5], rng=0), "n_runs"),
}


@pytest.mark.parametrize("case", sorted(_COUNTS))
def test_every_count_follows_check_int(case):
    call, name = _COUNTS[case]
    call(3)  # an int is accepted
    for bad in (3.0, 0, True):
        with pytest.raises(ValueError, match=rf"^{name}: must be a positive integer, got {bad!r}"):
            call(bad)


# A probability or discount outside [0, 1] is refused everywhere, with the same message.
_UNIT = {
    "gamma (TabularMDP)": (lambda v: cp.random_mdp(2, 2, rng=0, gamma=v), "gamma"),
    "gamma (per_decision_is)": (lambda v: cp.per_decision_is(_Z, _Z, gamma=v), "gamma"),
    "gamma (running_per_decision)": (lambda v: cp.running_per_decision(_Z, _Z, [1], gamma=v),
                                     "gamma"),
    "alpha (mix_policies)": (lambda v: cp.mix_policies(_PI, _MU, v), "alpha"),
    "p_hit (random_policy)": (lambda v: cp.random_policy(v), "p_hit"),
    "lam (retrace_operator)": (lambda v: cp.retrace_operator(_MDP, np.zeros((3, 2)), _PI, _MU, lam=v),
                               "lam"),
}


@pytest.mark.parametrize("case", sorted(_UNIT))
def test_every_unit_interval_follows_check_unit_interval(case):
    call, name = _UNIT[case]
    call(1.0)
    for bad in (1.5, -0.1, np.nan):
        with pytest.raises(ValueError, match=rf"^{name}: must be"):
            call(bad)
