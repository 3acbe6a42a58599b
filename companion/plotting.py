"""The course's one matplotlib style, used in every chapter.

Each chapter calls :func:`use_course_style` in its first code cell, so that all figures share
readable fonts, a colour-blind-safe palette (Okabe & Ito), light grids and a resolution that stays
sharp on high-density screens.
"""

from __future__ import annotations

import matplotlib as mpl
from cycler import cycler

__all__ = ["PALETTE", "use_course_style"]

PALETTE = (
    "#0072B2",  # blue
    "#E69F00",  # orange
    "#009E73",  # bluish green
    "#D55E00",  # vermillion
    "#CC79A7",  # reddish purple
    "#56B4E9",  # sky blue
    "#F0E442",  # yellow
)
"""The Okabe-Ito colour-blind-safe palette, the colours of every figure (black omitted; it is kept
for reference lines). Used in :doc:`/book/core_idea`, :doc:`/book/why_rl`,
:doc:`/book/trajectory_weights`, :doc:`/book/variance_problem`, :doc:`/book/trpo`,
:doc:`/book/continuous_actions`, :doc:`/book/weighted_is`, :doc:`/book/on_off_policy`,
:doc:`/book/marginalized_is` and :doc:`/book/confidence`."""


def _style_rc() -> dict:
    """Return the rcParams of the course style (without applying them).

    Examples
    --------
    >>> rc = _style_rc()
    >>> rc["figure.figsize"]
    (6.4, 3.6)
    """
    return {
        "figure.figsize": (6.4, 3.6),
        "figure.dpi": 110,
        "savefig.dpi": 200,
        "savefig.bbox": "tight",
        "figure.constrained_layout.use": True,
        "font.size": 11,
        "axes.titlesize": 12,
        "axes.labelsize": 11,
        "legend.fontsize": 10,
        "legend.frameon": False,
        "xtick.labelsize": 10,
        "ytick.labelsize": 10,
        "axes.prop_cycle": cycler(color=list(PALETTE)),
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "grid.linewidth": 0.6,
        "lines.linewidth": 1.8,
        "image.cmap": "viridis",
    }


def use_course_style() -> None:
    """Apply the course style to matplotlib, and render inline figures at retina resolution.

    Safe to call outside IPython (then only the rcParams change).

    Examples
    --------
    >>> use_course_style()
    >>> import matplotlib as mpl
    >>> mpl.rcParams["axes.spines.top"]
    False

    Used in every chapter.
    """
    mpl.rcParams.update(_style_rc())
    try:  # inside Jupyter: PNG at twice the pixel density, sharp on high-density screens
        from IPython import get_ipython

        shell = get_ipython()
    except ImportError:  # pragma: no cover - IPython is a dependency of the book, not the package
        shell = None
    if shell is not None and shell.__class__.__name__ == "ZMQInteractiveShell":
        from matplotlib_inline.backend_inline import set_matplotlib_formats

        set_matplotlib_formats("retina")
