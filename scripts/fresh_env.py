"""A fresh environment with only what Colab or a plain JupyterLab has, for nbval to run the chapters in.

The chapters' set-up cell (scripts/colab_cell.py) promises that a notebook opened outside the
course's own environment runs top to bottom with what the cell installs on top of a plain
scientific stack, without the book's build tools. ``make test-notebooks`` keeps that promise by
running nbval on every chapter with a kernel of the environment this script builds:

1. it builds the companion's wheel from this checkout;
2. it makes a fresh virtual environment over a plain stack: numpy, scipy, matplotlib, ipykernel,
   nbclient and torch at the course's versions (no pandas, no myst-nb, no jupyter-book). As on
   Colab, the stack is a layer under the environment, installed once into the user's cache
   (``~/.cache/is-rl-course``, or ``COURSE_CACHE``) and put on the path by a ``.pth`` file; the
   environment itself starts empty;
3. it runs the set-up cell there with ``COMPANION_SOURCE`` pointing at the wheel, which installs
   the companion with its version ranges and its ``notebooks`` extra, and checks that the
   companion and pandas now import from the fresh environment and that the book's build tools
   are absent;
4. it registers that interpreter as the Jupyter kernel ``is-rl-fresh`` in ``DIR/kernel`` (a name
   no other environment has, so nbval cannot silently fall back to the course's own kernel).

    python scripts/fresh_env.py DIR     # prints the JUPYTER_PATH under which the kernel is found

The book's build executes the same chapters in the course's environment; nbval and this kernel
prove the other home. ``tests/nbval_fresh.py`` checks, during the nbval run, that the kernel is
this one and that every value a chapter's text glues was printed (there is no myst-nb here, so
``companion.notebook.glue`` prints it). Needs the package index (for the companion's
dependencies; pip's cache makes reruns fast).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import colab_cell

ROOT = Path(__file__).resolve().parent.parent
#: The kernel's name: nbval is told to use exactly this one.
KERNEL_NAME = "is-rl-fresh"
#: What the fresh environment starts with: a plain scientific stack, as Colab has it (and pip).
PLAIN_STACK = ["pip", "numpy", "scipy", "matplotlib", "ipykernel", "nbclient", "torch"]
#: What must not be there: the book's build tools.
ABSENT = ["myst_nb", "jupyter_book", "sphinx"]


def clean_env(**extra) -> dict[str, str]:
    """The environment of a learner's shell: nothing of the course's venv or Jupyter paths."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("JUPYTER_PATH", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env.update(extra)
    return env


def run(cmd, **kwargs) -> subprocess.CompletedProcess:
    """Run ``cmd``; raise with its output if it fails."""
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed:\n"
                           f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def plain_stack(python: Path, env: dict[str, str]) -> Path:
    """The plain stack, installed once into a folder under the user's cache and reused.

    Like the packages Colab ships, it is a read-only layer under the fresh environment (a ``.pth``
    file puts it on the path); what the set-up cell installs goes into the environment itself.
    Keyed by the Python version and the stack's versions.
    """
    stack = [f"{name}=={version(name)}" for name in PLAIN_STACK]
    key = hashlib.sha256(" ".join(stack).encode()).hexdigest()[:12]
    cache = Path(os.environ.get("COURSE_CACHE", Path.home() / ".cache" / "is-rl-course"))
    layer = cache / f"plain-stack-py{sys.version_info.major}.{sys.version_info.minor}-{key}"
    if not (layer / ".complete").exists():
        cache.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=layer.name + "-", dir=cache))
        try:
            run([python, "-m", "pip", "install", "-q", "--target", partial, *stack], env=env)
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


def build(target: Path) -> Path:
    """Build the fresh environment and its kernel under ``target``; return the JUPYTER_PATH."""
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    timings = {}
    start = time.perf_counter()
    # Built from a copy of the package's files: setuptools leaves build/ beside the sources.
    source = target / "source"
    shutil.copytree(ROOT / "companion", source / "companion",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE", "LICENSE-CODE", "LICENSE-TEXT"):
        shutil.copy2(ROOT / name, source / name)
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", *isolation,
         "-w", target / "dist", source])
    wheel = next((target / "dist").glob("is_rl_companion-*.whl"))
    timings["wheel"] = time.perf_counter() - start

    start = time.perf_counter()
    venv = target / "venv"
    base_python = getattr(sys, "_base_executable", sys.executable)
    run([base_python, "-m", "venv", "--without-pip", venv])  # pip comes with the stack
    python = venv / "bin" / "python"
    env = clean_env(PATH=f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    layer = plain_stack(Path(sys.executable), env)
    site = run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
               env=env).stdout.strip()
    (Path(site) / "plain-stack.pth").write_text(f"{layer}\n")
    timings["plain stack"] = time.perf_counter() - start

    start = time.perf_counter()
    setup = run([python, "-c", colab_cell.expected_source()],
                env=dict(env, COMPANION_SOURCE=str(wheel)), cwd=target)
    if "Installing the course's companion package" not in setup.stdout:
        raise RuntimeError(f"the set-up cell did not install the companion:\n{setup.stdout}")
    timings["set-up cell"] = time.perf_counter() - start
    check = ("import importlib.util, companion, pandas\n"
             "print(companion.__file__)\n"
             f"print([n for n in {ABSENT!r} if importlib.util.find_spec(n) is not None])\n")
    where, present = run([python, "-c", check], env=env, cwd=target).stdout.splitlines()
    if not where.startswith(str(venv)):
        raise RuntimeError(f"the companion is not the fresh one: {where}")
    if present != "[]":
        raise RuntimeError(f"the fresh environment has the book's build tools: {present}")

    run([python, "-m", "ipykernel", "install", "--prefix", target / "kernel",
         "--name", KERNEL_NAME, "--display-name", "Python 3 (fresh environment)"], env=env)
    jupyter_path = target / "kernel" / "share" / "jupyter"
    spec = json.loads((jupyter_path / "kernels" / KERNEL_NAME / "kernel.json").read_text())
    if Path(spec["argv"][0]) != python:
        raise RuntimeError(f"kernel {KERNEL_NAME} runs {spec['argv'][0]}, not {python}")
    print("fresh environment: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()),
          file=sys.stderr)
    return jupyter_path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path, help="where to build (replaced if it exists)")
    args = parser.parse_args(argv)
    print(build(args.dir.resolve()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
