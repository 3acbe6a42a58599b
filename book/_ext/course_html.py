"""Small Sphinx fixes for the course's HTML.

sphinx-thebe registers its configuration script twice under Jupyter Book 1.0, which makes the browser
report "Identifier 'THEBE_JS_URL' has already been declared" on every page. This extension drops
repeated script entries from each page's context, keeping the first.
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


def setup(app):
    app.connect("html-page-context", _dedupe_scripts, priority=1000)  # after every other handler
    return {"parallel_read_safe": True, "parallel_write_safe": True}
