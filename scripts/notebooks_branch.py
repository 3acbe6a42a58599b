"""Assemble the branch that the Colab and Binder launch buttons open.

The buttons of a chapter open ``book/<chapter>.ipynb`` on the branch ``course_notebooks_branch``
(``notebooks``; ``notebooks-nosolutions`` for the edition without solutions). That branch holds
what a learner needs and nothing to build: the reader's notebooks of a built edition, exactly as
its download buttons serve them (numbers written into the text, see
book/_ext/course_notebooks.py), the companion package, the Binder configuration and the licences.

    python scripts/notebooks_branch.py --edition full --out DIR          # after `make book`
    python scripts/notebooks_branch.py --edition nosolutions --out DIR   # after `make book-nosolutions`

writes DIR and prints ``branch=<name>`` and ``site=<the edition's HTML folder>``, which the
publish workflow (.github/workflows/publish.yml) reads to push DIR to that branch and to publish
that site.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import nosolutions_config  # noqa: E402
from toc import toc_notebooks  # noqa: E402

EDITIONS = ("full", "nosolutions")
#: What the branch carries besides the notebooks: enough to install the companion and to let
#: Binder build the environment.
COPIED = ["companion", "binder", "pyproject.toml", "LICENSE", "LICENSE-CODE", "LICENSE-TEXT"]


def edition(name: str) -> tuple[Path, str]:
    """The HTML folder and the launch buttons' branch of the edition ``name``."""
    if name == "full":
        config = yaml.safe_load((ROOT / "_config.yml").read_text())
        return ROOT / "_build" / "html", config["sphinx"]["config"]["course_notebooks_branch"]
    if name == "nosolutions":
        return ROOT / "_build" / "nosolutions" / "_build" / "html", nosolutions_config.BRANCH
    raise ValueError(f"edition: must be one of {EDITIONS}, got {name!r}")


def _commit() -> str:
    result = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True)
    return result.stdout.strip() or "an unknown commit"


def assemble(name: str, out: Path) -> str:
    """Write the branch's tree for the edition ``name`` into ``out``; return the branch's name."""
    site, branch = edition(name)
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for notebook in toc_notebooks():
        relative = notebook.relative_to(ROOT)
        source = site / "_sources" / relative
        if not source.exists():
            raise FileNotFoundError(f"{source} is missing: build the edition first")
        (out / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, out / relative)
    for item in COPIED:
        path = ROOT / item
        if path.is_dir():
            shutil.copytree(path, out / item, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, out / item)
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    repo = config["repository"]
    without = " without the solutions of the exercises" if name == "nosolutions" else ""
    (out / "README.md").write_text(
        f"# {config['title']}: the notebooks{without}\n\n"
        "The chapters of the course as notebooks to open in Colab, Binder or JupyterLab, with the\n"
        "numbers of the book's own run written into their text. Generated from commit "
        f"{_commit()} of\n{repo['url']} (branch `{repo.get('branch', 'main')}`) by "
        "`scripts/notebooks_branch.py`;\nedit the sources there, not here.\n\n"
        "The first cell of every notebook installs the course's `companion` package where it is\n"
        "missing; Binder installs it from this branch (`binder/`).\n")
    return branch


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edition", choices=EDITIONS, default=os.environ.get("EDITION", "full"))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    branch = assemble(args.edition, args.out)
    print(f"branch={branch}")
    print(f"site={edition(args.edition)[0].relative_to(ROOT)}")
