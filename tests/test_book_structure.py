"""The book's structure: TOC, committed notebooks, chapter layout, configuration, set-up cell."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import book_checks  # noqa: E402
import colab_cell  # noqa: E402


def test_every_notebook_is_in_the_toc_and_every_entry_exists():
    assert book_checks.toc_problems(ROOT) == []


def _unstripped(paths) -> subprocess.CompletedProcess:
    """nbstripout's own check (``make strip`` runs the same tool): non-zero if a file would change."""
    return subprocess.run([sys.executable, "-m", "nbstripout", "--keep-id", "--verify", *map(str, paths)],
                          capture_output=True, text=True)


def test_notebooks_are_committed_without_outputs():
    result = _unstripped(sorted((ROOT / "book").glob("*.ipynb")))
    assert result.returncode == 0, f"run `make strip`:\n{result.stdout}{result.stderr}"


def test_every_cell_has_an_id():
    assert book_checks.cell_id_problems(ROOT) == []


def test_chapters_follow_the_layout():
    assert book_checks.chapter_problems(ROOT) == []


def test_no_chapter_asserts_literals_only():
    """An assert whose operands are all literals (or names bound only to literals) cannot fail."""
    assert book_checks.literal_assert_problems(ROOT) == []


def test_every_glued_number_is_shown_and_every_shown_key_is_glued():
    assert book_checks.glue_problems(ROOT) == []


def test_nothing_mentions_a_document_the_reader_does_not_have():
    assert book_checks.unknown_source_problems(ROOT) == []


def test_every_notebook_starts_with_the_current_setup_cell():
    assert colab_cell.stale_notebooks(ROOT) == []


@pytest.fixture
def broken_book(tmp_path):
    """A copy of the book's skeleton to break on purpose."""
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "book", tmp_path / "book")
    return tmp_path


def _notebook(cells):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = cells
    return nb


def test_checks_catch_a_notebook_missing_from_the_toc(broken_book):
    nbformat.write(_notebook([]), broken_book / "book" / "stray.ipynb")
    assert any("stray" in p for p in book_checks.toc_problems(broken_book))


def test_checks_catch_a_toc_entry_without_a_file(broken_book):
    toc = yaml.safe_load((broken_book / "_toc.yml").read_text())
    toc["parts"][0]["chapters"].append({"file": "book/does_not_exist"})
    (broken_book / "_toc.yml").write_text(yaml.safe_dump(toc))
    assert any("does_not_exist" in p for p in book_checks.toc_problems(broken_book))


def test_checks_catch_a_cell_without_an_id(broken_book):
    path = broken_book / "book" / "core_idea.ipynb"
    raw = json.loads(path.read_text())
    del raw["cells"][3]["id"]
    path.write_text(json.dumps(raw, indent=1))
    assert book_checks.cell_id_problems(broken_book) == ["core_idea.ipynb: cell 3 has no id"]


def test_checks_catch_a_notebook_with_outputs(broken_book):
    cell = nbformat.v4.new_code_cell("1 + 1")
    cell.execution_count = 1
    cell.outputs = [nbformat.v4.new_output("execute_result", {"text/plain": "2"}, execution_count=1)]
    path = broken_book / "book" / "with_output.ipynb"
    nbformat.write(_notebook([cell]), path)
    assert _unstripped([path]).returncode != 0
    assert _unstripped([broken_book / "book" / "core_idea.ipynb"]).returncode == 0


def _only_chapter(book, name, cells):
    """Make ``book`` a one-chapter book whose chapter ``book/<name>.ipynb`` holds ``cells``."""
    toc = yaml.safe_load((book / "_toc.yml").read_text())
    for stale in (book / "book").glob("*.ipynb"):
        stale.unlink()
    toc["parts"] = [{"caption": "Test", "numbered": True, "chapters": [{"file": f"book/{name}"}]}]
    (book / "_toc.yml").write_text(yaml.safe_dump(toc))
    nbformat.write(_notebook(cells), book / "book" / f"{name}.ipynb")


