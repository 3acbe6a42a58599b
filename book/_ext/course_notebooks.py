"""The reader's notebooks: every chapter as it reads outside the book.

A chapter's source is MyST Markdown inside a notebook: ``{glue:text}`key:.3f``` roles for the
numbers its code computes, ``{doc}``, ``{eq}``, ``{numref}``, ``{ref}`` and ``{cite}`` roles,
``{exercise}`` and ``{solution}`` directives, macros such as ``\\E`` that only the book's MathJax
knows. Opened in JupyterLab, Colab or Binder, or on GitHub, all of that shows raw. At the end of
the build this extension writes, for every chapter, a *reader's notebook*: the source notebook with

- each glue role replaced by the value of the book's own run, formatted as myst-nb formats it;
- ``{doc}`` a Markdown link with the chapter's title (a chapter's notebook, or the page of the
  published book for a page that is not a notebook), ``{eq}`` the equation's number (and each
  labelled display equation ``\\tag``-ged with it), ``{numref}`` "Figure 5.2", ``{ref}`` the
  reference's text, ``{cite}`` author-year, ``{py:func}`` and the like inline code;
- exercises as bold-titled paragraphs, one-block solutions as ``<details>`` blocks and gated
  solutions (``solution-start`` ... ``solution-end`` around code cells) as a titled section;
- the book's MathJax macros expanded, figure captions as a Markdown cell under their figure.

The edition without solutions (``course_hide_solutions``) leaves out every solution: the
``{solution}`` blocks, everything between ``solution-start`` and ``solution-end`` (Markdown and
code cells) and the code cells tagged ``solution``.

The file is written where the download button of the page points (``_sources/<doc>.ipynb``) and
under ``<outdir>/_notebooks/`` in the layout of the repository: ``scripts/notebooks_branch.py``
puts those beside the companion and the Binder configuration on the branch that the Colab and
Binder launch buttons open (``course_notebooks_branch``; the book's own ``repository.branch`` keeps
naming the branch the set-up cell installs the companion from).

The transformation itself (:func:`reader_notebook`) is plain Python on an ``nbformat`` notebook and
a :class:`Resolver`, so that tests can run it without a build.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

#: A MyST role: ``{name}`content```.
ROLE = re.compile(r"\{(?P<name>[A-Za-z][\w:.-]*)\}`(?P<content>[^`]*)`")
#: The opening fence of a MyST directive: ```` ```{name} argument ```` or ``:::{name} argument``.
FENCE = re.compile(r"^(?P<fence>`{3,}|:{3,})\{(?P<name>[\w:-]+)\}[ \t]*(?P<arg>.*)$")
#: A labelled display equation's closing line: ``$$ (eq-label)``.
EQ_LABEL = re.compile(r"\$\$[ \t]*\((?P<label>[\w-]+)\)[ \t]*$", re.M)
#: A target line: ``(sec-label)=``.
TARGET = re.compile(r"^\([\w-]+\)=[ \t]*\n?", re.M)
#: ``text <target>`` inside a role.
EXPLICIT = re.compile(r"^(?P<text>.*?)\s*<(?P<target>[^<>]+)>$", re.S)
#: Tags of code cells that only the edition with solutions shows.
SOLUTION_TAG = "solution"


@dataclass
class Resolver:
    """What the build knows about cross-references, as plain data.

    ``glue`` maps a glue key to its ``text/plain`` value, ``titles`` a docname to its title,
    ``notebooks`` holds the docnames that are chapters (notebooks), ``equations``, ``figures``
    and ``exercises`` map a label to its number ("5.3"), ``labels`` a label to its text (a
    section's title), ``citations`` a key to its author-year text ("Kong, 1992"), ``site`` the
    published book's address (for links to pages that are not notebooks).
    """

    docname: str
    glue: dict[str, str] = field(default_factory=dict)
    titles: dict[str, str] = field(default_factory=dict)
    notebooks: set[str] = field(default_factory=set)
    equations: dict[str, str] = field(default_factory=dict)
    figures: dict[str, str] = field(default_factory=dict)
    exercises: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    citations: dict[str, str] = field(default_factory=dict)
    macros: dict[str, str] = field(default_factory=dict)
    numfig_format: dict[str, str] = field(
        default_factory=lambda: {"figure": "Fig. %s", "exercise": "Exercise %s"})
    site: str = ""
    problems: list[str] = field(default_factory=list)

    # ---- roles ---------------------------------------------------------------------------------
    def role(self, name: str, content: str) -> str:
        """The Markdown that replaces ``{name}`content```."""
        if name in ("glue", "glue:text", "glue:md"):  # the value's text/plain, as the book shows it
            return self.glue_text(content)
        handler = {"doc": self.doc, "eq": self.eq, "numref": self.numref, "ref": self.ref,
                   "cite": self.cite, "cite:p": self.cite, "cite:t": self.cite_t}.get(name)
        if handler is not None:
            return handler(content)
        if name.startswith("py:") or name in ("func", "class", "meth", "mod", "attr", "obj"):
            text, target = _explicit(content)
            shown = text or target.lstrip("~")
            if not text and target.startswith("~"):
                shown = shown.rsplit(".", 1)[-1]
            return f"`{shown}`"
        if name == "math":
            return f"${content}$"
        self.problems.append(f"{self.docname}: role {{{name}}} is shown as plain text")
        return _explicit(content)[0] or content

    def glue_text(self, content: str) -> str:
        from myst_nb.core.variables import format_plain_text

        key, _, fmt = content.rpartition(":") if ":" in content else (content, "", "s")
        key = key.split("::", 1)[-1]
        if key not in self.glue:
            self.problems.append(f"{self.docname}: no glued value {key!r}")
            return f"`{key}`"
        try:
            return format_plain_text(self.glue[key], fmt)
        except ValueError as exc:
            self.problems.append(f"{self.docname}: cannot format {key!r} with {fmt!r}: {exc}")
            return self.glue[key]

    def doc(self, content: str) -> str:
        text, target = _explicit(content)
        docname = _resolve_docname(self.docname, target)
        title = text or self.titles.get(docname)
        if title is None:
            self.problems.append(f"{self.docname}: no document {target!r}")
            title = target
        return f"[{title}]({self._href(docname)})"

    def _href(self, docname: str) -> str:
        """A chapter's notebook (a relative link: it opens beside this one in JupyterLab, Binder,
        Colab or on GitHub); for a page that is no notebook, its page in the published book."""
        if docname in self.notebooks:
            return _relpath(PurePosixPath(docname + ".ipynb"), PurePosixPath(self.docname).parent)
        return f"{self.site.rstrip('/')}/{docname}.html"

    def eq(self, content: str) -> str:
        label = _explicit(content)[1]
        if label not in self.equations:
            self.problems.append(f"{self.docname}: no equation {label!r}")
            return f"({label})"
        return f"({self.equations[label]})"

    def numbered(self, kind: str, number: str) -> str:
        """"Fig. 5.2", "Exercise 5.1": the book's ``numfig_format``."""
        return self.numfig_format.get(kind, kind.capitalize() + " %s").replace("%s", number)

    def numref(self, content: str) -> str:
        text, label = _explicit(content)
        for kind, numbers in (("figure", self.figures), ("exercise", self.exercises)):
            if label in numbers:
                if text:
                    return text.replace("%s", numbers[label]).replace("{number}", numbers[label])
                return self.numbered(kind, numbers[label])
        self.problems.append(f"{self.docname}: no numbered target {label!r}")
        return text or label

    def ref(self, content: str) -> str:
        text, label = _explicit(content)
        if text:
            return text
        if label in self.exercises:
            return self.numbered("exercise", self.exercises[label])
        if label in self.labels:
            return self.labels[label]
        self.problems.append(f"{self.docname}: no label {label!r}")
        return label

    def _citations(self, content: str) -> list[str]:
        keys = [k.strip() for k in content.split(",") if k.strip()]
        found = []
        for key in keys:
            if key not in self.citations:
                self.problems.append(f"{self.docname}: no citation {key!r}")
            found.append(self.citations.get(key, key))
        return found

    def cite(self, content: str) -> str:
        return "[" + ", ".join(self._citations(content)) + "]"

    def cite_t(self, content: str) -> str:
        return "; ".join(c.replace(", ", " (", 1) + ")" if ", " in c else c
                         for c in self._citations(content))

    # ---- the rest ------------------------------------------------------------------------------
    def expand_macros(self, text: str) -> str:
        """Replace the book's MathJax macros (``\\E``) by their definitions."""
        for name, value in self.macros.items():
            text = re.sub(rf"\\{re.escape(name)}(?![A-Za-z])", lambda _m, v=value: v, text)
        return text


