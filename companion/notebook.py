"""What a chapter notebook needs from its surroundings: gluing numbers into the text.

In the book, a chapter states the numbers its code computes through MyST's ``{glue:text}`` role:
the code cell calls :func:`glue`, the build stores the value in the cell's output, and the text
shows it. That needs myst-nb, one of the book's build tools. A learner who opens a chapter in
Colab, Binder or a bare JupyterLab does not have it, and must not need it: there :func:`glue`
prints the value instead, so the notebook still runs top to bottom and shows every number it
states. (The notebooks offered for download carry the values of the book's own run written into
their text.)

Used in every chapter.
"""

from __future__ import annotations

import numbers

__all__ = ["glue"]


def glue(name: str, value, display: bool = False) -> None:
    """Record ``value`` under ``name`` for the text of the chapter; print it outside the book.

    Where myst-nb is installed (the book's build, and the course's own environment) this is
    ``myst_nb.glue(name, value, display)``: the value is stored in the cell's output, and the
    role ``{glue:text}`name:.3f``` in the chapter's Markdown shows it, formatted. Where myst-nb
    is missing (Colab, Binder, a plain Jupyter installation) the value is printed as
    ``name = value`` (floats to four significant digits), so that the reader sees it.

    Parameters
    ----------
    name : str
        The key that the chapter's Markdown refers to.
    value : object
        What to record; chapters glue plain Python numbers (``float``, ``int``) and short strings.
    display : bool, default False
        Whether the book also shows the value where the cell stands (passed to myst-nb).

    Raises
    ------
    ValueError
        If ``name`` is not a non-empty string.

    Examples
    --------
    >>> import companion.notebook as nb
    >>> nb._print_glued("demo_ratio", 0.123456)
    demo_ratio = 0.1235

    See every chapter: each one glues the numbers its text states.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name: must be a non-empty string, got {name!r}")
    try:
        from myst_nb import glue as myst_glue
    except ImportError:
        _print_glued(name, value)
        return
    myst_glue(name, value, display=display)


def _print_glued(name: str, value) -> None:
    """Print ``name = value`` the way a reader wants to see a number in a notebook."""
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        shown = f"{float(value):.4g}"
    else:
        shown = str(value)
    print(f"{name} = {shown}")
