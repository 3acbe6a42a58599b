"""The graded assignments grade correctly: full marks, zero marks, typical mistakes, own work.

For every master notebook ``assignments/<name>/<name>.ipynb`` this file builds the assignment with
``scripts/build_assignments.py`` (stored expected values, own-work tests, then ``otter assign``)
and grades, all in one module-scoped fixture:

* with ``otter run`` itself (a Jupyter kernel per notebook, two at a time in forked workers): the
  solution notebook, which must score full marks on every autograded question, and the untouched
  student notebook, which must score 0; for one assignment (``ALSO_WITH_OTTER``) also the cheat
  and a round of mistakes below;
* in this process, with the autograder's own test files and otter's scoring
  (``tests/assignment_grading.py``), meanwhile: the same two notebooks (both graders must agree),
  a submission whose graded functions call the ``companion`` package (0 on every such question),
  and the solution with typical mistakes substituted in (small textual substitutions, each checked
  to match exactly once in the cell that defines the question's function). Mistakes are graded in
  rounds of at most one per question; each must lose exactly its question's points and fail the
  hidden tests it names, and every hidden test must be named by at least one mistake.

A second fixture builds every assignment with a term seed (``make assignments SEED=...``) and
grades its solution and mistakes again. The last tests check the points tables of the notebooks
and of the documentation, and the Makefile's list of assignments.

``ASSIGNMENTS="ppo trpo"`` in the environment restricts the run (``make test-assignments
ASSIGNMENTS="ppo trpo"``). Needs otter-grader (``pip install -r requirements-instructor.txt``);
skipped without it, except under CI (``CI`` set), where a missing otter is an error.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import sys
import zipfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import nbformat
import numpy as np
import pytest
import yaml

if not os.environ.get("CI"):
    pytest.importorskip("otter", reason="otter-grader not installed: pip install -r requirements-instructor.txt")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import build_assignments as ba  # noqa: E402
from assignment_grading import extract_tests, grade_in_process, grade_with_otter  # noqa: E402

ASSIGNMENTS = ROOT / "assignments"
# ASSIGNMENTS="ppo trpo" restricts the run (make test-assignments ASSIGNMENTS="ppo trpo").
NAMES = [n for n in os.environ.get("ASSIGNMENTS", "").split() if n in ba.NAMES] or ba.NAMES
TERM_SEED = 20270101   # a term's variant, as make assignments SEED=20270101 builds it
# Submissions graded by otter run as well as in-process (both must agree), beyond every
# assignment's solution and untouched student notebook: one assignment's cheat and mistakes.
ALSO_WITH_OTTER = {"estimators": ("companion", "round 0")}


@dataclass(frozen=True)
class Mistake:
    question: str
    catches: str   # labels of the tests it must fail, space-separated
    what: str
    old: str
    new: str

    @property
    def labels(self) -> list[str]:
        return self.catches.split()


MISTAKES = {
    "offpolicy_gradient": [
        Mistake("q1", "random", "the stale estimate: no ratio",
                "rho = np.exp(log_pi[actions] - np.asarray(logp_behavior, dtype=float))",
                "rho = np.ones(len(actions))"),
        Mistake("q1", "random", "the ratio upside down: mu / pi",
                "rho = np.exp(log_pi[actions] - np.asarray(logp_behavior, dtype=float))",
                "rho = np.exp(np.asarray(logp_behavior, dtype=float) - log_pi[actions])"),
        Mistake("q1", "large-logits", "softmax without the max shift: exp(900) overflows",
                "z = logits - logits.max()", "z = logits"),
        Mistake("q2", "random", "pi subtracted in every state's row, not only in the row of s",
                "return in_state * (np.eye(A)[actions][..., None, :] - pi[states][..., None, :])",
                "return in_state * np.eye(A)[actions][..., None, :] - pi"),
        Mistake("q2", "large-logits", "softmax without the max shift: exp(900) overflows",
                "z = np.exp(logits - logits.max(axis=1, keepdims=True))", "z = np.exp(logits)"),
        Mistake("q2", "random", "softmax normalised over the states instead of the actions",
                "pi = z / z.sum(axis=1, keepdims=True)", "pi = z / z.sum(axis=0, keepdims=True)"),
        Mistake("q3", "random", "the discount restarts at each step: gamma^(t' - t) instead of gamma^t'",
                "coef = prefix * to_go", "coef = prefix * to_go / gamma ** np.arange(r.shape[1])"),
        Mistake("q3", "random zero-ratio", "the ratio of step t alone instead of the product from step 0",
                "prefix = np.exp(np.cumsum(lr, axis=1))", "prefix = np.exp(lr)"),
        Mistake("q3", "random", "padding removed by multiplying by the mask: 0 * nan is nan",
                "g = np.where(m[..., None], np.asarray(scores, dtype=float), 0.0)",
                "g = np.asarray(scores, dtype=float) * m[..., None]"),
        Mistake("q3", "zero-ratio", "the per-decision weights (up to t') in place of the prefix weight up to t",
                "coef = prefix * to_go",
                "coef = np.flip(np.cumsum(np.flip(prefix * disc_r, axis=1), axis=1), axis=1)"),
        Mistake("q4", "mdp random zero-ratio", "the prefix weight up to t instead of up to t'",
                "coef = np.flip(np.cumsum(np.flip(prefix * disc_r, axis=1), axis=1), axis=1)",
                "coef = prefix * np.flip(np.cumsum(np.flip(disc_r, axis=1), axis=1), axis=1)"),
        Mistake("q4", "random", "the ratio of step t' left out of the weight of reward t'",
                "prefix = np.exp(np.cumsum(lr, axis=1))", "prefix = np.exp(np.cumsum(lr, axis=1) - lr)"),
        Mistake("q4", "mdp", "rewards not discounted",
                "disc_r = r * gamma ** np.arange(r.shape[1])", "disc_r = r"),
        Mistake("q5", "random", "the standard deviation with ddof=0",
                "terms.std(axis=0, ddof=1)", "terms.std(axis=0)"),
        Mistake("q5", "random", "the standard deviation used as the standard error (no square root of n)",
                " / np.sqrt(terms.shape[0])", ""),
        Mistake("q5", "zero-spread", "a plain division: 0 / 0 gives nan",
                "return np.where(diff == 0, 0.0, z)", "return z"),
    ],
    "estimators": [
        Mistake("q1", "padding", "padding handled by multiplying by the mask (0 * inf is nan)",
                "rewards = np.where(mask, rewards, 0.0)", "rewards = rewards * mask"),
        Mistake("q1", "inputs-unchanged", "the mask applied in place: the caller's rewards change",
                "rewards = np.where(mask, rewards, 0.0)", "rewards[~np.asarray(mask)] = 0.0"),
        Mistake("q2", "zero-weight", "non-finite log ratios treated as padding: a zero weight becomes 1",
                "log_rho = np.where(mask, log_rho, 0.0)",
                "log_rho = np.where(mask & np.isfinite(log_rho), log_rho, 0.0)"),
        Mistake("q2", "support", "np.nan_to_num on the log ratios hides a zero behaviour probability",
                "if np.any(np.isnan(log_rho) | (log_rho == np.inf)):",
                "log_rho = np.nan_to_num(log_rho)\n    if False:"),
        Mistake("q2", "inputs-unchanged", "the mask applied in place: the caller's log ratios change",
                "log_rho = np.where(mask, log_rho, 0.0)", "log_rho[~np.asarray(mask)] = 0.0"),
        Mistake("q2", "long", "the product of the ratios, then its log: overflows on long trajectories",
                "return log_rho.sum(axis=1)", "return np.log(np.prod(np.exp(log_rho), axis=1))"),
        Mistake("q3", "zero-weights", "averages over the trajectories of positive weight only",
                "return float(np.mean(w * G))", "return float(np.mean((w * G)[w > 0]))"),
        Mistake("q3", "random", "divides by the sum of the weights instead of n",
                "return float(np.mean(w * G))", "return float(np.sum(w * G) / np.sum(w))"),
        Mistake("q4", "shift", "weighted IS that divides by n, not by the sum of the weights",
                "return float(np.sum(w * G) / np.sum(w))", "return float(np.mean(w * G))"),
        Mistake("q4", "huge", "weighted IS without the max shift: exp(log_w) overflows",
                "w = np.exp(log_w - log_w.max())", "w = np.exp(log_w)"),
        Mistake("q4", "dominant", "weights clipped at 1 instead of normalised by their sum",
                "return float(np.sum(w * G) / np.sum(w))",
                "return float(np.mean(np.minimum(np.exp(log_w), 1.0) * G))"),
        Mistake("q5", "random", "per-decision IS that weights every reward by the whole trajectory's weight",
                "prefix = np.exp(np.cumsum(log_rho, axis=1))",
                "prefix = np.exp(log_rho.sum(axis=1, keepdims=True))"),
        Mistake("q5", "zero-ratio", "the ratio of step t left out of the weight of reward t",
                "prefix = np.exp(np.cumsum(log_rho, axis=1))",
                "prefix = np.exp(np.cumsum(log_rho, axis=1) - log_rho)"),
    ],
    "variance": [
        Mistake("q1", "list-and-zeros", "the input is not made an array: a list has no .max()",
                "log_w = np.asarray(log_w, dtype=float)\n    ", ""),
        Mistake("q1", "huge", "no max shift: exp of log weights near 5000 overflows",
                "w = np.exp(log_w - log_w.max())", "w = np.exp(log_w)"),
        Mistake("q1", "huge", "ESS as 1 / sum(w^2) with weights that are not normalised",
                "w_bar = w / w.sum()", "w_bar = w"),
        Mistake("q2", "zero-both", "support check mu > 0 for every action, not only where pi > 0",
                "if np.any(mu[support] == 0):", "if np.any(mu == 0):"),
        Mistake("q2", "support", "no support check: mu = 0 where pi > 0 gives inf, no error",
                "if np.any(mu[support] == 0):", "if np.any(mu[support] < 0):"),
        Mistake("q2", "random", "the predicted fraction flattened: the shape of horizons is lost",
                "(-np.asarray(horizons, dtype=float))", "(-np.ravel(horizons).astype(float))"),
        Mistake("q3", "horizons", "the ratio of step H only, not the sum over the first H steps",
                "prefix = np.cumsum(log_rho, axis=1)", "prefix = log_rho"),
        Mistake("q3", "long", "cumulative product of the ratios (overflows) instead of a sum of logs",
                "prefix = np.cumsum(log_rho, axis=1)",
                "prefix = np.log(np.cumprod(np.exp(log_rho), axis=1))"),
        Mistake("q3", "horizons", "off by one: the log weight of the first H + 1 steps",
                "prefix[:, h - 1]", "prefix[:, h]"),
    ],
    "ppo": [
        Mistake("q1", "four-cases", "PPO loss without the min (the clipped term alone)",
                "return -torch.minimum(unclipped, clipped).mean()", "return -clipped.mean()"),
        Mistake("q1", "random", "max instead of min: the pessimistic bound made optimistic",
                "torch.minimum(unclipped, clipped)", "torch.maximum(unclipped, clipped)"),
        Mistake("q1", "detached", "the old log-probability is not detached: the gradient reaches the old policy",
                "torch.exp(logp_new - logp_old.detach())", "torch.exp(logp_new - logp_old)"),
        Mistake("q1", "detached", "the advantages are not detached",
                "advantages = advantages.detach()\n    ", ""),
        Mistake("q2", "public-1", "returns a 0-d tensor where the prompt asks for a float",
                '"approx_kl": float(((ratio - 1.0) - log_ratio).mean()),',
                '"approx_kl": ((ratio - 1.0) - log_ratio).mean(),'),
        Mistake("q2", "random", "approx_kl as the mean of -log(ratio) (the k1 estimator)",
                "float(((ratio - 1.0) - log_ratio).mean())", "float((-log_ratio).mean())"),
        Mistake("q2", "zero-advantage", "a zero advantage counted as binding above the interval",
                "(ratio > 1.0 + clip_eps) & (advantages > 0)", "(ratio > 1.0 + clip_eps) & (advantages >= 0)"),
        Mistake("q3", "episode-ends", "GAE recursion that runs across episode ends",
                "running = delta[t] + gamma * lam * (1.0 - ends[t]) * running",
                "running = delta[t] + gamma * lam * running"),
        Mistake("q3", "episode-ends", "the recursion stops at terminations only, not at truncations",
                "ends = terminated | np.asarray(truncated, dtype=bool)", "ends = terminated"),
        Mistake("q3", "truncation", "a truncation treated as a termination (no bootstrap)",
                "delta = rewards + gamma * (1.0 - terminated) * next_values",
                "delta = rewards + gamma * (1.0 - ends) * next_values"),
        Mistake("q3", "truncation", "a step both terminated and truncated bootstrapped from a terminal state",
                "terminated = np.asarray(terminated, dtype=bool)",
                "terminated = np.asarray(terminated, dtype=bool) & ~np.asarray(truncated, dtype=bool)"),
    ],
    "trpo": [
        Mistake("q1", "solve", "the residual not updated: r stays b",
                "r -= alpha * Ap", "r = r"),
        Mistake("q1", "zero-rhs", "no stopping test: 0 / 0 on a zero right-hand side",
                "if float(rdotr) <= tol**2:", "if False:"),
        Mistake("q1", "stopping", "stops on tol instead of tol**2 for the squared residual",
                "if float(rdotr) <= tol**2:", "if float(rdotr) <= tol:"),
        Mistake("q1", "float64", "float32 zeros as the starting point: the update is rounded to float32",
                "x = torch.zeros_like(b)", "x = torch.zeros(b.shape)"),
        Mistake("q2", "edge", "trust-region step size without the factor 2",
                "torch.sqrt(2.0 * delta / torch.dot(s, Fs))", "torch.sqrt(delta / torch.dot(s, Fs))"),
        Mistake("q3", "kl random", "line search that ignores the KL constraint",
                "if kl <= delta and surrogate - surrogate_old > 0:", "if surrogate - surrogate_old > 0:"),
        Mistake("q3", "improve", "line search that ignores the improvement of the surrogate",
                "if kl <= delta and surrogate - surrogate_old > 0:", "if kl <= delta:"),
        Mistake("q3", "shrink", "the shrink factor fixed at 0.5 instead of the argument",
                "theta = theta_old + shrink**k * full_step", "theta = theta_old + 0.5**k * full_step"),
        Mistake("q3", "reject", "returns the last candidate when every candidate fails",
                "return theta_old, False, max_backtracks", "return theta, False, max_backtracks"),
        Mistake("q3", "last-try", "off by one: max_backtracks candidates instead of max_backtracks + 1",
                "for k in range(max_backtracks + 1):", "for k in range(max_backtracks):"),
        Mistake("q3", "kl", "returns the old parameters on success",
                "return theta, True, k", "return theta_old, True, k"),
    ],
    "weighted_is": [
        Mistake("q1", "random", "weighted estimate normalised by the number of episodes, not the sum of the weights",
                "np.divide(sum_wg, sum_w, out=weighted, where=sum_w > 0)", "weighted = ordinary.copy()"),
        Mistake("q1", "leading-zeros", "0 / 0 left as nan while every weight so far is 0",
                "weighted = np.zeros_like(sum_wg)\n    np.divide(sum_wg, sum_w, out=weighted, where=sum_w > 0)",
                "weighted = sum_wg / sum_w"),
        Mistake("q1", "random", "ordinary estimate divided by the number of episodes of positive weight",
                "ordinary = sum_wg / np.arange(1, len(w) + 1)",
                "ordinary = sum_wg / np.maximum(np.cumsum(w > 0), 1)"),
        Mistake("q2", "random", "C updated after V: the first positive weight divides by 0",
                "C += w[k]\n        if w[k] > 0:\n            V += w[k] / C * (G[k] - V)",
                "if w[k] > 0:\n            V += w[k] / C * (G[k] - V)\n        C += w[k]"),
        Mistake("q2", "start", "updates on zero weights too: 0 / 0 before the first positive weight",
                "if w[k] > 0:\n            V +=", "V +="),
        Mistake("q2", "start", "v0 ignored: the estimate starts at 0",
                "C, V = 0.0, float(v0)", "C, V = 0.0, 0.0"),
        Mistake("q2", "random", "the old estimate not subtracted: V += w / C * G",
                "V += w[k] / C * (G[k] - V)", "V += w[k] / C * G[k]"),
        Mistake("q3", "random", "the squared error of the average estimate (the squared bias only)",
                "return np.mean((estimates - v_true) ** 2, axis=0)",
                "return (np.mean(estimates, axis=0) - v_true) ** 2"),
        Mistake("q3", "random", "the mean over the episodes instead of over the runs",
                "** 2, axis=0)", "** 2, axis=1)"),
    ],
    "traces": [
        Mistake("q1", "episode-ends stop-at-ends", "Retrace traces not stopped at episode ends",
                "cont = (1.0 - dones[t]) * c[t + 1] * (targets[t + 1] - q_taken[t + 1])",
                "cont = c[t + 1] * (targets[t + 1] - q_taken[t + 1])"),
        Mistake("q1", "episode-ends", "the ratio of the evaluated action: c_t instead of c_t+1",
                "c[t + 1] * (targets", "c[t] * (targets"),
        Mistake("q1", "episode-ends lambda-zero", "no truncation: c = lam * rho",
                "c = lam * np.exp(np.minimum(0.0, np.asarray(log_rho, dtype=float)))",
                "c = lam * np.exp(np.asarray(log_rho, dtype=float))"),
        Mistake("q1", "lambda-zero", "lambda left out of the trace", "c = lam * np.exp(", "c = np.exp("),
        Mistake("q2", "episode-ends stop-at-ends", "V-trace traces not stopped at episode ends",
                "gamma * (1.0 - dones[t]) * c[t]", "gamma * c[t]"),
        Mistake("q2", "episode-ends", "the two levels swapped: c_bar on the TD error, rho_bar on the trace",
                "rho_t = np.exp(np.minimum(log_rho, np.log(rho_bar)))\n    c = np.exp(np.minimum(log_rho, np.log(c_bar)))",
                "rho_t = np.exp(np.minimum(log_rho, np.log(c_bar)))\n    c = np.exp(np.minimum(log_rho, np.log(rho_bar)))"),
        Mistake("q2", "episode-ends", "the trace uses the next step's ratio c_t+1 (Retrace's convention)",
                "* c[t] * (vs[t + 1]", "* c[t + 1] * (vs[t + 1]"),
        Mistake("q2", "episode-ends", "the current ratio not truncated: rho_t instead of min(rho_bar, rho_t)",
                "rho_t = np.exp(np.minimum(log_rho, np.log(rho_bar)))", "rho_t = np.exp(log_rho)"),
        Mistake("q3", "random", "not normalised", "return w / w.sum(axis=1, keepdims=True)", "return w"),
        Mistake("q3", "random", "the roles swapped: min(rho_bar * pi, mu)",
                "np.minimum(rho_bar * np.where(mu > 0, mu, 1.0), pi)", "np.minimum(rho_bar * pi, mu)"),
        Mistake("q3", "unsupported", "inf * 0 is nan where the behaviour never takes an action",
                "w = np.where(mu > 0, np.minimum(rho_bar * np.where(mu > 0, mu, 1.0), pi), 0.0)",
                "w = np.minimum(rho_bar * mu, pi)"),
        Mistake("q3", "random", "normalised over the states instead of the actions",
                "w.sum(axis=1, keepdims=True)", "w.sum(axis=0, keepdims=True)"),
    ],
    "off_policy_evaluation": [
        Mistake("q1", "random unreached", "d^pi pushed forward with mu instead of pi",
                'd_pi[t + 1] = np.einsum("s,sa,sau->u", d_pi[t], pi, P)',
                'd_pi[t + 1] = np.einsum("s,sa,sau->u", d_pi[t], mu, P)'),
        Mistake("q1", "random", "the ratio upside down: d^mu / d^pi",
                "np.divide(d_pi, d_mu, out=np.zeros_like(d_pi), where=d_mu > 0)",
                "np.divide(d_mu, d_pi, out=np.zeros_like(d_pi), where=d_pi > 0)"),
        Mistake("q1", "unreached", "a plain division: 0 / 0 is nan where neither policy is",
                "return np.divide(d_pi, d_mu, out=np.zeros_like(d_pi), where=d_mu > 0)",
                "return d_pi / d_mu"),
        Mistake("q1", "support", "no support check: a ratio that does not exist comes back as 0",
                "if np.any(unsupported):", "if False:"),
        Mistake("q1", "support", "support checked on the actions (mu = 0 < pi), not on the states",
                "unsupported = (d_mu == 0) & (d_pi > 0)", "unsupported = (mu == 0) & (pi > 0)"),
        Mistake("q2", "random", "the per-decision product of the ratios up to t instead of one action ratio",
                "rho = np.exp(np.where(mask, log_rho, 0.0))",
                "rho = np.exp(np.cumsum(np.where(mask, log_rho, 0.0), axis=1))"),
        Mistake("q2", "padding", "padding removed by multiplying by the mask: 0 * nan is nan",
                "r = np.where(mask, rewards, 0.0)", "r = np.asarray(rewards) * mask"),
        Mistake("q2", "padding", "the mask forgotten on the log ratios",
                "rho = np.exp(np.where(mask, log_rho, 0.0))", "rho = np.exp(log_rho)"),
        Mistake("q2", "zero-ratio", "a log ratio of -inf treated as padding: ratio 1 instead of 0",
                "np.where(mask, log_rho, 0.0)", "np.where(mask & np.isfinite(log_rho), log_rho, 0.0)"),
        Mistake("q2", "random", "rewards not discounted",
                "discount = gamma ** np.arange(r.shape[1])", "discount = np.ones(r.shape[1])"),
        Mistake("q2", "random", "the standard deviation with ddof=0", "terms.std(ddof=1)", "terms.std()"),
        Mistake("q2", "random", "the standard deviation used as the standard error (no square root of n)",
                " / np.sqrt(len(terms))", ""),
        Mistake("q3", "random", "ln(1/delta) instead of ln(2/delta)",
                "log_term = np.log(2.0 / delta)", "log_term = np.log(1.0 / delta)"),
        Mistake("q3", "random truncation", "no truncation: X / c instead of min(X, c) / c",
                "z = np.minimum(x, c) / c", "z = x / c"),
        Mistake("q3", "random", "Y instead of Y / c in the sums",
                "z = np.minimum(x, c) / c", "z = np.minimum(x, c)"),
        Mistake("q3", "random", "divided by n instead of S, the sum of the 1 / c_i",
                "- spread) / S)", "- spread) / n)"),
        Mistake("q3", "constant", "the bracket as n sum z^2 - (sum z)^2: negative by rounding, its root nan",
                "bracket = n * np.sum((z - z.mean()) ** 2)", "bracket = n * np.sum(z**2) - z.sum() ** 2"),
        Mistake("q4", "random", "the variance with ddof=0", "x.var(ddof=1)", "x.var()"),
        Mistake("q4", "random", "ln(1/delta) instead of ln(2/delta)",
                "log_term = np.log(2.0 / delta)", "log_term = np.log(1.0 / delta)"),
        Mistake("q4", "random", "the range term over 3n instead of 3(n - 1)",
                "7 * b * log_term / (3 * (n - 1))", "7 * b * log_term / (3 * n)"),
        Mistake("q4", "above-range", "no range check: a bound that does not hold is returned",
                "if np.any(x > b):", "if False:"),
        Mistake("q4", "above-range", "the range check rejects a term equal to b",
                "if np.any(x > b):", "if np.any(x >= b):"),
    ],
}

# Submissions that do not do the work: every graded function calls the companion's version of it.
# Each is a correct answer, so only the own-work test can (and must) stop it. A function the
# companion has no version of is answered correctly by hand (its question has another that calls).
# The trace questions take rollouts (T, N) with episode ends; the companion takes one episode per
# row: a student calling it first cuts the rollout into episodes.
_SPLIT = """
    T, N = np.shape(dones)
    ends = [[t + 1 for t in range(T - 1) if dones[t][j]] for j in range(N)]
    rows = [(j, a, b) for j in range(N) for a, b in zip([0] + ends[j], ends[j] + [T], strict=True)]
    width = max(b - a for _, a, b in rows)

    def pad(x):
        out = np.zeros((len(rows), width))
        for i, (j, a, b) in enumerate(rows):
            out[i, : b - a] = np.asarray(x, dtype=float)[a:b, j]
        return out

    def unpad(y):
        out = np.zeros((T, N))
        for i, (j, a, b) in enumerate(rows):
            out[a:b, j] = y[i, : b - a]
        return out

    mask = pad(np.ones((T, N))) > 0"""

COMPANION = {
    "off_policy_evaluation": {
        "state_ratios": """
    mdp = cp.TabularMDP(np.asarray(P, dtype=float), np.zeros(np.shape(pi)), 1.0,
                        np.asarray(initial, dtype=float))
    return cp.state_distribution_ratios(mdp, pi, mu, horizon)""",
        "marginalized_estimate": """
    e = cp.marginalized_is(rewards, w, log_rho, gamma, mask)
    return e.estimate, e.stderr""",
        "truncated_lower_bound": """
    return cp.hcope_lower_bound(x, c, delta)""",
        "bernstein_lower_bound": """
    return cp.empirical_bernstein_lower_bound(x, b, delta)""",
    },
    "traces": {
        "retrace_targets": _SPLIT + """
    return unpad(cp.retrace_targets(pad(rewards), pad(q_taken), pad(v_next), pad(log_rho), gamma, lam,
                                    mask=mask))""",
        "vtrace_targets": _SPLIT + """
    return unpad(cp.vtrace_targets(pad(rewards), pad(values), pad(next_values), pad(log_rho), gamma,
                                   rho_bar=rho_bar, c_bar=c_bar, mask=mask).vs)""",
        "vtrace_policy": """
    return cp.vtrace_policy(pi, mu, rho_bar)""",
    },
    "offpolicy_gradient": {
        "stale_batch_gradient": """
    batch = cp.bandits.BanditBatch(np.asarray(actions), np.asarray(rewards, dtype=float),
                                   np.asarray(logp_behavior, dtype=float))
    return cp.bandit_gradient(batch, logits).estimate""",
        "softmax_scores": """
    return cp.score_function(logits, states, actions)""",
        "prefix_weighted_gradient": """
    m = np.asarray(mask, dtype=bool)
    g = np.where(m[..., None], scores, 0.0)
    r = np.where(m, rewards, 0.0) * gamma ** np.arange(m.shape[1])
    prefix = np.exp(cp.per_decision_log_weights(np.where(m, log_rho, 0.0)))
    to_go = np.flip(np.cumsum(np.flip(r, axis=1), axis=1), axis=1)
    return np.einsum("nt,ntp->np", prefix * to_go, g)""",
        "per_decision_gradient": """
    m = np.asarray(mask, dtype=bool)
    g = np.where(m[..., None], scores, 0.0)
    r = np.where(m, rewards, 0.0) * gamma ** np.arange(m.shape[1])
    prefix = np.exp(cp.per_decision_log_weights(np.where(m, log_rho, 0.0)))
    to_go = np.flip(np.cumsum(np.flip(prefix * r, axis=1), axis=1), axis=1)
    return np.einsum("nt,ntp->np", to_go, g)""",
        "z_scores": """
    terms = np.asarray(terms, dtype=float)
    diff = terms.mean(axis=0) - exact
    with np.errstate(divide="ignore", invalid="ignore"):
        z = diff / (terms.std(axis=0, ddof=1) / np.sqrt(len(terms)))
    return np.where(diff == 0, 0.0, z)""",
    },
    "weighted_is": {
        "running_estimates": """
    est = cp.running_estimates(w, G)
    return est.ordinary, est.weighted""",
        "incremental_wis": """
    est = cp.running_estimates(w, G).weighted
    return np.where(np.cumsum(w) > 0, est, float(v0))""",
        "mse_by_episode": """
    return np.mean((np.asarray(estimates, dtype=float) - v_true) ** 2, axis=0)""",
    },
    "estimators": {
        "discounted_returns": """
    r = np.where(mask, rewards, 0.0) if mask is not None else np.asarray(rewards, dtype=float)
    return cp.trajectory_is(r, np.zeros_like(r), gamma, mask).terms""",
        "trajectory_log_weights": """
    lr = np.where(mask, log_rho, 0.0) if mask is not None else np.asarray(log_rho, dtype=float)
    try:
        return cp.trajectory_log_weights(lr)
    except ValueError as err:
        raise ValueError(f"log_rho: {err}") from None""",
        "ordinary_is": """
    return cp.ordinary_is(G, log_w, log=True).estimate""",
        "weighted_is": """
    return cp.weighted_is(G, log_w, log=True).estimate""",
        "per_decision_is": """
    r = np.where(mask, rewards, 0.0) if mask is not None else rewards
    lr = np.where(mask, log_rho, 0.0) if mask is not None else log_rho
    return cp.per_decision_is(r, lr, gamma).estimate""",
    },
    "variance": {
        "ess": """
    return cp.effective_sample_size(np.asarray(log_w, dtype=float), log=True)""",
        "chi_square": """
    return cp.chi_square_divergence(pi, mu)""",
        "predicted_ess_fraction": """
    return (1.0 + chi2) ** (-np.asarray(horizons, dtype=float))""",
        "horizon_log_weights": """
    return np.stack([cp.trajectory_log_weights(np.asarray(log_rho)[:, :h]) for h in horizons])""",
    },
    "ppo": {
        "clipped_surrogate_loss": """
    return cp.clipped_surrogate(logp_new - logp_old.detach(), advantages.detach(), clip_eps)[0]""",
        "ppo_diagnostics": """
    info = cp.clipped_surrogate((logp_new - logp_old).detach(), advantages.detach(), clip_eps)[1]
    return {"approx_kl": float(info["approx_kl_k3"]), "clip_fraction": float(info["clip_fraction"]),
            "clip_active_fraction": float(info["clip_active_fraction"])}""",
        "gae": """
    return cp.gae(rewards, values, terminated, truncated, last_values, gamma, lam)""",
    },
    "trpo": {
        "conjugate_gradient": """
    return cp.conjugate_gradient(Avp, b, iters=iters, tol=tol)""",
        "trust_region_step": """
    return cp.trust_region_step(s, Fs, delta)""",
        "line_search": """
    res = cp.backtracking_line_search(lambda th: (*evaluate(th), 0.0), theta_old, full_step, 1.0,
                                      delta, max_backtracks=max_backtracks, shrink=shrink)
    return (res.theta if res.accepted else theta_old), res.accepted, res.n_backtracks""",
    },
}


# ---------------------------------------------------------------------------------------------
# building the submissions


@dataclass(frozen=True)
class Built:
    name: str
    zip: Path
    solution: Path
    student: Path
    workdir: Path
    manifest: dict
    tests: Path


def build(name: str, out: Path, seed: int | None = None) -> Built:
    """``build_assignments`` without otter's own run of the tests (the grading below checks them)."""
    manifest = ba.build(name, out, seed=seed, run_tests=False)
    target = out / name
    zips = sorted((target / "autograder").glob(f"{name}-autograder_*.zip"))
    assert len(zips) == 1, zips
    return Built(name, zips[0], target / "autograder" / f"{name}.ipynb",
                 target / "student" / f"{name}.ipynb", target, manifest,
                 extract_tests(zips[0], target / "unpacked"))


