"""Keep every copy of the repository URL in sync with ``_config.yml``.

It appears in the set-up cell at the top of every chapter notebook and in the autograder's
requirements (``assignments/requirements-autograder.txt``).

The repository URL lives in one place, ``repository.url`` in ``_config.yml``. Every chapter notebook
starts with a code cell, hidden in the HTML (tag ``remove-cell``), that installs the companion with
the version ranges of its ``pyproject.toml`` and its ``notebooks`` extra (what the chapters import
beyond the companion's own dependencies: pandas) when it is missing (on Colab, say), keeps an
installed torch and numpy (so that Colab keeps its CUDA build and no runtime restart is needed),
installs the CPU build of torch where there is none, and does nothing where the companion is
installed. The environment variable ``COMPANION_SOURCE`` points the cell at another source
(scripts/fresh_env.py installs a freshly built wheel that way for `make test-notebooks`).

    python scripts/colab_cell.py --check   # exit 1 if any notebook's cell is missing or stale
    python scripts/colab_cell.py --write   # insert or rewrite the cell in every notebook under book/
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parent.parent
TAG = "remove-cell"
MARKER = "# Set-up for Colab"

TEMPLATE = '''\
# Set-up for Colab, Binder and other fresh environments: installs the course's `companion` package
# with the version ranges it needs (and pandas, for a table) when it is missing, and does nothing
# where it is installed. An installed torch or numpy is kept as it is; without torch, the small CPU
# build is installed. COMPANION_SOURCE, if set, says where to get the companion from instead (a
# wheel, a folder or a pip URL).
import importlib
import importlib.util
import os
import pathlib
import subprocess
import sys
from importlib.metadata import version

if importlib.util.find_spec("companion") is None:
    print("Installing the course's companion package (a minute or two)...")
    source = os.environ.get("COMPANION_SOURCE", "git+{url}@{branch}")
    if os.path.exists(source):  # a wheel or a folder on this machine
        source = pathlib.Path(source).resolve().as_uri()
    keep = [f"{{name}}=={{version(name)}}" for name in ("torch", "numpy")
            if importlib.util.find_spec(name) is not None]
    cpu_torch = ([] if importlib.util.find_spec("torch") is not None
                 else ["--extra-index-url", "https://download.pytorch.org/whl/cpu"])
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    f"is-rl-companion[notebooks] @ {{source}}", *keep, *cpu_torch], check=True)
    importlib.invalidate_caches()'''


def expected_source(root: Path = ROOT) -> str:
    """The set-up cell's source for the repository named in ``_config.yml``."""
    repo = yaml.safe_load((root / "_config.yml").read_text())["repository"]
    return TEMPLATE.format(url=repo["url"].rstrip("/"), branch=repo.get("branch", "main"))


def _first_code_cell(nb):
    return next((c for c in nb.cells if c.cell_type == "code"), None)


def stale_notebooks(root: Path = ROOT) -> list[Path]:
    """Notebooks under ``book/`` whose first code cell is not the current set-up cell."""
    want = expected_source(root)
    stale = []
    for path in sorted((root / "book").glob("*.ipynb")):
        cell = _first_code_cell(nbformat.read(path, as_version=4))
        if cell is None or cell.source != want or TAG not in cell.metadata.get("tags", []):
            stale.append(path)
    return stale


AUTOGRADER_REQUIREMENTS = Path("assignments") / "requirements-autograder.txt"


def autograder_line(root: Path = ROOT) -> str:
    """The line of the autograder's requirements that installs the companion from the repository."""
    repo = yaml.safe_load((root / "_config.yml").read_text())["repository"]
    return f"is-rl-companion @ git+{repo['url'].rstrip('/')}@{repo.get('branch', 'main')}"


def autograder_requirements_stale(root: Path = ROOT) -> bool:
    """Whether the autograder's requirements install the companion from another repository."""
    path = root / AUTOGRADER_REQUIREMENTS
    return path.exists() and autograder_line(root) not in path.read_text().splitlines()


def write(root: Path = ROOT) -> list[Path]:
    """Insert or refresh the set-up cell in every stale notebook; return the notebooks changed."""
    changed = stale_notebooks(root)
    want = expected_source(root)
    for path in changed:
        nb = nbformat.read(path, as_version=4)
        cell = _first_code_cell(nb)
        if cell is not None and cell.source.startswith(MARKER):
            cell.source = want
            cell.metadata["tags"] = sorted(set(cell.metadata.get("tags", [])) | {TAG})
        else:
            new = nbformat.v4.new_code_cell(want, metadata={"tags": [TAG]})
            index = next((i for i, c in enumerate(nb.cells) if c.cell_type == "code"), len(nb.cells))
            nb.cells.insert(index, new)
        nbformat.write(nb, path)
    if autograder_requirements_stale(root):
        path = root / AUTOGRADER_REQUIREMENTS
        lines = [autograder_line(root) if line.startswith("is-rl-companion @") else line
                 for line in path.read_text().splitlines()]
        path.write_text("\n".join(lines) + "\n")
        changed.append(path)
    return changed


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--check", action="store_true")
    group.add_argument("--write", action="store_true")
    args = parser.parse_args()
    if args.check:
        stale = stale_notebooks()
        for path in stale:
            print(f"stale or missing set-up cell: {path.relative_to(ROOT)}", file=sys.stderr)
        if autograder_requirements_stale():
            print(f"stale repository URL in {AUTOGRADER_REQUIREMENTS}", file=sys.stderr)
        sys.exit(1 if stale or autograder_requirements_stale() else 0)
    for path in write():
        print(f"updated {path.relative_to(ROOT)}")
