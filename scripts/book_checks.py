"""Checks of the book's structure, used by tests/test_book_structure.py.

Each function takes the book's root folder and returns a list of problems (empty when all is well),
so that the tests can run them both on this repository and on a deliberately broken copy.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
from toc import toc_files

CHAPTER_NAME = re.compile(r"^(\d\d)_[a-z0-9_]+\.ipynb$")


def toc_problems(root: Path) -> list[str]:
    """Notebooks under ``book/`` missing from the TOC, and TOC entries with no file."""
    listed = toc_files(root)
    problems = [f"in _toc.yml but missing: {p.relative_to(root)}" for p in listed if not p.exists()]
    in_toc = {p.resolve() for p in listed}
    for nb in sorted((root / "book").glob("*.ipynb")):
        if nb.resolve() not in in_toc:
            problems.append(f"notebook not in _toc.yml: {nb.relative_to(root)}")
    return problems


def output_problems(root: Path) -> list[str]:
    """Notebooks under ``book/`` that carry outputs, execution counts or widget state, or have
    cells without an id (nbformat 4.5 requires one). The raw JSON is checked: nbformat's reader
    would fill the missing ids in."""
    problems = []
    for path in sorted((root / "book").glob("*.ipynb")):
        nb = json.loads(path.read_text())
        for i, cell in enumerate(nb["cells"]):
            if "id" not in cell:
                problems.append(f"{path.name}: cell {i} has no id")
            if cell["cell_type"] == "code" and (cell.get("outputs")
                                                or cell.get("execution_count") is not None):
                problems.append(f"{path.name}: cell {i} has outputs or an execution count")
        if "widgets" in nb.get("metadata", {}):
            problems.append(f"{path.name}: notebook metadata holds widget state")
    return problems


def chapter_problems(root: Path) -> list[str]:
    """Chapter notebooks that break the course's layout rules.

    A chapter is named ``NN_short_name.ipynb`` with NN its position among the TOC's notebooks, runs on
    the ``python3`` kernel, applies the course's plotting style, imports ``companion``, and ends with
    at least three labelled exercises, each with a solution in a dropdown. A code cell outside the
    solutions that checks the numbers a solution quotes carries the cell tag ``solution``, so
    that the edition without solutions drops it.
    """
    problems = []
    notebooks = [p for p in toc_files(root) if p.suffix == ".ipynb"]
    for number, path in enumerate(notebooks, start=1):
        name = path.name
        match = CHAPTER_NAME.match(name)
        if not match or int(match.group(1)) != number:
            problems.append(f"{name}: expected a name like {number:02d}_short_name.ipynb")
        nb = nbformat.read(path, as_version=4)
        if nb.metadata.get("kernelspec", {}).get("name") != "python3":
            problems.append(f"{name}: kernelspec must be python3")
        code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
        text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
        if "use_course_style()" not in code:
            problems.append(f"{name}: never calls companion.plotting.use_course_style()")
        if not re.search(r"^\s*(import companion|from companion)", code, re.M):
            problems.append(f"{name}: never imports companion")
        exercises = re.findall(r"^(`{3,}|:{3,})\{exercise(?:-start)?\}", text, re.M)
        labels = re.findall(r"^:label:\s*(\S+)", text, re.M)
        solutions = re.findall(r"^(`{3,}|:{3,})\{solution(?:-start)?\}\s*(\S+)", text, re.M)
        if len(exercises) < 3:
            problems.append(f"{name}: {len(exercises)} exercises, at least 3 expected")
        solved = {label for _, label in solutions}
        for label in labels:
            if label.startswith("ex-") and label not in solved:
                problems.append(f"{name}: exercise {label} has no solution")
        dropdowns = len(re.findall(r"^:class:\s*dropdown", text, re.M))
        if dropdowns < len(solutions):
            problems.append(f"{name}: {len(solutions) - dropdowns} solutions are not dropdowns")
        problems += [f"{name}: {p}" for p in _untagged_solution_checks(nb)]
    return problems


#: An assert whose comment points at an exercise or its solution: "(exercise)", "ex-03-count",
#: "solution of ...".
_EXERCISE_ASSERT = re.compile(r"^\s*assert\b.*#.*(\bexercise\b|\bex-\d\d-|\bsolution\b)", re.M)


def _untagged_solution_checks(nb) -> list[str]:
    """Code cells outside a gated solution that check numbers a solution quotes (a cell headed
    "quoted in the solution", or an assert whose comment names an exercise or a solution),
    without the ``solution`` tag: the edition without solutions would show them (and give the
    answers away)."""
    problems, inside = [], False
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown":
            for directive in re.findall(r"\{solution-(start|end)\}", cell.source):
                inside = directive == "start"
        elif (not inside and "solution" not in cell.metadata.get("tags", [])
              and ("quoted in the solution" in cell.source
                   or _EXERCISE_ASSERT.search(cell.source))):
            problems.append(f"cell {i} checks a solution's numbers outside the solution; "
                            "move the check to a cell tagged 'solution'")
    return problems
