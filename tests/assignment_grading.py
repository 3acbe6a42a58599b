"""Grading helpers for tests/test_assignments.py: otter's own grading, and the same in-process.

``grade_with_otter`` is ``otter run``: the submission runs in a fresh Jupyter kernel (about five
seconds of CPU each, most of it the kernel importing otter). ``grade_in_process`` grades with
otter's own test files (the ``tests/*.py`` of the autograder zip) and otter's own scoring
(``OKTestFile.run``, ``score``, all-or-nothing included), but runs the submission's code cells in
this process: each ``grader.check("qN")`` cell runs that question's tests at that point, as in a
grading kernel, and the remaining tests run at the end. It grades dozens of mutant submissions in
the time of a few kernels; the tests check that both graders agree on every notebook that
otter itself grades.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import signal
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import nbformat

CHECK = re.compile(r"""^\s*grader\.check\(\s*["'](\w+)["']\s*\)\s*$""")
OTTER_CELL = re.compile(r"^\s*(#.*\n)*\s*(import otter\b|grader\.check_all\(\)|grader\.export\()", re.M)
CELL_TIMEOUT = 120  # seconds; a submission cell that runs longer is stopped, as an error


@dataclass(frozen=True)
class Scores:
    """Per question: (score, max_score) and whether each test case passed (autograder order)."""

    points: dict[str, tuple[float, float]]
    cases: dict[str, list[bool]]


def grade_with_otter(zip_path: Path, notebook: Path, out: Path) -> dict[str, tuple[float, float]]:
    """``otter run`` of one notebook: question -> (score, max_score)."""
    import otter.run

    out.mkdir(parents=True)
    with open(out / "otter.log", "w") as log, contextlib.redirect_stdout(log):
        otter.run.main(str(notebook), autograder=str(zip_path), output_dir=str(out), no_logo=True)
    results = json.loads((out / "results.json").read_text())
    # the entry "Public Tests" (a summary shown to students on Gradescope) has no score
    return {t["name"]: (float(t.get("score", 0.0)), float(t["max_score"]))
            for t in results["tests"] if "max_score" in t}


def extract_tests(zip_path: Path, into: Path) -> Path:
    """The autograder's test files (``tests/*.py``), unpacked into ``into``."""
    with zipfile.ZipFile(zip_path) as z:
        for member in z.namelist():
            if member.startswith("tests/") and member.endswith(".py"):
                z.extract(member, into)
    return into / "tests"


def _timeout(signum, frame):
    raise TimeoutError(f"a cell ran longer than {CELL_TIMEOUT} s")


def grade_in_process(notebook: Path, tests_dir: Path) -> Scores:
    """Grade ``notebook`` with the test files in ``tests_dir``, executing it in this process."""
    from otter.test_files.ok_test import OKTestFile

    files = {p.stem: OKTestFile.from_file(str(p)) for p in sorted(tests_dir.glob("*.py"))}
    done: set[str] = set()
    env: dict = {"__name__": "__main__"}
    nb = nbformat.read(notebook, as_version=4)
    sink = io.StringIO()
    previous = signal.signal(signal.SIGALRM, _timeout)

    def run(name: str) -> None:
        if name in files and name not in done:
            files[name].run(env)
            done.add(name)

    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a submission's warnings are not the test run's
            for i, cell in enumerate(nb.cells):
                if cell.cell_type != "code":
                    continue
                check = CHECK.match(cell.source)
                if check:
                    run(check.group(1))
                    continue
                if OTTER_CELL.match(cell.source):
                    continue
                signal.alarm(CELL_TIMEOUT)
                try:
                    exec(compile(cell.source, f"<cell {i}>", "exec"), env)
                except Exception:  # otter grades with errors ignored, and so do we
                    pass
                finally:
                    signal.alarm(0)
            for name in files:
                run(name)
    finally:
        signal.signal(signal.SIGALRM, previous)
    return Scores(
        points={n: (float(f.score), float(f.possible)) for n, f in files.items()},
        cases={n: [r.passed for r in f.test_case_results] for n, f in files.items()},
    )
