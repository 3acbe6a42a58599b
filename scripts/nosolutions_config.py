"""Print a copy of _config.yml for the edition without the solutions of the chapter exercises.

Used by ``make book-nosolutions``: the course's ``course_hide_solutions`` option
(book/_ext/course_solutions.py) removes every solution, including the code cells between
``solution-start`` and ``solution-end``, from the HTML, and the reader's notebooks that the
download and launch buttons serve leave them out too (book/_ext/course_notebooks.py). Those
buttons open the branch ``notebooks-nosolutions``. (sphinx-exercise's own ``hide_solutions``
fails on the gated solutions.)

    python scripts/nosolutions_config.py [--cache DIR]

``--cache`` names the execution cache to use; ``make book-nosolutions`` passes the one of
``make book`` (``_build/.jupyter_cache``): the notebooks are the same, so a notebook that the HTML
build has executed is not executed again.
"""

import argparse
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
BRANCH = "notebooks-nosolutions"


def config(cache: str | None = None) -> dict:
    """The edition's configuration, from the book's ``_config.yml``."""
    conf = yaml.safe_load((ROOT / "_config.yml").read_text())
    conf["sphinx"]["config"]["course_hide_solutions"] = True
    conf["sphinx"]["config"]["course_notebooks_branch"] = BRANCH
    if cache:
        conf["execute"]["cache"] = str(Path(cache).resolve())
    conf["title"] += " (edition without solutions)"
    return conf


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", help="the execution cache to share (a folder)")
    args = parser.parse_args()
    print(yaml.safe_dump(config(args.cache), sort_keys=False, allow_unicode=True))
