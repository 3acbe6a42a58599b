"""Small Sphinx fixes for the course's HTML.

sphinx-thebe registers its configuration script twice under Jupyter Book 1.0, which makes the browser
report "Identifier 'THEBE_JS_URL' has already been declared" on every page. This extension drops
repeated script entries from each page's context, keeping the first.

The PDF edition prints the ``singlehtml`` builder's page. Sphinx gives a builder the visitors
registered under its own name and falls back to its format ("html") only when there are none;
sphinx-exercise registers some under "singlehtml", so the visitors other extensions register for
"html" alone (myst-nb's hidden-input cells among them) would be missing there and the build would
stop. This extension gives "singlehtml" every "html" visitor it lacks.
"""

from __future__ import annotations


def _script_key(script):
    filename = getattr(script, "filename", script) or ""  # sphinx-thebe passes None, Sphinx ""
    attributes = getattr(script, "attributes", {}) or {}
    return (str(filename), tuple(sorted((k, str(v)) for k, v in attributes.items())))


def _dedupe_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for script in scripts:
        key = _script_key(script)
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def _html_visitors_for_singlehtml(app):
    if app.builder.name != "singlehtml":
        return
    handlers = app.registry.translation_handlers
    single = handlers.setdefault("singlehtml", {})
    for node_name, visitors in handlers.get("html", {}).items():
        single.setdefault(node_name, visitors)


def setup(app):
    app.connect("html-page-context", _dedupe_scripts, priority=1000)  # after every other handler
    app.connect("builder-inited", _html_visitors_for_singlehtml)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
