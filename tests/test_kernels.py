"""Tests for companion._kernels: the vectorised exp, its coefficients, the chunked loops."""

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

kernels = pytest.importorskip("companion._kernels")

ROOT = Path(__file__).resolve().parents[1]


def exp(x):
    x = np.ascontiguousarray(x, dtype=np.float64)
    out = np.empty_like(x)
    kernels.exp_into(x, out)
    return out


def ulps(got, want):
    return np.abs(got - want) / np.spacing(want)


def test_exp_within_2_ulp_of_numpy_over_its_range():
    # every representable region: a dense grid over [-708, 709.78], the reduction's boundaries
    # k ln 2 +- ln(2)/2 (where r is largest), and small arguments
    k = np.arange(-1021, 1024)
    edges = np.concatenate([(k + 0.5) * math.log(2), (k - 0.5) * math.log(2)])
    edges = np.concatenate([np.nextafter(edges, -np.inf), edges, np.nextafter(edges, np.inf)])
    rng = np.random.default_rng(0)
    x = np.concatenate([
        np.linspace(-708.0, kernels._EXP_MAX, 1_000_001),
        edges[(edges >= -708.0) & (edges <= kernels._EXP_MAX)],
        rng.uniform(-1.0, 1.0, 200_000),
        rng.normal(0.0, 1e-8, 10_000),
        [0.0, -0.0, 1e-300, -1e-300, -708.0, kernels._EXP_MAX],
    ])
    got, want = exp(x), np.exp(x)
    assert np.all(np.isfinite(got))
    assert ulps(got, want).max() <= 2.0
    assert np.mean(got == want) > 0.5  # most results are the correctly rounded ones
    assert exp([0.0, -0.0]).tolist() == [1.0, 1.0]


def test_exp_out_of_range_nan_and_infinities():
    below = np.array([-708.0000001, -745.0, -800.0, -1e300, -np.inf])
    assert exp(below).tolist() == [0.0] * 5  # exp < 3.3e-308: flushed to 0
    assert np.all(np.exp(below) < np.exp(-708.0))  # about 3.3e-308
    above = np.array([np.nextafter(kernels._EXP_MAX, np.inf), 710.0, 1e300, np.inf])
    with np.errstate(over="ignore"):
        assert np.all(np.isinf(np.exp(above)))  # numpy overflows there too
    assert exp(above).tolist() == [np.inf] * 4
    assert np.isnan(exp([np.nan, -np.nan])).all()