def test_checks_catch_a_chapter_without_exercises(broken_book):
    _only_chapter(broken_book, "bare", [nbformat.v4.new_code_cell("x = 1")])
    problems = book_checks.chapter_problems(broken_book)
    assert any("exercises" in p for p in problems)
    assert any("use_course_style" in p for p in problems)


def test_checks_catch_a_numbered_file_name_and_a_missing_setup_cell(broken_book):
    _only_chapter(broken_book, "04_numbered", [nbformat.v4.new_code_cell("import companion")])
    problems = book_checks.chapter_problems(broken_book)
    assert any("04_numbered.ipynb: expected a topic name" in p for p in problems)
    assert any("first code cell must be the set-up cell" in p for p in problems)


def test_checks_catch_labels_with_two_prefixes_or_a_prefix_of_another_chapter(broken_book):
    toc = yaml.safe_load((broken_book / "_toc.yml").read_text())
    toc["parts"][1]["chapters"].append({"file": "book/extra"})
    (broken_book / "_toc.yml").write_text(yaml.safe_dump(toc))
    text = "$$ x = 1 $$ (eq-core-one)\n\n$$ y = 2 $$ (eq-extra-two)\n\n(section_target)=\n## A"
    nbformat.write(_notebook([nbformat.v4.new_markdown_cell(text)]), broken_book / "book" / "extra.ipynb")
    problems = [p for p in book_checks.chapter_problems(broken_book) if p.startswith("extra.ipynb")]
    assert any("several prefixes ['core', 'extra']" in p for p in problems), problems
    assert any("'core' is already used by core_idea.ipynb" in p for p in problems), problems
    assert any("'section_target' is not of the form" in p for p in problems), problems


def test_checks_catch_an_untagged_check_of_a_solution(broken_book):
    check = "# Checks of the numbers quoted in the solution of ex-core-a.\nassert 2 + 2 == 4"
    cells = [
        nbformat.v4.new_markdown_cell("```{solution-start} ex-core-a\n:class: dropdown\n```"),
        nbformat.v4.new_code_cell(check),  # inside the gated solution: fine
        nbformat.v4.new_markdown_cell("```{solution-end}\n```"),
        nbformat.v4.new_code_cell(check),  # outside and untagged: a leak
        nbformat.v4.new_code_cell(check, metadata={"tags": ["solution"]}),  # tagged: fine
        # a single assert that names its exercise, in a main-text cell: a leak
        nbformat.v4.new_code_cell("x = 2\nassert x ** 2 == 4   # the factor asked for in ex-core-a"),
        nbformat.v4.new_code_cell("assert 1.2 > 1   # a 20% error (exercise)"),  # a leak
        nbformat.v4.new_code_cell("N_EX = 4   # episodes for ex-core-a"),  # setup, not a check: fine
    ]
    _only_chapter(broken_book, "leaky", cells)
    leaks = [p for p in book_checks.chapter_problems(broken_book) if "tagged 'solution'" in p]
    assert len(leaks) == 3, leaks
    assert [p.split("cell ")[1].split()[0] for p in leaks] == ["3", "5", "6"]


#: The word the reader must not meet, spelt in two pieces so that this file passes the check.
WORD = "out" + "line"


def test_checks_catch_a_mention_of_the_document_the_reader_lacks(tmp_path):
    (tmp_path / "book").mkdir()
    (tmp_path / "companion").mkdir()
    (tmp_path / "scripts").mkdir()
    (tmp_path / "book" / "chapter.md").write_text(f"# A chapter\n\nAs the {WORD.title()} says.\n")
    (tmp_path / "companion" / "mod.py").write_text(f"def f():\n    \"\"\"The {WORD}'s form.\"\"\"\n")
    (tmp_path / "companion" / "clean.py").write_text("x = 1\n")
    (tmp_path / "scripts" / "tool.py").write_text(f"# {WORD}: scripts are not read by the reader\n")
    problems = book_checks.unknown_source_problems(tmp_path)
    # the word is found whatever its case, and only under the folders that the reader sees
    assert [p.split(": ")[0] for p in problems] == ["book/chapter.md:3", "companion/mod.py:2"]


