"""Coefficients of the polynomial behind ``companion._kernels._exp``.

Finds the polynomial p of degree 11 with the least maximum relative error |p(r) / e^r - 1| on
[-ln(2)/2, ln(2)/2] by the Remez exchange algorithm, in 50-digit arithmetic (mpmath), and prints
its coefficients doubled and rounded to float64, as ``_kernels._C`` holds them.

    .venv/bin/python scripts/exp_minimax.py
"""

import mpmath as mp

mp.mp.dps = 50
DEGREE = 11
H = mp.log(2) / 2
GRID = [-H + 2 * H * j / 4000 for j in range(4001)]


def solve(points):
    """Coefficients c and level E with p(x_i) - e^x_i = (-1)^i E e^x_i at the points."""
    n = DEGREE + 2
    a, b = mp.matrix(n, n), mp.matrix(n, 1)
    for i, x in enumerate(points):
        for k in range(DEGREE + 1):
            a[i, k] = x**k
        a[i, DEGREE + 1] = (-1) ** i * mp.exp(x)
        b[i] = mp.exp(x)
    sol = mp.lu_solve(a, b)
    return [sol[k] for k in range(DEGREE + 1)], sol[DEGREE + 1]


def alternating_extrema(c):
    """Indices of the local extrema of the relative error p(x)/e^x - 1 on GRID, one per sign
    run (the largest), and the largest error."""
    vals = [mp.polyval(c[::-1], x) / mp.exp(x) - 1 for x in GRID]
    keep = []
    for j in range(len(GRID)):
        inner = 0 < j < len(GRID) - 1
        if inner and not (abs(vals[j]) >= abs(vals[j - 1]) and abs(vals[j]) >= abs(vals[j + 1])):
            continue
        if keep and mp.sign(vals[j]) == mp.sign(vals[keep[-1]]):
            if abs(vals[j]) > abs(vals[keep[-1]]):
                keep[-1] = j
        else:
            keep.append(j)
    while len(keep) > DEGREE + 2:  # drop the smaller end
        keep.pop(0 if abs(vals[keep[0]]) < abs(vals[keep[-1]]) else -1)
    return keep, max(abs(v) for v in vals)


def main():
    n = DEGREE + 2
    points = [H * mp.cos(mp.pi * (n - 1 - i) / (n - 1)) for i in range(n)]  # Chebyshev start
    for _ in range(20):
        c, level = solve(points)
        keep, worst = alternating_extrema(c)
        points = [GRID[j] for j in keep]
        if worst <= abs(level) * (1 + mp.mpf(10) ** -6):
            break
    print(f"max relative error {mp.nstr(worst, 3)}")
    print(",\n".join(repr(float(2 * ck)) for ck in c))


if __name__ == "__main__":
    main()
