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


def cell_id_problems(root: Path) -> list[str]:
    """Notebooks under ``book/`` with cells without an id (nbformat 4.5 requires one). The raw
    JSON is checked: nbformat's reader would fill the missing ids in. (Outputs are nbstripout's
    job: ``make strip``, and ``nbstripout --verify`` in the tests.)"""
    problems = []
    for path in sorted((root / "book").glob("*.ipynb")):
        nb = json.loads(path.read_text())
        for i, cell in enumerate(nb["cells"]):
            if "id" not in cell:
                problems.append(f"{path.name}: cell {i} has no id")
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


# ---------------------------------------------------------------------------------------------
# Checks of what a chapter says: no document the reader lacks, no assert that cannot fail, no
# glued number that the text does not show (and no number shown that nothing glues).
# ---------------------------------------------------------------------------------------------
#: Folders a reader (or a student) sees; none of them may speak of an "outline".
READER_FOLDERS = ("book", "companion", "tests", "assignments")
_TEXT_SUFFIXES = {".py", ".ipynb", ".md", ".yml", ".yaml", ".bib", ".txt", ".toml", ".cfg", ".rst",
                  ".json", ".html", ".css", ".js"}
_SKIPPED_DIRS = {"_build", "__pycache__", ".ipynb_checkpoints", ".pytest_cache"}
_SOURCE_WORD = re.compile("out" + "line", re.I)   # spelt in two pieces so that this file passes


def unknown_source_problems(root: Path) -> list[str]:
    """Every line of a text file under ``book/``, ``companion/``, ``tests/`` or ``assignments/``
    that mentions an outline: the reader has only the book, the companion and the tests."""
    problems = []
    for folder in READER_FOLDERS:
        base = root / folder
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*")):
            if (not path.is_file() or path.suffix not in _TEXT_SUFFIXES
                    or _SKIPPED_DIRS & set(path.relative_to(root).parts)):
                continue
            for lineno, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                if _SOURCE_WORD.search(line):
                    problems.append(f"{path.relative_to(root)}:{lineno}: mentions an "
                                    f"{_SOURCE_WORD.search(line).group(0).lower()}, which the reader "
                                    "does not have")
    return problems


def _chapters(root: Path, chapters) -> list[Path]:
    """The chapter notebooks of the TOC, or only those whose names (stems) are in ``chapters``."""
    paths = [p for p in toc_files(root) if p.suffix == ".ipynb" and p.exists()]
    return paths if chapters is None else [p for p in paths if p.stem in set(chapters)]


def _code_trees(nb) -> list[tuple[int, ast.Module]]:
    """(cell index, syntax tree) of every code cell; IPython magics and shell lines are dropped."""
    trees = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        source = "\n".join("" if line.lstrip().startswith(("%", "!")) else line
                           for line in cell.source.splitlines())
        try:
            trees.append((i, ast.parse(source)))
        except SyntaxError:
            continue
    return trees


#: Calls whose result depends on nothing but their arguments: builtins and the functions of
#: these modules (anything with "random" or "rvs" in its name excepted).
_PURE_BUILTINS = {"abs", "round", "float", "int", "min", "max", "pow", "sum", "len", "bool",
                  "complex", "divmod", "range"}
_PURE_MODULES = {"math", "np", "numpy", "special", "stats", "scipy", "cmath", "fractions",
                 "Fraction"}


