"""The PDF editions of the book, read with poppler-utils (pdfinfo, pdftotext, pdfimages).

Run after both editions are built: `make test` builds them first (`make test-pdf`), or run
`make pdf pdf-nosolutions`. What is expected comes from the sources (the table of contents, the
notebooks and the Markdown pages), not from the PDF builder.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import unicodedata
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from toc import toc_files  # noqa: E402

BOOK = ROOT / "_build" / "pdf" / "book.pdf"
NOSOLUTIONS = ROOT / "_build" / "pdf" / "book-nosolutions.pdf"
EDITIONS = {"book": BOOK, "nosolutions": NOSOLUTIONS}
MM = 72 / 25.4  # PDF points per millimetre
RAW_TEX = ("\\frac", "$$", "\\begin{")
MIN_PPI = 150  # figures print at 150 pixels per inch or more


def _run(*command: str) -> str:
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout


def _norm(text: str) -> str:
    """Text as compared here: ligatures unfolded, every run of white space one space."""
    text = unicodedata.normalize("NFKC", text).translate(str.maketrans("‘’“”", "''\"\""))
    return re.sub(r"\s+", " ", text).strip()


@cache
def _pdf(edition: str) -> Path:
    path = EDITIONS[edition]
    if not path.exists():
        pytest.fail(f"no {path.relative_to(ROOT)}: run `make pdf pdf-nosolutions` (or `make test`)")
    return path


@cache
def _pages(edition: str) -> tuple[str, ...]:
    """The text of every page, as pdftotext reads it."""
    return tuple(_run("pdftotext", "-enc", "UTF-8", str(_pdf(edition)), "-").split("\f")[:-1])


def _source_cells(path: Path) -> list[dict]:
    """A document as cells: a notebook's own, or one Markdown cell for a .md page."""
    if path.suffix == ".ipynb":
        return json.loads(path.read_text(encoding="utf-8"))["cells"]
    return [{"cell_type": "markdown", "source": path.read_text(encoding="utf-8"), "metadata": {}}]


def _text(cell: dict) -> str:
    source = cell["source"]
    return "".join(source) if isinstance(source, list) else source


def _title(path: Path) -> str:
    for cell in _source_cells(path):
        if cell["cell_type"] == "markdown":
            for line in _text(cell).splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    raise AssertionError(f"{path.name} has no title")


def _shown_code(path: Path) -> str:
    """The code a reader sees in the book: code cells not removed, fenced blocks, literals."""
    shown = []
    for cell in _source_cells(path):
        text = _text(cell)
        tags = cell.get("metadata", {}).get("tags", [])
        if cell["cell_type"] == "code":
            if not {"remove-cell", "remove-input"} & set(tags):
                shown.append(text)
        else:
            shown += re.findall(r"```[^\n]*\n(.*?)```", text, re.S)
            shown += re.findall(r"`([^`\n]+)`", text)
    return "\n".join(shown)


def _figure_count() -> int:
    """Captioned figures in the sources: notebook cells with a `mystnb.figure` caption, and
    `figure` directives."""
    count = 0
    for path in toc_files():
        for cell in _source_cells(path):
            figure = cell.get("metadata", {}).get("mystnb", {}).get("figure", {})
            count += bool(figure.get("caption"))
            if cell["cell_type"] == "markdown":
                count += len(re.findall(r"^[`:]{3,}\{figure\}", _text(cell), re.M))
    return count


