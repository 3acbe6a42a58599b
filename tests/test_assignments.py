"""The graded assignments grade correctly: full marks, zero marks, and typical mistakes.

For every master notebook ``assignments/<name>/<name>.ipynb`` this file runs ``otter assign`` once
(module-scoped fixture) and grades three notebooks with ``otter run`` (through otter's Python API,
so that otter's slow import is paid once):

* the solution notebook must score full marks on every autograded question;
* the untouched student notebook must score 0 on every question whose code the student writes;
* the solution notebook with typical mistakes (small textual substitutions, each checked to match
  exactly once) must lose all the points of each mistaken question and keep every other point.

Needs otter-grader (``pip install -r requirements-instructor.txt``); skipped without it, except
under CI (``CI`` set), where a missing otter is an error.
"""

from __future__ import annotations

import json
import os
import sys
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


@pytest.fixture(scope="module", autouse=True)
def _environment():
    """Use this environment's kernel ``python3`` (ipykernel installed with --sys-prefix)."""
    mp = pytest.MonkeyPatch()
    kernels = Path(sys.prefix) / "share" / "jupyter"
    mp.setenv("JUPYTER_PATH", os.pathsep.join(filter(None, [str(kernels), os.environ.get("JUPYTER_PATH")])))
    mp.setenv("OMP_NUM_THREADS", "1")  # inherited by the grading kernels (torch threads)
    mp.setenv("MPLBACKEND", "Agg")
    yield
    mp.undo()


@pytest.fixture(scope="module", params=NAMES)
def built(request, tmp_path_factory) -> Built:
    """``otter assign`` once per assignment (without re-running the tests: grading checks them)."""
    name = request.param
    out = tmp_path_factory.mktemp(f"dist-{name}")
    otter.assign.main(str(ASSIGNMENTS / name / f"{name}.ipynb"), str(out), no_pdfs=True, no_run_tests=True)
    zips = sorted((out / "autograder").glob(f"{name}-autograder_*.zip"))
    assert len(zips) == 1, zips
    return Built(name, zips[0], out / "autograder" / f"{name}.ipynb", out / "student" / f"{name}.ipynb", out)


def grade(built: Built, notebook: Path, label: str) -> dict[str, tuple[float, float]]:
    """``otter run``: question name -> (score, max_score)."""
    out = built.workdir / f"results-{label}"
    out.mkdir()
    otter.run.main(str(notebook), autograder=str(built.zip), output_dir=str(out), no_logo=True)
    results = json.loads((out / "results.json").read_text())
    # the entry "Public Tests" (a summary shown to students on Gradescope) has no score
    return {t["name"]: (float(t.get("score", 0.0)), float(t["max_score"]))
            for t in results["tests"] if "max_score" in t}


def autograded(built: Built, scores: dict) -> dict:
    return {q: s for q, s in scores.items() if q not in MANUAL.get(built.name, set())}


def test_master_notebook_is_stripped(built):
    nb = nbformat.read(ASSIGNMENTS / built.name / f"{built.name}.ipynb", as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None


def test_student_version_has_no_solutions(built):
    student = nbformat.read(built.student, as_version=4)
    text = "\n".join(c.source for c in student.cells)
    for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN TESTS", "# HIDDEN"):
        assert marker not in text
    for mistake in MISTAKES[built.name]:
        assert mistake.old not in text, f"solution line left in the student notebook: {mistake.old}"


def test_solution_scores_full_marks(built):
    scores = autograded(built, grade(built, built.solution, "solution"))
    assert scores, "no autograded questions found"
    lost = {q: s for q, s in scores.items() if s[0] != s[1]}
    assert not lost, f"{built.name}: the solution loses points: {lost}"


def test_untouched_student_notebook_scores_zero(built):
    scores = autograded(built, grade(built, built.student, "student"))
    assert scores
    earned = {q: s for q, s in scores.items() if s[0] != 0}
    assert not earned, f"{built.name}: an empty answer earns points: {earned}"


def test_typical_mistakes_lose_exactly_their_questions(built):
    nb = nbformat.read(built.solution, as_version=4)
    for mistake in MISTAKES[built.name]:
        hits = [c for c in nb.cells if c.cell_type == "code" and mistake.old in c.source]
        assert len(hits) == 1 and hits[0].source.count(mistake.old) == 1, \
            f"substitution for {mistake.question} ({mistake.what}) matched {len(hits)} cells"
        hits[0].source = hits[0].source.replace(mistake.old, mistake.new)
    path = built.workdir / f"{built.name}_mistakes.ipynb"
    nbformat.write(nb, path)
    scores = autograded(built, grade(built, path, "mistakes"))
    mistaken = {m.question: m.what for m in MISTAKES[built.name]}
    for q, (score, max_score) in scores.items():
        if q in mistaken:
            assert score == 0, f"{built.name} {q}: '{mistaken[q]}' still earns {score}/{max_score}"
        else:
            assert score == max_score, f"{built.name} {q}: lost points to a mistake elsewhere"
