"""The nbval plugin of ``make test-notebooks`` (tests/nbval_fresh.py) can fail, for each reason.

The real fresh environment takes a minute to build (``scripts/fresh_env.py``); here a stand-in
folder has a kernel named ``is-rl-fresh`` whose interpreter is ``DIR/venv/bin/python``, an empty
venv with this environment's packages on its path (a ``.pth`` file: ipykernel and the companion).
The stand-in has myst-nb, so
``companion.notebook.glue`` would not print: the notebooks below print ``key = value`` lines
themselves, as ``glue`` does without myst-nb.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from tests.nbval_fresh import shown_keys, unseen_keys

ROOT = Path(__file__).resolve().parent.parent


def test_glued_keys_are_read_from_the_text_only():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("{glue:text}`a:.2f`, {glue}`b` and {glue:text}`a`"),
                nbformat.v4.new_code_cell("glue('c', 1)  # {glue:text}`c` in code is not text")]
    assert shown_keys(nb) == {"a", "b"}
    assert unseen_keys(nb, "a = 1.5\n") == ["b"]
    assert unseen_keys(nb, "b = 2\na = 1\n") == []
    assert unseen_keys(nb, "ab = 1\nb = 2\n") == ["a"]  # "ab = " is not "a = "


def _stand_in(tmp_path: Path) -> Path:
    folder = tmp_path / "fresh"
    base_python = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base_python, "-m", "venv", "--without-pip", folder / "venv"], check=True)
    python = folder / "venv" / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "course.pth").write_text("\n".join(p for p in sys.path if p.endswith("site-packages")))
    kernel = folder / "kernel" / "share" / "jupyter" / "kernels" / "is-rl-fresh"
    kernel.mkdir(parents=True)
    (kernel / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "stand-in", "language": "python"}))
    return folder


def _notebook(path: Path, printed: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell("The ratio is {glue:text}`ratio:.2f`."),
                nbformat.v4.new_code_cell(f"print({printed!r})"),
                nbformat.v4.new_code_cell("x = 1")]
    nbformat.write(nb, path)
    return path


def _nbval(folder: Path, notebook: Path, kernel_dir: Path):
    env = dict(os.environ, JUPYTER_PATH=str(kernel_dir))
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.nbval_fresh", "-p", "no:cacheprovider",
         "--fresh-env", str(folder), "--nbval-lax", "--nbval-kernel-name", "is-rl-fresh",
         "--rootdir", str(notebook.parent), str(notebook)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory):
    return _stand_in(tmp_path_factory.mktemp("plugin"))


def test_a_chapter_whose_glued_value_is_printed_passes(stand_in, tmp_path):
    notebook = _notebook(tmp_path / "good.ipynb", "ratio = 0.5")
    result = _nbval(stand_in, notebook, stand_in / "kernel" / "share" / "jupyter")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def test_a_glued_value_never_printed_fails_the_last_cell(stand_in, tmp_path):
    notebook = _notebook(tmp_path / "bad.ipynb", "rate = 0.5")
    result = _nbval(stand_in, notebook, stand_in / "kernel" / "share" / "jupyter")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "glued values never printed in the fresh environment: ['ratio']" in result.stdout
    assert "1 failed, 1 passed" in result.stdout


def test_nbval_refuses_a_kernel_that_is_not_the_fresh_one(stand_in, tmp_path):
    notebook = _notebook(tmp_path / "good.ipynb", "ratio = 0.5")
    missing = _nbval(stand_in, notebook, tmp_path / "nowhere")
    assert missing.returncode != 0
    assert "no kernel 'is-rl-fresh' on JUPYTER_PATH" in missing.stderr
    other = _stand_in(tmp_path / "other")
    wrong = _nbval(other, notebook, stand_in / "kernel" / "share" / "jupyter")
    assert wrong.returncode != 0
    assert "not the fresh" in wrong.stderr
