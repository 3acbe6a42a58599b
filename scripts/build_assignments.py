"""Build the graded assignments: student notebooks and autograders, from the master notebooks.

    .venv/bin/python scripts/build_assignments.py [NAME ...] [--seed SEED] [--out DIR] [--no-run-tests]

(``make assignments`` runs it for every assignment; ``make assignments SEED=...`` for a term's
private variant.) For each master notebook ``assignments/<name>/<name>.ipynb`` it

1. with ``--seed``, replaces the seed of every random input drawn in a hidden test
   (``np.random.default_rng(k)``, ``torch.Generator().manual_seed(k)``, ``torch.manual_seed(k)``)
   by a number derived from ``(SEED, k)``: a new term gets new hidden inputs and new expected
   values, while the public master notebook keeps its own;
2. runs the master's code cells, set-up and reference solutions but not the tests, in this
   process: outside any student's notebook;
3. runs every test cell against that namespace (so a build fails if the reference solution fails
   a test) and, in hidden tests, replaces the value of every assignment whose line ends with
   ``# stored`` by the value it had, written into the test as a literal, and removes the test's
   helper functions named ``_build_*`` (used by those lines only). The autograder then compares a
   submission with numbers computed when it was built, not with a function that the student's
   notebook could reach or change, and its hidden tests need neither the companion package nor
   its version at grading time (a hidden test may use the companion on ``# stored`` lines and in
   ``_build_*`` helpers only; the build checks this);
4. adds to every autograded question a hidden test, ``own-work``, that fails if one of the
   question's graded functions (the functions whose body students write: those of its solution
   cells with a ``# BEGIN SOLUTION`` line) uses the ``companion`` package, directly or through a
   helper defined in the notebook;
5. runs ``otter assign`` on the result, writing ``<out>/<name>/student/<name>.ipynb`` (hand this
   out), ``<out>/<name>/autograder/`` (solutions and the autograder zip) and
   ``<out>/<name>/manifest.json`` (questions, points, graded functions and the label of every
   test case, in the order of the autograder's test files).

Conventions of the master notebooks (checked here): every autograded question is graded all or
nothing (``all_or_nothing: true``); the second line of a hidden test cell names what it catches,
``# <label>: <what>``, with a label unique within its question.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import json
import os
import re
import shutil
import sys
import tempfile
import tokenize
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
ASSIGNMENTS = ROOT / "assignments"
# In the order of the chapters they build on (book/instructors.md lists them in this order).
NAMES = ["offpolicy_gradient", "estimators", "variance", "weighted_is", "ppo", "trpo", "traces",
         "off_policy_evaluation"]
PACKAGE = "companion"
STORED = "# stored"
BUILD_HELPER = "_build_"
LABEL = re.compile(r"#\s*([a-z][a-z0-9-]*):\s")
HIDDEN = re.compile(r"\bhidden\b", re.IGNORECASE)
SEED_CALL = re.compile(r"\b(default_rng|manual_seed)\(\s*(\d+)\s*\)")

# The hidden test added to every autograded question. Only names a function loads from its
# globals, its closure and its imports count (attribute names such as ``x.mean`` do not), the
# string "companion" only next to a dynamic import, and only helpers defined in the notebook
# itself are followed.
OWN_WORK = '''\
# HIDDEN
# own-work: {names} must not use the {package} package
import builtins
import dis
import functools
import types


def _uses_package(fn, package="{package}"):
    """Names through which fn reaches the package, directly or through the notebook's helpers."""
    def from_package(obj):
        name = obj.__name__ if isinstance(obj, types.ModuleType) else getattr(obj, "__module__", None)
        return isinstance(name, str) and name.split(".")[0] == package

    found, todo, seen = [], [fn], set()
    while todo:
        f = todo.pop()
        if id(f) in seen:
            continue
        seen.add(id(f))
        if isinstance(f, functools.partial):
            todo += [f.func, *f.args, *f.keywords.values()]
            continue
        f = getattr(f, "__func__", f)
        if from_package(f):
            found.append(getattr(f, "__qualname__", repr(f)))
            continue
        if not isinstance(f, types.FunctionType) or f.__module__ != "__main__":
            continue
        env = f.__globals__
        freevars = dict(zip(f.__code__.co_freevars, f.__closure__ or (), strict=True))
        codes = [f.__code__]
        while codes:
            code = codes.pop()
            codes += [c for c in code.co_consts if isinstance(c, types.CodeType)]
            dynamic = {{"__import__", "import_module", "modules"}} & set(code.co_names)
            for ins in dis.get_instructions(code):
                name = ins.argval
                if ins.opname == "IMPORT_NAME" or (ins.opname == "LOAD_CONST" and dynamic
                                                   and isinstance(name, str)):
                    if name == package or str(name).startswith(package + "."):
                        found.append(repr(name))
                    continue
                if ins.opname in ("LOAD_GLOBAL", "LOAD_NAME") and name in env:
                    obj = env[name]
                elif ins.opname == "LOAD_DEREF" and name in freevars:
                    obj = freevars[name].cell_contents
                else:
                    continue
                if isinstance(obj, types.ModuleType) or callable(obj):
                    if from_package(obj):
                        found.append(name)
                    else:
                        todo.append(obj)
    return found


