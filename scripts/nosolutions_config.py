"""Print a copy of _config.yml that hides the solutions of the chapter exercises.

Used by ``make book-nosolutions``: sphinx-exercise's ``hide_solutions`` option removes every
``solution`` block (and the code cells between ``solution-start`` and ``solution-end``) from the HTML.
"""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent

config = yaml.safe_load((ROOT / "_config.yml").read_text())
config["sphinx"]["config"]["hide_solutions"] = True
config["title"] += " (edition without solutions)"
print(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
