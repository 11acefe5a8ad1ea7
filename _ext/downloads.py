"""Downloads the site serves (loaded from _config.yml).

* ``bn-course.zip``, the runnable course (notebooks, bnlib, tests, requirements,
  Makefile, README), packed by ``tools/pack_course.py`` when the build starts and
  copied next to ``index.html``; every HTML page gets a "Download the course" button
  in its header.
* ``book.pdf``, the whole book, when ``make pdf`` has printed it to
  ``_build/pdf/book.pdf``: copied next to ``index.html`` and listed in the header's
  download menu. A ``<span class="bn-pdf-slot"></span>`` in a page becomes a link to it
  (or disappears when there is no PDF).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from sphinx.util import logging

logger = logging.getLogger(__name__)

ZIP_NAME = "bn-course.zip"
PDF_DIR = "_build/pdf"
PDF_NAME = "book.pdf"
STAGING = "_build/downloads"


def _pack_course_module(srcdir: Path):
    spec = importlib.util.spec_from_file_location("pack_course", srcdir / "tools" / "pack_course.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _add_downloads(app, config):
    srcdir = Path(app.srcdir)
    out = srcdir / STAGING / ZIP_NAME
    _pack_course_module(srcdir).pack(srcdir, out)
    extra = list(config.html_extra_path) + [str(out.parent)]
    pdf = srcdir / PDF_DIR / PDF_NAME
    app.bn_has_pdf = pdf.is_file()
    if app.bn_has_pdf:
        extra.append(str(pdf.parent))
    config.html_extra_path = extra


def _header_buttons(app, pagename, templatename, context, doctree):
    if app.builder.name != "html" or "header_buttons" not in context:
        return
    pathto = context["pathto"]
    context["header_buttons"].insert(0, {
        "type": "link",
        "url": pathto(ZIP_NAME, 1),
        "text": "Download the course",
        "icon": "fas fa-file-zipper",
        "tooltip": "The runnable course: notebooks, bnlib, Makefile (zip)",
        "label": "download-course",
    })
    if getattr(app, "bn_has_pdf", False):
        for button in context["header_buttons"]:
            if button.get("label") == "download-buttons":
                button["buttons"].insert(0, {
                    "type": "link",
                    "url": pathto(PDF_NAME, 1),
                    "text": "book.pdf",
                    "icon": "fas fa-book",
                    "tooltip": "The whole book as one PDF",
                    "label": "download-book-pdf-button",
                })


def _pdf_slot(app, pagename, templatename, context, doctree):
    body = context.get("body")
    if not body or "bn-pdf-slot" not in body:
        return
    slot = '<span class="bn-pdf-slot"></span>'
    link = ""
    if app.builder.name == "html" and getattr(app, "bn_has_pdf", False):
        link = (f'<a class="bn-download-link" href="{context["pathto"](PDF_NAME, 1)}">'
                "The whole book as one PDF</a> (printed from this site).")
    context["body"] = body.replace(slot, link)


def setup(app):
    app.connect("config-inited", _add_downloads)
    app.connect("html-page-context", _header_buttons, priority=502)
    app.connect("html-page-context", _pdf_slot)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