def _explicit(content: str) -> tuple[str, str]:
    """``"text <target>"`` -> ("text", "target"); ``"target"`` -> ("", "target")."""
    match = EXPLICIT.match(content.strip())
    if match:
        return match["text"].strip(), match["target"].strip()
    return "", content.strip()


def _resolve_docname(current: str, target: str) -> str:
    target = target.strip()
    for suffix in (".ipynb", ".md"):
        if target.endswith(suffix):
            target = target[: -len(suffix)]
    if target.startswith("/"):
        return target.lstrip("/")
    parts = list(PurePosixPath(current).parent.parts) + target.split("/")
    out: list[str] = []
    for part in parts:
        if part == "..":
            if out:
                out.pop()
        elif part not in ("", "."):
            out.append(part)
    return "/".join(out)


def _relpath(path: PurePosixPath, start: PurePosixPath) -> str:
    common = 0
    for a, b in zip(path.parts, start.parts, strict=False):
        if a != b:
            break
        common += 1
    ups = [".."] * (len(start.parts) - common)
    return "/".join(ups + list(path.parts[common:]))


# ---- Markdown --------------------------------------------------------------------------------
@dataclass
class _State:
    hide_solutions: bool
    in_gated_solution: bool = False


def _split_directives(text: str):
    """Yield ("text", chunk) and ("directive", name, argument, options, body) in order."""
    lines = text.split("\n")
    i, plain = 0, []
    while i < len(lines):
        match = FENCE.match(lines[i])
        if match is None:
            plain.append(lines[i])
            i += 1
            continue
        if plain:
            yield ("text", "\n".join(plain))
            plain = []
        fence = match["fence"]
        j = i + 1
        while j < len(lines) and lines[j].rstrip() != fence:
            j += 1
        body = lines[i + 1: j]
        options = {}
        while body and re.match(r"^:[\w-]+:", body[0]):
            key, _, value = body.pop(0)[1:].partition(":")
            options[key.strip()] = value.strip()
        yield ("directive", match["name"], match["arg"].strip(), options, "\n".join(body).strip())
        i = j + 1
    if plain:
        yield ("text", "\n".join(plain))


