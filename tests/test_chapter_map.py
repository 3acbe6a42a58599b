"""The chapter-to-code map, read from the docstrings, against what the notebooks actually call.

*Claims.* A public companion name's docstring names the chapters that use it as Sphinx roles
``:doc:`/book/<stem>``` and the assignments that use it as "the ``<name>`` assignment" (or "the
``<a>``, ``<b>`` and ``<c>`` assignments"); "every chapter" names them all. A titled role ``:doc:`title </book/<stem>>``` is a cross-reference for the
reader, not a claim. A module's docstring makes the same claims for the union of its names.

*Uses.* The code cells of every chapter (a notebook listed in ``_toc.yml``) and of every assignment
(``assignments/<name>/<name>.ipynb``), parsed with :mod:`ast`: ``cp.name`` after ``import companion
as cp``, ``companion.module.name``, ``from companion(.module) import name``, and ``m.name`` after
``from companion import module as m`` or ``import companion.module as m``. A public class that a
public function returns (its return annotation) is used wherever that function is.

A mismatch in either direction fails. A public name that no chapter or assignment uses must be
listed, with a reason, in the "Also provided" section of ``book/api.md``.
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import json
import re
import sys
from pathlib import Path

import pytest
from IPython.core.inputtransformer2 import TransformerManager

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from toc import toc_notebooks  # noqa: E402

MODULES = sorted(p.stem for p in (ROOT / "companion").glob("*.py") if not p.stem.startswith("_"))
CLAIM = re.compile(r":doc:`/book/([\w-]+)`")
ASSIGNMENT_CLAIM = re.compile(r"\bthe\s+((?:``\w+``(?:,\s*|\s+and\s+))*``\w+``)\s+assignments?\b")
EVERY_CHAPTER = re.compile(r"\bevery\s+chapter\b")


def chapters() -> dict[str, Path]:
    return {p.stem: p for p in toc_notebooks(ROOT)}


def assignments() -> dict[str, Path]:
    return {p.parent.name: p for p in sorted(ROOT.glob("assignments/*/*.ipynb"))
            if p.stem == p.parent.name}


def _label(kind: str, name: str) -> str:
    return name if kind == "chapter" else f"the {name} assignment"


# ------------------------------------------------------------------ what the docstrings claim
@functools.cache
def public() -> dict[str, tuple[str, object, str | None]]:
    """Every public name: (module, object, docstring)."""
    out = {}
    for module_name in MODULES:
        module = importlib.import_module(f"companion.{module_name}")
        attribute_docs = _attribute_docstrings(Path(module.__file__))
        for name in module.__all__:
            assert name not in out, f"{name} is public in both {out[name][0]} and {module_name}"
            obj = getattr(module, name)
            if inspect.isfunction(obj) or inspect.isclass(obj):
                doc = inspect.getdoc(obj)
            else:
                doc = attribute_docs.get(name)
            out[name] = (module_name, obj, doc)
    return out


def _attribute_docstrings(path: Path) -> dict[str, str]:
    """Docstrings of module-level constants: the string right after the assignment."""
    body = ast.parse(path.read_text()).body
    docs = {}
    for node, after in zip(body, body[1:], strict=False):
        targets = node.targets if isinstance(node, ast.Assign) else (
            [node.target] if isinstance(node, ast.AnnAssign) else [])
        if (isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)):
            for t in targets:
                if isinstance(t, ast.Name):
                    docs[t.id] = after.value.value
    return docs


def claims(doc: str | None) -> set[tuple[str, str]]:
    """The chapters and assignments a docstring names as users."""
    doc = doc or ""
    found = {("chapter", stem) for stem in CLAIM.findall(doc)}
    found |= {("assignment", name) for names in ASSIGNMENT_CLAIM.findall(doc)
              for name in re.findall(r"``(\w+)``", names)}
    if EVERY_CHAPTER.search(doc):
        found |= {("chapter", stem) for stem in chapters()}
    return found


# ------------------------------------------------------------------ what the notebooks call
def _cell_trees(path: Path):
    manager = TransformerManager()  # turns %magics and !commands into Python
    for cell in json.loads(path.read_text())["cells"]:
        if cell["cell_type"] == "code":
            yield ast.parse(manager.transform_cell("".join(cell["source"])), filename=str(path))


def calls(path: Path) -> set[tuple[str | None, str]]:
    """(module or None, name) of every companion name a notebook's code refers to."""
    trees = list(_cell_trees(path))
    package, modules, found = set(), {}, set()
    for tree in trees:  # aliases first: an import in one cell serves every later cell
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    parts = alias.name.split(".")
                    if parts[0] != "companion":
                        continue
                    if alias.asname and len(parts) == 2:
                        modules[alias.asname] = parts[1]
                    else:
                        package.add(alias.asname or "companion")
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "companion":
                parts = node.module.split(".")
                for alias in node.names:
                    if len(parts) == 1 and alias.name in MODULES:
                        modules[alias.asname or alias.name] = alias.name
                    else:
                        found.add((parts[1] if len(parts) > 1 else None, alias.name))
    for tree in trees:
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute):
                continue
            base = node.value
            if isinstance(base, ast.Name) and base.id in package and node.attr not in MODULES:
                found.add((None, node.attr))
            elif isinstance(base, ast.Name) and base.id in modules:
                found.add((modules[base.id], node.attr))
            elif (isinstance(base, ast.Attribute) and isinstance(base.value, ast.Name)
                  and base.value.id in package and base.attr in MODULES):
                found.add((base.attr, node.attr))
    return found


@functools.cache
def sources() -> dict[tuple[str, str], set[tuple[str | None, str]]]:
    out = {("chapter", stem): calls(p) for stem, p in chapters().items()}
    out |= {("assignment", name): calls(p) for name, p in assignments().items()}
    return out


