"""Every chapter runs in a fresh environment that has only what Colab or a plain JupyterLab has.

The chapters' set-up cell (scripts/colab_cell.py) promises that a notebook opened outside the
course's own environment runs top to bottom with what the cell installs on top of a plain
scientific stack, without the book's build tools. This test keeps that promise honest:

1. it builds the companion's wheel from this checkout;
2. it makes a fresh virtual environment over a plain stack: numpy, scipy, matplotlib, ipykernel,
   nbclient and torch at the course's versions (no pandas, no myst-nb, no jupyter-book). As on
   Colab, the stack is a layer under the environment, installed once into the user's cache
   (``~/.cache/is-rl-course``) and put on the path by a ``.pth`` file; the environment itself
   starts empty;
3. it runs the set-up cell there with ``COMPANION_SOURCE`` pointing at the wheel, which installs
   the companion with its version ranges and its ``notebooks`` extra;
4. it executes every chapter of ``_toc.yml`` in that environment (two at a time), with a last
   cell that checks the kernel really is the fresh one and that myst-nb is absent, and checks
   that every value a chapter's text glues was printed by ``companion.notebook.glue``.

Needs the package index (for the companion's dependencies; pip's cache makes reruns fast).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import colab_cell  # noqa: E402
from toc import toc_notebooks  # noqa: E402

pytestmark = pytest.mark.environments

#: What the fresh environment starts with: a plain scientific stack, as Colab has it (and pip).
PLAIN_STACK = ["pip", "numpy", "scipy", "matplotlib", "ipykernel", "nbclient", "torch"]
#: What must not be there: the book's build tools (and pandas, which the set-up cell brings).
ABSENT = ["myst_nb", "jupyter_book", "sphinx"]
GLUE = re.compile(r"\{glue(?::text)?\}`([^`:]+)")

RUNNER = """\
import sys, nbformat
from nbclient import NotebookClient
nb = nbformat.read(sys.argv[1], as_version=4)
NotebookClient(nb, kernel_name="python3", timeout=600,
               resources={"metadata": {"path": sys.argv[3]}}).execute()
nbformat.write(nb, sys.argv[2])
"""

CHECK_CELL = """\
import importlib.util, sys
assert sys.prefix == {prefix!r}, sys.prefix
missing = [name for name in {absent!r} if importlib.util.find_spec(name) is not None]
assert not missing, f"the fresh environment has {{missing}}"
"""


def _clean_env(**extra) -> dict[str, str]:
    """The environment of a learner's shell: nothing of the course's venv or Jupyter paths."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("JUPYTER_PATH", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env.update(extra)
    return env