def _markdown(text: str, resolver: Resolver, state: _State) -> str:
    """One Markdown cell's source, made readable; solutions dropped if ``state`` says so."""
    out = []
    for piece in _split_directives(text):
        if piece[0] == "text":
            if not (state.hide_solutions and state.in_gated_solution):
                out.append(_inline(piece[1], resolver))
            continue
        _, name, arg, options, body = piece
        if name == "solution-start":
            state.in_gated_solution = True
            if not state.hide_solutions:  # a heading: JupyterLab and Colab can fold it
                out.append(f"#### {_solution_title(arg, resolver)}")
        elif name == "solution-end":
            state.in_gated_solution = False
        elif state.hide_solutions and (state.in_gated_solution or name == "solution"):
            continue
        elif name == "exercise" or name == "exercise-start":
            label = options.get("label", "")
            number = resolver.exercises.get(label)
            title = resolver.numbered("exercise", number) if number else "Exercise"
            if arg:
                title += f" ({_inline(arg, resolver)})"
            out.append(f"### {title}\n\n{_inline(body, resolver)}".rstrip())
        elif name == "solution":
            out.append(f"<details>\n<summary>{_solution_title(arg, resolver)}</summary>\n\n"
                       f"{_inline(body, resolver)}\n\n</details>")
        else:
            title = _inline(arg, resolver) if arg else name.replace("-", " ").capitalize()
            quoted = "\n".join("> " + line if line else ">"
                               for line in f"**{title}**\n\n{_inline(body, resolver)}".split("\n"))
            out.append(quoted)
    joined = "\n\n".join(chunk.strip("\n") for chunk in out if chunk.strip())
    return joined


def _solution_title(label: str, resolver: Resolver) -> str:
    number = resolver.exercises.get(label)
    return f"Solution to {resolver.numbered('exercise', number)}" if number else "Solution"


def _inline(text: str, resolver: Resolver) -> str:
    text = TARGET.sub("", text)
    text = EQ_LABEL.sub(lambda m: _tagged(m, resolver), text)

    def replace(match):
        if match["role"]:
            return resolver.role(match["name"], match["content"])
        if match["plain"]:
            return resolver.expand_macros(match["plain"])
        return match.group(0)  # code: as it is

    return _TOKENS.sub(replace, text)