def defining_cell(nb, function: str):
    """The code cell that defines ``function`` at its top level."""
    hits = [c for c in nb.cells if c.cell_type == "code"
            and re.search(rf"^def {function}\(", c.source, re.M)]
    assert len(hits) == 1, f"{len(hits)} cells define {function}"
    return hits[0]


def with_mistakes(built: Built, mistakes: list[Mistake], label: str) -> Path:
    """The solution notebook with ``mistakes`` (at most one per question) substituted in."""
    assert len({m.question for m in mistakes}) == len(mistakes)
    nb = nbformat.read(built.solution, as_version=4)
    for m in mistakes:
        cells = list({id(c): c for c in (defining_cell(nb, f) for f in
                                         built.manifest["questions"][m.question]["functions"])}.values())
        hits = [c for c in cells if m.old in c.source]
        assert len(hits) == 1 and hits[0].source.count(m.old) == 1, \
            f"substitution for {m.question} ({m.what}) matched {len(hits)} cells"
        hits[0].source = hits[0].source.replace(m.old, m.new)
    path = built.workdir / f"{built.name}_{label}.ipynb"
    nbformat.write(nb, path)
    return path


def with_companion_answers(built: Built) -> Path:
    """The student notebook with every graded function answered by a call of the companion."""
    nb = nbformat.read(built.student, as_version=4)
    for function, body in COMPANION[built.name].items():
        cell = defining_cell(nb, function)
        head, sep, tail = cell.source.partition("\n    ...\n")
        assert sep, f"no '...' body for {function} in the student notebook"
        cell.source = head + body + "\n" + tail
    path = built.workdir / f"{built.name}_companion.ipynb"
    nbformat.write(nb, path)
    return path


