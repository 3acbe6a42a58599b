"""Input checks shared by the companion modules.

Every helper raises :class:`ValueError` whose message starts with the name of the offending
argument and, where there is one, gives the index (``trajectory i, step t``) of the first bad
entry. The helpers are private: chapters never call them, the public functions do.

The checks are written to be cheap on the happy path (one reduction over the array) and
precise on the error path (a second scan that locates the first offending entry).
"""

from __future__ import annotations

import numpy as np

__all__: list[str] = []

#: Largest ``x`` with ``exp(x)`` finite in float64 (about 709.78).
LOG_FLOAT_MAX = float(np.log(np.finfo(np.float64).max))

#: Tolerance for ``log p > 0`` caused by rounding (``log(1 + 2e-16)``).
LOGP_TOL = 1e-12


def where(idx, ndim: int) -> str:
    """Describe a multi-index in words: ``trajectory i, step t`` for 2-D batches."""
    idx = tuple(int(i) for i in idx)
    if ndim == 2:
        return f"trajectory {idx[0]}, step {idx[1]}"
    if ndim == 1:
        return f"index {idx[0]}"
    return f"index {idx}"


def first_index(bad: np.ndarray):
    """Multi-index of the first True entry of a boolean array (C order)."""
    flat = int(np.argmax(bad.ravel()))
    return np.unravel_index(flat, bad.shape)


def as_float_array(x, name: str, ndim: int | None = None) -> np.ndarray:
    """Convert to a float64 array, checking the number of dimensions and non-emptiness."""
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}: cannot be converted to a float array ({err})") from None
    if ndim is not None and arr.ndim != ndim:
        shape_word = {1: "(n,)", 2: "(n_trajectories, horizon)"}.get(ndim, f"{ndim}-D")
        raise ValueError(f"{name}: expected a {ndim}-D array of shape {shape_word}, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name}: empty array (shape {arr.shape}); need at least one entry")
    return arr


def check_same_shape(a: np.ndarray, a_name: str, b: np.ndarray, b_name: str) -> None:
    """Raise if two arrays differ in shape."""
    if a.shape != b.shape:
        raise ValueError(
            f"{b_name}: shape {b.shape} does not match {a_name} shape {a.shape}"
        )


def raise_nonfinite(arr: np.ndarray, name: str, allow_neg_inf: bool = False) -> None:
    """Raise naming the first NaN/inf entry of ``arr`` (if there is one)."""
    if allow_neg_inf:
        bad = np.isnan(arr) | (arr == np.inf)
        what = "NaN or +inf"
    else:
        bad = ~np.isfinite(arr)
        what = "NaN or inf"
    if bad.any():
        idx = first_index(bad)
        raise ValueError(
            f"{name}: {what} at {where(idx, arr.ndim)} (value {arr[idx]!r}); "
            "all entries must be finite"
            + (" (-inf is allowed: it means a log weight of zero weight)" if allow_neg_inf else "")
        )


def check_finite(arr: np.ndarray, name: str, allow_neg_inf: bool = False) -> None:
    """Raise if ``arr`` holds NaN or inf (optionally allowing ``-inf``)."""
    total = arr.sum()
    if np.isfinite(total) or (allow_neg_inf and total == -np.inf):
        return  # fast path: a finite (or -inf) sum rules out NaN and +inf
    raise_nonfinite(arr, name, allow_neg_inf)


def check_mask(mask, shape: tuple, name: str = "mask") -> np.ndarray:
    """Validate a boolean padding mask: same shape, padding (False) only as a suffix of each row."""
    m = np.asarray(mask)
    if m.dtype != np.bool_:
        raise ValueError(f"{name}: must be a boolean array, got dtype {m.dtype}")
    if m.shape != tuple(shape):
        raise ValueError(f"{name}: shape {m.shape} does not match the data shape {tuple(shape)}")
    if m.ndim == 2 and m.shape[1] > 1:
        resumed = m[:, 1:] & ~m[:, :-1]
        if resumed.any():
            i, t = first_index(resumed)
            raise ValueError(
                f"{name}: padding must be a suffix of each trajectory, but trajectory {i} has a "
                f"real step {t + 1} after a padded step {t}"
            )
    return m