#: Left to right: a code block, a role, inline code, or a stretch of anything else. A role is
#: tried before inline code, so that a role's closing backtick never opens a code span.
_TOKENS = re.compile(
    r"(?P<block>^```.*?^```[ \t]*$)"
    r"|(?P<role>\{(?P<name>[A-Za-z][\w:.-]*)\}`(?P<content>[^`]*)`)"
    r"|(?P<code>`[^`\n]+`)"
    r"|(?P<plain>[^`{]+|[`{])",
    re.M | re.S,
)


def _tagged(match, resolver: Resolver) -> str:
    label = match["label"]
    number = resolver.equations.get(label)
    if number is None:
        resolver.problems.append(f"{resolver.docname}: no number for equation {label!r}")
        return "$$"
    return f"\\tag{{{number}}}\n$$"


# ---- the notebook ----------------------------------------------------------------------------
def has_solutions_tag(cell) -> bool:
    return SOLUTION_TAG in cell.get("metadata", {}).get("tags", [])


def reader_notebook(nb, resolver: Resolver, hide_solutions: bool = False):
    """The reader's copy of the chapter notebook ``nb`` (an nbformat v4 notebook; not changed)."""
    import nbformat

    nb = copy.deepcopy(nb)
    state = _State(hide_solutions=hide_solutions)
    cells = []
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = _markdown(cell.source, resolver, state)
            if cell.source.strip():  # a cell that held only a solution (or its end) goes
                cells.append(cell)
            continue
        if hide_solutions and (state.in_gated_solution or has_solutions_tag(cell)):
            continue
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        cells.append(cell)
        figure = cell.get("metadata", {}).get("mystnb", {}).get("figure", {})
        if cell.cell_type == "code" and figure.get("caption"):
            number = resolver.figures.get(figure.get("name", ""))
            head = resolver.numbered("figure", number) if number else "Figure"
            caption = _inline(figure["caption"], resolver)
            figure["caption"] = caption  # the metadata's copy too: no MyST left anywhere
            new = nbformat.v4.new_markdown_cell(f"**{head}.** {caption}")
            new.id = (cell.get("id") or "fig")[:50] + "-caption"
            cells.append(new)
    nb.cells = cells
    nb.metadata.pop("widgets", None)
    return nb


def solution_problems(nb) -> list[str]:
    """Where a notebook still holds solutions: directives, or code cells tagged ``solution``."""
    problems = []
    for i, cell in enumerate(nb["cells"]):
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        if cell["cell_type"] == "markdown" and re.search(r"\{solution(-start|-end)?\}", source):
            problems.append(f"cell {i}: a solution directive")
        if "<summary>Solution" in source or re.search(r"^#+ Solution", source, re.M):
            problems.append(f"cell {i}: a solution")
        if has_solutions_tag(cell):
            problems.append(f"cell {i}: a cell tagged 'solution'")
    return problems


def raw_myst(nb) -> list[str]:
    """MyST roles, directives, labels and targets left in a notebook's Markdown."""
    found = []
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "markdown":
            continue
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        for match in ROLE.finditer(source):
            found.append(f"cell {i}: {match.group(0)}")
        for line in source.splitlines():
            if FENCE.match(line) or TARGET.match(line + "\n") or EQ_LABEL.search(line):
                found.append(f"cell {i}: {line}")
    return found


# ---- what the Sphinx build knows -------------------------------------------------------------
def glue_values(executed_nb) -> dict[str, str]:
    """``text/plain`` of every value glued in an executed notebook (myst-nb's scrapbook outputs)."""
    values = {}
    for cell in executed_nb["cells"]:
        for output in cell.get("outputs", []):
            scrap = output.get("metadata", {}).get("scrapbook")
            if not scrap:
                continue
            prefix = len(scrap.get("mime_prefix", ""))
            data = {k[prefix:]: v for k, v in output.get("data", {}).items()}
            if "text/plain" in data:
                text = data["text/plain"]
                values[scrap["name"]] = "".join(text) if isinstance(text, list) else text
    return values


def site_url(app) -> str:
    """The published book's address: ``html_baseurl``, else GitHub Pages of the repository."""
    if app.config.html_baseurl:
        return app.config.html_baseurl.rstrip("/")
    repo = app.config.html_theme_options.get("repository_url", "")
    parts = urlparse(repo).path.strip("/").split("/")
    if "github.com" in repo and len(parts) >= 2:
        return f"https://{parts[0]}.github.io/{parts[1]}"
    return ""


