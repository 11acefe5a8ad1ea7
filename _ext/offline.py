"""Keep every built page inside the site (loaded from _config.yml).

* matplotlib's ``Animation.to_jshtml()`` output links Font Awesome 4 from a CDN for its
  play/pause buttons; the link is pointed at the local copy in ``_static/font-awesome``
  (copied from node_modules by ``make book``). The notebooks keep the original output.
* sphinx-thebe (loaded by Jupyter Book, unused here: no launch buttons) is switched
  off: it would add its script twice per page (a duplicate ``const``, a console error)
  and a configuration pointing at a CDN.
* Any other ``<script>``, ``<link>``, ``<img>``, ``<iframe>``, ``<source>`` or
  ``<embed>`` in a page body that still loads from another host is reported as a
  warning, so the ``-W`` build fails and names the page.
"""

from __future__ import annotations

import re

from sphinx.util import logging

logger = logging.getLogger(__name__)

_FONT_AWESOME_CDN = re.compile(
    r"https?://(?:maxcdn|stackpath|netdna)\.bootstrapcdn\.com/font-awesome/4\.[0-9.]+/css/"
    r"font-awesome(?:\.min)?\.css"
)
_LOCAL_FONT_AWESOME = "_static/font-awesome/css/font-awesome.min.css"
_EXTERNAL_LOAD = re.compile(
    r"<(script|link|img|iframe|source|embed|video|audio)\b[^>]*?\s(src|href)\s*=\s*[\"']?"
    r"((?:https?:)?//[^\"' >]+)",
    re.IGNORECASE,
)


def _localize(app, pagename, templatename, context, doctree):
    body = context.get("body")
    if not body:
        return
    if _FONT_AWESOME_CDN.search(body):
        local = context["pathto"](_LOCAL_FONT_AWESOME, 1)
        body = _FONT_AWESOME_CDN.sub(local, body)
        context["body"] = body
    for match in _EXTERNAL_LOAD.finditer(body):
        tag, attr, url = match.groups()
        if tag.lower() == "link" and not re.search(
            r"rel\s*=\s*[\"']?(stylesheet|preload|icon)", match.group(0), re.IGNORECASE
        ):
            continue  # a plain <link> that loads nothing
        logger.warning(
            "page %s loads %s from outside the site (<%s %s=...>): "
            "serve it from _static instead",
            pagename,
            url,
            tag,
            attr,
            location=pagename,
        )


def _drop_thebe(app):
    for event in ("env-before-read-docs", "doctree-resolved"):
        for listener in list(app.events.listeners.get(event, [])):
            if getattr(listener.handler, "__module__", "").startswith("sphinx_thebe"):
                app.disconnect(listener.id)
    app.registry.css_files = [
        (name, attrs)
        for name, attrs in app.registry.css_files
        if name != "sphinx-thebe.css"
    ]


def setup(app):
    app.setup_extension("sphinx_thebe")  # already loaded by Jupyter Book; now undo it
    _drop_thebe(app)
    app.connect("html-page-context", _localize)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
