"""Downloads the site serves (loaded from _config.yml).

* ``bn-course.zip``, the runnable course (notebooks, bnlib, tests, requirements,
  Makefile, README), packed by ``tools/pack_course.py`` when an HTML build starts and
  copied next to ``index.html``; every HTML page gets a "Download the course" button
  in its header.
* ``book.pdf``, the whole book, when ``make pdf`` has printed it to
  ``_build/pdf/book.pdf``: copied next to ``index.html`` and listed in the header's
  download menu. A ``<span class="bn-pdf-slot"></span>`` in a page becomes a link to it
  (or disappears when there is no PDF), a ``<span class="bn-zip-size"></span>`` the
  size of the zip.

The PDF is printed from a ``singlehtml`` build (``make pdf``). Some extensions register
how to write their nodes for the ``html`` builder only (sphinx-proof's theorems, for
example), and once any extension registers ``singlehtml`` handlers Sphinx no longer
falls back to the ``html`` ones; so the ``html`` handlers missing for ``singlehtml`` are
copied.
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
    spec = importlib.util.spec_from_file_location(
        "pack_course", srcdir / "tools" / "pack_course.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _add_downloads(app):
    app.bn_has_pdf = False
    if app.builder.name != "html":
        return
    srcdir, outdir = Path(app.srcdir), Path(app.outdir)
    out = srcdir / STAGING / ZIP_NAME
    _pack_course_module(srcdir).pack(srcdir, out)
    extra = list(app.config.html_extra_path) + [str(out.parent)]
    pdf = srcdir / PDF_DIR / PDF_NAME
    app.bn_has_pdf = pdf.is_file()
    if app.bn_has_pdf:
        extra.append(str(pdf.parent))
    app.config.html_extra_path = extra
    # Sphinx warns (and -W fails) when an extra file would overwrite a different one
    for name in (ZIP_NAME, PDF_NAME):
        (outdir / name).unlink(missing_ok=True)


def _header_buttons(app, pagename, templatename, context, doctree):
    if app.builder.name != "html" or "header_buttons" not in context:
        return
    pathto = context["pathto"]
    context["header_buttons"].insert(
        0,
        {
            "type": "link",
            "url": pathto(ZIP_NAME, 1),
            "text": "Download the course",
            "icon": "fas fa-file-zipper",
            "tooltip": "The runnable course: notebooks, bnlib, Makefile (zip)",
            "label": "download-course",
        },
    )
    if getattr(app, "bn_has_pdf", False):
        for button in context["header_buttons"]:
            if button.get("label") == "download-buttons":
                button["buttons"].insert(
                    0,
                    {
                        "type": "link",
                        "url": pathto(PDF_NAME, 1),
                        "text": "book.pdf",
                        "icon": "fas fa-book",
                        "tooltip": "The whole book as one PDF",
                        "label": "download-book-pdf-button",
                    },
                )


def _slots(app, pagename, templatename, context, doctree):
    body = context.get("body")
    if not body or "bn-pdf-slot" not in body and "bn-zip-size" not in body:
        return
    link = ""
    if app.builder.name == "html" and getattr(app, "bn_has_pdf", False):
        link = (
            f'<a class="bn-download-link" href="{context["pathto"](PDF_NAME, 1)}">'
            "The whole book as one PDF</a> (printed from this site)."
        )
    zip_path = Path(app.srcdir) / STAGING / ZIP_NAME
    size = f"{zip_path.stat().st_size / 1e6:.1f} MB" if zip_path.is_file() else ""
    context["body"] = body.replace('<span class="bn-pdf-slot"></span>', link).replace(
        '<span class="bn-zip-size"></span>', size
    )


def _singlehtml_handlers(app):
    if app.builder.name != "singlehtml":
        return
    handlers = app.registry.translation_handlers
    single = handlers.setdefault("singlehtml", {})
    for node, visitors in handlers.get("html", {}).items():
        single.setdefault(node, visitors)


def setup(app):
    app.connect("builder-inited", _add_downloads)
    app.connect("builder-inited", _singlehtml_handlers)
    app.connect("html-page-context", _header_buttons, priority=502)
    app.connect("html-page-context", _slots)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