def rounds(mistakes: list[Mistake]) -> list[list[Mistake]]:
    """Mistakes grouped so that each group holds at most one per question."""
    out: list[list[Mistake]] = []
    for m in mistakes:
        for group in out:
            if all(g.question != m.question for g in group):
                group.append(m)
                break
        else:
            out.append([m])
    return out


@pytest.fixture(scope="module")
def graded(tmp_path_factory) -> dict:
    """Build every assignment and grade its submissions: {(name, label): scores or error}."""
    mp = pytest.MonkeyPatch()
    kernels = Path(sys.prefix) / "share" / "jupyter"  # this environment's kernel python3 first
    mp.setenv("JUPYTER_PATH", os.pathsep.join(filter(None, [str(kernels), os.environ.get("JUPYTER_PATH")])))
    mp.setenv("OMP_NUM_THREADS", "1")  # inherited by the grading kernels (torch threads)
    mp.setenv("MPLBACKEND", "Agg")
    results, futures = {}, {}
    out = tmp_path_factory.mktemp("dist")
    try:
        builds = {}
        # fork: the workers inherit the imported otter; kernels are started only in the workers.
        # Each assignment's kernels start as soon as it is built; the rest runs in this process.
        with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork")) as pool:
            for name in NAMES:
                try:
                    b = builds[name] = results[(name, "built")] = build(name, out)
                except Exception as err:  # reported by every test of this assignment
                    results[(name, "built")] = err
                    continue
                for label, nb in (("solution", b.solution), ("student", b.student)):
                    futures[(name, "otter", label)] = pool.submit(
                        grade_with_otter, b.zip, nb, b.workdir / f"results-{label}")
            for name, b in builds.items():
                jobs = {"solution": lambda b=b: b.solution, "student": lambda b=b: b.student,
                        "companion": lambda b=b: with_companion_answers(b)}
                for i, group in enumerate(rounds(MISTAKES.get(name, []))):
                    jobs[f"round {i}"] = lambda b=b, g=group, i=i: with_mistakes(b, g, f"round{i}")
                for label, make in jobs.items():
                    try:
                        notebook = make()
                        results[(name, "in-process", label)] = grade_in_process(notebook, b.tests)
                    except Exception as err:
                        results[(name, "in-process", label)] = err
                        continue
                    if label in ALSO_WITH_OTTER.get(name, ()):
                        futures[(name, "otter", label)] = pool.submit(
                            grade_with_otter, b.zip, notebook, b.workdir / f"results-{label}")
            term = tmp_path_factory.mktemp("term")   # the same with a term seed, still in-process
            for name in builds:
                try:
                    b = results[(name, "term-built")] = build(name, term, seed=TERM_SEED)
                    results[(name, "term")] = [grade_in_process(b.solution, b.tests)] + [
                        grade_in_process(with_mistakes(b, group, f"term{i}"), b.tests)
                        for i, group in enumerate(rounds(MISTAKES[name]))]
                except Exception as err:
                    results[(name, "term")] = err
            for key, future in futures.items():
                try:
                    results[key] = future.result()
                except Exception as err:
                    results[key] = err
    finally:
        mp.undo()
    return results


