"""Drop a hand-written chapter number from each chapter's title ("# 4. The variance problem").

The table of contents numbers the chapters; a number in the title would print twice.

    python scripts/fix_titles.py book/*.ipynb
"""

import re
import sys

import nbformat

for path in sys.argv[1:]:
    nb = nbformat.read(path, as_version=4)
    first = next(c for c in nb.cells if c.cell_type == "markdown")
    fixed = re.sub(r"^#\s+\d+\.\s+", "# ", first.source, count=1)
    if fixed != first.source:
        first.source = fixed
        nbformat.write(nb, path)
        print(f"fixed title of {path}")
