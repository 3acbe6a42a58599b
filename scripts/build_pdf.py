"""Build the PDF edition of the book from the same executed notebooks as the HTML.

    python scripts/build_pdf.py                  # _build/pdf/book.pdf
    python scripts/build_pdf.py --nosolutions    # _build/pdf/book-nosolutions.pdf

Used by ``make pdf`` and ``make pdf-nosolutions``. Three steps:

1. Sphinx's ``singlehtml`` builder writes the whole book as one HTML page. The edition with
   solutions shares ``_build/.doctrees`` and ``_build/.jupyter_cache`` with ``make book``, so after
   an HTML build it only writes; the edition without solutions sets ``course_hide_solutions``
   (book/_ext/course_solutions.py) like ``make book-nosolutions`` and reads the notebooks from the
   same execution cache. Nothing executes twice while the cache is warm.
2. Headless Chromium (Playwright; Debian's ``/usr/bin/chromium`` or ``$CHROMIUM_PATH``) opens that
   page, waits for MathJax (served by the site itself) to typeset every equation, and prepares it
   for paper with ``scripts/pdf_print.css``: a title page, a table of contents, every chapter on a
   new page, solutions and hidden inputs expanded, long code lines wrapped. Display equations and
   tables wider than the text column are scaled down to fit; anything still wider is an error.
3. Chromium prints the page twice. The first print tells, through the PDF's named destinations
   (read with poppler's ``pdfinfo -dests``), on which page every chapter and section starts; those
   page numbers go into the table of contents, and the second print is the book.

Each edition is also copied into its HTML site as ``book.pdf`` when that site exists
(``_build/html`` or ``_build/nosolutions/_build/html``): the preface links to it.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "_build"
OUT = BUILD / "pdf"
CSS = Path(__file__).resolve().parent / "pdf_print.css"
JB_FLAGS = ["-W", "-n", "--keep-going"]  # as `make book`: a warning fails the PDF too
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
# The text column of an A4 page with the margins of pdf_print.css (210 mm - 2 x 18 mm), in CSS px.
COLUMN_PX = round((210 - 2 * 18) / 25.4 * 96)
PAGE_HEIGHT_PX = round(297 / 25.4 * 96)
MIN_SCALE = 0.6  # an equation or table is shrunk at most this much to fit the column


def _log(message: str) -> None:
    print(f"[pdf] {message}", flush=True)


def chromium_executable() -> str | None:
    """Debian's Chromium, or $CHROMIUM_PATH; None means Playwright's own browser."""
    if os.environ.get("CHROMIUM_PATH"):
        return os.environ["CHROMIUM_PATH"]
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


def book_config(nosolutions: bool) -> dict:
    """The book's configuration; for the edition without solutions, the one ``make
    book-nosolutions`` uses (scripts/nosolutions_config.py)."""
    if not nosolutions:
        return yaml.safe_load((ROOT / "_config.yml").read_text())
    printed = subprocess.run([sys.executable, str(ROOT / "scripts" / "nosolutions_config.py")],
                             check=True, capture_output=True, text=True).stdout
    return yaml.safe_load(printed)


def sphinx_singlehtml(nosolutions: bool) -> Path:
    """Run the singlehtml builder; return the page that holds the whole book."""
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    command = [str(jupyter_book), "build", str(ROOT), "--builder", "singlehtml", *JB_FLAGS]
    if nosolutions:
        config = book_config(nosolutions=True)
        # Read the notebooks from the execution cache of `make book` (its default location is
        # under --path-output, which would execute every notebook a second time).
        config.setdefault("execute", {})["cache"] = str(BUILD / ".jupyter_cache")
        # Local extensions are found relative to the configuration file, which lives in _build.
        extensions = config["sphinx"].get("local_extensions", {})
        for name, path in extensions.items():
            extensions[name] = str((ROOT / path).resolve())
        path_output = OUT / "nosolutions"
        path_output.mkdir(parents=True, exist_ok=True)
        config_file = path_output / "_config.yml"
        config_file.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
        command += ["--config", str(config_file), "--path-output", str(path_output)]
        site = path_output / "_build" / "singlehtml"
    else:
        site = BUILD / "singlehtml"
    subprocess.run(command, check=True, cwd=ROOT)
    return site


def book_parts() -> list[dict]:
    """The table of contents: the preface, then each part's caption and documents."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    parts = [{"caption": None, "numbered": False, "docs": [toc["root"]]}]
    for part in toc.get("parts", []):
        parts.append({"caption": part.get("caption"), "numbered": bool(part.get("numbered")),
                      "docs": [c["file"] for c in part.get("chapters", [])]})
    return parts