def test_checks_catch_asserts_that_compare_literals_only(broken_book):
    code = "\n".join([
        "import math",
        "import numpy as np",
        "N = 10",
        "rng = np.random.default_rng(0)",
        "x = rng.normal(size=N)",
        "xs = []",
        "xs.append(x.sum())",
        "v = np.zeros(2)",
        "v[0] = x[0]",
        "assert N == 10",                                   # a constant against a literal
        "assert 0.8 ** 101 < 0.8 ** 100",                   # arithmetic
        "assert round(math.exp(6)) == 403",                 # arithmetic through pure calls
        "assert abs(x.mean()) < 4 / N ** 0.5 and N > 5",    # the second claim is arithmetic
        "assert x.std() > 0 > -1",                          # so is one link of the chain
        "assert x.mean() < 1",                              # depends on the data: fine
        "assert len(xs) == 1 and v[0] == x[0]",             # xs and v were changed: fine
    ])
    _only_chapter(broken_book, "literal", [nbformat.v4.new_code_cell(code)])
    problems = book_checks.literal_assert_problems(broken_book)
    claims = [p.split("`")[1] for p in problems]
    assert claims == ["assert N == 10", "assert 0.8 ** 101 < 0.8 ** 100",
                      "assert round(math.exp(6)) == 403", "assert N > 5", "assert 0 > -1"], problems
    assert book_checks.literal_assert_problems(broken_book, chapters=["other"]) == []


def test_checks_catch_glued_names_the_text_never_shows(broken_book):
    code = "\n".join([
        'glue("demo_a", 1.0)',
        'for name, value in [("b", 2), ("c", 3)]:',
        '    glue(f"demo_{name}", value)',
        "def record(name, value):",
        '    glue(f"demo_{name}", value)',
        'record("d", 4)',
        "for k in sorted({'x': 1}):",
        '    glue(f"demo_dyn_{k}", 1)',               # a key read at run time: a pattern
    ])
    figure = nbformat.v4.new_code_cell("pass", metadata={"mystnb": {"figure": {
        "caption": "Shows {glue:text}`demo_d:.1f`.", "name": "fig-demo-x"}}})
    text = ("A is {glue:text}`demo_a:.2f`, B is {glue:}`demo_b`, one of the others is "
            "{glue:text}`demo_dyn_x`, and {glue:text}`demo_zzz:.0f` comes from nowhere.")
    _only_chapter(broken_book, "glued", [nbformat.v4.new_code_cell(code), figure,
                                          nbformat.v4.new_markdown_cell(text)])
    assert book_checks.glue_problems(broken_book) == [
        "glued.ipynb: glues 'demo_c' but the text never shows it",
        "glued.ipynb: the text shows 'demo_zzz', which nothing glues",
    ]


def test_config_keeps_failures_visible():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["execute"]["allow_errors"] is False
    assert config["execute"]["stderr_output"] == "show"
    assert config["execute"]["timeout"] >= 120
    assert config["only_build_toc_files"] is True
    extensions = config["sphinx"]["extra_extensions"]
    for ext in ("sphinx_exercise", "sphinx_proof", "sphinx-mathjax-offline"):
        assert ext in extensions
    assert config["bibtex_bibfiles"] == ["book/references.bib"]