def get(graded: dict, *key):
    result = graded[key]
    if isinstance(result, BaseException):
        raise result
    return result


def same_scores(a: dict, b: dict) -> bool:
    """Equal up to rounding ((score, max_score) per question: otter rounds what it reports)."""
    return a.keys() == b.keys() and all(abs(x - y) < 1e-6 for q in a for x, y in zip(a[q], b[q], strict=True))


def autograded(graded: dict, name: str) -> dict:
    return {q: v for q, v in get(graded, name, "built").manifest["questions"].items() if not v["manual"]}


# ---------------------------------------------------------------------------------------------
# the master notebooks


def master(name: str):
    return nbformat.read(ASSIGNMENTS / name / f"{name}.ipynb", as_version=4)


@pytest.mark.parametrize("name", NAMES)
def test_master_notebook_is_stripped(name):
    nb = master(name)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None


def ci_python() -> str:
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "test.yml").read_text())
    versions = {str(step["with"]["python-version"]) for job in workflow["jobs"].values()
                for step in job["steps"] if "python-version" in step.get("with", {})}
    assert len(versions) == 1, versions
    return versions.pop()


@pytest.mark.parametrize("name", NAMES)
def test_autograder_runs_the_python_of_ci(graded, name):
    """The grading image (Gradescope) installs the Python version that CI tests the course with."""
    built = get(graded, name, "built")
    assert str(ba.assignment_config(master(name)).get("python_version")) == ci_python()
    with zipfile.ZipFile(built.zip) as z:
        env = yaml.safe_load(z.read("environment.yml"))
    assert f"python={ci_python()}" in env["dependencies"]