def _root_name(node) -> str | None:
    while isinstance(node, ast.Attribute):
        if "random" in node.attr or node.attr == "rvs":
            return None
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _is_constant(node, constants: set[str]) -> bool:
    """Whether ``node`` is computed from literals alone (and names bound only to such values)."""
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, ast.Name):
        return node.id in constants
    if isinstance(node, ast.UnaryOp):
        return _is_constant(node.operand, constants)
    if isinstance(node, ast.BinOp):
        return _is_constant(node.left, constants) and _is_constant(node.right, constants)
    if isinstance(node, ast.BoolOp):
        return all(_is_constant(v, constants) for v in node.values)
    if isinstance(node, ast.Compare):
        return all(_is_constant(v, constants) for v in [node.left, *node.comparators])
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return all(_is_constant(v, constants) for v in node.elts)
    if isinstance(node, ast.Subscript):
        return _is_constant(node.value, constants) and _is_constant(node.slice, constants)
    if isinstance(node, ast.Slice):
        return all(v is None or _is_constant(v, constants) for v in (node.lower, node.upper, node.step))
    if isinstance(node, ast.Attribute):
        root = _root_name(node)
        return root is not None and (root in _PURE_MODULES or root in constants)
    if isinstance(node, ast.Call):
        func = node.func
        if isinstance(func, ast.Name):
            pure = func.id in _PURE_BUILTINS
        elif isinstance(func, ast.Attribute):
            root = _root_name(func)
            pure = root is not None and (root in _PURE_MODULES or root in constants)
        else:
            pure = False
        return pure and all(_is_constant(a.value if isinstance(a, ast.Starred) else a, constants)
                            for a in node.args) and all(_is_constant(k.value, constants)
                                                        for k in node.keywords)
    return False


#: Methods and functions that change the array or container they are given.
_MUTATING_METHODS = {"append", "extend", "insert", "update", "fill", "sort", "add", "pop", "remove",
                     "clear", "setdefault", "put", "resize", "itemset", "shuffle", "__setitem__"}
_FILLING_FUNCTIONS = {"at", "copyto", "put", "place", "putmask", "fill_diagonal"}


def _bindings(trees) -> dict[str, list]:
    """Every module-level binding of a name: the assigned value, or None for any other binding
    (a loop variable, an augmented assignment, an import, a function, ...)."""
    bound: dict[str, list] = {}

    def bind_target(target, value):
        if isinstance(target, ast.Name):
            bound.setdefault(target.id, []).append(value)
        elif isinstance(target, (ast.Tuple, ast.List)):
            values = (value.elts if isinstance(value, (ast.Tuple, ast.List))
                      and len(value.elts) == len(target.elts) else [None] * len(target.elts))
            for t, v in zip(target.elts, values, strict=True):
                bind_target(t, v)

    def mutate(node):
        root = _root_name(node) if isinstance(node, (ast.Attribute, ast.Subscript)) else None
        while isinstance(node, (ast.Attribute, ast.Subscript)):
            node = node.value
        root = node.id if isinstance(node, ast.Name) else root
        if root is not None:
            bound.setdefault(root, []).append(None)

    for _, tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    bind_target(target, node.value)
                    for part in ast.walk(target):
                        if isinstance(part, (ast.Subscript, ast.Attribute)):
                            mutate(part)   # x[i] = ..., x.a = ...: x changes
            elif isinstance(node, ast.Call):
                func = node.func
                if isinstance(func, ast.Attribute) and func.attr in _MUTATING_METHODS:
                    mutate(func.value)                       # x.append(...)
                if isinstance(func, ast.Attribute) and func.attr in _FILLING_FUNCTIONS and node.args:
                    mutate(node.args[0])                     # np.add.at(x, ...), np.copyto(x, ...)
                for keyword in node.keywords:
                    if keyword.arg == "out":
                        mutate(keyword.value)                # np.exp(a, out=x)
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                bind_target(node.target, node.value)
            elif isinstance(node, (ast.AugAssign, ast.For, ast.comprehension, ast.NamedExpr)):
                bind_target(node.target, None)
                if not isinstance(node.target, ast.Name):
                    for part in ast.walk(node.target):
                        if isinstance(part, (ast.Subscript, ast.Attribute)):
                            mutate(part)
            elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                bound.setdefault(node.name, []).append(None)
                for arg in ast.walk(node.args):
                    if isinstance(arg, ast.arg):
                        bound.setdefault(arg.arg, []).append(None)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                for alias in node.names:
                    bound.setdefault((alias.asname or alias.name).split(".")[0], []).append(None)
            elif isinstance(node, ast.withitem) and node.optional_vars is not None:
                bind_target(node.optional_vars, None)
            elif isinstance(node, ast.ExceptHandler) and node.name:
                bound.setdefault(node.name, []).append(None)
    return bound