def check_weights(w, name: str = "w", log: bool = False) -> np.ndarray:
    """Validate a 1-D batch of importance weights (or log weights if ``log``)."""
    arr = as_float_array(w, name, ndim=1)
    if log:
        check_finite(arr, name, allow_neg_inf=True)
        if np.all(arr == -np.inf):
            raise ValueError(f"{name}: all log weights are -inf (every weight is zero)")
    else:
        check_finite(arr, name)
        if (arr < 0).any():
            idx = first_index(arr < 0)
            raise ValueError(
                f"{name}: importance weights must be >= 0, got {arr[idx]!r} at {where(idx, 1)}"
            )
        if not (arr > 0).any():
            raise ValueError(f"{name}: all weights are zero")
    return arr


def check_logp(arr: np.ndarray, name: str) -> None:
    """Raise if log probabilities are NaN, +inf or > 0 (probability outside [0, 1])."""
    check_finite(arr, name, allow_neg_inf=True)
    if arr.max() > LOGP_TOL:
        idx = first_index(arr > LOGP_TOL)
        raise ValueError(
            f"{name}: log probability {arr[idx]!r} > 0 at {where(idx, arr.ndim)} "
            f"(probability {np.exp(arr[idx]):.6g} is outside [0, 1])"
        )


# --------------------------------------------------------------------------------------------------
# Scalar rules (one rule per kind of check) and the checks of vectorised rollouts (step t, env n)
# --------------------------------------------------------------------------------------------------
def check_int(value, name: str, low: int = 1) -> int:
    """An integer (a bool or a float such as ``3.0`` is not one) that is at least ``low``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        what = {0: "a non-negative integer", 1: "a positive integer"}.get(low, f"an integer >= {low}")
        raise ValueError(f"{name}: must be {what}, got {value!r}")
    return int(value)


def check_real(value, name: str) -> float:
    """A finite real number (not a bool), as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name}: must be a real number, got {value!r}")
    if not np.isfinite(value):
        raise ValueError(f"{name}: must be finite, got {value!r}")
    return float(value)


def check_positive(value, name: str, allow_inf: bool = False) -> float:
    """A finite real number > 0 (or ``+inf`` if ``allow_inf``: a cap that does not cap)."""
    if allow_inf and not isinstance(value, bool) and isinstance(value, (float, np.floating)) \
            and value == np.inf:
        return float(value)
    if check_real(value, name) <= 0:
        raise ValueError(f"{name}: must be > 0, got {value!r}")
    return float(value)


def check_nonnegative(value, name: str) -> float:
    """A finite real number >= 0."""
    if check_real(value, name) < 0:
        raise ValueError(f"{name}: must be >= 0, got {value!r}")
    return float(value)


def check_unit_interval(value, name: str, open: bool = False) -> float:
    """A real number in [0, 1], or in (0, 1) when ``open``."""
    x = check_real(value, name)
    if not ((0.0 < x < 1.0) if open else (0.0 <= x <= 1.0)):
        raise ValueError(f"{name}: must be in {'(0, 1)' if open else '[0, 1]'}, got {value!r}")
    return x


def check_gamma(gamma) -> float:
    """The discount factor: :func:`check_unit_interval` under the name ``gamma``."""
    return check_unit_interval(gamma, "gamma")


def check_rollout_array(x, name: str, shape: tuple | None = None, flags: bool = False) -> np.ndarray:
    """A (T, N) array of a rollout (T steps of N environment copies), or of ``shape`` if given.

    Real entries must be finite; with ``flags`` the array must be boolean instead. The first bad
    entry is named as ``step t, env n``.
    """
    if flags:
        arr = np.asarray(x)
        if arr.dtype != np.bool_:
            raise ValueError(f"{name}: must be a boolean array, got dtype {arr.dtype}")
    else:
        arr = as_float_array(x, name)
    if shape is None and (arr.ndim != 2 or arr.size == 0):
        raise ValueError(f"{name}: must be a non-empty array of shape (T, N), got shape {arr.shape}")
    if shape is not None and arr.shape != tuple(shape):
        raise ValueError(f"{name}: must have shape {tuple(shape)}, got shape {arr.shape}")
    if not flags and not np.isfinite(arr).all():
        idx = first_index(~np.isfinite(arr))
        at = f"step {idx[0]}, env {idx[1]}" if arr.ndim == 2 else f"env {idx[0]}"
        raise ValueError(f"{name}: NaN or inf at {at} (value {arr[idx]!r}); all entries must be finite")
    return arr


def check_optional_int(value, name: str, low: int = 1) -> int | None:
    """``None``, or an integer that is at least ``low`` (:func:`check_int`)."""
    return None if value is None else check_int(value, name, low)


