"""What a reader sees: the built book, served on localhost and read by headless Chromium.

Run after the book is built (`make test` builds it first). Every page in the table of contents must load
without console errors or failed requests, render its mathematics with the MathJax copy served by the
site itself, show every figure, and keep every internal link working. Screenshots of the preface and a
chapter at desktop and phone widths go to `_build/screenshots/` for a person to look at.
"""

from __future__ import annotations

import re
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urldefrag, urljoin, urlparse

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from toc import toc_files, toc_notebooks  # noqa: E402

pytestmark = pytest.mark.browser

PAGES = [p.relative_to(ROOT).with_suffix(".html").as_posix() for p in toc_files()]
CHAPTERS = [p.relative_to(ROOT).with_suffix(".html").as_posix() for p in toc_notebooks()]
SCREENSHOTS = ROOT / "_build" / "screenshots"
VIEWPORTS = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 390, "height": 844}}
MAX_SITE_MB = 120


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


def _open(browser, url, viewport=VIEWPORTS["desktop"]):
    """Open a page; return (page, console errors, failed requests)."""
    page = browser.new_page(viewport=viewport)
    errors, failed = [], []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("requestfailed", lambda req: failed.append(f"{req.url} ({req.failure})"))
    page.on("response", lambda r: failed.append(f"{r.url} (HTTP {r.status})") if r.status >= 400 else None)
    page.goto(url, wait_until="networkidle")
    page.wait_for_function("() => !window.MathJax || !MathJax.startup || MathJax.startup.promise")
    page.evaluate("() => window.MathJax && MathJax.startup ? MathJax.startup.promise : null")
    return page, errors, failed


@pytest.mark.parametrize("path", PAGES)
def test_page_loads_cleanly_and_renders_math_and_figures(browser, base_url, site, path):
    page, errors, failed = _open(browser, f"{base_url}/{path}")
    try:
        assert errors == [], f"console errors on {path}: {errors}"
        assert failed == [], f"failed requests on {path}: {failed}"
        # Visible prose (code blocks excluded) must hold no unrendered TeX.
        prose = page.evaluate(
            """() => { const c = document.querySelector('main').cloneNode(true);
                       c.querySelectorAll('pre, code, .highlight, script, style, mjx-container')
                        .forEach(e => e.remove());
                       return c.innerText; }"""
        )
        for raw in ("$$", "\\(", "\\[", "\\begin{"):
            assert raw not in prose, f"unrendered math {raw!r} on {path}"
        assert not re.search(r"(?<![\w$])\$[^$\s][^$]*\$", prose), f"inline $...$ left on {path}"
        source = (site / path).read_text(encoding="utf-8")
        if 'class="math' in source:
            assert page.locator("mjx-container").count() > 0, f"MathJax rendered nothing on {path}"
        sizes = page.evaluate(
            "() => Array.from(document.querySelectorAll('main img'))"
            ".map(i => [i.currentSrc, i.naturalWidth, i.naturalHeight])"
        )
        for src, width, height in sizes:
            assert width > 0 and height > 0, f"image {src} did not load on {path}"
    finally:
        page.close()


def test_mathjax_is_served_by_the_site_itself(site):
    html = (site / "book" / "notation.html").read_text(encoding="utf-8")
    scripts = re.findall(r'<script[^>]+src="([^"]*mathjax[^"]*)"', html, re.I)
    assert scripts, "no MathJax script on the notation page"
    assert all(not urlparse(s).scheme for s in scripts), f"MathJax loaded from elsewhere: {scripts}"
    assert (site / "_static" / "mathjax" / "tex-chtml.js").exists()


def test_every_internal_link_resolves(site):
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
                ids.setdefault(path, _parse(path).ids)
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
    repo = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]
    slug = urlparse(repo["url"]).path.strip("/")
    notebook = Path(path).with_suffix(".ipynb").as_posix()
    assert f"https://colab.research.google.com/github/{slug}/blob/{repo['branch']}/{notebook}" in html
    assert f"https://mybinder.org/v2/gh/{slug}/{repo['branch']}?urlpath=" in html
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
    page, errors, failed = _open(browser, f"{base_url}/search.html?q={word}")
    try:
        page.wait_for_selector("#search-results li", timeout=20_000)
        hrefs = page.eval_on_selector_all("#search-results li a", "els => els.map(e => e.href)")
        assert any(chapter in h for h in hrefs), f"searching {word!r} did not find {chapter}: {hrefs}"
        assert errors == [] and failed == []
    finally:
        page.close()


def test_exercise_solutions_are_collapsed_and_open_on_click(browser, base_url):
    if not CHAPTERS:
        pytest.fail("no chapters in the TOC")
    page, _, _ = _open(browser, f"{base_url}/{CHAPTERS[0]}")
    try:
        solution = page.locator("div.solution").first
        body = solution.locator("section, div.section, .admonition-body, p").last
        assert not body.is_visible(), "a solution is visible before it is opened"
        solution.locator("button.toggle-button, .admonition-title").first.click()
        body.wait_for(state="visible", timeout=5_000)
        assert body.is_visible()
    finally:
        page.close()


@pytest.mark.parametrize("viewport", sorted(VIEWPORTS))
def test_screenshots_of_preface_and_a_chapter(browser, base_url, viewport):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for path in ["book/intro.html"] + CHAPTERS[:1]:
        page, errors, _ = _open(browser, f"{base_url}/{path}", VIEWPORTS[viewport])
        try:
            out = SCREENSHOTS / f"{Path(path).stem}-{viewport}.png"
            page.screenshot(path=str(out), full_page=False)
            assert out.stat().st_size > 10_000
            overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 1, f"{path} scrolls sideways by {overflow}px at {viewport} width"
        finally:
            page.close()


def test_site_size_is_sensible(site):
    size_mb = sum(f.stat().st_size for f in site.rglob("*") if f.is_file()) / 2**20
    print(f"built site: {size_mb:.1f} MB")
    assert size_mb < MAX_SITE_MB