def _solutions() -> tuple[int, list[tuple[str, str, str]]]:
    """The number of solution blocks (each a "Solution to Exercise ..." box in the book), and
    (document, kind, text) of every part of them: the body of a `solution` directive and the
    Markdown between `solution-start` and `solution-end` ("prose"); the code cells between them
    or tagged `solution` ("code") whose source the book prints."""
    fence = r"^([`:]{3,})\{%s\}[^\n]*\n(.*?)^\1[ \t]*$"
    blocks, parts = 0, []
    for path in toc_files():
        inside = False
        for cell in _source_cells(path):
            text = _text(cell)
            tags = cell.get("metadata", {}).get("tags", [])
            if cell["cell_type"] != "markdown":
                hidden = {"remove-input", "remove-cell"} & set(tags)  # the book prints no source
                if (inside or "solution" in tags) and not hidden:
                    parts.append((path.name, "code", text))
                continue
            bodies = [body for _, body in re.findall(fence % "solution", text, re.M | re.S)]
            blocks += len(bodies) + len(re.findall(fence % "solution-start", text, re.M | re.S))
            # Markdown of a gated solution: after a solution-start, up to a solution-end.
            marks = sorted((m.start(), m.end(), kind) for kind in ("solution-start", "solution-end")
                           for m in re.finditer(fence % kind, text, re.M | re.S))
            position = 0
            for start, end, kind in marks + [(len(text), len(text), None)]:
                if inside and text[position:start].strip():
                    bodies.append(text[position:start])
                inside = {"solution-start": True, "solution-end": False}.get(kind, inside)
                position = end
            parts += [(path.name, "prose", body) for body in bodies]
    return blocks, parts


def _phrase(kind: str, text: str) -> str | None:
    """Something of a solution that the book prints verbatim: for code, its longest line that
    does not wrap (or its shortest); for prose, its longest run of plain words (no mathematics, roles,
    literals or emphasis), four words or more."""
    if kind == "code":
        lines = sorted((line.strip() for line in text.splitlines() if len(line.strip()) >= 12), key=len)
        short = [line for line in lines if len(line) <= 70]
        return (short[-1] if short else lines[0]) if lines else None
    prose = re.sub(r"^:\w+:.*$|^\s*(\d+\.|\([a-z]\))", "|", text, flags=re.M)
    prose = re.sub(r"\$\$.*?\$\$|\$[^$]*\$|\{[a-z-]+\}`[^`]*`|`[^`]*`|\*\*|\*", "|", prose, flags=re.S)
    runs = [r for r in re.findall(r"[A-Za-z][A-Za-z' ,]*[A-Za-z]", prose) if len(r.split()) >= 4]
    return max(runs, key=len) if runs else None


@pytest.mark.parametrize("edition", sorted(EDITIONS))
def test_the_pdf_opens_as_an_a4_book(edition):
    info = _run("pdfinfo", str(_pdf(edition)))
    pages = int(re.search(r"^Pages:\s+(\d+)", info, re.M).group(1))
    assert pages >= 2 * len(toc_files()), f"{edition}: only {pages} pages"
    width, height = map(float, re.search(r"^Page size:\s+([\d.]+) x ([\d.]+)", info, re.M).groups())
    assert abs(width - 210 * MM) < 2 and abs(height - 297 * MM) < 2, f"not A4: {width} x {height} pt"
    assert len(_pages(edition)) == pages


@pytest.mark.parametrize("edition", sorted(EDITIONS))
def test_contents_list_every_title_in_order_with_the_page_it_starts_on(edition):
    pages = [_norm(p) for p in _pages(edition)]
    start = next(i for i, p in enumerate(pages) if p.startswith("Contents"))
    # Each page ends with its own number (the footer); dropped, so that a part's caption at the foot
    # of a contents page is not read as a title followed by its page.
    contents = " ".join(re.sub(rf"\s*\b{k + 1}$", "", pages[k]) for k in range(start, start + 12))
    cursor, previous = 0, 0
    for path in toc_files():
        title = _norm(_title(path))
        match = re.compile(r"(?:\d+\. )?" + re.escape(title) + r" (\d+)(?![.\d])").search(contents, cursor)
        assert match, f"{edition}: '{title}' missing from the contents, or out of order"
        cursor, page = match.end(), int(match.group(1))
        assert page > previous, f"{edition}: '{title}' on page {page}, before the one above it"
        assert title in pages[page - 1], f"{edition}: '{title}' is not on page {page}"
        previous = page
    assert previous < len(pages)