def _constant_names(trees) -> set[str]:
    """Names whose every binding in the notebook is a value computed from literals alone."""
    bound, constants = _bindings(trees), set()
    changed = True
    while changed:
        changed = False
        for name, values in bound.items():
            if name not in constants and all(v is not None and _is_constant(v, constants)
                                             for v in values):
                constants.add(name)
                changed = True
    return constants


def _claims(test) -> list:
    """The separate claims of an assert's test: the operands of ``and``, and each link of a
    chained comparison (``a < 0.3 < 0.5 < b`` claims ``0.3 < 0.5`` among others)."""
    if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And):
        return [claim for value in test.values for claim in _claims(value)]
    if isinstance(test, ast.Compare) and len(test.ops) > 1:
        operands = [test.left, *test.comparators]
        return [ast.Compare(left=operands[k], ops=[op], comparators=[operands[k + 1]])
                for k, op in enumerate(test.ops)]
    return [test]


def literal_assert_problems(root: Path, chapters=None) -> list[str]:
    """Asserts in the chapters (or in the named ones) that compare literals only: every operand is
    a literal, a value computed from literals (``0.8 ** 101 < 0.8 ** 100``,
    ``round(math.exp(6)) == 403``), or a name bound only to such values (``N_REPS == 1000``).
    Such an assert is true by arithmetic or by construction, so it cannot fail and is no evidence.
    Each operand of ``and`` and each link of a chained comparison is a claim of its own."""
    problems = []
    for path in _chapters(root, chapters):
        trees = _code_trees(nbformat.read(path, as_version=4))
        constants = _constant_names(trees)
        for i, tree in trees:
            for node in ast.walk(tree):
                if not isinstance(node, ast.Assert):
                    continue
                for claim in _claims(node.test):
                    if _is_constant(claim, constants):
                        problems.append(f"{path.name}: cell {i}, line {node.lineno}: `assert "
                                        f"{ast.unparse(claim)}` compares literals only; it cannot "
                                        "fail")
    return problems


_GLUE_ROLE = re.compile(r"\{glue(?::[a-z]*)?\}`([^`]+)`")
_GLUE_DIRECTIVE = re.compile(r"^\s*(?:`{3,}|:{3,})\{glue(?::[a-z]*)?\}\s+(\S+)", re.M)


def shown_keys(nb) -> set[str]:
    """Keys that the chapter's Markdown (and its figure captions) shows through glue."""
    texts = [c.source for c in nb.cells if c.cell_type == "markdown"]
    texts += [c.metadata.get("mystnb", {}).get("figure", {}).get("caption", "") for c in nb.cells]
    keys = set()
    for text in texts:
        keys |= {m.split(":")[0].strip() for m in _GLUE_ROLE.findall(text)}
        keys |= set(_GLUE_DIRECTIVE.findall(text))
    return keys


