"""Benchmark the off-policy evaluation estimators of ``companion.estimators``.

For each estimator on a batch of N trajectories of T steps (float64) it reports

* the time as a ratio to ``numpy.sum`` over its inputs (rewards and log-ratios) measured in the
  same run: reading the inputs once is the memory-bound floor;
* the speedup over a plain Python loop (nested ``for`` over trajectories and steps, ``math.exp``).
  The loop is timed (best of 3) on a subset of trajectories and scaled linearly to N (the
  output says so);
* the peak memory the estimator allocates beyond its inputs (``tracemalloc``, in a separate,
  untimed call);
* the load average of the machine (``os.getloadavg``) at the start and at the end: on a shared
  machine a high load inflates every time, the memory-bound ones most.

Expected orders, with the plain NumPy estimators: the trajectory-wise estimators within about 4x
the floor (they read each input about twice: once to validate it, once to form the returns and
log weights), the per-decision estimator within about 15x (``numpy.cumsum`` and ``numpy.exp`` over
every element), the weighted per-decision estimator within about 20x (the same, plus passes over
the array of weights that its per-step normalisation keeps).

Usage::

    .venv/bin/python benchmarks/ope_estimators.py            # N=100,000, T=200
    .venv/bin/python benchmarks/ope_estimators.py --n 20000  # quicker

Memory: the two input arrays (2 * N * T * 8 bytes = 320 MB at the defaults) plus what the
estimators allocate (shown in the table: a few MB for ``per_decision_is``, one N x T array for
``weighted_per_decision_is``).
"""

from __future__ import annotations

import argparse
import math
import os
import time
import tracemalloc

import numpy as np

from companion.estimators import (
    per_decision_is,
    trajectory_is,
    weighted_per_decision_is,
    weighted_trajectory_is,
)

# --- plain-Python references (the "loop" baseline) ----------------------------------------------


def loop_trajectory_is(rewards, log_ratios, gamma):
    total = 0.0
    for r_i, lr_i in zip(rewards, log_ratios, strict=True):
        g, disc, lw = 0.0, 1.0, 0.0
        for r, lr in zip(r_i, lr_i, strict=True):
            g += disc * r
            lw += lr
            disc *= gamma
        total += math.exp(lw) * g
    return total / len(rewards)


def loop_weighted_trajectory_is(rewards, log_ratios, gamma):
    lws, gs = [], []
    for r_i, lr_i in zip(rewards, log_ratios, strict=True):
        g, disc, lw = 0.0, 1.0, 0.0
        for r, lr in zip(r_i, lr_i, strict=True):
            g += disc * r
            lw += lr
            disc *= gamma
        lws.append(lw)
        gs.append(g)
    top = max(lws)
    num = den = 0.0
    for lw, g in zip(lws, gs, strict=True):
        w = math.exp(lw - top)
        num += w * g
        den += w
    return num / den


def loop_per_decision_is(rewards, log_ratios, gamma):
    total = 0.0
    for r_i, lr_i in zip(rewards, log_ratios, strict=True):
        prefix, disc = 0.0, 1.0
        for r, lr in zip(r_i, lr_i, strict=True):
            prefix += lr
            total += disc * math.exp(prefix) * r
            disc *= gamma
    return total / len(rewards)


def loop_weighted_per_decision_is(rewards, log_ratios, gamma):
    horizon = len(rewards[0])
    prefixes = []
    for lr_i in log_ratios:
        p, row = 0.0, []
        for lr in lr_i:
            p += lr
            row.append(p)
        prefixes.append(row)
    est, disc = 0.0, 1.0
    for t in range(horizon):
        top = max(row[t] for row in prefixes)
        num = den = 0.0
        for row, r_i in zip(prefixes, rewards, strict=True):
            w = math.exp(row[t] - top)
            num += w * r_i[t]
            den += w
        est += disc * num / den
        disc *= gamma
    return est


#: (name, estimator, plain loop, expected order of time / floor)
ESTIMATORS = [
    ("trajectory_is", trajectory_is, loop_trajectory_is, 4),
    ("weighted_trajectory_is", weighted_trajectory_is, loop_weighted_trajectory_is, 4),
    ("per_decision_is", per_decision_is, loop_per_decision_is, 15),
    ("weighted_per_decision_is", weighted_per_decision_is, loop_weighted_per_decision_is, 20),
]


