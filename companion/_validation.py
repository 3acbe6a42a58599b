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
        raise ValueError(f"{name}: empty batch (shape {arr.shape}); need at least one entry")
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

def check_gamma(gamma) -> float:
    """The discount factor as a float in [0, 1]; ValueError naming ``gamma`` otherwise."""
    try:
        g = float(gamma)
    except (TypeError, ValueError):
        raise ValueError(f"gamma: must be a number in [0, 1], got {gamma!r}") from None
    if not 0.0 <= g <= 1.0:
        raise ValueError(f"gamma: discount must be in [0, 1], got {gamma!r}")
    return g


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


def check_positive(value, name: str) -> float:
    """A finite real number > 0."""
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
