"""What a reader sees: the built book, served on localhost and read by headless Chromium.

Run after the book is built (`make test` builds it first). Every page in the table of contents must load
without console errors or failed requests, render its mathematics with the MathJax copy served by the
site itself, show every figure, and keep every internal link working. Screenshots of the preface and a
chapter at desktop and phone widths go to `_build/screenshots/` for a person to look at.

Every chapter's download button, in the book and in the edition without solutions, serves the reader's
notebook (book/_ext/course_notebooks.py): the numbers of the book's run in its text, no MyST left, and in
the edition without solutions no solution at all; its Colab and Binder buttons open the same file on the
edition's own branch (scripts/notebooks_branch.py assembles it).

One browser serves the session; pages are opened several at a time (each navigation is started before
the first one is waited for) and waited for on specific conditions (the load event, MathJax's typesetting,
the fonts), never on a fixed delay or on network silence.
"""

from __future__ import annotations

import json
import re
import sys
from functools import cache
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urldefrag, urljoin, urlparse

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "book" / "_ext"))
import course_notebooks as cn  # noqa: E402
import notebooks_branch  # noqa: E402
from conftest import NOSOLUTIONS_SITE  # noqa: E402
from toc import toc_files, toc_notebooks  # noqa: E402

pytestmark = pytest.mark.browser

PAGES = [p.relative_to(ROOT).with_suffix(".html").as_posix() for p in toc_files()]
CHAPTERS = [p.relative_to(ROOT).with_suffix(".html").as_posix() for p in toc_notebooks()]
SCREENSHOTS = ROOT / "_build" / "screenshots"
VIEWPORTS = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 390, "height": 844}}
MAX_SITE_MB = 120
#: Pages opened at once: enough to keep two cores busy while one page waits for its fonts.
PARALLEL = 4


class _LinksAndIds(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links, self.ids = [], set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])


def _parse(path: Path) -> _LinksAndIds:
    parser = _LinksAndIds()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


_WATCH_SCRIPT_READY = "() => !window.MathJax || !MathJax.startup || MathJax.startup.promise"
_SETTLED = """() => Promise.resolve(window.MathJax && MathJax.startup ? MathJax.startup.promise : null)
                   .then(() => document.fonts.ready).then(() => true)"""


def _watch(page):
    """Console errors and failed requests of ``page``, as lists that fill while it runs."""
    errors, failed = [], []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("requestfailed", lambda req: failed.append(f"{req.url} ({req.failure})"))
    page.on("response", lambda r: failed.append(f"{r.url} (HTTP {r.status})") if r.status >= 400 else None)
    return errors, failed


def _settle(page):
    """Wait until the page has loaded, MathJax has typeset it and its fonts have arrived."""
    page.wait_for_load_state("load")
    page.wait_for_function(_WATCH_SCRIPT_READY)
    page.evaluate(_SETTLED)


def _open(context, url):
    """Open a page; return (page, console errors, failed requests)."""
    page = context.new_page()
    errors, failed = _watch(page)
    page.goto(url, wait_until="commit")
    _settle(page)
    return page, errors, failed


def _open_many(context, urls, inspect, settle=_settle):
    """``inspect(page, errors, failed)`` for every url, with PARALLEL pages loading at a time."""
    results = {}
    for start in range(0, len(urls), PARALLEL):
        opened = []
        for url in urls[start: start + PARALLEL]:  # start every navigation first ...
            page = context.new_page()
            errors, failed = _watch(page)
            page.goto(url, wait_until="commit")
            opened.append((url, page, errors, failed))
        for url, page, errors, failed in opened:  # ... then wait for each one
            try:
                settle(page)
                results[url] = inspect(page, errors, failed)
            finally:
                page.close()
    return results


_PROSE = """() => { const c = document.querySelector('main').cloneNode(true);
                    c.querySelectorAll('pre, code, .highlight, script, style, mjx-container')
                     .forEach(e => e.remove());
                    return c.innerText; }"""
_IMAGES = ("() => Array.from(document.querySelectorAll('main img'))"
           ".map(i => [i.currentSrc, i.naturalWidth, i.naturalHeight])")