def best_time(fn, repeat):
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def peak_allocation(fn) -> int:
    """Peak bytes allocated (and traced by NumPy) during one call of ``fn``."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def make_batch(n, horizon, rng):
    """Rewards in [0, 1) and log-ratios of a mild policy mismatch (weights stay representable)."""
    rewards = rng.random((n, horizon))
    log_ratios = rng.normal(-0.005, 0.1, size=(n, horizon))
    return rewards, log_ratios


def load_average() -> str:
    return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="number of trajectories")
    parser.add_argument("--horizon", type=int, default=200, help="steps per trajectory")
    parser.add_argument("--loop-n", type=int, default=2_000, help="trajectories for the loop")
    parser.add_argument("--gamma", type=float, default=0.99)
    parser.add_argument("--repeat", type=int, default=7, help="best of this many rounds")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    load_start = load_average()

    rng = np.random.default_rng(args.seed)
    rewards, log_ratios = make_batch(args.n, args.horizon, rng)
    loop_n = min(args.loop_n, args.n)
    r_list = rewards[:loop_n].tolist()
    lr_list = log_ratios[:loop_n].tolist()

    def floor():
        np.sum(rewards)
        np.sum(log_ratios)

    # Timing rounds interleave the floor and every estimator, and each keeps its best time, so
    # that a slow spell of a shared machine hits all of them rather than one.
    calls = {"floor": floor}
    calls |= {name: (lambda fast=fast: fast(rewards, log_ratios, args.gamma))
              for name, fast, _, _ in ESTIMATORS}
    for fn in calls.values():  # warm up (first touch of the memory, caches)
        fn()
    best = dict.fromkeys(calls, math.inf)
    for _ in range(args.repeat):
        for name, fn in calls.items():
            best[name] = min(best[name], best_time(fn, 1))
    t_floor = best["floor"]
    print(
        f"OPE estimators on {args.n:,} trajectories x {args.horizon} steps (float64), "
        f"gamma={args.gamma}, best of {args.repeat} interleaved rounds"
    )
    print(f"numpy {np.__version__}, {os.cpu_count()} CPUs, load average at start {load_start}")
    print(
        f"floor: numpy.sum over rewards and log_ratios = {t_floor * 1e3:.1f} ms "
        f"({2 * rewards.nbytes / t_floor / 1e9:.1f} GB/s)"
    )
    print(
        f"loop: plain Python, best of 3 on {loop_n:,} trajectories, scaled linearly "
        f"by {args.n / loop_n:g} to {args.n:,}"
    )
    print(f"inputs: {2 * rewards.nbytes / 1e6:.0f} MB")
    print()
    header = (f"{'estimator':<26} {'time [ms]':>10} {'x floor':>8} {'expected':>9} "
              f"{'loop [s]':>9} {'speedup':>8} {'extra MB':>9}  check")
    print(header)
    print("-" * len(header))
    for name, fast, loop, expected in ESTIMATORS:
        t_fast = best[name]
        t0 = time.perf_counter()
        ref = loop(r_list, lr_list, args.gamma)  # the first of the 3 timed loop runs
        t_first = time.perf_counter() - t0
        t_loop = min(t_first, best_time(lambda loop=loop: loop(r_list, lr_list, args.gamma), 2))
        t_loop *= args.n / loop_n
        extra = peak_allocation(calls[name]) / 1e6
        sub = fast(rewards[:loop_n], log_ratios[:loop_n], args.gamma).estimate
        ok = "ok" if math.isclose(sub, ref, rel_tol=1e-9, abs_tol=1e-12) else f"MISMATCH {sub} {ref}"
        print(
            f"{name:<26} {t_fast * 1e3:>10.1f} {t_fast / t_floor:>8.2f} {f'~{expected}':>9} "
            f"{t_loop:>9.1f} {t_loop / t_fast:>7.0f}x {extra:>9.1f}  {ok}"
        )
    print()
    print("x floor: time / floor; expected: the order the plain NumPy code should reach.")
    print("speedup: scaled loop time / time.  extra MB: peak allocation beyond the inputs.")
    print("check: the estimate on the loop subset equals the loop's (rel. tol 1e-9).")
    print(f"load average at end {load_average()}")


if __name__ == "__main__":
    main()
