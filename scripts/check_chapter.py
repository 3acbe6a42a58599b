"""Build one or more chapters alone, with the book's configuration and -W -n, to check their MyST.

    python scripts/check_chapter.py book/variance_problem.ipynb [more notebooks...]

The chapters are built in a temporary book with the preface, notation, API and bibliography pages;
every other chapter of the course is stood in for by a one-line page, so that links between chapters
resolve. Outputs land in /tmp/check_chapter/<name>/_build/html. Exit status is the build's.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from toc import toc_notebooks

ROOT = Path(__file__).resolve().parent.parent
#: The chapters of the course, in reading order, as _toc.yml lists them.
CHAPTERS = [path.stem for path in toc_notebooks(ROOT)]


def main(notebooks: list[str]) -> int:
    names = [Path(nb).stem for nb in notebooks]
    out = Path("/tmp/check_chapter") / "_".join(names)
    shutil.rmtree(out, ignore_errors=True)
    (out / "book").mkdir(parents=True)
    shutil.copy(ROOT / "_config.yml", out / "_config.yml")
    for page in ("intro.md", "notation.md", "instructors.md", "api.md", "bibliography.md",
                 "references.bib"):
        shutil.copy(ROOT / "book" / page, out / "book" / page)
    for folder in ("_ext", "images"):
        shutil.copytree(ROOT / "book" / folder, out / "book" / folder)
    for name in CHAPTERS:
        if name in names:
            shutil.copy(ROOT / "book" / f"{name}.ipynb", out / "book" / f"{name}.ipynb")
        else:
            (out / "book" / f"{name}.md").write_text(f"# Stand-in for {name}\n")
    toc = {
        "format": "jb-book",
        "root": "book/intro",
        "parts": [
            {"caption": "Front", "chapters": [{"file": "book/notation"}]},
            {"caption": "Chapters", "numbered": True,
             "chapters": [{"file": f"book/{name}"} for name in CHAPTERS]},
            {"caption": "Back", "chapters": [{"file": "book/instructors"}, {"file": "book/api"},
                                            {"file": "book/bibliography"}]},
        ],
    }
    (out / "_toc.yml").write_text(yaml.safe_dump(toc, sort_keys=False))
    jb = Path(sys.executable).parent / "jupyter-book"
    result = subprocess.run([str(jb), "build", str(out), "-W", "-n", "--keep-going"])
    print(f"HTML in {out}/_build/html")
    return result.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
