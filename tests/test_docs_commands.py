"""The commands the documentation tells people to type work, in the order it gives them.

A newcomer follows the README on a fresh clone (as CI does): every command that uses the course's
environment (``.venv/...``) must come after one that creates it, every ``make`` target named in the
docs must exist, and the tools that only the course's environment has (otter, jupytext, pytest,
jupyter-book, ruff) are called through ``.venv/bin/`` or a make target, never bare (they are not on
the PATH of a fresh shell).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ["README.md", "CONTRIBUTING.md", "book/instructors.md", "assignments/README.md"]
#: Tools that exist only in the course's environment, never on a fresh shell's PATH.
VENV_ONLY = {"otter", "jupytext", "pytest", "jupyter-book", "ruff", "playwright", "nbval"}
#: Commands that create the course's environment.
CREATES_VENV = re.compile(r"^(python3? -m venv \.venv|make (install|book|test)\b)")


def commands(text: str) -> list[str]:
    """Commands in document order: each line of a ```bash block, and inline code that starts
    with a command word (``make ...``, ``.venv/bin/...``, ``python3 ...``, a course tool)."""
    found = []
    pattern = re.compile(r"```(?:bash|sh|console)\n(?P<block>.*?)```|(?<!`)`(?P<inline>[^`\n]+)`(?!`)",
                         re.S)
    for match in pattern.finditer(text):
        if match["block"] is not None:
            for line in match["block"].splitlines():
                line = line.split("#", 1)[0].strip()
                if line:
                    found.extend(part.strip() for part in re.split(r"&&|;", line) if part.strip())
        else:
            code = match["inline"].strip()
            tokens = code.split()
            word = tokens[0] if tokens else ""
            # `otter run` names a command; `otter run -a x.zip` is one to type
            typed = len(tokens) >= 3 or any(ch in t for t in tokens[1:] for ch in "/-.=")
            if ((word in ("make", "python3", "python") and len(tokens) > 1) or word.startswith(".venv/")
                    or (word in VENV_ONLY and typed)):
                found.extend(part.strip() for part in re.split(r"&&|;", code) if part.strip())
    return found


def makefile_targets() -> set[str]:
    return set(re.findall(r"^([A-Za-z][\w-]*):", (ROOT / "Makefile").read_text(), re.M))


def test_readme_creates_the_environment_before_using_it():
    cmds = commands((ROOT / "README.md").read_text())
    assert cmds, "no commands found in README.md"
    first_use = next((i for i, c in enumerate(cmds) if ".venv/" in c and not CREATES_VENV.match(c)),
                     None)
    first_create = next((i for i, c in enumerate(cmds) if CREATES_VENV.match(c)), None)
    assert first_create is not None, "README.md never creates the environment"
    if first_use is not None:
        assert first_create < first_use, (
            f"README.md uses the environment ({cmds[first_use]!r}) before any command creates it; "
            f"first creation: {cmds[first_create]!r}")


def test_readme_names_make_book_and_make_test_as_its_two_commands():
    cmds = commands((ROOT / "README.md").read_text())
    assert "make book" in cmds and "make test" in cmds
    assert cmds.index("make book") < cmds.index("make test")


@pytest.mark.parametrize("doc", DOCS)
def test_every_make_target_the_docs_name_exists(doc):
    targets = makefile_targets()
    for cmd in commands((ROOT / doc).read_text()):
        if cmd.startswith("make "):
            for target in cmd.split()[1:]:
                if "=" in target:  # variables follow the targets (`make assignments SEED=...`)
                    break
                if not target.startswith("-"):
                    assert target in targets, f"{doc}: `{cmd}` names no Makefile target"


@pytest.mark.parametrize("doc", DOCS)
def test_course_tools_are_called_through_the_environment(doc):
    bare = [c for c in commands((ROOT / doc).read_text())
            if any(re.search(rf"(^|\s|&&|\|)\s*{re.escape(tool)}\s", f" {c} ")
                   and not re.search(rf"(\.venv/bin/|-m ){re.escape(tool)}\b", c)
                   for tool in VENV_ONLY)]
    assert bare == [], f"{doc} calls course tools bare (use .venv/bin/... or make): {bare}"


@pytest.mark.parametrize("doc", DOCS)
def test_every_venv_tool_the_docs_name_is_installed(doc):
    """``.venv/bin/otter`` needs the instructor tools, which a test run may lack: only the course
    environment's own tools are checked."""
    bin_dir = ROOT / ".venv" / "bin"
    for cmd in commands((ROOT / doc).read_text()):
        for tool in re.findall(r"\.venv/bin/([\w.-]+)", cmd):
            if tool in ("otter", "jupytext"):
                continue  # requirements-instructor.txt
            assert (bin_dir / tool).exists(), f"{doc}: `{cmd}` needs .venv/bin/{tool}"


def test_readme_links_the_contributing_guide():
    assert "(CONTRIBUTING.md)" in (ROOT / "README.md").read_text()


def test_the_checks_catch_a_readme_in_the_wrong_order():
    wrong = ("```bash\n.venv/bin/pip install torch==2.13.0\n```\n\nThen `make book` and `make test`.")
    cmds = commands(wrong)
    assert cmds == [".venv/bin/pip install torch==2.13.0", "make book", "make test"]
    first_use = next(i for i, c in enumerate(cmds) if ".venv/" in c)
    first_create = next(i for i, c in enumerate(cmds) if CREATES_VENV.match(c))
    assert first_use < first_create  # what test_readme_creates_the_environment_before_using_it refuses
    bare = commands("Run `otter run -a x.zip sub.ipynb` and `pytest tests/x.py` (`otter run` grades).")
    assert bare == ["otter run -a x.zip sub.ipynb", "pytest tests/x.py"]
