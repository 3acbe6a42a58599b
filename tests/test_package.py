"""The package re-exports every public name, and the NumPy-only chapters do not pay for torch
(nor anyone for numba before the first estimator call)."""

import importlib
import subprocess
import sys

import companion

MODULES = companion._MODULES + companion._TORCH_MODULES


def test_every_public_name_is_reexported_once():
    assert len(companion.__all__) == len(set(companion.__all__))
    for name in MODULES:
        module = importlib.import_module(f"companion.{name}")
        for public in module.__all__:
            assert getattr(companion, public) is getattr(module, public), f"{name}.{public}"


def test_importing_companion_does_not_import_torch_or_numba():
    for heavy in ("torch", "numba"):
        code = f"import sys, companion; sys.exit({heavy!r} in sys.modules)"
        assert subprocess.run([sys.executable, "-c", code]).returncode == 0, heavy


def test_unknown_names_raise_attribute_error():
    try:
        companion.no_such_function  # noqa: B018
    except AttributeError as err:
        assert "no_such_function" in str(err)
    else:
        raise AssertionError("expected AttributeError")
