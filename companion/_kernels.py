"""Compiled loops of the off-policy evaluation estimators (numba).

:mod:`companion.estimators` validates its inputs, calls these kernels for the per-element work,
and checks what they return. Each kernel reads the rewards and log-ratios once, from memory, in
one fused loop: the running sum of the log-ratios, ``exp``, products and sums all happen while a
few rows are in the L1 cache. The trajectories are split into chunks of ``rows`` (a multiple of
4), and :func:`run` shares the chunks among threads (``numba.set_num_threads`` sets how many).
Per-trajectory results do not depend on the number of threads, and neither do per-step sums:
they are formed per chunk and added up in a fixed order by the caller.

``exp`` is our own (:func:`_exp`): NumPy's and libm's are calls the compiler cannot vectorise;
this one is plain arithmetic, inlined into the loops, so four of them run at once in AVX2
registers. It is the textbook scheme of vector math libraries (Cody-Waite range reduction
``x = k ln 2 + r``, a minimax polynomial for ``e^r`` on ``|r| <= ln(2)/2``, ``2^k`` built from
its bits) and agrees with ``numpy.exp`` to 2 ulp for x >= -708; below, where ``exp`` is under
3.3e-308, it returns 0 (``tests/test_kernels.py``). Weights that small are 0 for every purpose
of the estimators (see "Numerics" in :mod:`companion.estimators`).

Masked-out steps (padding after a trajectory's end) count as log-ratio 0 and reward 0, whatever
the arrays hold there. Non-finite inputs are not checked here: they make the outputs non-finite
(no fast-math flag lets the compiler assume otherwise), which the callers detect and then
explain with a ``ValueError``.
"""

from __future__ import annotations

import math
import threading

import numpy as np
from llvmlite import ir
from numba import get_num_threads, njit, types
from numba.extending import intrinsic

# fdlibm's split of ln 2: _LN2_HI has 21 trailing zero bits, so k * _LN2_HI is exact for |k| < 2^21.
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_INV_LN2 = 1.44269504088896338700e00
_EXP_MAX = 709.782712893384  # largest x with exp(x) finite

# Only reassociation and contraction (FMA): the reductions over a row vectorise, while NaN and
# inf keep their IEEE meaning (no "nnan"/"ninf"), so bad inputs still show in the outputs.
_FAST = {"reassoc", "contract"}

_ROUND = 6755399441055744.0  # 1.5 * 2^52: the sum x + _ROUND holds round(x) in its low bits
_EXP_FLUSH = -708.0  # below: 0 (exp(x) < 3.3e-308, about the smallest normal float64)
# 2 e^r ~ sum_j _C[j] r^j on |r| <= ln(2)/2: the degree-11 polynomial of least maximum relative
# error (3.1e-18; by scripts/exp_minimax.py), doubled (exact: a power of 2) so that the result
# 2 e^r 2^(k-1) needs no exponent of 1024 at the top of the range.
_C = (
    2.0,
    2.0,
    1.0000000000000036,
    0.3333333333333234,
    0.08333333333298554,
    0.01666666666711854,
    0.0027777777902447975,
    0.00039682538865358475,
    4.9602973042854926e-05,
    5.511524506174451e-06,
    5.526458655891975e-07,
    4.9988609769634415e-08,
)


