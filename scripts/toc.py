"""Read the book's table of contents.

    python scripts/toc.py notebooks   # every notebook listed in _toc.yml, one path a line
    python scripts/toc.py files       # every file listed in _toc.yml (with its suffix)

Used by the Makefile (which notebooks nbval runs) and by tests/test_book_structure.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _entries(node):
    if isinstance(node, dict):
        if "file" in node:
            yield node["file"]
        if "root" in node:
            yield node["root"]
        for key in ("parts", "chapters", "sections"):
            for child in node.get(key, []):
                yield from _entries(child)


def toc_files(root: Path = ROOT) -> list[Path]:
    """Every document named in ``_toc.yml``, resolved to an existing path where one exists.

    A name without a suffix resolves to ``.ipynb`` or ``.md``; a name that resolves to neither is
    returned with no suffix, so that a caller can report it as missing.
    """
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    paths = []
    for name in _entries(toc):
        base = root / name
        candidates = [base] if base.suffix else [base.with_suffix(".ipynb"), base.with_suffix(".md")]
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