def header_points(nb) -> dict[str, int]:
    """The points table at the top of a master notebook: {"1": 2, ..., "total": 12}."""
    rows = re.findall(r"^\|\s*(\d+)\s*\|[^|\n]*\|\s*(\d+)[^|\n]*\|\s*$", nb.cells[1].source, re.M)
    total = re.search(r"\*\*total\*\*.*\|\s*\*\*(\d+)\*\*\s*\|", nb.cells[1].source)
    assert rows and total, "no points table with a total row in the notebook's first markdown cell"
    return {**{k: int(v) for k, v in rows}, "total": int(total.group(1))}


@pytest.mark.parametrize("name", NAMES)
def test_points_in_the_prompts_match_the_grading(name):
    """Header table, question prompts and question configs agree, hand-graded questions included."""
    nb = master(name)
    questions = ba.parse(nb)
    table = header_points(nb)
    points = {q.name: int(q.config["points"]) for q in questions}
    assert {f"q{k}": v for k, v in table.items() if k != "total"} == points
    assert table["total"] == sum(points.values())
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    for q in questions:
        n = q.name[1:]
        assert re.search(rf"\*\*Question {n} \({points[q.name]} points?[,)]", text), \
            f"the prompt of {q.name} does not state its {points[q.name]} points"


@pytest.mark.parametrize("name", NAMES)
def test_student_version_has_no_solutions(graded, name):
    built = get(graded, name, "built")
    student = nbformat.read(built.student, as_version=4)
    text = "\n".join(c.source for c in student.cells)
    for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN TESTS", "# HIDDEN", "# stored"):
        assert marker not in text
    for mistake in MISTAKES.get(name, []):
        assert mistake.old not in text, f"solution line left in the student notebook: {mistake.old}"