@pytest.fixture(scope="session")
def loaded_pages(browser, base_url):
    """Every page of the TOC, loaded at desktop width: what the page tests below look at."""
    def inspect(page, errors, failed):
        return {"errors": list(errors), "failed": list(failed), "prose": page.evaluate(_PROSE),
                "mathjax": page.locator("mjx-container").count(), "images": page.evaluate(_IMAGES)}

    context = browser.new_context(viewport=VIEWPORTS["desktop"])
    try:
        results = _open_many(context, [f"{base_url}/{p}" for p in PAGES], inspect)
    finally:
        context.close()
    return {url.removeprefix(f"{base_url}/"): result for url, result in results.items()}


@pytest.mark.parametrize("path", PAGES)
def test_page_loads_cleanly_and_renders_math_and_figures(loaded_pages, site, path):
    page = loaded_pages[path]
    assert page["errors"] == [], f"console errors on {path}: {page['errors']}"
    assert page["failed"] == [], f"failed requests on {path}: {page['failed']}"
    # Visible prose (code blocks excluded) must hold no unrendered TeX.
    prose = page["prose"]
    for raw in ("$$", "\\(", "\\[", "\\begin{"):
        assert raw not in prose, f"unrendered math {raw!r} on {path}"
    assert not re.search(r"(?<![\w$])\$[^$\s][^$]*\$", prose), f"inline $...$ left on {path}"
    source = (site / path).read_text(encoding="utf-8")
    if 'class="math' in source:
        assert page["mathjax"] > 0, f"MathJax rendered nothing on {path}"
    for src, width, height in page["images"]:
        assert width > 0 and height > 0, f"image {src} did not load on {path}"


def test_mathjax_is_served_by_the_site_itself(site):
    html = (site / "book" / "notation.html").read_text(encoding="utf-8")
    scripts = re.findall(r'<script[^>]+src="([^"]*mathjax[^"]*)"', html, re.I)
    assert scripts, "no MathJax script on the notation page"
    assert all(not urlparse(s).scheme for s in scripts), f"MathJax loaded from elsewhere: {scripts}"
    assert (site / "_static" / "mathjax" / "tex-chtml.js").exists()


@pytest.mark.parametrize("edition", ["book", "nosolutions"])
def test_every_internal_link_resolves(edition, request):
    site = request.getfixturevalue("site" if edition == "book" else "nosolutions_site")
    broken = []
    ids = {}
    for html in site.rglob("*.html"):
        if "_static" in html.parts or "_sources" in html.parts:
            continue
        for href in _parse(html).links:
            url = urlparse(href)
            if url.scheme or href.startswith(("mailto:", "javascript:", "//")):
                continue
            target, fragment = urldefrag(urljoin(html.relative_to(site).as_posix(), href))
            path = site / unquote(target) if target else html
            if path.is_dir():
                path = path / "index.html"
            if not path.exists():
                broken.append(f"{html.relative_to(site)} -> {href}")
                continue
            if fragment and path.suffix == ".html":
                if path not in ids:  # parse each page once
                    ids[path] = _parse(path).ids
                if unquote(fragment) not in ids[path]:
                    broken.append(f"{html.relative_to(site)} -> {href} (no such anchor)")
    assert broken == []


@pytest.mark.parametrize("path", CHAPTERS)
def test_chapter_figures_have_captions_and_launch_buttons(site, path):
    html = (site / path).read_text(encoding="utf-8")
    main = html[html.index("<main"):]
    # the page's own images; the theme's logos (launch buttons) live under _static/
    images = [i for i in re.findall(r"<img[^>]*>", main) if "_static/" not in i]
    figures = re.findall(r"<figure[^>]*>.*?</figure>", main, re.S)
    captioned = [f for f in figures if "<figcaption" in f]
    assert len(captioned) >= 1, f"{path} has no captioned figure"
    in_figures = sum(len(re.findall(r"<img(?![^>]*_static/)", f)) for f in captioned)
    assert in_figures == len(images), f"{path}: {len(images) - in_figures} images without a caption"
    slug, branch = _repository_slug(), notebooks_branch.edition("full")[1]
    notebook = Path(path).with_suffix(".ipynb").as_posix()
    assert f"https://colab.research.google.com/github/{slug}/blob/{branch}/{notebook}" in html
    assert f"https://mybinder.org/v2/gh/{slug}/{branch}?urlpath=" in html
    assert notebook in html.split("mybinder.org", 1)[1][:400]
    assert "Set-up for Colab" not in html, "the set-up cell must be hidden in the HTML"


