"""companion.notebook: glue works in the book (myst-nb) and outside it (prints the value)."""

from __future__ import annotations

import sys
import types

import pytest

from companion.notebook import glue


def test_without_myst_nb_the_value_is_printed(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "myst_nb", None)  # import myst_nb now raises ImportError
    glue("demo_ratio", 0.123456)
    glue("demo_count", 12000)
    glue("demo_label", "weighted IS")
    assert capsys.readouterr().out.splitlines() == [
        "demo_ratio = 0.1235", "demo_count = 12000", "demo_label = weighted IS"]


def test_with_myst_nb_the_value_goes_to_myst_nb_glue(monkeypatch, capsys):
    calls = []
    fake = types.ModuleType("myst_nb")
    fake.glue = lambda name, value, display=True: calls.append((name, value, display))
    monkeypatch.setitem(sys.modules, "myst_nb", fake)
    glue("demo_ratio", 0.5)
    glue("demo_shown", 2, display=True)
    assert calls == [("demo_ratio", 0.5, False), ("demo_shown", 2, True)]
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("name", ["", None, 3])
def test_a_name_that_is_not_a_nonempty_string_is_refused(name):
    with pytest.raises(ValueError, match="name: must be a non-empty string"):
        glue(name, 1.0)