def cases_of(built: Built) -> dict[str, list[dict]]:
    """The autograder's test cases per question, in order: code and hidden flag."""
    out = {}
    for path in sorted(built.tests.glob("*.py")):
        spec = {}
        exec(path.read_text(), spec)
        out[path.stem] = spec["test"]["suites"][0]["cases"]
    return out


@pytest.mark.parametrize("name", NAMES)
def test_tests_carry_no_reference_implementation(graded, name):
    """Public tests hold a worked example (no companion, no helper function); hidden tests
    compare with values stored when the autograder was built, not with the companion."""
    built = get(graded, name, "built")
    manifest = built.manifest["questions"]
    for q, cases in cases_of(built).items():
        assert len(cases) == len(manifest[q]["cases"])
        for case, info in zip(cases, manifest[q]["cases"], strict=True):
            code = case["code"]
            assert case["hidden"] == info["hidden"]
            if info["label"] == "own-work":
                continue
            assert not re.search(r"\bcp\.|\bcompanion\b", code), f"{q} {info['label']} uses the companion"
            if not case["hidden"]:
                assert not re.search(r"^>>> def ", code, re.M), f"{q}: a public test defines a function"


# ---------------------------------------------------------------------------------------------
# grading


@pytest.mark.parametrize("name", NAMES)
def test_solution_scores_full_marks(graded, name):
    scores = get(graded, name, "otter", "solution")
    assert set(scores) == set(autograded(graded, name))
    lost = {q: s for q, s in scores.items() if s[0] != s[1]}
    assert not lost, f"{name}: the solution loses points: {lost}"
    assert same_scores(get(graded, name, "in-process", "solution").points, scores)


