"""The package re-exports every public name, imports under ``python -OO``, and the NumPy-only
chapters do not pay for torch."""

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


def test_importing_companion_does_not_import_torch():
    code = "import sys, companion; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_import_without_docstrings():
    """``python -OO`` strips docstrings (they are None): nothing may build on them at import."""
    code = "import companion; companion.per_decision_is([[1.0]], [[0.0]])"
    result = subprocess.run([sys.executable, "-OO", "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_unknown_names_raise_attribute_error():
    try:
        companion.no_such_function  # noqa: B018
    except AttributeError as err:
        assert "no_such_function" in str(err)
    else:
        raise AssertionError("expected AttributeError")