def _run(cmd, **kwargs):
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, (f"{' '.join(map(str, cmd))} failed:\n"
                                    f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def _plain_stack(python: Path, env: dict[str, str]) -> Path:
    """The plain stack, installed once into a folder under the user's cache and reused.

    Like the packages Colab ships, it is a read-only layer under the fresh environment (a ``.pth``
    file puts it on the path); what the set-up cell installs goes into the environment itself.
    Keyed by the Python version and the stack's versions. ``COURSE_CACHE`` moves it.
    """
    stack = [f"{name}=={version(name)}" for name in PLAIN_STACK]
    key = hashlib.sha256(" ".join(stack).encode()).hexdigest()[:12]
    cache = Path(os.environ.get("COURSE_CACHE", Path.home() / ".cache" / "is-rl-course"))
    layer = cache / f"plain-stack-py{sys.version_info.major}.{sys.version_info.minor}-{key}"
    if not (layer / ".complete").exists():
        partial = Path(tempfile.mkdtemp(prefix=layer.name + "-", dir=_mkdir(cache)))
        try:
            _run([python, "-m", "pip", "install", "-q", "--target", partial, *stack], env=env)
            (partial / ".complete").write_text(" ".join(stack) + "\n")
            shutil.rmtree(layer, ignore_errors=True)
            partial.rename(layer)
        except OSError:  # another run finished the same layer first
            if not (layer / ".complete").exists():
                raise
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    (layer / ".complete").touch()
    # Layers of other versions that no run has used for a week go (each is about 1 GB).
    for old in cache.glob("plain-stack-py*"):
        marker = old / ".complete"
        stale = not marker.exists() or time.time() - marker.stat().st_mtime > 7 * 86400
        if old != layer and stale and time.time() - old.stat().st_mtime > 86400:
            shutil.rmtree(old, ignore_errors=True)
    return layer


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """A fresh venv over the plain stack, after the set-up cell ran there with the new wheel."""
    tmp = tmp_path_factory.mktemp("fresh")
    timings = {}
    start = time.perf_counter()
    # Built from a copy of the package's files: setuptools leaves build/ beside the sources.
    source = tmp / "source"
    shutil.copytree(ROOT / "companion", source / "companion",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE", "LICENSE-CODE", "LICENSE-TEXT"):
        shutil.copy2(ROOT / name, source / name)
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", *isolation,
          "-w", tmp / "dist", source])
    wheel = next((tmp / "dist").glob("is_rl_companion-*.whl"))
    timings["wheel"] = time.perf_counter() - start

    start = time.perf_counter()
    venv = tmp / "venv"
    base_python = getattr(sys, "_base_executable", sys.executable)
    _run([base_python, "-m", "venv", "--without-pip", venv])  # pip comes with the stack
    python = venv / "bin" / "python"
    env = _clean_env(PATH=f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    layer = _plain_stack(Path(sys.executable), env)
    site = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                env=env).stdout.strip()
    (Path(site) / "plain-stack.pth").write_text(f"{layer}\n")
    timings["plain stack"] = time.perf_counter() - start

    start = time.perf_counter()
    setup = _run([python, "-c", colab_cell.expected_source()],
                 env=dict(env, COMPANION_SOURCE=str(wheel)), cwd=tmp)
    assert "Installing the course's companion package" in setup.stdout
    timings["set-up cell"] = time.perf_counter() - start
    installed = _run([python, "-c", "import companion, pandas; print(companion.__file__)"],
                     env=env, cwd=tmp).stdout
    assert installed.startswith(str(venv)), f"the companion is not the fresh one: {installed}"

    # A kernel spec for that interpreter, ahead of any other "python3" kernel on the machine.
    _run([python, "-m", "ipykernel", "install", "--prefix", tmp / "kernel", "--name", "python3"],
         env=env)
    env.update(JUPYTER_PATH=str(tmp / "kernel" / "share" / "jupyter"),
               JUPYTER_DATA_DIR=str(tmp / "jupyter-data"))
    (tmp / "runner.py").write_text(RUNNER)
    print("fresh environment: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
    return {"tmp": tmp, "python": python, "env": env, "prefix": str(venv)}


def _execute(fresh, path: Path) -> tuple[Path, float, object]:
    nb = nbformat.read(path, as_version=4)
    prefix = os.path.realpath(fresh["prefix"])
    nb.cells.append(nbformat.v4.new_code_cell(
        CHECK_CELL.format(prefix=prefix, absent=ABSENT)))
    source = fresh["tmp"] / f"in-{path.name}"
    out = fresh["tmp"] / f"out-{path.name}"
    nbformat.write(nb, source)
    start = time.perf_counter()
    result = subprocess.run([str(fresh["python"]), str(fresh["tmp"] / "runner.py"), str(source),
                             str(out), str(path.parent)],
                            env=fresh["env"], capture_output=True, text=True)
    return path, time.perf_counter() - start, result


def _printed(nb) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.get("outputs", []) if o.get("output_type") == "stream")


def _glued_keys(path: Path) -> set[str]:
    nb = json.loads(path.read_text())
    text = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    return set(GLUE.findall(text))


def test_every_chapter_runs_in_a_fresh_environment_without_the_book_tools(fresh):
    chapters = toc_notebooks()
    assert chapters, "no chapters in _toc.yml"
    # The training chapters (torch) take longest: start them first, two chapters at a time.
    chapters.sort(key=lambda p: ("import torch" not in p.read_text(), -p.stat().st_size))
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda p: _execute(fresh, p), chapters))
    failures = []
    for path, seconds, result in results:
        print(f"{path.name}: {seconds:.0f} s")
        if result.returncode != 0:
            failures.append(f"{path.name}:\n{result.stderr[-4000:]}")
            continue
        out = nbformat.read(fresh["tmp"] / f"out-{path.name}", as_version=4)
        printed = _printed(out)
        unseen = sorted(k for k in _glued_keys(path) if f"{k} = " not in printed)
        if unseen:
            failures.append(f"{path.name}: glued values never shown: {unseen}")
    assert not failures, "\n\n".join(failures)