@pytest.mark.parametrize("name", NAMES)
def test_untouched_student_notebook_scores_zero(graded, name):
    scores = get(graded, name, "otter", "student")
    assert set(scores) == set(autograded(graded, name))
    earned = {q: s for q, s in scores.items() if s[0] != 0}
    assert not earned, f"{name}: an empty answer earns points: {earned}"
    assert same_scores(get(graded, name, "in-process", "student").points, scores)


@pytest.mark.parametrize("name", NAMES)
def test_answers_that_call_the_companion_score_zero(graded, name):
    """Correct answers that call the companion: every test passes but own-work, so 0 points. A
    question whose answers are written by hand (the companion has no version of them) keeps its
    points: the own-work test does not reject honest code."""
    result = get(graded, name, "in-process", "companion")
    questions = autograded(graded, name)
    assert set(COMPANION[name]) == {f for q in questions.values() for f in q["functions"]}
    calls = 0
    for q, info in questions.items():
        failed = {c["label"] for c, ok in zip(info["cases"], result.cases[q], strict=True) if not ok}
        if any("cp." in COMPANION[name][f] for f in info["functions"]):
            calls += 1
            assert result.points[q][0] == 0, f"{name} {q}: answers that call the companion earn points"
            assert failed == {"own-work"}, f"{name} {q}: tests failed by the companion answers: {failed}"
        else:
            assert not failed and result.points[q][0] == result.points[q][1], \
                f"{name} {q}: honest answers fail {failed}"
    assert calls >= len(questions) - 1


@pytest.mark.parametrize("name", [n for n in NAMES if n in ALSO_WITH_OTTER])
def test_otter_run_agrees_with_the_in_process_grading(graded, name):
    """Otter's own grading of a cheat and of mistakes gives the scores the in-process grader gives
    (and which the tests above check); the cheat scores 0 everywhere."""
    for label in ALSO_WITH_OTTER[name]:
        scores = get(graded, name, "otter", label)
        assert same_scores(get(graded, name, "in-process", label).points, scores), label
    assert all(score == 0 for score, _ in get(graded, name, "otter", "companion").values())


@pytest.mark.parametrize("name", NAMES)
def test_typical_mistakes_lose_exactly_their_questions(graded, name):
    questions = autograded(graded, name)
    groups = rounds(MISTAKES[name])
    assert len(MISTAKES[name]) >= 2
    for i, group in enumerate(groups):
        result = get(graded, name, "in-process", f"round {i}")
        mistaken = {m.question: m for m in group}
        for q, (score, max_score) in result.points.items():
            if q not in mistaken:
                assert score == pytest.approx(max_score), f"{name} {q}: lost points to a mistake elsewhere ({group})"
                continue
            m = mistaken[q]
            assert score == 0, f"{name} {q}: '{m.what}' still earns {score}/{max_score}"
            labels = [c["label"] for c in questions[q]["cases"]]
            for label in m.labels:
                assert label in labels, f"{name} {q}: no test labelled {label!r}"
                assert not result.cases[q][labels.index(label)], \
                    f"{name} {q}: '{m.what}' passes the test {label!r} that should catch it"


@pytest.mark.parametrize("name", NAMES)
def test_every_hidden_test_catches_a_mistake(graded, name):
    """Each hidden test (own-work aside: the companion answers) is named by a mistake it fails."""
    for q, info in autograded(graded, name).items():
        hidden = {c["label"] for c in info["cases"] if c["hidden"]} - {"own-work"}
        named = {label for m in MISTAKES[name] if m.question == q for label in m.labels}
        assert hidden <= named, f"{name} {q}: hidden tests that no mistake fails: {hidden - named}"


