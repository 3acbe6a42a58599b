"""Print a copy of _config.yml that hides the solutions of the chapter exercises.

Used by ``make book-nosolutions``: the course's ``course_hide_solutions`` option
(book/_ext/course_solutions.py) removes every solution, including the code cells between
``solution-start`` and ``solution-end``, from the HTML. (sphinx-exercise's own
``hide_solutions`` fails on those gated solutions.)
"""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent

config = yaml.safe_load((ROOT / "_config.yml").read_text())
config["sphinx"]["config"]["course_hide_solutions"] = True
config["title"] += " (edition without solutions)"
print(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