# --------------------------------------------------------------------------------------------------
# Arrays of any shape: finite entries, probability distributions, tabular policies, checkpoints
# --------------------------------------------------------------------------------------------------
#: Tolerance for a probability just outside [0, 1], and for a distribution's sum, from rounding.
PROB_TOL = 1e-8
SUM_TOL = 1e-6


def _index(idx) -> str:
    """``index i`` for a 1-D position, ``index (i, j, ...)`` otherwise."""
    idx = tuple(int(i) for i in idx)
    return f"index {idx[0]}" if len(idx) == 1 else f"index {idx}"


def finite_array(x, name: str, ndim: int | None = None) -> np.ndarray:
    """A non-empty float64 array whose entries are all finite; with ``ndim``, exactly that many axes."""
    arr = as_float_array(x, name)
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D array, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        idx = first_index(~np.isfinite(arr))
        raise ValueError(
            f"{name}: NaN or inf at {_index(idx)} (value {float(arr[idx])!r}); "
            "all entries must be finite"
        )
    return arr


def check_distribution(arr: np.ndarray, name: str) -> np.ndarray:
    """Probabilities in [0, 1] whose last axis sums to 1 (each row a distribution), clipped to [0, 1].

    Rounding is forgiven up to :data:`PROB_TOL` per entry and :data:`SUM_TOL` per sum.
    """
    outside = (arr < -PROB_TOL) | (arr > 1 + PROB_TOL)
    if outside.any():
        idx = first_index(outside)
        raise ValueError(
            f"{name}: probability {float(arr[idx])!r} outside [0, 1] at {_index(idx)}"
        )
    sums = np.atleast_1d(arr.sum(axis=-1))
    wrong = np.abs(sums - 1.0) > SUM_TOL
    if wrong.any():
        idx = first_index(wrong)
        row = "" if arr.ndim == 1 else f" at row {tuple(int(i) for i in idx)}"
        raise ValueError(f"{name}: probabilities must sum to 1, got {float(sums[idx]):.6g}{row}")
    return np.clip(arr, 0.0, 1.0)


def check_policy(pi, shape: tuple, name: str = "pi") -> np.ndarray:
    """A tabular policy: a finite float array of ``shape`` (states, actions) whose rows are
    distributions (:func:`check_distribution`)."""
    arr = finite_array(pi, name, ndim=len(shape))
    if arr.shape != tuple(shape):
        raise ValueError(f"{name}: expected shape (n_states, n_actions) = {tuple(shape)}, got {arr.shape}")
    return check_distribution(arr, name)


def check_checkpoints(checkpoints, n: int, n_name: str = "n") -> np.ndarray:
    """A non-empty 1-D integer array of episode counts in ``[1, n]``."""
    cps = np.asarray(checkpoints)
    if cps.ndim != 1 or cps.size == 0 or not np.issubdtype(cps.dtype, np.integer):
        raise ValueError(f"checkpoints: expected a non-empty 1-D array of integers, got {checkpoints!r}")
    if cps.min() < 1 or cps.max() > n:
        raise ValueError(
            f"checkpoints: must lie in [1, {n_name}={n}], got {int(cps.min())}..{int(cps.max())}"
        )
    return cps


def check_support(target: np.ndarray, behavior: np.ndarray, target_name: str = "pi",
                  behavior_name: str = "mu", axes: tuple = ("state", "action")) -> None:
    """Raise if ``behavior`` is 0 where ``target`` is positive: the importance ratio is undefined.

    The message names the first such entry by the labels ``axes`` of its last dimensions
    (``state s, action a`` for a tabular policy, ``action a`` for one distribution).
    """
    bad = (behavior <= 0) & (target > 0)
    if bad.any():
        idx = first_index(bad)
        if bad.ndim <= len(axes):
            place = ", ".join(f"{lab} {int(i)}" for lab, i in zip(axes[-bad.ndim:], idx, strict=True))
        else:
            place = f"index {tuple(int(i) for i in idx)}"
        raise ValueError(
            f"{behavior_name}: behaviour probability 0 at {place} where {target_name} is "
            f"{float(target[idx]):.6g} > 0; the importance ratio is undefined (no support)"
        )


def check_instance(value, cls: type, name: str):
    """``value`` itself if it is an instance of ``cls``."""
    if not isinstance(value, cls):
        raise ValueError(
            f"{name}: must be a {cls.__module__}.{cls.__qualname__}, got {type(value).__name__}"
        )
    return value