@pytest.mark.parametrize("name", NAMES)
def test_a_term_seed_changes_only_the_hidden_inputs(graded, name):
    """``make assignments SEED=...``: the hidden tests that draw random inputs get new ones (and new
    stored values); the student notebook, the public tests and the other hidden tests stay."""
    base, term = get(graded, name, "built"), get(graded, name, "term-built")
    assert term.manifest["seed"] == TERM_SEED and base.manifest["seed"] is None
    student = [nbformat.read(b.student, as_version=4) for b in (base, term)]
    assert [c.source for c in student[0].cells] == [c.source for c in student[1].cells]
    seeded = {(q.name, ba.test_label(master(name).cells[i].source)) for q in ba.parse(master(name))
              for i in q.test_cells if ba.is_hidden(master(name).cells[i].source)
              and ba.SEED_CALL.search(master(name).cells[i].source)}
    assert seeded, "no hidden test draws random inputs"
    base_cases, term_cases = cases_of(base), cases_of(term)
    for q, info in base.manifest["questions"].items():
        if info["manual"]:
            continue
        for c, a, b in zip(info["cases"], base_cases[q], term_cases[q], strict=True):
            assert (a["code"] != b["code"]) == ((q, c["label"]) in seeded), f"{q} {c['label']}"


@pytest.mark.parametrize("name", NAMES)
def test_a_term_variant_grades_like_the_master(graded, name):
    """With a term seed too, the solution scores full marks and every mistake loses its question."""
    solution, *graded_rounds = get(graded, name, "term")
    assert all(s == m for s, m in solution.points.values()), solution.points
    for group, scores in zip(rounds(MISTAKES[name]), graded_rounds, strict=True):
        for m in group:
            assert scores.points[m.question][0] == 0, f"{name} {m.question}: '{m.what}' keeps its points"


# ---------------------------------------------------------------------------------------------
# the documentation and the Makefile


def test_make_assignments_builds_every_assignment():
    make = (ROOT / "Makefile").read_text()
    listed = re.search(r"^ASSIGNMENTS \?= (.*)$", make, re.M)
    assert listed and listed.group(1).split() == ba.NAMES


def doc_row(text: str, name: str) -> list[str]:
    rows = [line for line in text.splitlines() if re.match(rf"^\| `{name}[`/]", line)]
    assert len(rows) == 1, f"{len(rows)} rows for {name}"
    return [cell.strip() for cell in rows[0].strip("|").split("|")]


@pytest.mark.parametrize("doc", ["book/instructors.md", "assignments/README.md"])
@pytest.mark.parametrize("name", ba.NAMES)
def test_docs_list_every_assignment_with_its_points(doc, name):
    """Both tables list the assignment, the points of its questions in order and its total
    (hand-graded questions included), and the chapters it builds on: as {doc} links in the book,
    by title in the README, never by number."""
    questions = ba.parse(master(name))
    points = [int(q.config["points"]) for q in questions]
    _, chapters, listed, total = doc_row((ROOT / doc).read_text(), name)
    assert [int(p) for p in re.findall(r"\((\d+)", listed)] == points
    assert int(re.match(r"\d+", total).group()) == sum(points)
    assert not re.search(r"chapter \d|\bch\. ?\d", chapters, re.I)
    if doc.startswith("book"):
        assert re.fullmatch(r"(\{doc\}`\w+`(, )?)+", chapters)
    else:
        assert chapters and "{doc}" not in chapters


@pytest.mark.parametrize("name", ba.NAMES)
def test_notebooks_refer_to_chapters_by_title(name):
    text = "\n".join(c.source for c in master(name).cells if c.cell_type == "markdown")
    assert not re.search(r"\bchapters? \d", text, re.I)


# ---------------------------------------------------------------------------------------------
# the build's machinery, on small cases


@pytest.mark.parametrize("value", [
    1.5, -float("inf"), 7, True, None, "x", np.float64(0.1), np.arange(3), np.array([[True, False]]),
    np.array([1.0, np.nan, np.inf]), (np.zeros(2), 3, {"a": [1.0, 2.0]}),
])
def test_stored_values_are_written_back_exactly(value):
    import torch

    back = eval(ba.literal(value), {"np": np})
    if isinstance(value, np.ndarray):
        assert back.dtype == value.dtype
        assert np.array_equal(back, value, equal_nan=value.dtype.kind == "f")
    elif isinstance(value, tuple):
        assert np.array_equal(back[0], value[0]) and back[1:] == value[1:]
    else:
        assert back == value and type(back) is type(value) or isinstance(value, np.floating)
    tensor = torch.tensor([0.5, -2.0], dtype=torch.float64)
    assert torch.equal(eval(ba.literal(tensor), {"torch": torch}), tensor)


@pytest.mark.parametrize("source, calls", [
    ("_e = cp.marginalized_is(_r, _w)\n_expected = _e.estimate\n", True),
    ("import companion\n", True),
    ("_expected = 2.5  # stored\n# cp.marginalized_is gives the same\n", False),
    ("_cp = 1\n_x = _cp + 1\n", False),
])
def test_the_build_finds_companion_calls_in_hidden_tests(source, calls):
    """The build rejects a hidden test that uses the companion outside its stored lines."""
    assert ba.calls_package(source) == calls


OWN_WORK_CASES = {
    "def f(x):\n    return np.sum(x)": True,
    "def f(x):\n    return cp.trajectory_log_weights(x)": False,
    "from companion.estimators import trajectory_is as tis\ndef f(x):\n    return tis(x, x)": False,
    "def helper(x):\n    return cp.effective_sample_size(x)\ndef f(x):\n    return helper(x) + 1": False,
    "def f(x):\n    import companion\n    return companion.effective_sample_size(x)": False,
    "def f(x):\n    m = __import__('companion')\n    return m.effective_sample_size(x)": False,
    "def make():\n    g = cp.effective_sample_size\n    def inner(x):\n        return g(x)\n    return inner\nf = make()": False,
    "def f(x):\n    data = {'companion': 1}\n    return x.mean() + len(data)": True,
}


@pytest.mark.parametrize("source, honest", OWN_WORK_CASES.items())
def test_the_own_work_test_rejects_calls_of_the_companion(source, honest):
    import companion

    env = {"__name__": "__main__", "np": np, "cp": companion}
    exec(source, env)
    check = ba.OWN_WORK.format(names="f", package=ba.PACKAGE, functions="f")
    if honest:
        exec(check, dict(env))
    else:
        with pytest.raises(AssertionError, match="uses the companion package"):
            exec(check, dict(env))
