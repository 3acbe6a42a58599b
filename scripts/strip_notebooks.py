"""Strip outputs, execution counts and execution metadata from notebooks, in place.

    python scripts/strip_notebooks.py book/*.ipynb

Notebooks are committed without outputs: the book build executes them, so what the reader sees is
always what the current code computes.
"""

from __future__ import annotations

import sys

import nbformat


def strip(path: str) -> bool:
    """Strip one notebook; return True if it changed."""
    nb = nbformat.read(path, as_version=4)
    before = nbformat.writes(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        cell.metadata.pop("execution", None)
    nb.metadata.pop("widgets", None)
    after = nbformat.writes(nb)
    if after != before:
        nbformat.write(nb, path)
    return after != before


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        if strip(arg):
            print(f"stripped {arg}")