def _numbers(env, docname: str, kind: str) -> dict[str, str]:
    """Map node id -> "5.3" for the numbered ``kind`` (figure, displaymath, exercise) of a doc."""
    return {node_id: ".".join(map(str, number))
            for node_id, number in env.toc_fignumbers.get(docname, {}).get(kind, {}).items()}


def _author_year(entry) -> str:
    persons = entry.persons.get("author") or entry.persons.get("editor") or []
    names = [" ".join(p.last_names) for p in persons]
    names = [re.sub(r"[{}]", "", n) for n in names]
    if len(names) == 0:
        who = entry.fields.get("title", entry.key)
    elif len(names) == 1:
        who = names[0]
    elif len(names) == 2:
        who = f"{names[0]} and {names[1]}"
    else:
        who = f"{names[0]} et al."
    return f"{who}, {entry.fields.get('year', 'n.d.')}"


def resolver_for(app, docname: str) -> Resolver:
    """A :class:`Resolver` for ``docname`` from the finished build's environment."""
    env = app.env
    std = env.get_domain("std")
    resolver = Resolver(docname=docname, site=site_url(app))
    glue_file = Path(app.outdir).parent / "jupyter_execute" / f"{docname}.glue.json"
    if glue_file.exists():
        for key, output in json.loads(glue_file.read_text(encoding="utf-8")).items():
            text = output.get("data", {}).get("text/plain")
            if text is not None:
                resolver.glue[key] = "".join(text) if isinstance(text, list) else text
    resolver.titles = {doc: title.astext() for doc, title in env.titles.items()}
    resolver.notebooks = {doc for doc in env.found_docs
                          if str(env.doc2path(doc)).endswith(".ipynb")}
    for label, (doc, _number) in env.get_domain("math").equations.items():
        number = _numbers(env, doc, "displaymath").get(f"equation-{label}")
        if number:
            resolver.equations[label] = number
    for label, (doc, node_id) in std.anonlabels.items():
        for kind, numbers in (("figure", resolver.figures), ("exercise", resolver.exercises)):
            number = _numbers(env, doc, kind).get(node_id)
            if number:
                numbers[label] = number
    for label, (_doc, _node_id, section) in std.labels.items():
        if section:
            resolver.labels[label] = section
    bibdata = env.get_domain("cite").bibdata
    for key, entry in bibdata.data.entries.items():
        resolver.citations[key] = _author_year(entry)
    resolver.macros = dict((app.config.mathjax3_config or {}).get("tex", {}).get("macros", {}))
    resolver.numfig_format.update(app.config.numfig_format or {})
    return resolver


def chapters(app) -> list[str]:
    """The docnames of the book's notebooks."""
    return sorted(doc for doc in app.env.found_docs
                  if str(app.env.doc2path(doc)).endswith(".ipynb"))


def write_reader_notebooks(app, exception) -> None:
    """At the end of an HTML build: write every chapter's reader's notebook where the page's
    download button points (``_sources/<doc>.ipynb``)."""
    import nbformat
    from sphinx.util import logging

    # Only the site's own builder: the single page of the PDF edition has no download buttons, and
    # its environment numbers equations per page, not per chapter.
    if exception is not None or app.builder.name != "html":
        return
    logger = logging.getLogger(__name__)
    hide = bool(getattr(app.config, "course_hide_solutions", False))
    for docname in chapters(app):
        resolver = resolver_for(app, docname)
        source = nbformat.read(app.env.doc2path(docname), as_version=4)
        reader = reader_notebook(source, resolver, hide_solutions=hide)
        for problem in resolver.problems:
            logger.warning(f"reader's notebook: {problem}", location=docname)
        left = raw_myst(reader) + (solution_problems(reader) if hide else [])
        for problem in left:
            logger.warning(f"reader's notebook keeps {problem}", location=docname)
        target = Path(app.outdir) / "_sources" / f"{docname}.ipynb"
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(reader, target)


def point_launch_buttons(app, config) -> None:
    """Colab and Binder open the reader's notebooks on ``course_notebooks_branch``."""
    if config.course_notebooks_branch:
        config.html_theme_options["repository_branch"] = config.course_notebooks_branch


def setup(app):
    app.add_config_value("course_notebooks_branch", "notebooks", "html", types=[str])
    app.connect("config-inited", point_launch_buttons)
    app.connect("build-finished", write_reader_notebooks)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