for _fn in ({functions},):
    _found = _uses_package(_fn)
    assert not _found, (f"{{_fn.__name__}} uses the {package} package ({{', '.join(_found)}}): "
                        "graded functions must be your own work")
'''


@dataclass
class Question:
    name: str
    config: dict
    solution_cells: list[int] = field(default_factory=list)
    test_cells: list[int] = field(default_factory=list)
    end_tests: int | None = None

    @property
    def manual(self) -> bool:
        return bool(self.config.get("manual", False))


def raw_kind(cell) -> str | None:
    """``BEGIN QUESTION``, ``END TESTS`` etc. for a raw marker cell, else None."""
    if cell.cell_type != "raw":
        return None
    m = re.match(r"#\s*(BEGIN|END)\s+(QUESTION|SOLUTION|TESTS|PROMPT)\b", cell.source.strip())
    return f"{m.group(1)} {m.group(2)}" if m else None


def assignment_config(nb) -> dict:
    first = nb.cells[0]
    if first.cell_type != "raw" or not re.match(r"#\s*ASSIGNMENT CONFIG", first.source):
        raise ValueError("the first cell must be the raw # ASSIGNMENT CONFIG cell")
    return yaml.safe_load(first.source) or {}


def parse(nb) -> list[Question]:
    """The questions of a master notebook, with the indices of their solution and test cells."""
    questions, q, block = [], None, None
    for i, cell in enumerate(nb.cells):
        kind = raw_kind(cell)
        if kind == "BEGIN QUESTION":
            q = Question(name="", config=yaml.safe_load(cell.source) or {})
            q.name = str(q.config["name"])
            questions.append(q)
        elif kind == "END QUESTION":
            q = None
        elif kind in ("BEGIN SOLUTION", "BEGIN TESTS"):
            block = kind.split()[1]
        elif kind == "END TESTS":
            block = None
            if q is not None:
                q.end_tests = i
        elif kind == "END SOLUTION":
            block = None
        elif cell.cell_type == "code" and q is not None and block == "SOLUTION":
            q.solution_cells.append(i)
        elif cell.cell_type == "code" and q is not None and block == "TESTS":
            q.test_cells.append(i)
    return questions


def graded_functions(nb, q: Question) -> list[str]:
    """The functions students write for a question: the top-level functions of its solution
    cells whose body holds a ``# BEGIN SOLUTION`` line (other functions there are given)."""
    names = []
    for i in q.solution_cells:
        source = nb.cells[i].source
        for node in ast.parse(source).body:
            if isinstance(node, ast.FunctionDef) and re.search(
                    r"^\s*#\s*BEGIN SOLUTION", ast.get_source_segment(source, node), re.M):
                names.append(node.name)
    return names


def is_hidden(source: str) -> bool:
    first = source.lstrip().splitlines()[0] if source.strip() else ""
    return first.startswith("#") and bool(HIDDEN.search(first))


def test_label(source: str) -> str | None:
    lines = source.lstrip().splitlines()
    return LABEL.match(lines[1]).group(1) if len(lines) > 1 and LABEL.match(lines[1]) else None


def without_comments(source: str) -> str:
    """``source`` with its comments removed (strings kept)."""
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    return tokenize.untokenize((t.type, t.string) for t in tokens if t.type != tokenize.COMMENT)


def calls_package(source: str) -> bool:
    """Whether code refers to the package (``cp.name`` or its name), comments aside. The code is
    read back from its tokens, which may space it out (``cp .name``)."""
    return bool(re.search(rf"\bcp\s*\.|\b{PACKAGE}\b", without_comments(source)))


def term_seed(seed: int, k: int) -> int:
    """The seed that replaces ``k`` in a term built with ``seed``."""
    return int(np.random.SeedSequence([seed, k]).generate_state(1)[0])


def reseed(source: str, seed: int | None) -> str:
    if seed is None:
        return source
    return SEED_CALL.sub(lambda m: f"{m.group(1)}({term_seed(seed, int(m.group(2)))})", source)


# ---------------------------------------------------------------------------------------------
# values written into the tests


def _float(x: float) -> str:
    x = float(x)
    if np.isnan(x):
        return 'float("nan")'
    if np.isinf(x):
        return 'float("inf")' if x > 0 else '-float("inf")'
    return repr(x)


def _nested(x) -> str:
    if isinstance(x, list):
        return "[" + ", ".join(_nested(v) for v in x) + "]"
    if isinstance(x, float):
        return _float(x)
    return repr(x)


def literal(value) -> str:
    """Python source that evaluates to ``value`` (numbers, arrays, tensors, tuples, lists, dicts)."""
    if value is None or isinstance(value, (bool, np.bool_, str)):
        return repr(bool(value) if isinstance(value, np.bool_) else value)
    if isinstance(value, (int, np.integer)):
        return repr(int(value))
    if isinstance(value, (float, np.floating)):
        return _float(value)
    if isinstance(value, np.ndarray):
        return f"np.array({_nested(value.tolist())}, dtype=np.{value.dtype.name})"
    if type(value).__module__.split(".")[0] == "torch":
        dtype = str(value.dtype).replace("torch.", "")
        return f"torch.tensor({_nested(value.detach().cpu().tolist())}, dtype=torch.{dtype})"
    if isinstance(value, tuple):
        return "(" + "".join(literal(v) + ", " for v in value) + ")"
    if isinstance(value, list):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{literal(k)}: {literal(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot store a value of type {type(value).__name__} in a test")


def _offsets(source: str):
    """(line, byte column) -> character offset in ``source`` (ast positions count UTF-8 bytes)."""
    starts, pos = [], 0
    for line in source.splitlines(keepends=True):
        starts.append(pos)
        pos += len(line)
    lines = source.splitlines(keepends=True)

    def at(lineno: int, col: int) -> int:
        return starts[lineno - 1] + len(lines[lineno - 1].encode()[:col].decode())
    return at


def stored_sites(source: str) -> list[ast.expr]:
    """Right-hand sides of the assignments whose (last) line ends with ``# stored``."""
    lines = source.splitlines()
    sites = [node.value for node in ast.walk(ast.parse(source))
             if isinstance(node, ast.Assign) and lines[node.end_lineno - 1].rstrip().endswith(STORED)]
    return sorted(sites, key=lambda n: (n.lineno, n.col_offset))


class _Recorder(ast.NodeTransformer):
    def __init__(self, sites):
        self.ids = {(s.lineno, s.col_offset, s.end_lineno, s.end_col_offset): i for i, s in enumerate(sites)}

    def visit_Assign(self, node):
        key = (node.value.lineno, node.value.col_offset, node.value.end_lineno, node.value.end_col_offset)
        if key in self.ids:
            node.value = ast.Call(ast.Name("__record__", ast.Load()),
                                  [ast.Constant(self.ids[key]), node.value], [])
        return node


def run_test(source: str, namespace: dict, where: str) -> str:
    """Run a test cell against ``namespace``; return it with its stored values written in."""
    sites = stored_sites(source)
    values: list[list] = [[] for _ in sites]

    def record(i, value):
        values[i].append(value)
        return value

    tree = ast.fix_missing_locations(_Recorder(sites).visit(ast.parse(source)))
    env = dict(namespace, __record__=record)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            exec(compile(tree, where, "exec"), env)
    except Exception as err:
        raise RuntimeError(f"{where}: the reference solution fails this test: {err!r}\n{source}") from err
    helpers = [n for n in ast.parse(source).body
               if isinstance(n, ast.FunctionDef) and n.name.startswith(BUILD_HELPER)]
    if not sites and not helpers:
        return source
    at = _offsets(source)
    splices, header = [], []
    for i, site in enumerate(sites):
        if not values[i]:
            raise RuntimeError(f"{where}: the stored value on line {site.lineno} was never computed")
        one = len(values[i]) == 1
        splices.append((at(site.lineno, site.col_offset), at(site.end_lineno, site.end_col_offset),
                        f"_stored_{i}" if one else f"_stored_{i}.pop(0)"))
        header.append(f"_stored_{i} = {literal(values[i][0]) if one else literal(values[i])}")
    for node in helpers:  # used by stored lines only: not part of the autograder's test
        first = min([node.lineno] + [d.lineno for d in node.decorator_list])
        splices.append((at(first, 0), at(node.end_lineno, node.end_col_offset), ""))
    out = source
    for a, b, text in sorted(splices, reverse=True):
        out = out[:a] + text + out[b:]
    out = re.sub(r"\n{3,}", "\n\n\n", out)
    lines = out.splitlines()
    k = 0
    while k < len(lines) and lines[k].lstrip().startswith("#"):
        k += 1
    imports = ["import numpy as np"] + (["import torch"] if "torch." in "\n".join(header) else [])
    note = "# stored: expected values computed when this autograder was built, outside the notebook"
    return "\n".join(lines[:k] + [note, *imports, *header] + lines[k:]) + "\n"


def execute_master(nb, questions: list[Question]) -> dict:
    """Run the set-up, solution and other code cells of a master notebook (not its tests)."""
    import matplotlib
    matplotlib.use("Agg")
    tests = {i for q in questions for i in q.test_cells}
    namespace = {"__name__": "__main__"}
    with contextlib.redirect_stdout(io.StringIO()):
        for i, cell in enumerate(nb.cells):
            if cell.cell_type == "code" and i not in tests:
                exec(compile(cell.source, f"<master cell {i}>", "exec"), namespace)
    return namespace


def generate(name: str, seed: int | None = None, source: Path | None = None):
    """The master notebook with term seeds, stored values and own-work tests; and its manifest."""
    path = source or ASSIGNMENTS / name / f"{name}.ipynb"
    nb = nbformat.read(path, as_version=4)
    config = assignment_config(nb)
    if config.get("name") != name:
        raise ValueError(f"{path}: ASSIGNMENT CONFIG name is {config.get('name')!r}, not {name!r}")
    questions = parse(nb)
    for q in questions:
        for i in q.test_cells:
            if is_hidden(nb.cells[i].source):
                nb.cells[i].source = reseed(nb.cells[i].source, seed)
    namespace = execute_master(nb, questions)
    manifest = {"name": name, "seed": seed, "questions": {}}
    inserts = []
    for q in questions:
        if q.manual:
            manifest["questions"][q.name] = {"points": q.config.get("points", 0), "manual": True}
            continue
        if not q.config.get("all_or_nothing"):
            raise ValueError(f"{name} {q.name}: autograded questions must set all_or_nothing: true")
        functions = graded_functions(nb, q)
        if not functions:
            raise ValueError(f"{name} {q.name}: the solution defines no function to grade")
        cases, labels = [], set()
        for i in q.test_cells:
            src = nb.cells[i].source
            hidden, label = is_hidden(src), test_label(src)
            if hidden and label is None:
                raise ValueError(f"{name} {q.name}: hidden test without a '# <label>: ' line:\n{src}")
            if label in labels:
                raise ValueError(f"{name} {q.name}: two tests labelled {label!r}")
            labels.add(label)
            new = run_test(src, namespace, f"{name} {q.name} cell {i}")
            if hidden:
                if calls_package(new):
                    raise ValueError(f"{name} {q.name}: a hidden test uses the {PACKAGE} package "
                                     f"outside its '{STORED}' lines:\n{src}")
                nb.cells[i].source = new
            elif new != src:
                raise ValueError(f"{name} {q.name}: public tests cannot store values:\n{src}")
            cases.append({"hidden": hidden, "label": label or f"public-{len(cases) + 1}"})
        own = OWN_WORK.format(names=", ".join(functions), package=PACKAGE,
                              functions=", ".join(functions))
        run_test(own, namespace, f"{name} {q.name} own-work")
        cases.append({"hidden": True, "label": "own-work"})
        inserts.append((q.end_tests, own))
        manifest["questions"][q.name] = {"points": q.config.get("points"), "manual": False,
                                        "functions": functions, "cases": cases}
    for index, own in sorted(inserts, reverse=True):
        nb.cells.insert(index, nbformat.v4.new_code_cell(own))
    req = config.get("requirements")
    if req:  # the generated notebook lives elsewhere: make the requirements path absolute
        first = nb.cells[0].source
        nb.cells[0].source = first.replace(f"requirements: {req}", f"requirements: {(path.parent / req).resolve()}")
    return nb, manifest


def build(name: str, out: Path, seed: int | None = None, run_tests: bool = True,
          source: Path | None = None) -> dict:
    """Generate, then ``otter assign`` into ``out/name``; return the manifest."""
    import otter.assign

    nb, manifest = generate(name, seed, source)
    target = (out / name).resolve()
    if target.exists():
        shutil.rmtree(target)
    with tempfile.TemporaryDirectory() as tmp:
        master = Path(tmp) / f"{name}.ipynb"
        nbformat.write(nb, master)
        with contextlib.redirect_stdout(io.StringIO()):
            otter.assign.main(str(master), str(target), no_pdfs=True, no_run_tests=not run_tests)
    (target / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", default=NAMES, help="assignments (default: all)")
    parser.add_argument("--seed", type=int, default=None,
                        help="term seed for the hidden tests' random inputs (default: the master's)")
    parser.add_argument("--out", type=Path, default=ASSIGNMENTS / "dist")
    parser.add_argument("--no-run-tests", action="store_true",
                        help="skip otter's own grading of the solutions (the build still runs every "
                             "test against the reference solution in-process)")
    args = parser.parse_args(argv)
    os.environ.setdefault("MPLBACKEND", "Agg")
    for name in args.names:
        if name not in NAMES:
            parser.error(f"unknown assignment {name!r}; one of {', '.join(NAMES)}")
        manifest = build(name, args.out, args.seed, run_tests=not args.no_run_tests)
        points = {q: v["points"] for q, v in manifest["questions"].items()}
        print(f"{name}: {args.out / name} (seed {args.seed if args.seed is not None else 'of the master'}; "
              f"points {points})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