def test_requirements_pin_every_dependency_exactly():
    lines = [
        line.strip()
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines, "requirements.txt is empty"
    unpinned = [line for line in lines if "==" not in line]
    assert unpinned == []
    assert "torch==2.13.0" in lines


def test_autograder_installs_the_companion_from_this_repository():
    assert not colab_cell.autograder_requirements_stale(ROOT)


def test_autograder_requirements_pin_the_same_versions_as_the_course():
    def pins(path):
        lines = (ROOT / path).read_text().splitlines()
        return dict(line.split("==") for line in lines if "==" in line and not line.startswith("#"))

    course, autograder = pins("requirements.txt"), pins("assignments/requirements-autograder.txt")
    assert autograder, "the autograder's requirements pin nothing"
    assert {name: course.get(name) for name in autograder} == autograder


def test_checks_catch_main_text_that_needs_a_solutions_variables(broken_book):
    """The edition without solutions drops the solutions' cells: the cells it keeps must not
    read what only a solution sets."""
    cells = [
        nbformat.v4.new_code_cell("x = 1\ndef f(n):\n    return [k * x for k in range(n)]"),
        nbformat.v4.new_markdown_cell("```{solution-start} ex-core-a\n:class: dropdown\n```"),
        nbformat.v4.new_code_cell("x = 2\nonly_in_solution = f(3)"),
        nbformat.v4.new_markdown_cell("```{solution-end}\n```"),
        nbformat.v4.new_code_cell("checked = only_in_solution", metadata={"tags": ["solution"]}),
        nbformat.v4.new_code_cell("print(x)"),                     # x was last set by a solution
        nbformat.v4.new_code_cell("x = 3\nprint(x, f(2))"),        # rebinds first: fine
        nbformat.v4.new_code_cell("y = [x for x in range(2)]"),    # a comprehension's own x: fine
        nbformat.v4.new_code_cell("print(checked)"),               # set by a tagged cell
    ]
    _only_chapter(broken_book, "needy", cells)
    needs = [p for p in book_checks.chapter_problems(broken_book) if "last set by a solution" in p]
    assert needs == [
        "needy.ipynb: cell 5 reads 'x', last set by a solution's cell 2: the edition without "
        "solutions drops it",
        "needy.ipynb: cell 8 reads 'checked', last set by a solution's cell 4: the edition "
        "without solutions drops it"], needs


def test_checks_catch_glue_from_myst_nb(broken_book):
    cells = [nbformat.v4.new_code_cell("from myst_nb import glue\nglue('core_x', 1)")]
    _only_chapter(broken_book, "gluey", cells)
    problems = book_checks.chapter_problems(broken_book)
    assert any("imports myst_nb" in p for p in problems), problems
    assert any("calls glue without" in p for p in problems), problems


def test_toc_reader_follows_sections_urls_and_globs(tmp_path):
    """scripts/toc.py reads _toc.yml with jupyter-book's parser: reading order, sections, a url
    entry skipped (a link, not a document), a glob expanded like Sphinx, a missing file kept."""
    import toc

    (tmp_path / "book").mkdir()
    for name in ("intro.md", "b.md", "ch_2.ipynb", "ch_1.md", "a.ipynb"):
        (tmp_path / "book" / name).write_text("")
    (tmp_path / "_toc.yml").write_text(yaml.safe_dump({
        "format": "jb-book", "root": "book/intro",
        "parts": [{"caption": "A", "chapters": [
            {"file": "book/b.md"},
            {"url": "https://example.org", "title": "Elsewhere"},
            {"glob": "book/ch_*"},
            {"file": "book/a", "sections": [{"file": "book/missing"}]},
        ]}],
    }))
    names = [p.relative_to(tmp_path).as_posix() for p in toc.toc_files(tmp_path)]
    assert names == ["book/intro.md", "book/b.md", "book/ch_1.md", "book/ch_2.ipynb",
                     "book/a.ipynb", "book/missing"]
    assert [p.name for p in toc.toc_notebooks(tmp_path)] == ["ch_2.ipynb", "a.ipynb"]
    (tmp_path / "_toc.yml").write_text(yaml.safe_dump({
        "format": "jb-book", "root": "book/intro",
        "chapters": [{"glob": "book/nothing_*"}]}))
    with pytest.raises(ValueError, match="glob 'book/nothing_\\*' matches no document"):
        toc.toc_files(tmp_path)
