"""The graded assignments grade correctly: full marks, zero marks, and typical mistakes.

For every master notebook ``assignments/<name>/<name>.ipynb`` this file runs ``otter assign`` once
and grades three notebooks with ``otter run`` (a module-scoped fixture does all of it; otter's
Python API is used so that its slow import is paid once, and the twelve gradings run two at a
time in forked worker processes, since each one mostly waits for its own kernel):

* the solution notebook must score full marks on every autograded question;
* the untouched student notebook must score 0 on every question whose code the student writes;
* the solution notebook with typical mistakes (small textual substitutions, each checked to match
  exactly once) must lose all the points of each mistaken question and keep every other point.

Needs otter-grader (``pip install -r requirements-instructor.txt``); skipped without it, except
under CI (``CI`` set), where a missing otter is an error.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest

if not os.environ.get("CI"):
    pytest.importorskip("otter", reason="otter-grader not installed: pip install -r requirements-instructor.txt")

import otter.assign  # noqa: E402
import otter.run  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ASSIGNMENTS = ROOT / "assignments"
NAMES = ["estimators", "variance", "ppo", "trpo"]
# Written answers, graded by hand: otter reports them with 0 points until an instructor grades them.
MANUAL = {"variance": {"q4"}}


@dataclass(frozen=True)
class Mistake:
    question: str
    what: str
    old: str
    new: str


MISTAKES = {
    "estimators": [
        Mistake("q4", "weighted IS without the normalisation: divides by n, not by the sum of weights",
                "return float(np.sum(w * G) / np.sum(w))", "return float(np.mean(w * G))"),
        Mistake("q5", "per-decision IS that weights every reward by the whole trajectory's weight",
                "prefix = np.exp(np.cumsum(log_rho, axis=1))",
                "prefix = np.exp(log_rho.sum(axis=1, keepdims=True))"),
    ],
    "variance": [
        Mistake("q1", "ESS as 1 / sum(w^2) with weights that are not normalised",
                "w_bar = w / w.sum()", "w_bar = w"),
        Mistake("q3", "horizon sweep with the ratio of step H only, not the product of the first H",
                "prefix = np.cumsum(log_rho, axis=1)", "prefix = log_rho"),
    ],
    "ppo": [
        Mistake("q1", "PPO loss without the min (the clipped term alone)",
                "return -torch.minimum(unclipped, clipped).mean()", "return -clipped.mean()"),
        Mistake("q3", "GAE recursion that runs across episode ends",
                "running = delta[t] + gamma * lam * (1.0 - dones[t]) * running",
                "running = delta[t] + gamma * lam * running"),
    ],
    "trpo": [
        Mistake("q2", "trust-region step size without the factor 2",
                "torch.sqrt(2.0 * delta / torch.dot(s, Fs))", "torch.sqrt(delta / torch.dot(s, Fs))"),
        Mistake("q3", "line search that ignores the KL constraint",
                "if kl <= delta and surrogate - surrogate_old > 0:",
                "if surrogate - surrogate_old > 0:"),
    ],
}


@dataclass(frozen=True)
class Built:
    name: str
    zip: Path
    solution: Path
    student: Path
    workdir: Path


def build(name: str, out: Path) -> Built:
    """``otter assign`` (without re-running the tests: grading the solution checks them)."""
    otter.assign.main(str(ASSIGNMENTS / name / f"{name}.ipynb"), str(out), no_pdfs=True, no_run_tests=True)
    zips = sorted((out / "autograder").glob(f"{name}-autograder_*.zip"))
    assert len(zips) == 1, zips
    return Built(name, zips[0], out / "autograder" / f"{name}.ipynb", out / "student" / f"{name}.ipynb", out)


def with_mistakes(built: Built) -> Path:
    """The solution notebook with the assignment's typical mistakes substituted in."""
    nb = nbformat.read(built.solution, as_version=4)
    for mistake in MISTAKES[built.name]:
        hits = [c for c in nb.cells if c.cell_type == "code" and mistake.old in c.source]
        assert len(hits) == 1 and hits[0].source.count(mistake.old) == 1, \
            f"substitution for {mistake.question} ({mistake.what}) matched {len(hits)} cells"
        hits[0].source = hits[0].source.replace(mistake.old, mistake.new)
    path = built.workdir / f"{built.name}_mistakes.ipynb"
    nbformat.write(nb, path)
    return path