@pytest.mark.parametrize("edition", sorted(EDITIONS))
def test_no_raw_tex_outside_the_code_the_book_shows(edition):
    text = "\n".join(_pages(edition))
    code = "\n".join(_shown_code(path) for path in toc_files())
    for raw in RAW_TEX:
        assert text.count(raw) <= code.count(raw), (
            f"{edition}: {raw!r} printed {text.count(raw)} times, shown code has it {code.count(raw)}")
    assert "Undefined control sequence" not in text and "Missing argument" not in text


def test_every_figure_is_an_image_at_print_resolution():
    rows = [line.split() for line in _run("pdfimages", "-list", str(_pdf("book"))).splitlines()[2:]]
    sharp = [r for r in rows if r[2] == "image" and min(int(r[12]), int(r[13])) >= MIN_PPI]
    figures = _figure_count()
    assert figures > 0
    assert len(sharp) >= figures, f"{len(sharp)} images at >= {MIN_PPI} ppi for {figures} figures"


def test_figures_and_equations_are_numbered_and_referenced():
    text = _norm(" ".join(_pages("book")))
    captions = set(re.findall(r"\bFig\. (\d+\.\d+)", text))
    assert len(captions) >= _figure_count()
    equations = set(re.findall(r"\((\d+\.\d+)\)", text))
    assert {"1.1", "2.1"} <= equations


@pytest.mark.parametrize("edition", sorted(EDITIONS))
def test_nothing_runs_off_the_page(edition):
    """Every word lies inside the page, with at most 2 mm of the 18 mm side margins used."""
    layout = _run("pdftotext", "-bbox", str(_pdf(edition)), "-")
    off = []
    for number, page in enumerate(re.findall(r"<page (.*?)</page>", layout, re.S), start=1):
        width = float(re.search(r'width="([\d.]+)"', page).group(1))
        for x_min, x_max, word in re.findall(
                r'<word xMin="([\d.]+)" yMin="[\d.]+" xMax="([\d.]+)" yMax="[\d.]+">([^<]*)</word>', page):
            if float(x_min) < 16 * MM or float(x_max) > width - 16 * MM:
                off.append(f"page {number}: {word}")
    assert off == [], f"{len(off)} words in the margin or off the page: {off[:10]}"


def test_the_edition_without_solutions_has_none_of_their_text():
    blocks, parts = _solutions()
    chapters = [p for p in toc_files() if p.suffix == ".ipynb"]
    assert blocks >= 3 * len(chapters)  # every chapter has three exercises or more
    book = _norm(" ".join(_pages("book")))
    nosolutions = _norm(" ".join(_pages("nosolutions")))
    assert book.count("Solution to Exercise") == blocks
    assert "Solution to" not in nosolutions
    # Prose is compared as words of two letters or more: pdftotext puts the sub- and superscripts
    # of inline mathematics (digits, symbols, single letters) into the line around it.
    def words(text: str) -> str:
        return " " + " ".join(re.findall(r"[A-Za-z]{2,}", text)) + " "

    book_words, nosolutions_words = words(book), words(nosolutions)
    unchecked = []
    for document, kind, text in parts:
        phrase = _phrase(kind, text)
        if phrase is None:
            unchecked.append((document, text[:60]))
            continue
        if kind == "code":
            phrase, book_text, nosolutions_text = _norm(phrase), book, nosolutions
        else:
            phrase, book_text, nosolutions_text = words(phrase), book_words, nosolutions_words
        assert phrase in book_text, f"{document}: solution text '{phrase}' not in the full edition"
        assert phrase not in nosolutions_text, f"{document}: solution text '{phrase}' in the edition without"
    assert unchecked == [], f"solutions with nothing to look for: {unchecked}"
    # The exercises themselves stay.
    for number in range(1, len(chapters) + 1):
        assert f"Exercise {number}.1" in nosolutions
