"""Checks of the book's structure, used by tests/test_book_structure.py.

Each function takes the book's root folder and returns a list of problems (empty when all is well),
so that the tests can run them both on this repository and on a deliberately broken copy.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import nbformat
from toc import toc_files

#: A chapter's file is named after its topic; its number comes from its place in _toc.yml.
CHAPTER_NAME = re.compile(r"^[a-z][a-z0-9_]*\.ipynb$")
#: Where a chapter defines a label: a display equation's ``$$ (eq-...)``, an exercise's
#: ``:label:``, a section target ``(sec-...)=`` and a figure's ``mystnb.figure.name``.
_LABEL_DEFINITIONS = (re.compile(r"\$\$\s*\(([\w-]+)\)\s*$", re.M),
                      re.compile(r"^:label:\s*([\w-]+)", re.M),
                      re.compile(r"^\(([\w-]+)\)=", re.M))
_LABEL = re.compile(r"^(eq|fig|ex|sec|tab)-([a-z0-9]+)-[a-z0-9-]+$")


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

    A chapter is named after its topic (``per_step_weights.ipynb``; the book numbers chapters by
    their place in ``_toc.yml``, so inserting one renames nothing), labels everything it defines
    ``kind-prefix-name`` with one prefix of its own (``eq-perstep-pdis``), runs on the ``python3``
    kernel, starts with the set-up cell (``scripts/colab_cell.py``), applies the course's plotting style, imports ``companion``, and ends with
    at least three labelled exercises, each with a solution in a dropdown. A code cell outside the
    solutions that checks the numbers a solution quotes carries the cell tag ``solution``, so
    that the edition without solutions drops it; no cell that edition keeps reads a name that
    only a solution's cell sets. Glue comes from ``companion.notebook`` (never from myst-nb,
    which Colab and Binder lack).
    """
    problems = []
    notebooks = [p for p in toc_files(root) if p.suffix == ".ipynb"]
    prefixes: dict[str, str] = {}
    for path in notebooks:
        name = path.name
        if not CHAPTER_NAME.match(name):
            problems.append(f"{name}: expected a topic name like per_step_weights.ipynb "
                            "(no number: the TOC numbers the chapters)")
        nb = nbformat.read(path, as_version=4)
        for prefix in sorted(_label_prefixes(nb, name, problems)):
            if prefix in prefixes:
                problems.append(f"{name}: label prefix {prefix!r} is already used by "
                                f"{prefixes[prefix]}")
            prefixes[prefix] = name
        first_code = next((c for c in nb.cells if c.cell_type == "code"), None)
        if first_code is None or not first_code.source.startswith("# Set-up for Colab"):
            problems.append(f"{name}: the first code cell must be the set-up cell "
                            "(run `make sync-repo-url`)")
        if nb.metadata.get("kernelspec", {}).get("name") != "python3":
            problems.append(f"{name}: kernelspec must be python3")
        code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
        text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
        if "use_course_style()" not in code:
            problems.append(f"{name}: never calls companion.plotting.use_course_style()")
        if not re.search(r"^\s*(import companion|from companion)", code, re.M):
            problems.append(f"{name}: never imports companion")
        if re.search(r"^\s*(import myst_nb|from myst_nb)", code, re.M):
            problems.append(f"{name}: imports myst_nb, which Colab and Binder lack; use "
                            "`from companion.notebook import glue`")
        if re.search(r"\bglue\(", code) and not re.search(
                r"^\s*from companion\.notebook import .*\bglue\b", code, re.M):
            problems.append(f"{name}: calls glue without `from companion.notebook import glue`")
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
        problems += [f"{name}: {p}" for p in _main_text_reads_solution_names(nb)]
    return problems


def _label_prefixes(nb, name: str, problems: list[str]) -> set[str]:
    """The prefixes of the labels a chapter defines; a chapter should have exactly one."""
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    labels = [m for pattern in _LABEL_DEFINITIONS for m in pattern.findall(text)]
    labels += [c.metadata["mystnb"]["figure"]["name"] for c in nb.cells
               if "name" in c.metadata.get("mystnb", {}).get("figure", {})]
    prefixes = set()
    for label in labels:
        match = _LABEL.match(label)
        if match is None:
            problems.append(f"{name}: label {label!r} is not of the form kind-prefix-name "
                            "(kind one of eq, fig, ex, sec, tab)")
        else:
            prefixes.add(match.group(2))
    if len(prefixes) > 1:
        problems.append(f"{name}: labels use several prefixes {sorted(prefixes)}; use one")
    return prefixes


#: An assert whose comment points at an exercise or its solution: "(exercise)", "ex-traj-count",
#: "solution of ...".
_EXERCISE_ASSERT = re.compile(r"^\s*assert\b.*#.*(\bexercise\b|\bex-[a-z0-9]+-|\bsolution\b)", re.M)


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


def _solution_cells(nb) -> list[bool]:
    """For each cell: whether the edition without solutions drops it (a code cell between
    ``solution-start`` and ``solution-end``, or tagged ``solution``)."""
    flags, inside = [], False
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            flags.append(False)
            for directive in re.findall(r"\{solution-(start|end)\}", cell.source):
                inside = directive == "start"
        else:
            flags.append(inside or "solution" in cell.metadata.get("tags", []))
    return flags


def _names(source: str) -> tuple[set[str], set[str]]:
    """The global names a cell reads before binding them, and the names it binds."""
    lines = [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]
    try:
        tree = ast.parse("\n".join(lines))
    except SyntaxError:
        return set(), set()
    reads, binds = set(), set()
    for statement in tree.body:
        local = set()  # names bound inside functions, lambdas and comprehensions of the statement
        for node in ast.walk(statement):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                local |= {a.arg for a in ast.walk(node.args) if isinstance(a, ast.arg)}
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ListComp,
                                 ast.SetComp, ast.DictComp, ast.GeneratorExp)):
                local |= {n.id for n in ast.walk(node)
                          if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
        for node in ast.walk(statement):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
                if node.id not in binds and node.id not in local:
                    reads.add(node.id)
        for node in ast.walk(statement):
            if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
                if node.id not in local:
                    binds.add(node.id)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                binds.add(node.name)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                binds |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return reads, binds


def _main_text_reads_solution_names(nb) -> list[str]:
    """Code cells that the edition without solutions keeps but that read a name last set by a
    solution's cell: without the solutions they would fail, or compute something else."""
    problems, last_set = [], {}
    for i, (cell, in_solution) in enumerate(zip(nb.cells, _solution_cells(nb), strict=True)):
        if cell.cell_type != "code":
            continue
        reads, binds = _names(cell.source)
        if not in_solution:
            for name in sorted(reads):
                if last_set.get(name, (None, False))[1]:
                    problems.append(f"cell {i} reads {name!r}, last set by a solution's cell "
                                    f"{last_set[name][0]}: the edition without solutions drops it")
        for name in binds:
            last_set[name] = (i, in_solution)
    return problems
