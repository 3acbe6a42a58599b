"""Every package a chapter imports is provided wherever a learner opens it.

A chapter runs in three homes: the course's own environment (``requirements.txt``), Binder
(``binder/``: its requirements and a postBuild that installs the companion) and any fresh
environment where the chapter's set-up cell installs the companion with its ``notebooks`` extra
on top of a plain scientific stack (Colab, a bare JupyterLab). The imports of every code cell of
every chapter in ``_toc.yml`` are read with ``ast`` and looked up in each home's list.
"""

from __future__ import annotations

import ast
import functools
import os
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import nbformat
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from toc import toc_notebooks  # noqa: E402

BINDER = ROOT / "binder"
#: What every Jupyter kernel has (it comes with ipykernel), in every home.
WITH_EVERY_KERNEL = {"ipython", "ipykernel", "traitlets", "matplotlib-inline"}
#: The plain scientific stack that the set-up cell expects (Colab ships it; so does any
#: scientific Python installation), beside what the companion itself depends on.
PLAIN_STACK = {"numpy", "scipy", "matplotlib"}


@functools.cache
def chapter_imports() -> dict[str, set[str]]:
    """Top-level module -> the chapters that import it (standard library left out)."""
    found: dict[str, set[str]] = {}
    for path in toc_notebooks():
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type != "code":
                continue
            source = "\n".join(line for line in cell.source.splitlines()
                               if not line.lstrip().startswith(("%", "!")))
            for node in ast.walk(ast.parse(source)):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names:
                        found.setdefault(top, set()).add(path.name)
    return found


def distribution(module: str) -> str:
    """The (canonical) name of the distribution that provides ``module`` in the course's venv."""
    if module == "companion":
        return "is-rl-companion"
    dists = _packages_distributions().get(module)
    assert dists, f"no installed distribution provides {module!r} (is the course's venv complete?)"
    return canonicalize_name(dists[0])


@functools.cache
def _packages_distributions():
    return packages_distributions()


def requirement_lines(path: Path) -> list[str]:
    return [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()
            if line.split("#", 1)[0].strip()]


def requirements(path: Path) -> dict[str, Requirement]:
    reqs = [Requirement(line) for line in requirement_lines(path) if not line.startswith("-")]
    return {canonicalize_name(r.name): r for r in reqs}


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_chapters_import_something_from_outside_the_standard_library():
    imports = chapter_imports()
    assert {"companion", "numpy", "matplotlib"} <= set(imports), imports


def test_binder_provides_every_package_a_chapter_imports():
    binder = set(requirements(BINDER / "requirements.txt")) | {"is-rl-companion"}
    missing = {module: sorted(chapters) for module, chapters in chapter_imports().items()
               if distribution(module) not in binder | WITH_EVERY_KERNEL}
    assert missing == {}, f"binder/requirements.txt lacks what these chapters import: {missing}"


def test_binder_provides_the_companions_dependencies():
    """postBuild installs the companion without its dependencies: requirements.txt has them."""
    binder = set(requirements(BINDER / "requirements.txt"))
    project = pyproject()["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["notebooks"]
    missing = sorted(canonicalize_name(Requirement(d).name) for d in wanted
                     if canonicalize_name(Requirement(d).name) not in binder)
    assert missing == [], f"binder/requirements.txt lacks the companion's {missing}"


def test_binder_installs_the_companion_and_the_cpu_build_of_torch():
    post_build = (BINDER / "postBuild").read_text()
    assert post_build.startswith("#!"), "postBuild needs a shebang line"
    assert os.access(BINDER / "postBuild", os.X_OK), "postBuild must be executable"
    assert re.search(r"^python -m pip install --no-deps \.$", post_build, re.M), post_build
    lines = requirement_lines(BINDER / "requirements.txt")
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in lines
    torch = requirements(BINDER / "requirements.txt")["torch"]
    assert str(torch.specifier).endswith("+cpu"), torch


def test_binder_pins_the_course_versions_and_a_supported_python():
    course = requirements(ROOT / "requirements.txt")
    binder = requirements(BINDER / "requirements.txt")
    for name, req in binder.items():
        pinned = str(req.specifier).removeprefix("==").split("+")[0]
        if name in course:
            assert str(course[name].specifier) == f"=={pinned}", (name, req, course[name])
        else:  # not pinned by requirements.txt: the version the course's venv resolved
            from importlib.metadata import version
            assert version(name) == pinned, (name, req, version(name))
    runtime = (BINDER / "runtime.txt").read_text().strip()
    match = re.fullmatch(r"python-(3\.\d+)", runtime)
    assert match, f"binder/runtime.txt: expected python-3.X, got {runtime!r}"
    classifiers = pyproject()["project"]["classifiers"]
    assert f"Programming Language :: Python :: {match[1]}" in classifiers


def test_the_setup_cell_installs_every_package_a_chapter_imports():
    """Beyond a plain scientific stack, the set-up cell installs the companion with its
    dependencies and its ``notebooks`` extra: that must cover every import."""
    project = pyproject()["project"]
    deps = [Requirement(d) for d in project["dependencies"]]
    deps += [Requirement(d) for d in project["optional-dependencies"]["notebooks"]]
    provided = {canonicalize_name(r.name) for r in deps} | PLAIN_STACK | WITH_EVERY_KERNEL
    provided.add("is-rl-companion")
    missing = {module: sorted(chapters) for module, chapters in chapter_imports().items()
               if distribution(module) not in provided}
    assert missing == {}, ("add these to the companion's dependencies or its 'notebooks' extra "
                           f"in pyproject.toml: {missing}")


@pytest.mark.parametrize("module", ["seaborn", "sklearn"])
def test_a_chapter_importing_an_unprovided_package_is_caught(module, monkeypatch):
    """The check above can fail: a chapter that imports a package nobody provides."""
    this = sys.modules[__name__]
    monkeypatch.setattr(this, "chapter_imports", lambda: {module: {"x.ipynb"}})
    monkeypatch.setattr(this, "distribution", lambda m: m)
    with pytest.raises(AssertionError, match=module):
        test_binder_provides_every_package_a_chapter_imports()
    with pytest.raises(AssertionError, match=module):
        test_the_setup_cell_installs_every_package_a_chapter_imports()