def test_search_finds_a_chapter_by_a_word_from_its_body(browser, base_url, site):
    if not CHAPTERS:
        pytest.fail("no chapters in the TOC")
    chapter = CHAPTERS[-1]
    text = re.sub(r"<[^>]+>", " ", (site / chapter).read_text(encoding="utf-8"))
    words = re.findall(r"\b[a-z]{9,}\b", text.lower())
    # A word that appears in this chapter's body but in as few other pages as possible.
    others = " ".join((site / p).read_text(encoding="utf-8").lower() for p in PAGES if p != chapter)
    word = min(sorted(set(words)), key=lambda w: (others.count(w), -words.count(w)))
    context = browser.new_context()
    try:
        page, errors, failed = _open(context, f"{base_url}/search.html?q={word}")
        page.wait_for_selector("#search-results li", timeout=20_000)
        hrefs = page.eval_on_selector_all("#search-results li a", "els => els.map(e => e.href)")
        assert any(chapter in h for h in hrefs), f"searching {word!r} did not find {chapter}: {hrefs}"
        assert errors == [] and failed == []
    finally:
        context.close()


def test_exercise_solutions_are_collapsed_and_open_on_click(browser, base_url):
    if not CHAPTERS:
        pytest.fail("no chapters in the TOC")
    context = browser.new_context()
    try:
        page, _, _ = _open(context, f"{base_url}/{CHAPTERS[0]}")
        solution = page.locator("div.solution").first
        body = solution.locator("section, div.section, .admonition-body, p").last
        assert not body.is_visible(), "a solution is visible before it is opened"
        solution.locator("button.toggle-button, .admonition-title").first.click()
        body.wait_for(state="visible", timeout=5_000)
        assert body.is_visible()
    finally:
        context.close()


@pytest.mark.parametrize("viewport", sorted(VIEWPORTS))
def test_screenshots_of_preface_and_a_chapter(browser, base_url, viewport):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def shoot(page, errors, failed):
        path = page.url.removeprefix(f"{base_url}/")
        out = SCREENSHOTS / f"{Path(path).stem}-{viewport}.png"
        page.screenshot(path=str(out), full_page=False)
        overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
        return path, out.stat().st_size, overflow

    context = browser.new_context(viewport=VIEWPORTS[viewport])
    try:
        shots = _open_many(context, [f"{base_url}/{p}" for p in ["book/intro.html"] + CHAPTERS[:1]],
                           shoot)
    finally:
        context.close()
    assert len(shots) == 2
    for path, size, overflow in shots.values():
        assert size > 10_000, f"the screenshot of {path} at {viewport} width is blank"
        assert overflow <= 1, f"{path} scrolls sideways by {overflow}px at {viewport} width"


def test_site_size_is_sensible(site):
    size_mb = sum(f.stat().st_size for f in site.rglob("*") if f.is_file()) / 2**20
    print(f"built site: {size_mb:.1f} MB")
    assert size_mb < MAX_SITE_MB


# ---- the reader's notebooks: downloads and launch buttons, in both editions ------------------
EDITIONS = {"book": "full", "nosolutions": "nosolutions"}
LAUNCH = {"colab": re.compile(r"^https://colab\.research\.google\.com/github/(?P<slug>[^/]+/[^/]+)"
                              r"/blob/(?P<branch>[^/]+)/(?P<path>.+)$"),
          "binder": re.compile(r"^https://mybinder\.org/v2/gh/(?P<slug>[^/]+/[^/]+)/(?P<branch>[^?]+)"
                               r"\?urlpath=(?:tree|lab/tree|notebooks)/(?P<path>.+)$")}
