"""The Pythons the course supports: named alike everywhere, and each one can install the course.

The supported versions are the ``Programming Language :: Python :: 3.X`` classifiers of
``pyproject.toml``; the oldest of them is ``requires-python``'s lower bound, ruff's
``target-version`` and the version the README names. For every supported version pip resolves,
without that interpreter (``--python-version``, wheels only), ``requirements.txt`` together with
the companion's own ranges and its ``notebooks`` extra: a solution of both is also a solution of
the ranges alone, so one resolution proves the README's install and the set-up cell's. pip runs
with no configuration but its defaults (no config file, no ``PIP_*`` variables: no local
mirror, wheel folder or constraints), as a learner's pip would.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
#: Colab's Python (Colab moved to 3.12 in 2025): the course must support it.
COLAB_PYTHON = "3.12"


def supported() -> list[str]:
    versions = [m[1] for c in PYPROJECT["project"]["classifiers"]
                if (m := re.fullmatch(r"Programming Language :: Python :: (3\.\d+)", c))]
    return sorted(versions, key=lambda v: tuple(map(int, v.split("."))))


def test_the_oldest_supported_python_is_the_same_everywhere():
    versions = supported()
    assert versions, "pyproject.toml lists no Python version classifiers"
    oldest = versions[0]
    requires = SpecifierSet(PYPROJECT["project"]["requires-python"])
    assert requires == SpecifierSet(f">={oldest}"), requires
    assert PYPROJECT["tool"]["ruff"]["target-version"] == "py" + oldest.replace(".", "")
    readme = (ROOT / "README.md").read_text()
    named = re.findall(r"Python (3\.\d+) or newer", readme)
    assert named and set(named) == {oldest}, f"README.md names {named}, pyproject {oldest}"
    assert COLAB_PYTHON in versions
    # consecutive: every version between the oldest and the newest is supported
    minors = [int(v.split(".")[1]) for v in versions]
    assert minors == list(range(minors[0], minors[-1] + 1)), versions
    # the interpreter CI and the publish workflow use is a supported one
    for workflow in (ROOT / ".github" / "workflows").glob("*.yml"):
        for used in re.findall(r'python-version:\s*"?(3\.\d+)', workflow.read_text()):
            assert used in versions, f"{workflow.name} uses Python {used}"


def _resolve(python: str, target: Path) -> subprocess.CompletedProcess:
    project = PYPROJECT["project"]
    ranges = project["dependencies"] + project["optional-dependencies"]["notebooks"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet",
               "--disable-pip-version-check", "--python-version", python,
               "--only-binary=:all:", "--ignore-installed", "--target", str(target),
               "--index-url", "https://pypi.org/simple",
               # read each wheel's metadata with range requests, not whole wheels (torch: 0.5 GB)
               "--use-feature=fast-deps",
               "-r", str(ROOT / "requirements.txt"), *ranges]
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0 and "fast-deps" in result.stderr and "invalid" in result.stderr:
        command.remove("--use-feature=fast-deps")  # a pip without that feature
        result = subprocess.run(command, capture_output=True, text=True, env=env)
    return result


@pytest.mark.environments
def test_requirements_and_the_companions_ranges_resolve_for_every_supported_python(tmp_path):
    versions = supported()
    with ThreadPoolExecutor(max_workers=len(versions)) as pool:
        results = dict(zip(versions, pool.map(lambda v: _resolve(v, tmp_path / v), versions),
                           strict=True))
    failures = {v: r.stderr[-2000:] for v, r in results.items() if r.returncode != 0}
    assert failures == {}, "\n\n".join(f"Python {v}:\n{err}" for v, err in failures.items())
