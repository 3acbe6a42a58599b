"""Read the book's table of contents with jupyter-book's own parser (sphinx-external-toc).

    python scripts/toc.py notebooks   # every notebook listed in _toc.yml, one path a line
    python scripts/toc.py files       # every file listed in _toc.yml (with its suffix)

Used by the Makefile (which notebooks nbval runs) and by the tests.
"""

from __future__ import annotations

import sys
from pathlib import Path

from sphinx_external_toc.api import GlobItem, UrlItem
from sphinx_external_toc.parsing import parse_toc_yaml

ROOT = Path(__file__).resolve().parent.parent
SUFFIXES = (".ipynb", ".md")


def _docnames(root: Path) -> list[str]:
    """The documents of ``_toc.yml`` in reading order (depth first, as the book shows them).

    A ``url:`` entry is a link, not a document, and is skipped. A ``glob:`` entry is expanded as
    Sphinx does: the matching documents (``.ipynb`` or ``.md``), sorted by name.
    """
    site = parse_toc_yaml(root / "_toc.yml")
    order: list[str] = []

    def visit(docname: str) -> None:
        order.append(docname)
        for tree in site[docname].subtrees:
            for item in tree.items:
                if isinstance(item, UrlItem):
                    continue
                if isinstance(item, GlobItem):
                    found = sorted({p.relative_to(root).with_suffix("").as_posix()
                                    for suffix in SUFFIXES for p in root.glob(f"{item}{suffix}")})
                    if not found:
                        raise ValueError(f"_toc.yml: glob {str(item)!r} matches no document")
                    for name in found:
                        if name not in order:
                            order.append(name)
                    continue
                visit(str(item))

    visit(site.root.docname)
    return order


def toc_files(root: Path = ROOT) -> list[Path]:
    """Every document named in ``_toc.yml``, resolved to an existing path where one exists.

    A name without a suffix resolves to ``.ipynb`` or ``.md``; a name that resolves to neither is
    returned with no suffix, so that a caller can report it as missing.
    """
    paths = []
    for name in _docnames(root):
        base = root / name
        candidates = [base] if base.suffix in SUFFIXES else [base.with_suffix(s) for s in SUFFIXES]
        found = [c for c in candidates if c.exists()]
        paths.append(found[0] if found else base)
    return paths


def toc_notebooks(root: Path = ROOT) -> list[Path]:
    """The notebooks named in ``_toc.yml``, in reading order."""
    return [p for p in toc_files(root) if p.suffix == ".ipynb"]


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "files"
    chosen = toc_notebooks() if what == "notebooks" else toc_files()
    print("\n".join(str(p.relative_to(ROOT)) for p in chosen))