class _GlueKeys:
    """Reads the keys a notebook glues from its code, resolving names bound by loops over literal
    lists and by the parameters of helper functions called with literal keys."""

    def __init__(self, trees):
        self.trees = [tree for _, tree in trees]
        self.parent = {}
        for tree in self.trees:
            for node in ast.walk(tree):
                for child in ast.iter_child_nodes(node):
                    self.parent[child] = node

    def glued(self) -> tuple[set[str], list[re.Pattern]]:
        """The literal keys, and a pattern for each key that cannot be resolved."""
        keys, patterns = set(), []
        for tree in self.trees:
            for node in ast.walk(tree):
                func = getattr(node, "func", None)
                name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
                if not isinstance(node, ast.Call) or name != "glue":
                    continue
                key = node.args[0] if node.args else next(
                    (k.value for k in node.keywords if k.arg == "name"), None)
                if key is None:
                    continue
                values = self.values(key, depth=0)
                if values is not None:
                    keys |= values
                else:
                    patterns.append(re.compile(self.pattern(key)))
        return keys, patterns

    def values(self, node, depth) -> set[str] | None:
        """Every string ``node`` can take, or None if that cannot be read from the code."""
        if depth > 5:
            return None
        if isinstance(node, ast.Constant):
            return {str(node.value)}
        if isinstance(node, ast.JoinedStr):
            out = {""}
            for part in node.values:
                if isinstance(part, ast.FormattedValue):
                    if part.format_spec is not None or part.conversion not in (-1, 115):
                        return None
                    sub = self.values(part.value, depth)
                else:
                    sub = self.values(part, depth)
                if sub is None:
                    return None
                out = {a + b for a in out for b in sub}
            return out
        if isinstance(node, ast.Name):
            return self._name_values(node, depth)
        return None

    def _name_values(self, name, depth):
        scope = self.parent.get(name)
        while scope is not None:
            if isinstance(scope, ast.For) and _binds(scope.target, name.id):
                return self._loop_values(scope, name.id, depth)
            if isinstance(scope, (ast.FunctionDef, ast.Lambda)):
                params = [a.arg for a in scope.args.posonlyargs + scope.args.args]
                if name.id in params and isinstance(scope, ast.FunctionDef):
                    return self._call_values(scope.name, params.index(name.id), name.id, depth)
                return None
            scope = self.parent.get(scope)
        return None

    def _loop_values(self, loop, name, depth):
        if not isinstance(loop.iter, (ast.List, ast.Tuple)):
            return None
        out = set()
        for item in loop.iter.elts:
            value = _unpack(loop.target, item, name)
            sub = None if value is None else self.values(value, depth + 1)
            if sub is None:
                return None
            out |= sub
        return out

    def _call_values(self, function, position, keyword, depth):
        out, calls = set(), 0
        for tree in self.trees:
            for node in ast.walk(tree):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                        and node.func.id == function):
                    continue
                calls += 1
                arg = (node.args[position] if position < len(node.args) else
                       next((k.value for k in node.keywords if k.arg == keyword), None))
                sub = None if arg is None else self.values(arg, depth + 1)
                if sub is None:
                    return None
                out |= sub
        return out if calls else None

    def pattern(self, node) -> str:
        """A regular expression for the keys an unresolved key expression can take."""
        if isinstance(node, ast.JoinedStr):
            return "".join(re.escape(p.value) if isinstance(p, ast.Constant) else ".+"
                           for p in node.values)
        return ".+"


def _binds(target, name) -> bool:
    return any(isinstance(n, ast.Name) and n.id == name for n in ast.walk(target))


def _unpack(target, item, name):
    """The part of a loop's ``item`` that the ``target`` binds to ``name``."""
    if isinstance(target, ast.Name):
        return item if target.id == name else None
    if isinstance(target, (ast.Tuple, ast.List)) and isinstance(item, (ast.Tuple, ast.List)) \
            and len(item.elts) == len(target.elts):
        for t, v in zip(target.elts, item.elts, strict=True):
            if _binds(t, name):
                return _unpack(t, v, name)
    return None


def glue_problems(root: Path, chapters=None) -> list[str]:
    """Glued numbers that the chapter's text never shows, and ``{glue:text}`` roles (or glue
    directives) whose key nothing in the chapter glues. A key built at run time from a name
    bound by a loop over a literal list, or by a helper called with literal keys, is resolved;
    one that cannot be resolved counts as shown if some shown key matches its shape."""
    problems = []
    for path in _chapters(root, chapters):
        nb = nbformat.read(path, as_version=4)
        keys, patterns = _GlueKeys(_code_trees(nb)).glued()
        shown = shown_keys(nb)
        for key in sorted(keys - shown):
            problems.append(f"{path.name}: glues {key!r} but the text never shows it")
        for pattern in patterns:
            if not any(pattern.fullmatch(key) for key in shown):
                problems.append(f"{path.name}: glues keys like {pattern.pattern!r} but the text "
                                "shows none of them")
        for key in sorted(shown - keys):
            if not any(pattern.fullmatch(key) for pattern in patterns):
                problems.append(f"{path.name}: the text shows {key!r}, which nothing glues")
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