def _returned_class_names(obj) -> set[str]:
    annotation = inspect.signature(obj).return_annotation
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    return set(re.findall(r"\w+", text or ""))


@functools.cache
def users() -> dict[str, set[tuple[str, str]]]:
    """The chapters and assignments that use each public name."""
    names = public()
    direct = {name: set() for name in names}
    for source, found in sources().items():
        for _module, name in found:
            if name in direct:
                direct[name].add(source)
    out = {name: set(found) for name, found in direct.items()}
    for name, (_module, obj, _doc) in names.items():
        if inspect.isfunction(obj):
            for returned in _returned_class_names(obj):
                if returned in names and inspect.isclass(names[returned][1]) and returned != name:
                    out[returned] |= direct[name]
    return out


# ------------------------------------------------------------------ the "Also provided" list
def also_provided() -> dict[str, str]:
    """Names listed under "Also provided" in book/api.md, with the reason given for each."""
    text = (ROOT / "book" / "api.md").read_text()
    match = re.search(r"^## Also provided\s*$(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, 'book/api.md has no "## Also provided" section'
    listed = {}
    for item in re.findall(r"^- (.+?)(?=^- |\Z)", match.group(1), re.M | re.S):
        head, _, reason = item.partition(":")
        for name in re.findall(r"`(\w+)`", head):
            listed[name] = " ".join(reason.split())
    return listed


# ------------------------------------------------------------------ the tests
def _params():
    for name, (module, _obj, _doc) in sorted(public().items(), key=lambda kv: (kv[1][0], kv[0])):
        yield pytest.param(name, id=f"{module}.{name}")


@pytest.mark.parametrize("name", list(_params()))
def test_docstring_names_exactly_the_chapters_that_use_it(name):
    module, _obj, doc = public()[name]
    used, claimed = users()[name], claims(doc)
    if not used:
        assert name in also_provided(), (
            f"companion.{module}.{name}: no chapter or assignment uses it; make it private, remove "
            'it, or list it with a reason under "Also provided" in book/api.md (for a class that a '
            "public function returns: annotate that function's return type)")
        assert not claimed, f"companion.{module}.{name}: claims users, but none uses it"
        return
    missing = sorted(_label(*s) for s in used - claimed)
    extra = sorted(_label(*s) for s in claimed - used)
    assert not missing, f"companion.{module}.{name}: used by {missing}, not named in its docstring"
    assert not extra, (
        f"companion.{module}.{name}: the docstring names {extra}, which do not use it (a reference "
        "that is not a claim is written :doc:`title </book/stem>`)")


@pytest.mark.parametrize("module_name", MODULES)
def test_module_docstring_names_the_union_of_its_names(module_name):
    module = importlib.import_module(f"companion.{module_name}")
    union = set().union(*(users()[n] for n in module.__all__))
    claimed = claims(module.__doc__)
    assert claimed == union, (
        f"companion.{module_name}: the module docstring names "
        f"{sorted(_label(*s) for s in claimed)}; its names are used by "
        f"{sorted(_label(*s) for s in union)}")


def test_also_provided_lists_only_unused_public_names_with_a_reason():
    listed = also_provided()
    assert listed, 'the "Also provided" section lists no names'
    for name, reason in listed.items():
        assert name in public(), f"Also provided: `{name}` is not a public companion name"
        assert not users()[name], f"Also provided: `{name}` is used by {sorted(users()[name])}"
        assert len(reason.split()) >= 5, f"Also provided: `{name}` needs a reason"


def test_chapters_call_only_public_names():
    names = public()
    unknown = sorted(
        (_label(*source), module, name) for source, found in sources().items()
        for module, name in found
        if not (name in names and (module is None or names[name][0] == module)))
    assert not unknown, f"calls of names that are not public in that module: {unknown}"


def test_api_page_documents_every_module_without_chapter_numbers():
    text = (ROOT / "book" / "api.md").read_text()
    documented = re.findall(r"^\.\. automodule:: companion\.(\w+)", text, re.M)
    assert sorted(documented) == MODULES
    headings = re.findall(r"^#+ .*$", text, re.M)
    numbered = [h for h in headings if re.search(r"\bchapters? \d", h)]
    assert not numbered, f"chapter numbers move when chapters are inserted: {numbered}"


def test_no_docstring_points_to_a_chapter_by_number():
    pattern = re.compile(r"\b[Cc]hapters? \d")
    found = [f"companion/{p.name}:{i}" for p in sorted((ROOT / "companion").glob("*.py"))
             for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not found, f"refer to chapters with :doc:`/book/<stem>`, not by number: {found}"


def test_the_scanner_sees_every_form_of_call(tmp_path):
    """The use detector itself, on a notebook with every import form it must follow."""
    cells = [
        "%matplotlib inline\nimport companion as cp\nfrom companion import blackjack as bj",
        "import companion.mdp as m\nfrom companion.notebook import glue\nimport companion",
        "cp.trajectory_is(1)\nbj.exact_value(2)\nm.random_mdp(3)\ncompanion.weights.log_ratios(4)",
        "!echo no python here\ncp.estimators.per_decision_is(5)\nx = other.module.name",
    ]
    nb = {"cells": [{"cell_type": "code", "source": c, "metadata": {}, "outputs": []}
                    for c in cells] + [{"cell_type": "markdown", "source": "cp.not_code"}]}
    path = tmp_path / "probe.ipynb"
    path.write_text(json.dumps(nb))
    assert calls(path) == {
        (None, "trajectory_is"), ("blackjack", "exact_value"), ("mdp", "random_mdp"),
        ("notebook", "glue"), ("weights", "log_ratios"), ("estimators", "per_decision_is"),
    }
