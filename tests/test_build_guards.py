"""The book build fails loudly: a failing cell or a broken cross-reference stops it.

Each test builds a one-page book with the course's own `_config.yml` and the same flags as
`make book` (-W -n --keep-going), and expects a non-zero exit status.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
JUPYTER_BOOK = Path(sys.executable).parent / "jupyter-book"


def _build(book: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(JUPYTER_BOOK), "build", str(book), "-W", "-n", "--keep-going"],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def one_page_book(tmp_path):
    shutil.copy(ROOT / "_config.yml", tmp_path / "_config.yml")
    (tmp_path / "book").mkdir()
    shutil.copy(ROOT / "book" / "references.bib", tmp_path / "book" / "references.bib")
    for folder in ("_ext", "images"):
        shutil.copytree(ROOT / "book" / folder, tmp_path / "book" / folder)
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: book/page\n")
    return tmp_path


def _write_notebook(path: Path, sources: list[str]) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell("# A page")]
    nb.cells += [nbformat.v4.new_code_cell(src) for src in sources]
    nbformat.write(nb, path)


def test_a_clean_page_builds(one_page_book):
    _write_notebook(one_page_book / "book" / "page.ipynb", ["x = 1 + 1", "assert x == 2"])
    result = _build(one_page_book)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_a_failing_cell_fails_the_build(one_page_book):
    _write_notebook(one_page_book / "book" / "page.ipynb", ["assert 1 + 1 == 3, 'wrong sum'"])
    result = _build(one_page_book)
    assert result.returncode != 0
    assert "wrong sum" in result.stdout + result.stderr


def test_a_broken_cross_reference_fails_the_build(one_page_book):
    (one_page_book / "book" / "page.md").write_text("# A page\n\nSee {ref}`no-such-label`.\n")
    result = _build(one_page_book)
    assert result.returncode != 0
    assert "no-such-label" in result.stdout + result.stderr


def _write_exercise_page(path: Path) -> None:
    """A page with an exercise and a gated solution spanning cells, as the chapters write them."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_markdown_cell(
            "# A page\n\n```{exercise}\n:label: ex-page\nEXERCISE-TEXT: compute two.\n```"
        ),
        nbformat.v4.new_markdown_cell(
            "```{solution-start} ex-page\n:class: dropdown\n```\n\nSOLUTION-PROSE: add one and one."
        ),
        nbformat.v4.new_code_cell("solution_code_marker = 'SOLUTION-'\nprint(solution_code_marker + 'OUTPUT')"),
        nbformat.v4.new_markdown_cell("```{solution-end}\n```\n\nAFTER-TEXT."),
        nbformat.v4.new_code_cell("tagged_check_marker = 'SOLUTION-CHECK'\nprint(tagged_check_marker)",
                                  metadata={"tags": ["solution"]}),
        nbformat.v4.new_code_cell("print('UNTAGGED-' + 'CELL')"),
    ]
    nbformat.write(nb, path)


@pytest.mark.parametrize("hide", [False, True], ids=["with-solutions", "without-solutions"])
def test_edition_without_solutions_drops_them(one_page_book, hide):
    """`make book-nosolutions` uses scripts/nosolutions_config.py: the solution prose, code and
    output, and cells tagged ``solution``, disappear from the HTML; the exercise, the text after
    the solution and untagged cells stay."""
    _write_exercise_page(one_page_book / "book" / "page.ipynb")
    if hide:
        config = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "nosolutions_config.py")],
            capture_output=True, text=True, check=True,
        ).stdout
        (one_page_book / "_config.yml").write_text(config)
    result = _build(one_page_book)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    html = (one_page_book / "_build" / "html" / "book" / "page.html").read_text()
    assert "EXERCISE-TEXT" in html and "AFTER-TEXT" in html and "UNTAGGED-CELL" in html
    for marker in ("SOLUTION-PROSE", "solution_code_marker", "SOLUTION-OUTPUT",
                   "tagged_check_marker", "SOLUTION-CHECK"):
        assert (marker in html) is not hide, marker