@intrinsic
def _bits(typingctx, x):
    """The bits of a float64 as an int64 (a free register move)."""
    sig = types.int64(types.float64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return sig, codegen


@intrinsic
def _float_from_bits(typingctx, bits):
    """Reinterpret an int64's bits as a float64 (a free register move)."""
    sig = types.float64(types.int64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return sig, codegen


@njit(cache=True, nogil=True, fastmath={"contract"})
def _exp(v):
    """exp(v) for a float64: within 2 ulp of ``numpy.exp`` for v >= -708 (results from 3.3e-308
    up), exactly 0 below, ``inf`` above 709.78 (where ``numpy.exp`` overflows too), NaN for NaN.

    Scheme: k = round(v / ln 2) and r = v - k ln 2 (|r| <= ln(2)/2, with ln 2 split in two so
    that k ln 2 is exact), e^r by a polynomial (:data:`_C`, evaluated by Estrin's scheme: a
    shorter chain of dependent operations than Horner's), and 2^(k-1) built from its bits:
    kk = v / ln 2 + _ROUND holds k in its low mantissa bits; shifted left by 52 they are the
    exponent field (the bits above drop out). Only float arithmetic, integer adds and a logical
    shift, all of which vectorise on AVX2.

    Compiled on its own, with contraction into fused multiply-adds as the only fast-math flag
    (one rounding where the code has two): the order of operations, which the range reduction
    and the rounding trick rely on, is kept even where the compiler inlines it into a loop that
    may reassociate. Out of range the bits are garbage and the last two lines choose 0 or inf
    instead; for NaN, r and hence the result are NaN.
    """
    kk = v * _INV_LN2 + _ROUND
    k = kk - _ROUND
    r = (v - k * _LN2_HI) - k * _LN2_LO
    r2 = r * r
    r4 = r2 * r2
    c = _C
    p = (
        ((c[0] + c[1] * r) + (c[2] + c[3] * r) * r2)
        + ((c[4] + c[5] * r) + (c[6] + c[7] * r) * r2) * r4
        + ((c[8] + c[9] * r) + (c[10] + c[11] * r) * r2) * (r4 * r4)
    )
    y = p * _float_from_bits((_bits(kk) << 52) + (1022 << 52))
    y = 0.0 if v < _EXP_FLUSH else y
    return math.inf if v > _EXP_MAX else y


@njit(cache=True, nogil=True)
def _at(a, m, i, t):
    """a[i, t], or 0 where the mask marks padding."""
    v = a[i, t]
    if m is not None:
        if not m[i, t]:
            v = 0.0
    return v


@njit(cache=True, nogil=True)
def _max_into(top, t, v):
    if v > top[t]:
        top[t] = v


@njit(cache=True, nogil=True)
def _log_prefix_rows(lr, m, i, g, X, add, top=None):
    """X[j * H + t] = sum_{k<=t} lr[i + j, k] + add[t] for the g <= 4 trajectories i, ..., i+g-1:
    their log prefix weights (masked steps count 0), rows of X of length H = lr.shape[1]. With
    ``top``, also top[t] = max(top[t], X[j * H + t] for each j).

    A running sum waits for its previous addition; four independent ones keep the adder busy,
    with time to spare for the maxima.
    """
    horizon = lr.shape[1]
    if g == 4:
        p0 = p1 = p2 = p3 = 0.0
        for t in range(horizon):
            p0 += _at(lr, m, i, t)
            p1 += _at(lr, m, i + 1, t)
            p2 += _at(lr, m, i + 2, t)
            p3 += _at(lr, m, i + 3, t)
            X[t] = p0 + add[t]
            X[horizon + t] = p1 + add[t]
            X[2 * horizon + t] = p2 + add[t]
            X[3 * horizon + t] = p3 + add[t]
            if top is not None:
                a = p0 if p0 > p1 else p1
                b = p2 if p2 > p3 else p3
                _max_into(top, t, (a if a > b else b) + add[t])
    else:
        for j in range(g):
            p = 0.0
            for t in range(horizon):
                p += _at(lr, m, i + j, t)
                X[j * horizon + t] = p + add[t]
                if top is not None:
                    _max_into(top, t, p + add[t])


@njit(cache=True, nogil=True, fastmath=_FAST)
def exp_into(x, out):
    """out[t] = exp(x[t]) (:func:`_exp`) for 1-D float64 arrays, compiled as the kernels are
    (for the tests)."""
    for t in range(x.shape[0]):
        out[t] = _exp(x[t])


# --- the kernels: kernel(r, lr, m, rows, *outputs_and_parameters, c0, c1) does the chunks
# c0 <= c < c1 of ``rows`` trajectories each ------------------------------------------------------


@njit(cache=True, nogil=True, fastmath=_FAST)
def returns_and_log_weights(r, lr, m, rows, d, G, lw, c0, c1):
    """G[i] = sum_t d[t] r[i, t] and lw[i] = sum_t lr[i, t] (masked steps count 0)."""
    n, horizon = r.shape
    for i in range(c0 * rows, min(n, c1 * rows)):
        g = 0.0
        s = 0.0
        for t in range(horizon):
            g += d[t] * _at(r, m, i, t)
            s += _at(lr, m, i, t)
        G[i] = g
        lw[i] = s


@njit(cache=True, nogil=True, fastmath=_FAST)
def per_step_weight_sums(r, lr, m, rows, ref, A, B, c0, c1):
    """Per-chunk sums of the prefix weights, scaled by the chunk's per-step maximum.

    For chunk c: ref[c, t] = max_i log rho_{i,0:t} over its trajectories, and with
    W_it = exp(log rho_{i,0:t} - ref[c, t]) (``ref`` taken as 0 where it is -inf):
    B[c, t] = sum_i W_it and A[c, t] = sum_i W_it r[i, t]. A chunk's prefix sums wait in a
    buffer for its maximum; it is allocated once per call (fresh buffers of this size per chunk
    would come from the operating system, page by page).
    """
    n, horizon = r.shape
    zero = np.zeros(horizon)
    P = np.empty(rows * horizon)
    e = np.empty(horizon)  # not in P: in place, the compiler's overlap check fails
    shift = np.empty(horizon)
    for c in range(c0, c1):
        lo = c * rows
        hi = min(n, lo + rows)
        top = ref[c]
        top[:] = -np.inf
        for i in range(lo, hi, 4):
            _log_prefix_rows(lr, m, i, min(4, hi - i), P[(i - lo) * horizon :], zero, top)
        for t in range(horizon):
            shift[t] = 0.0 if top[t] == -np.inf else top[t]
        a = A[c]
        b = B[c]
        a[:] = 0.0
        b[:] = 0.0
        for i in range(lo, hi):
            x = P[(i - lo) * horizon : (i - lo + 1) * horizon]
            for t in range(horizon):
                e[t] = _exp(x[t] - shift[t])
            for t in range(horizon):
                b[t] += e[t]
                a[t] += e[t] * _at(r, m, i, t)


@njit(cache=True, nogil=True, fastmath=_FAST)
def prefix_weight_dots(r, lr, m, rows, log_scale, terms, r_hat, centre, c0, c1):
    """With W_it = exp(log rho_{i,0:t} + log_scale[t]): terms[i] = sum_t W_it r[i, t], and
    unless ``r_hat`` and ``centre`` are None, centre[i] = sum_t W_it r_hat[t]. (With
    log_scale[t] = t log gamma, terms are those of per-decision importance sampling.)"""
    n, horizon = r.shape
    X = np.empty(4 * horizon)
    end = min(n, c1 * rows)
    for i in range(c0 * rows, end, 4):
        g = min(4, end - i)
        _log_prefix_rows(lr, m, i, g, X, log_scale)
        for j in range(g):
            s = 0.0
            q = 0.0
            for t in range(horizon):
                e = _exp(X[j * horizon + t])
                s += e * _at(r, m, i + j, t)
                if r_hat is not None:
                    q += e * r_hat[t]
            terms[i + j] = s
            if centre is not None:
                centre[i + j] = q


def run(kernel, r, lr, m, rows: int, *args) -> None:
    """``kernel(r, lr, m, rows, *args, c0, c1)`` over all chunks of ``rows`` trajectories, split
    evenly among ``numba.get_num_threads()`` threads (at most one per chunk).

    Plain Python threads, each running a compiled loop that does not hold the GIL, rather than
    a numba ``parallel=True`` loop: numba's default thread pool on Linux is GNU OpenMP, which
    kills a forked child process that uses it (multiprocessing with "fork"), and its built-in
    alternative kills the process on calls from two threads at once. Threads started per call
    are safe for both, and cost tens of microseconds.
    """
    chunks = -(-r.shape[0] // rows)
    workers = max(1, min(chunks, get_num_threads()))
    bounds = [w * chunks // workers for w in range(workers + 1)]
    errors = []

    def share(lo, hi):
        try:
            kernel(r, lr, m, rows, *args, lo, hi)
        except BaseException as err:  # re-raised below, in the caller's thread
            errors.append(err)

    shares = list(zip(bounds[:-1], bounds[1:], strict=True))
    threads = [threading.Thread(target=share, args=lohi) for lohi in shares[1:]]
    for th in threads:
        th.start()
    share(*shares[0])  # the first share in this thread
    for th in threads:
        th.join()
    if errors:
        raise errors[0]
