"""The reader's notebooks (book/_ext/course_notebooks.py): MyST made readable, solutions dropped.

These tests run the transformation on small notebooks with a hand-made :class:`Resolver`; the
browser tests (tests/test_browser.py) check the files the built book serves for download and the
branch that its launch buttons open.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "book" / "_ext"))
sys.path.insert(0, str(ROOT / "scripts"))
import course_notebooks as cn  # noqa: E402


def resolver(**kwargs) -> cn.Resolver:
    base = dict(
        docname="book/here",
        glue={"here_n": "12000", "here_ratio": "0.123456", "here_label": "'weighted IS'"},
        titles={"book/there": "Over there", "book/notation": "Notation"},
        notebooks={"book/here", "book/there"},
        equations={"eq-here-a": "5.1"},
        figures={"fig-here-a": "5.2"},
        exercises={"ex-here-a": "5.1", "ex-here-b": "5.2"},
        labels={"sec-here-a": "A section"},
        citations={"kong1992": "Kong, 1992", "owen2013": "Owen, 2013"},
        macros={"E": "\\mathbb{E}", "KL": "D_{\\mathrm{KL}}"},
        site="https://example.org/course",
    )
    base.update(kwargs)
    return cn.Resolver(**base)


def notebook(*cells):
    nb = nbformat.v4.new_notebook()
    nb.cells = list(cells)
    return nb


md, code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell


def test_glue_roles_become_the_values_of_the_run_formatted_as_myst_nb_formats_them():
    r = resolver()
    text = ("{glue:text}`here_n` episodes, ratio {glue:text}`here_ratio:.2f`, "
            "{glue:text}`here_ratio:.1%`, {glue:text}`here_label`, {glue}`here_n:,d`.")
    assert cn._markdown(text, r, cn._State(False)) == (
        "12000 episodes, ratio 0.12, 12.3%, weighted IS, 12,000.")
    assert r.problems == []


def test_cross_references_become_text_and_links():
    r = resolver()
    text = ("See {doc}`there`, {doc}`the notation </book/notation>`, {eq}`eq-here-a`, "
            "{numref}`fig-here-a`, {numref}`Figure %s <fig-here-a>`, {ref}`ex-here-b`, "
            "{ref}`the section <sec-here-a>`, {ref}`sec-here-a`, {cite}`kong1992,owen2013`, "
            "{cite:t}`kong1992` and {py:func}`companion.weights.ess`, {py:func}`~companion.x.f`.")
    assert cn._markdown(text, r, cn._State(False)) == (
        "See [Over there](there.ipynb), [the notation](https://example.org/course/book/notation.html)"
        ", (5.1), Fig. 5.2, Figure 5.2, Exercise 5.2, the section, A section, "
        "[Kong, 1992, Owen, 2013], Kong (1992) and `companion.weights.ess`, `f`.")
    assert r.problems == []


def test_labelled_equations_are_tagged_targets_dropped_and_macros_expanded():
    r = resolver()
    text = "(sec-here-a)=\n## A section\n\n$$\n\\E[w] = 1, \\KL(p \\Vert q)\n$$ (eq-here-a)\n"
    out = cn._markdown(text, r, cn._State(False))
    assert out == "## A section\n\n$$\n\\mathbb{E}[w] = 1, D_{\\mathrm{KL}}(p \\Vert q)\n\\tag{5.1}\n$$"


def test_code_is_left_alone():
    r = resolver()
    text = "Call `cp.glue({glue:text}`here_n`)` and {glue:text}`here_n` then `\\E`.\n\n```\n{doc}`x`\n```"
    assert cn._markdown(text, r, cn._State(False)) == (
        "Call `cp.glue({glue:text}`here_n`)` and 12000 then `\\E`.\n\n```\n{doc}`x`\n```")


def test_unknown_roles_and_missing_values_are_reported():
    r = resolver()
    cn._markdown("{glue:text}`nope:.2f` {doc}`missing` {eq}`eq-x` {weird}`thing` "
                 "{glue:text}`here_label:.2f`", r, cn._State(False))
    assert len(r.problems) == 5, r.problems
    for word in ("'nope'", "'missing'", "'eq-x'", "{weird}", "cannot format 'here_label'"):
        assert any(word in p for p in r.problems), (word, r.problems)


SOURCE = notebook(
    md("# Here\n\nText {glue:text}`here_n`."),
    code("x = 1", metadata={"mystnb": {"figure": {"caption": "A $\\E$ plot of {glue:text}`here_n`.",
                                                  "name": "fig-here-a"}}}),
    md("## Exercises\n\n```{exercise}\n:label: ex-here-a\nCompute $\\E[w]$.\n```\n\n"
       "```{solution} ex-here-a\n:class: dropdown\nONE-BLOCK-SOLUTION.\n```\n\n"
       "```{exercise} A title\n:label: ex-here-b\nCode it.\n```"),
    md("```{solution-start} ex-here-b\n:class: dropdown\n```\n\nGATED-PROSE."),
    code("gated_code = 2"),
    md("More GATED-PROSE.\n\n```{solution-end}\n```\n\nAFTER-THE-SOLUTION {doc}`there`."),
    code("assert gated_code == 2  # quoted in the solution", metadata={"tags": ["solution"]}),
    md("```{solution-end}\n```"),  # a stray end: harmless
    code("after = 3"),
)


def _text(nb) -> str:
    return "\n".join(c.source for c in nb.cells)


def test_exercises_and_solutions_read_as_markdown():
    out = cn.reader_notebook(SOURCE, resolver())
    text = _text(out)
    assert "### Exercise 5.1\n\nCompute $\\mathbb{E}[w]$." in text
    assert "<details>\n<summary>Solution to Exercise 5.1</summary>\n\nONE-BLOCK-SOLUTION.\n\n</details>" in text
    assert "### Exercise 5.2 (A title)\n\nCode it." in text
    assert "#### Solution to Exercise 5.2\n\nGATED-PROSE." in text
    assert "gated_code = 2" in text and "quoted in the solution" in text
    assert "AFTER-THE-SOLUTION [Over there](there.ipynb)." in text
    assert cn.raw_myst(out) == []
    assert len(cn.solution_problems(out)) >= 3  # the edition with solutions keeps them


def test_figures_get_their_caption_under_them():
    out = cn.reader_notebook(SOURCE, resolver())
    assert out.cells[1].source == "x = 1"
    assert out.cells[2].cell_type == "markdown"
    assert out.cells[2].source == "**Fig. 5.2.** A $\\mathbb{E}$ plot of 12000."
    assert out.cells[1].metadata["mystnb"]["figure"]["caption"] == "A $\\mathbb{E}$ plot of 12000."
    assert SOURCE.cells[1].metadata["mystnb"]["figure"]["caption"].endswith("{glue:text}`here_n`.")
    assert len({c.id for c in out.cells}) == len(out.cells)
    nbformat.validate(out)


def test_the_edition_without_solutions_drops_every_solution_and_nothing_else():
    out = cn.reader_notebook(SOURCE, resolver(), hide_solutions=True)
    text = _text(out)
    for gone in ("ONE-BLOCK-SOLUTION", "GATED-PROSE", "gated_code", "quoted in the solution",
                 "Solution"):
        assert gone not in text, gone
    for kept in ("Text 12000.", "### Exercise 5.1", "### Exercise 5.2 (A title)", "x = 1",
                 "AFTER-THE-SOLUTION", "after = 3"):
        assert kept in text, kept
    assert cn.solution_problems(out) == [] and cn.raw_myst(out) == []
    nbformat.validate(out)


def test_the_source_notebook_is_not_changed():
    before = nbformat.writes(SOURCE)
    cn.reader_notebook(SOURCE, resolver(), hide_solutions=True)
    assert nbformat.writes(SOURCE) == before


@pytest.mark.parametrize("cell", [
    md("```{solution} ex-here-a\nX\n```"),
    md("```{solution-start} ex-here-a\n```"),
    code("y = 1", metadata={"tags": ["solution"]}),
    md("#### Solution to Exercise 5.1\n\nX"),
    md("<details>\n<summary>Solution to Exercise 5.1</summary>\nX\n</details>"),
])
def test_solution_checks_catch_what_a_solution_looks_like(cell):
    assert cn.solution_problems(notebook(md("# A"), cell)) != []


@pytest.mark.parametrize("text", ["{glue:text}`a_b:.2f`", "{doc}`x`", "```{exercise}", "(sec-a-b)=",
                                  "$$ (eq-a-b)"])
def test_raw_myst_is_found(text):
    assert cn.raw_myst(notebook(md(f"Some text\n{text}\nmore"))) != []


def test_glue_values_read_from_an_executed_notebook():
    cell = code("glue(...)")
    cell.outputs = [
        nbformat.v4.new_output("display_data", {"application/papermill.record/text/plain": "0.5"},
                               metadata={"scrapbook": {"name": "a", "mime_prefix":
                                                       "application/papermill.record/"}}),
        nbformat.v4.new_output("display_data", {"text/plain": "'shown'"},
                               metadata={"scrapbook": {"name": "b", "mime_prefix": ""}}),
        nbformat.v4.new_output("stream", name="stdout", text="not glue\n"),
    ]
    assert cn.glue_values(notebook(cell)) == {"a": "0.5", "b": "'shown'"}