def grade(zip_path: Path, notebook: Path, out: Path) -> dict[str, tuple[float, float]]:
    """``otter run``: question name -> (score, max_score). Runs in a worker process."""
    out.mkdir()
    with open(out / "otter.log", "w") as log, contextlib.redirect_stdout(log):
        otter.run.main(str(notebook), autograder=str(zip_path), output_dir=str(out), no_logo=True)
    results = json.loads((out / "results.json").read_text())
    # the entry "Public Tests" (a summary shown to students on Gradescope) has no score
    return {t["name"]: (float(t.get("score", 0.0)), float(t["max_score"]))
            for t in results["tests"] if "max_score" in t}


@pytest.fixture(scope="module")
def graded(tmp_path_factory) -> dict:
    """Build every assignment once and grade its three notebooks: {(name, label): scores or error}."""
    mp = pytest.MonkeyPatch()
    kernels = Path(sys.prefix) / "share" / "jupyter"  # this environment's kernel python3 first
    mp.setenv("JUPYTER_PATH", os.pathsep.join(filter(None, [str(kernels), os.environ.get("JUPYTER_PATH")])))
    mp.setenv("OMP_NUM_THREADS", "1")  # inherited by the grading kernels (torch threads)
    mp.setenv("MPLBACKEND", "Agg")
    results, jobs = {}, {}
    try:
        for name in NAMES:
            try:
                b = build(name, tmp_path_factory.mktemp(f"dist-{name}"))
            except Exception as err:  # reported by every test of this assignment
                results.update({(name, label): err for label in ("solution", "student", "mistakes")})
                continue
            results[(name, "built")] = b
            notebooks = {"solution": b.solution, "student": b.student}
            try:
                notebooks["mistakes"] = with_mistakes(b)
            except AssertionError as err:
                results[(name, "mistakes")] = err
            for label, nb in notebooks.items():
                jobs[(name, label)] = (b.zip, nb, b.workdir / f"results-{label}")
        # fork: the workers inherit the imported otter; kernels are started only in the workers
        with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork")) as pool:
            futures = {key: pool.submit(grade, *args) for key, args in jobs.items()}
            for key, future in futures.items():
                try:
                    results[key] = future.result()
                except Exception as err:
                    results[key] = err
    finally:
        mp.undo()
    return results


def scores_of(graded: dict, name: str, label: str) -> dict[str, tuple[float, float]]:
    """Autograded questions only (written answers are graded by hand and score 0 here)."""
    result = graded[(name, label)]
    if isinstance(result, BaseException):
        raise result
    return {q: s for q, s in result.items() if q not in MANUAL.get(name, set())}


@pytest.mark.parametrize("name", NAMES)
def test_master_notebook_is_stripped(name):
    nb = nbformat.read(ASSIGNMENTS / name / f"{name}.ipynb", as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None


@pytest.mark.parametrize("name", NAMES)
def test_student_version_has_no_solutions(graded, name):
    built = graded.get((name, "built"))
    assert built is not None, f"otter assign failed for {name}: {graded[(name, 'solution')]}"
    student = nbformat.read(built.student, as_version=4)
    text = "\n".join(c.source for c in student.cells)
    for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN TESTS", "# HIDDEN"):
        assert marker not in text
    for mistake in MISTAKES[name]:
        assert mistake.old not in text, f"solution line left in the student notebook: {mistake.old}"


@pytest.mark.parametrize("name", NAMES)
def test_solution_scores_full_marks(graded, name):
    scores = scores_of(graded, name, "solution")
    assert scores, "no autograded questions found"
    lost = {q: s for q, s in scores.items() if s[0] != s[1]}
    assert not lost, f"{name}: the solution loses points: {lost}"


@pytest.mark.parametrize("name", NAMES)
def test_untouched_student_notebook_scores_zero(graded, name):
    scores = scores_of(graded, name, "student")
    assert scores
    earned = {q: s for q, s in scores.items() if s[0] != 0}
    assert not earned, f"{name}: an empty answer earns points: {earned}"


@pytest.mark.parametrize("name", NAMES)
def test_typical_mistakes_lose_exactly_their_questions(graded, name):
    scores = scores_of(graded, name, "mistakes")
    mistaken = {m.question: m.what for m in MISTAKES[name]}
    assert set(mistaken) <= set(scores)
    for q, (score, max_score) in scores.items():
        if q in mistaken:
            assert score == 0, f"{name} {q}: '{mistaken[q]}' still earns {score}/{max_score}"
        else:
            assert score == max_score, f"{name} {q}: lost points to a mistake elsewhere"