_LINKS = """() => ({
    download: Array.from(document.querySelectorAll('.dropdown-download-buttons a'))
                   .map(a => a.href).filter(h => h.endsWith('.ipynb')),
    launch: Array.from(document.querySelectorAll('.dropdown-launch-buttons a')).map(a => a.href)})"""


def _repository_slug() -> str:
    repo = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]
    return urlparse(repo["url"]).path.strip("/")


@pytest.fixture(scope="session")
def chapter_links(browser, request):
    """For each edition: every chapter's download and launch links, read from the rendered page,
    and the file its download link serves (fetched by the browser's context)."""
    found = {}
    for edition in EDITIONS:
        url = request.getfixturevalue("base_url" if edition == "book" else "nosolutions_url")
        # The links are in the page as served: no need to run its scripts or fetch its images.
        context = browser.new_context(java_script_enabled=False)
        context.route("**/*", lambda route: route.abort() if route.request.resource_type in
                      ("image", "font", "stylesheet", "media") else route.continue_())

        def inspect(page, errors, failed, context=context):
            links = page.evaluate(_LINKS)
            files = []
            for href in links["download"]:
                response = context.request.get(href)
                assert response.ok, f"{href}: HTTP {response.status}"
                files.append(response.body())
            return dict(links, files=files)

        try:
            pages = _open_many(context, [f"{url}/{p}" for p in CHAPTERS], inspect,
                               settle=lambda page: page.wait_for_load_state("domcontentloaded"))
        finally:
            context.close()
        found[edition] = {u.removeprefix(f"{url}/"): r for u, r in pages.items()}
    return found


@cache
def _glue_values(docname: str) -> dict[str, str]:
    """The values glued by the book's own run: the outputs of the chapter's execution, as the
    execution cache holds them (myst-nb strips glue outputs from the notebooks it writes)."""
    import nbformat
    from jupyter_cache import get_cache

    source = nbformat.read(ROOT / f"{docname}.ipynb", as_version=4)
    _, executed = get_cache(ROOT / "_build" / ".jupyter_cache").merge_match_into_notebook(source)
    return cn.glue_values(executed)


def _in_solution(source_cells):
    """For each cell of a source notebook: whether the edition without solutions drops it whole
    (a code cell tagged ``solution`` or inside a gated solution), or partly (a Markdown cell with
    a solution directive), computed here from the source, apart from the extension's own logic."""
    inside, flags = False, []
    for cell in source_cells:
        text = "".join(cell["source"])
        if cell["cell_type"] == "markdown":
            marks = re.findall(r"\{solution(-start|-end)?\}", text)
            flags.append("part" if marks or inside else None)
            for mark in marks:
                inside = {"-start": True, "-end": False}.get(mark, inside)
        else:
            flags.append("whole" if inside or "solution" in cell["metadata"].get("tags", []) else None)
    return flags


def _expected_glue(text: str, values: dict[str, str]) -> list[str]:
    from myst_nb.core.variables import format_plain_text

    shown = []
    for content in re.findall(r"\{glue(?::text)?\}`([^`]+)`", text):
        key, _, fmt = content.rpartition(":") if ":" in content else (content, "", "s")
        shown.append(format_plain_text(values[key], fmt))
    return shown


