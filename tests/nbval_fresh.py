"""pytest plugin: nbval runs the chapters in the fresh environment of ``scripts/fresh_env.py``.

Loaded by ``make test-notebooks`` (``-p tests.nbval_fresh --fresh-env DIR``). With
``--fresh-env DIR`` it

- refuses to start unless nbval's kernel (``--nbval-kernel-name``) is the one registered in
  ``DIR`` and runs the interpreter of ``DIR/venv``: the notebooks cannot silently run in the
  course's own environment instead;
- fails a chapter's last cell unless every value the chapter's text glues (``{glue:text}`key```)
  was printed by ``companion.notebook.glue`` during the run (``name = value``): without myst-nb,
  printing is how a reader in Colab sees the numbers the text states.

Without ``--fresh-env`` it does nothing, so ``pytest --nbval-lax book/x.ipynb`` in the course's
environment works as always.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from book_checks import shown_keys  # noqa: E402


def unseen_keys(nb, printed: str) -> list[str]:
    """The keys the notebook's text shows through glue (``book_checks.shown_keys``) whose
    ``key = value`` line is missing from ``printed``, sorted."""
    return sorted(key for key in shown_keys(nb) if f"{key} = " not in printed)


def pytest_addoption(parser):
    parser.addoption("--fresh-env", default=None, metavar="DIR",
                     help="the folder of scripts/fresh_env.py: check that nbval runs its kernel "
                          "and that every glued value is printed")


def pytest_configure(config):
    folder = config.getoption("fresh_env")
    if folder is None:
        return
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    name = config.getoption("nbval_kernel_name", None)
    if not name:
        raise pytest.UsageError("--fresh-env needs --nbval-kernel-name (scripts/fresh_env.py)")
    try:
        spec = KernelSpecManager().get_kernel_spec(name)
    except NoSuchKernel:
        raise pytest.UsageError(f"--nbval-kernel-name: no kernel {name!r} on JUPYTER_PATH") from None
    python = Path(folder).resolve() / "venv" / "bin" / "python"
    if Path(spec.argv[0]) != python:
        raise pytest.UsageError(f"kernel {name!r} runs {spec.argv[0]}, not the fresh {python}")
    config.pluginmanager.register(_GluePrinted(), "nbval-fresh-glue")


class _GluePrinted:
    """Collect each notebook's printed output cell by cell; check it at the notebook's last cell."""

    def __init__(self):
        self.printed: dict[object, list[str]] = {}
        self.last: dict[object, object] = {}

    def pytest_collection_modifyitems(self, items):
        for item in items:
            if hasattr(item, "test_outputs"):  # an nbval cell
                self.last[item.parent] = item

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        report = outcome.get_result()
        if call.when != "call" or not hasattr(item, "test_outputs"):
            return
        self.printed.setdefault(item.parent, []).extend(
            out.get("text", "") for out in item.test_outputs or []
            if out.get("output_type") == "stream")
        if item is self.last.get(item.parent) and report.passed:
            unseen = unseen_keys(item.parent.nb, "".join(self.printed[item.parent]))
            if unseen:
                report.outcome = "failed"
                report.longrepr = (f"{item.parent.name}: glued values never printed in the fresh "
                                   f"environment: {unseen}")