def test_exp_coefficients_are_those_the_script_computes():
    """The constants in _kernels._C are reproducible: scripts/exp_minimax.py prints them."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "exp_minimax.py")],
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout.splitlines()
    error = float(out[0].split()[-1])
    assert error < 4e-18
    assert tuple(float(line.rstrip(",")) for line in out[1:]) == kernels._C


@pytest.mark.parametrize("n", [1, 3, 4, 5, 8, 13])
@pytest.mark.parametrize("rows", [4, 8])
def test_chunked_loops_match_numpy_for_any_row_count(n, rows):
    """Groups of four rows, short last groups and short last chunks all give the same terms."""
    rng = np.random.default_rng(n * rows)
    horizon = 6
    r = rng.random((n, horizon))
    lr = rng.normal(0.0, 0.5, (n, horizon))
    mask = np.arange(horizon) < rng.integers(1, horizon + 1, size=n)[:, None]
    log_d = np.arange(horizon) * math.log(0.9)
    for m in (None, mask):
        r0 = r if m is None else np.where(m, r, 0.0)
        lr0 = lr if m is None else np.where(m, lr, 0.0)
        P = np.cumsum(lr0, axis=1)

        terms = np.empty(n)
        kernels.run(kernels.prefix_weight_dots, r, lr, m, rows, log_d, terms, None, None)
        np.testing.assert_allclose(terms, (np.exp(P + log_d) * r0).sum(axis=1), rtol=1e-13)

        G, lw = np.empty(n), np.empty(n)
        kernels.run(kernels.returns_and_log_weights, r, lr, m, rows, np.exp(log_d), G, lw)
        np.testing.assert_allclose(G, r0 @ np.exp(log_d), rtol=1e-13)
        np.testing.assert_allclose(lw, lr0.sum(axis=1), rtol=1e-13, atol=1e-15)

        chunks = -(-n // rows)
        ref, A, B = (np.empty((chunks, horizon)) for _ in range(3))
        kernels.run(kernels.per_step_weight_sums, r, lr, m, rows, ref, A, B)
        for c in range(chunks):
            Pc, rc = P[c * rows : (c + 1) * rows], r0[c * rows : (c + 1) * rows]
            np.testing.assert_array_equal(ref[c], Pc.max(axis=0))
            W = np.exp(Pc - ref[c])
            np.testing.assert_allclose(B[c], W.sum(axis=0), rtol=1e-13)
            np.testing.assert_allclose(A[c], (W * rc).sum(axis=0), rtol=1e-13, atol=1e-300)

        r_hat = rng.random(horizon)
        centre = np.empty(n)
        kernels.run(kernels.prefix_weight_dots, r, lr, m, rows, log_d, terms, r_hat, centre)
        np.testing.assert_allclose(terms, (np.exp(P + log_d) * r0).sum(axis=1), rtol=1e-13)
        np.testing.assert_allclose(centre, np.exp(P + log_d) @ r_hat, rtol=1e-13)


def test_padding_is_ignored_whatever_it_holds():
    rng = np.random.default_rng(5)
    r = rng.random((9, 5))
    lr = rng.normal(0.0, 0.3, (9, 5))
    mask = np.arange(5) < np.array([5, 1, 3, 2, 5, 4, 1, 2, 3])[:, None]
    garbage_r = np.where(mask, r, np.nan)
    garbage_lr = np.where(mask, lr, np.inf)
    log_d = np.zeros(5)
    clean, dirty = np.empty(9), np.empty(9)
    kernels.run(kernels.prefix_weight_dots, r, lr, mask, 4, log_d, clean, None, None)
    kernels.run(kernels.prefix_weight_dots, garbage_r, garbage_lr, mask, 4, log_d, dirty, None, None)
    np.testing.assert_array_equal(clean, dirty)
    # and without the mask, the garbage shows: the caller sees non-finite terms and explains
    kernels.run(kernels.prefix_weight_dots, garbage_r, garbage_lr, None, 4, log_d, dirty, None, None)
    assert not np.all(np.isfinite(dirty))


def test_estimators_survive_fork_and_concurrent_threads():
    """A forked child (multiprocessing's default start method on Linux) can use the estimators
    after its parent did, and several threads can call them at once: numba's own thread pools
    fail one or the other (GNU OpenMP kills the forked child; its work queue kills the process
    on concurrent calls), so the loops run on threads of our own."""
    code = """if True:
        import os, threading, numpy as np
        from companion.estimators import per_decision_is, weighted_per_decision_is
        r, lr = np.ones((3000, 50)), np.zeros((3000, 50))
        assert weighted_per_decision_is(r, lr).estimate == 50.0
        pid = os.fork()
        if pid == 0:
            os._exit(0 if weighted_per_decision_is(r, lr).estimate == 50.0 else 3)
        assert os.waitpid(pid, 0)[1] == 0, "forked child failed"
        out = []
        def work():
            out.extend(per_decision_is(r, lr).estimate for _ in range(20))
        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads: t.start()
        for t in threads: t.join()
        assert out == [50.0] * 80
    """
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr


def test_an_error_in_any_thread_reaches_the_caller(monkeypatch):
    monkeypatch.setattr(kernels, "get_num_threads", lambda: 3)
    seen = []

    def kernel(r, lr, m, rows, c0, c1):
        seen.append((c0, c1))
        if c0 == 4:  # the third share, run on a worker thread
            raise RuntimeError("chunk 4")

    r = np.zeros((24, 1))
    with pytest.raises(RuntimeError, match="chunk 4"):
        kernels.run(kernel, r, r, None, 4)  # 6 chunks in 3 shares: (0, 2), (2, 4), (4, 6)
    assert sorted(seen) == [(0, 2), (2, 4), (4, 6)]