@pytest.mark.parametrize("edition", EDITIONS)
@pytest.mark.parametrize("path", CHAPTERS)
def test_download_link_serves_the_readers_notebook(chapter_links, edition, path):
    links = chapter_links[edition][path]
    assert len(links["files"]) == 1, f"{path}: expected one .ipynb download link, got {links['download']}"
    downloaded = json.loads(links["files"][0])
    source = json.loads((ROOT / path).with_suffix(".ipynb").read_text(encoding="utf-8"))
    docname = Path(path).with_suffix("").as_posix()
    values = _glue_values(docname)
    # Readable: no MyST left (roles, directives, targets, equation labels) and no raw glue.
    assert cn.raw_myst(downloaded) == []
    text = json.dumps(downloaded)
    assert "{glue" not in text and "{doc}" not in text and "{solution" not in text
    # The numbers are those of the book's run, in the order the text states them.
    flags = _in_solution(source["cells"])
    by_id = {c["id"]: c for c in downloaded["cells"]}
    checked = 0
    for cell, flag in zip(source["cells"], flags, strict=True):
        if cell["cell_type"] != "markdown" or (edition == "nosolutions" and flag):
            continue
        expected = _expected_glue("".join(cell["source"]), values)
        if not expected:
            continue
        got, at = "".join(by_id[cell["id"]]["source"]), 0
        for value in expected:
            found = got.find(value, at)
            assert found >= 0, f"{path} cell {cell['id']}: {value!r} not found after position {at}"
            at = found + len(value)
        checked += len(expected)
    assert checked > 0, f"{path}: no glued value checked"
    # The code is the chapter's, less (in the edition without solutions) the solutions' cells.
    code = [("".join(c["source"])) for c in downloaded["cells"] if c["cell_type"] == "code"]
    want = [("".join(c["source"])) for c, flag in zip(source["cells"], flags, strict=True)
            if c["cell_type"] == "code" and not (edition == "nosolutions" and flag)]
    assert code == want
    assert all(not c.get("outputs") for c in downloaded["cells"] if c["cell_type"] == "code")
    solutions = cn.solution_problems(downloaded)
    if edition == "nosolutions":
        assert solutions == [], f"{path}: the edition without solutions serves {solutions}"
    else:
        assert solutions, f"{path}: the book's download has no solution (is the check blind?)"


@pytest.fixture(scope="session")
def branches(tmp_path_factory):
    """The tree that the publish workflow pushes to each edition's branch."""
    trees = {}
    for edition, name in EDITIONS.items():
        out = tmp_path_factory.mktemp(f"branch-{edition}")
        trees[edition] = (notebooks_branch.assemble(name, out), out)
    return trees


@pytest.mark.parametrize("edition", EDITIONS)
@pytest.mark.parametrize("path", CHAPTERS)
def test_launch_buttons_open_the_downloaded_notebook_on_the_editions_branch(
        chapter_links, branches, edition, path):
    links = chapter_links[edition][path]
    branch, tree = branches[edition]
    assert branch == notebooks_branch.edition(EDITIONS[edition])[1]
    assert branch != yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["branch"], \
        "the launch buttons would open the sources, not the reader's notebooks"
    targets = {}
    for href in links["launch"]:
        for name, pattern in LAUNCH.items():
            match = pattern.match(href)
            if match:
                targets[name] = match
    assert set(targets) == set(LAUNCH), f"{path}: launch links {links['launch']}"
    for name, match in targets.items():
        assert match["slug"] == _repository_slug(), (name, match.string)
        assert match["branch"] == branch, f"{path}: {name} opens branch {match['branch']}"
        target = tree / match["path"]
        assert target.exists(), f"{path}: {name} opens {match['path']}, which the branch lacks"
        assert target.read_bytes() == links["files"][0], f"{path}: {name} opens another file"
    for needed in ("binder/requirements.txt", "binder/postBuild", "binder/runtime.txt",
                   "companion/__init__.py", "pyproject.toml"):
        assert (tree / needed).exists(), f"the branch {branch} lacks {needed}"


def test_serve_nosolutions_serves_the_edition(nosolutions_site):
    """`make serve-nosolutions` serves the folder that `make book-nosolutions` writes."""
    makefile = (ROOT / "Makefile").read_text()
    folder = re.search(r"^NOSOLUTIONS_HTML\s*:=\s*(\S+)", makefile, re.M)[1]
    assert (ROOT / folder).resolve() == NOSOLUTIONS_SITE.resolve() == nosolutions_site.resolve()
    assert re.search(r"^serve-nosolutions:.*\n\t.*--directory \$\(NOSOLUTIONS_HTML\)", makefile, re.M)
    assert (ROOT / folder / "index.html").exists()
