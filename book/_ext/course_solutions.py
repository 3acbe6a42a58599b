"""Build an edition of the book without the solutions of the chapter exercises.

sphinx-exercise's own ``hide_solutions`` option handles only the one-block ``solution``
directive: with the gated form that the chapters use (``solution-start`` ... ``solution-end``
around code cells) it drops the start node, keeps everything up to the end node, and the
HTML writer then fails on that end node ("unknown node type: solution_end_node").

With ``course_hide_solutions = True`` this transform runs after sphinx-exercise has merged
each gated solution into one node, and removes every solution node: prose, code, outputs and
figures. It also removes code cells tagged ``solution`` (cell metadata ``"tags": ["solution"]``):
cells outside a solution block that check the numbers a solution quotes. The exercises stay.
``make book-nosolutions`` sets the option (scripts/nosolutions_config.py).
"""

from __future__ import annotations

from docutils import nodes
from sphinx.transforms import SphinxTransform
from sphinx_exercise.nodes import solution_node
from sphinx_exercise.transforms import MergeGatedSolutions


class RemoveSolutions(SphinxTransform):
    """Remove every (merged) solution node and every cell tagged ``solution`` when
    ``course_hide_solutions`` is set."""

    default_priority = MergeGatedSolutions.default_priority + 1

    def apply(self):
        if not self.config.course_hide_solutions:
            return
        for node in list(self.document.findall(solution_node)):
            node.parent.remove(node)
        for node in list(self.document.findall(nodes.container)):
            if "tag_solution" in node.get("classes", []):  # myst-nb's class for the cell tag
                node.parent.remove(node)


def setup(app):
    app.add_config_value("course_hide_solutions", False, "env", types=[bool])
    app.add_transform(RemoveSolutions)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