def git_stamp() -> str:
    """The commit the PDF was built from, as 'YYYY-MM-DD, commit abc1234' (empty outside git)."""
    try:
        out = subprocess.run(["git", "log", "-1", "--format=%cs, commit %h"], cwd=ROOT,
                             check=True, capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""
    return out


def named_destinations(pdf: Path) -> dict[str, int]:
    """Page (1-based) of every named destination in a PDF, read with poppler's pdfinfo."""
    out = subprocess.run(["pdfinfo", "-dests", str(pdf)], check=True, capture_output=True,
                         text=True, errors="replace").stdout
    pages = {}
    for line in out.splitlines():
        match = re.match(r'\s*(\d+)\s+\[.*\]\s+"(.*)"\s*$', line)
        if match:
            pages.setdefault(match.group(2), int(match.group(1)))
    return pages


def page_count(pdf: Path) -> int:
    out = subprocess.run(["pdfinfo", str(pdf)], check=True, capture_output=True, text=True).stdout
    return int(re.search(r"^Pages:\s+(\d+)", out, re.M).group(1))


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def serve(directory: Path):
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


PREPARE_JS = (Path(__file__).resolve().parent / "pdf_prepare.js").read_text()


def print_book(site: Path, pdf: Path, config: dict, nosolutions: bool) -> dict:
    """Print the singlehtml page at ``site`` to ``pdf``; return a summary of the layout."""
    from playwright.sync_api import sync_playwright

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    root_doc = toc["root"]
    # The singlehtml page of a root document in a subdirectory (book/intro) refers to _static/
    # and _images/ as if it sat at the top of the site, and links to itself as book/intro.html#x:
    # a copy at the top with self-links made into fragments works as the builder intended.
    html = (site / f"{root_doc}.html").read_text(encoding="utf-8")
    html = html.replace(f'href="{root_doc}.html#', 'href="#').replace(f'href="{root_doc}.html"', 'href="#"')
    (site / "print.html").write_text(html, encoding="utf-8")

    options = {
        "parts": book_parts(),
        "title": config["title"],
        "author": config.get("author", ""),
        "edition": "Edition without solutions" if nosolutions else "",
        "stamp": git_stamp(),
        "repository": config.get("repository", {}).get("url", ""),
        "css": CSS.read_text(),
        "column": COLUMN_PX,
        "minScale": MIN_SCALE,
    }
    pdf.parent.mkdir(parents=True, exist_ok=True)
    draft = pdf.with_suffix(".draft.pdf")  # the book appears only when it is finished
    server = serve(site)
    started = time.time()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium_executable(), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": COLUMN_PX, "height": PAGE_HEIGHT_PX})
            errors = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            # singlehtml writes no search index, which the theme's search box asks for
            page.on("response", lambda r: errors.append(f"{r.url} (HTTP {r.status})")
                    if r.status >= 400 and not r.url.endswith("/searchindex.js") else None)
            page.emulate_media(media="print")
            page.goto(f"http://127.0.0.1:{server.server_address[1]}/print.html",
                      wait_until="networkidle", timeout=120_000)
            page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise",
                                   timeout=60_000)
            page.evaluate("() => MathJax.startup.promise")
            _log(f"page loaded and typeset in {time.time() - started:.0f} s")
            if errors:
                raise RuntimeError(f"the book page did not load cleanly: {errors[:5]}")
            layout = page.evaluate(PREPARE_JS, options)
            _log(f"laid out after {time.time() - started:.0f} s")
            if layout["missing"]:
                raise RuntimeError(f"documents of _toc.yml not found in the page: {layout['missing']}")
            if layout["mathErrors"]:
                raise RuntimeError(f"MathJax could not typeset: {layout['mathErrors'][:5]}")
            if layout["overflow"]:
                lines = "\n  ".join(layout["overflow"][:20])
                raise RuntimeError(f"wider than the page even when scaled down:\n  {lines}")

            def print_to(path: Path) -> None:
                page.pdf(path=str(path), prefer_css_page_size=True, print_background=True,
                         outline=True)  # outline: the PDF's bookmarks

            # Print, read where every entry of the contents landed, write the page numbers in,
            # print again; repeat (rarely) until the numbers are those of the print.
            pages = {}
            for attempt in range(1, 4):
                print_to(draft)
                found = named_destinations(draft)
                _log(f"print {attempt} after {time.time() - started:.0f} s")
                if attempt > 1 and all(found.get(t) == pages.get(t) for t in layout["targets"]):
                    break
                missing = [t for t in layout["targets"] if t not in found]
                if missing:
                    raise RuntimeError(f"no destination in the PDF for {missing[:5]}")
                pages = found
                page.evaluate("(pages) => window.coursePdfSetPages(pages)", pages)
            else:
                raise RuntimeError("the table of contents did not settle after three prints")
            browser.close()
    finally:
        server.shutdown()
    (site / "print.html").unlink()
    draft.replace(pdf)
    summary = {"pages": page_count(pdf), "figures": layout["figures"], "scaled": layout["scaled"],
               "toc_entries": len(layout["targets"]), "seconds": round(time.time() - started, 1)}
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nosolutions", action="store_true",
                        help="the edition without the solutions of the exercises")
    parser.add_argument("--no-sphinx", action="store_true",
                        help="reuse the singlehtml pages of the last build (for work on the layout)")
    args = parser.parse_args(argv)
    started = time.time()
    config = book_config(args.nosolutions)
    if args.no_sphinx:
        site = (OUT / "nosolutions" / "_build" / "singlehtml") if args.nosolutions else BUILD / "singlehtml"
    else:
        site = sphinx_singlehtml(args.nosolutions)
    _log(f"singlehtml ready after {time.time() - started:.0f} s")
    pdf = OUT / ("book-nosolutions.pdf" if args.nosolutions else "book.pdf")
    summary = print_book(site, pdf, config, args.nosolutions)
    html = (BUILD / "nosolutions" / "_build" / "html") if args.nosolutions else BUILD / "html"
    if html.is_dir():  # the edition's own site links to book.pdf from its preface
        shutil.copyfile(pdf, html / "book.pdf")
    summary["total_seconds"] = round(time.time() - started, 1)
    _log(f"wrote {pdf.relative_to(ROOT)}: {json.dumps(summary)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
