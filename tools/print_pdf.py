r"""Print the whole book to one PDF with headless Chromium (what `make pdf` runs).

    .venv/bin/python tools/print_pdf.py --site _build/singlehtml \
        --out _build/pdf/book.pdf

The input is a ``singlehtml`` build of the book (every page in one ``index.html``). The
script serves it on 127.0.0.1, opens it in Debian's Chromium (through Playwright, which
never downloads a browser) with every request to another host blocked, waits until
MathJax has typeset every formula and every image has loaded, and prints it on A4 with
page numbers. The print rules of _assets/book.css apply (no sidebars or buttons, code
wrapped instead of cut off, figures not split across pages).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from browser import OfflineBrowser, serve  # noqa: E402
from site_test import JS_IMAGES  # noqa: E402

FOOTER = """<div style="width:100%; font-size:8px; color:#666; padding:0 12mm;
  display:flex; justify-content:space-between; font-family:sans-serif;">
  <span>{title}</span>
  <span><span class="pageNumber"></span> / <span class="totalPages"></span></span>
</div>"""

JS_TYPESET = """async () => {
  if (!window.MathJax || !MathJax.startup) return {containers: 0, errors: []};
  await MathJax.startup.promise;
  if (MathJax.typesetPromise) await MathJax.typesetPromise();
  return {containers: document.querySelectorAll('mjx-container').length,
          errors: Array.from(document.querySelectorAll('mjx-merror'))
                    .map(e => e.textContent).slice(0, 5)};
}"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--site", default="_build/singlehtml")
    ap.add_argument("--out", default="_build/pdf/book.pdf")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument(
        "--timeout", type=float, default=120.0, help="seconds to load and typeset"
    )
    args = ap.parse_args(argv)

    site, out = Path(args.site), Path(args.out)
    pages = sorted(site.glob("*.html"), key=lambda f: f.stat().st_size)
    if not pages:
        print(
            f"no singlehtml build in {site}: jupyter-book build . --builder singlehtml"
        )
        return 2
    book = pages[-1].name  # the whole book (index.html only redirects to it)
    if not Path(args.chromium).exists():
        print(f"Chromium not found at {args.chromium}: apt-get install chromium")
        return 2

    out.parent.mkdir(parents=True, exist_ok=True)
    server, base = serve(site)
    errors = []
    start = time.time()
    timeout_ms = args.timeout * 1000

    try:
        with OfflineBrowser(args.chromium) as ob:
            context = ob.new_context(viewport={"width": 1200, "height": 1600})
            context.add_init_script(
                "try { localStorage.setItem('mode', 'light'); "
                "localStorage.setItem('theme', 'light'); } catch (e) {}"
            )
            page = context.new_page()
            page.on("pageerror", lambda err: errors.append(str(err)))
            page.goto(f"{base}/{book}", wait_until="load", timeout=timeout_ms)
            title = page.title().split(" — ")[-1].strip() or "Batch Normalization"
            page.wait_for_function(
                "() => !window.MathJax || (MathJax.startup && MathJax.startup.promise)",
                timeout=timeout_ms,
            )
            math = page.evaluate(JS_TYPESET)
            imgs = page.evaluate(JS_IMAGES)
            page.wait_for_timeout(1000)  # widget views, fonts
            page.emulate_media(media="print")
            page.pdf(
                path=str(out),
                format="A4",
                print_background=True,
                margin={
                    "top": "16mm",
                    "bottom": "18mm",
                    "left": "14mm",
                    "right": "14mm",
                },
                display_header_footer=True,
                header_template="<span></span>",
                footer_template=FOOTER.format(title=title.replace("<", "&lt;")),
            )
    finally:
        server.shutdown()

    problems, blocked = [], ob.blocked
    if math["errors"]:
        problems.append(f"MathJax errors: {math['errors']}")
    if imgs["broken"]:
        problems.append(
            f"{len(imgs['broken'])} images not loaded: {imgs['broken'][:3]}"
        )
    if blocked:
        problems.append(
            f"{len(blocked)} requests outside the site blocked: {blocked[:3]}"
        )
    problems += [f"uncaught exception: {e}" for e in errors]
    print(
        f"{out}: {out.stat().st_size / 1e6:.1f} MB, {math['containers']} formulas, "
        f"{imgs['total']} images, {time.time() - start:.0f} s"
    )
    for prob in problems:
        print(f"  - {prob}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
