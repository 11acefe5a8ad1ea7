"""Open every page of the built site in headless Chromium, with the network cut.

Usage (what `make site-test` runs):

    .venv/bin/python tools/site_test.py --site _build/html --chromium /usr/bin/chromium

The site is served on 127.0.0.1 by a server this script starts. Every request to any
other host is blocked and counted as a failure. For each page of _toc.yml (plus the
index and the search page) it checks:

* no failed request (blocked, network error or HTTP status >= 400) and no console error
  or uncaught exception;
* a page with math shows rendered MathJax (``mjx-container`` elements, no TeX errors);
* every ``<img>`` has loaded (``naturalWidth > 0``);
* every saved widget view is rendered by the widget manager and is not empty;

and once: the search page finds "momentum", and clicking an exercise solution's toggle
opens it. A full-page screenshot of each page goes to the screenshots folder.
Playwright drives Debian's Chromium (``executable_path``); it never downloads a browser.
This is a script, not a pytest module, so ``make test`` never collects it.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import yaml

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-domain-reliability",
    "--metrics-recording-only",
    "--no-default-browser-check",
]
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
EXTRA_PAGES = ["genindex", "search"]


def toc_pages(toc_file: Path) -> list[str]:
    """Every document of a jb-book _toc.yml, in reading order (root first)."""
    toc = yaml.safe_load(toc_file.read_text())
    pages = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                pages.append(entry["file"])
            for key in ("sections", "chapters", "parts"):
                walk(entry.get(key))

    walk(toc.get("parts"))
    walk(toc.get("chapters"))
    walk(toc.get("sections"))
    return [
        str(Path(p).with_suffix("")) if Path(p).suffix in {".md", ".ipynb"} else p
        for p in pages
    ]


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def serve(site: Path):
    handler = functools.partial(QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


class PageWatch:
    """Collects what goes wrong while one page is open."""

    def __init__(self):
        self.problems: list[str] = []

    def reset(self):
        self.problems = []

    def on_console(self, msg):
        if msg.type == "error":
            self.problems.append(f"console error: {msg.text}")

    def on_pageerror(self, err):
        self.problems.append(f"uncaught exception: {err}")

    def on_requestfailed(self, request):
        if urlparse(request.url).hostname in LOCAL_HOSTS:
            self.problems.append(f"request failed: {request.url} ({request.failure})")

    def on_response(self, response):
        if response.status >= 400:
            self.problems.append(f"HTTP {response.status}: {response.url}")


JS_IMAGES = """async () => {
  const imgs = Array.from(document.images);
  await Promise.all(imgs.map(i => { i.loading = 'eager'; return i.decode().catch(() => null); }));
  return {total: imgs.length,
          broken: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)};
}"""

JS_HAS_MATH = """() => document.querySelectorAll(
  'div.math, span.math, .math.notranslate, mjx-container').length"""

JS_MATH = """async () => {
  if (!window.MathJax || !MathJax.startup || !MathJax.startup.promise) return null;
  await MathJax.startup.promise;
  return {containers: document.querySelectorAll('mjx-container').length,
          errors: Array.from(document.querySelectorAll('mjx-merror')).map(e => e.textContent).slice(0, 5)};
}"""

JS_WIDGET_VIEWS = """() => document.querySelectorAll(
  'script[type="application/vnd.jupyter.widget-view+json"]').length"""

JS_WIDGETS = """() => {
  const areas = Array.from(document.querySelectorAll('.widget-subarea'));
  const filled = areas.filter(a => a.querySelector('[class*="widget-"], .jupyter-widgets')
                                   && a.getBoundingClientRect().height > 0);
  return {areas: areas.length, filled: filled.length,
          widgets: document.querySelectorAll('.widget-subarea [class*="widget-"]').length};
}"""


def check_page(page, watch, base, name, shots, timeout_ms):
    problems = []
    url = f"{base}/{name}.html"
    watch.reset()
    try:
        response = page.goto(url, wait_until="load", timeout=timeout_ms)
    except Exception as exc:  # noqa: BLE001
        return [f"could not open: {exc}"], {}
    if response is None or response.status != 200:
        return [f"HTTP {response.status if response else '?'} for {url}"], {}
    info = {}
    # math
    if page.evaluate(JS_HAS_MATH):
        try:
            page.wait_for_function(
                "() => window.MathJax && MathJax.startup && MathJax.startup.promise",
                timeout=timeout_ms,
            )
            math = page.evaluate(JS_MATH)
        except Exception as exc:  # noqa: BLE001
            math = None
            problems.append(f"MathJax did not start: {exc}")
        if math is not None:
            info["math"] = math["containers"]
            if math["containers"] == 0:
                problems.append("page has math but no rendered mjx-container")
            if math["errors"]:
                problems.append(f"MathJax errors: {math['errors']}")
    # widgets
    views = page.evaluate(JS_WIDGET_VIEWS)
    if views:
        try:
            page.wait_for_function(
                f"() => document.querySelectorAll('.widget-subarea').length >= {views} && "
                "Array.from(document.querySelectorAll('.widget-subarea'))"
                ".every(a => a.querySelector('[class*=\"widget-\"]'))",
                timeout=timeout_ms,
            )
        except Exception:  # noqa: BLE001
            pass
        w = page.evaluate(JS_WIDGETS)
        info["widget views"] = f"{w['filled']}/{views}"
        if w["filled"] < views:
            problems.append(
                f"widget views rendered: {w['filled']} of {views} "
                f"({w['areas']} widget areas, {w['widgets']} widget elements)"
            )
    # images
    imgs = page.evaluate(JS_IMAGES)
    info["images"] = imgs["total"]
    for src in imgs["broken"]:
        problems.append(f"image not loaded: {src}")
    page.wait_for_timeout(300)  # late console errors, font loads
    shot = shots / (name.replace("/", "__") + ".png")
    page.screenshot(path=str(shot), full_page=True)
    problems.extend(watch.problems)
    return problems, info


def check_search(page, watch, base, timeout_ms):
    watch.reset()
    page.goto(f"{base}/search.html?q=momentum", wait_until="load", timeout=timeout_ms)
    try:
        page.wait_for_function(
            "() => document.querySelectorAll('ul.search li').length > 0",
            timeout=timeout_ms,
        )
    except Exception:  # noqa: BLE001
        pass
    hits = page.evaluate(
        "() => Array.from(document.querySelectorAll('ul.search li a'))"
        ".map(a => a.getAttribute('href'))"
    )
    problems = list(watch.problems)
    if not hits:
        problems.append('search for "momentum" returned no results')
    return problems, hits


def check_solution_toggle(page, watch, base, names, shots, timeout_ms):
    for name in names:
        watch.reset()
        page.goto(f"{base}/{name}.html", wait_until="load", timeout=timeout_ms)
        sol = page.locator("div.solution.dropdown").first
        if sol.count() == 0:
            continue
        button = sol.locator("button.toggle-button").first
        body = sol.locator(":scope > :not(.admonition-title)").first
        if button.count() == 0:
            return [f"{name}: solution has no toggle button"], name
        problems = []
        sol.scroll_into_view_if_needed()
        if body.count() and body.is_visible():
            problems.append(f"{name}: solution is open before its toggle is clicked")
        button.click()
        try:
            body.wait_for(state="visible", timeout=5000)
            page.wait_for_timeout(500)  # the opening animation
            sol.screenshot(path=str(shots / "solution-opened.png"))
        except Exception:  # noqa: BLE001
            problems.append(
                f"{name}: solution did not open when its toggle was clicked"
            )
        problems.extend(watch.problems)
        return problems, name
    return ["no page has an exercise solution with a toggle"], None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--site", default="_build/html")
    ap.add_argument("--toc", default="_toc.yml")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--screenshots", default="_build/screenshots")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds per page step")
    args = ap.parse_args(argv)

    site = Path(args.site)
    if not (site / "index.html").exists():
        print(f"no built site in {site}: run make book first")
        return 2
    if not Path(args.chromium).exists():
        print(f"Chromium not found at {args.chromium}: apt-get install chromium")
        return 2
    from playwright.sync_api import sync_playwright

    shots = Path(args.screenshots)
    shots.mkdir(parents=True, exist_ok=True)
    for old in shots.glob("*.png"):
        old.unlink()
    names = toc_pages(Path(args.toc)) + EXTRA_PAGES
    timeout_ms = args.timeout * 1000
    server, base = serve(site)
    blocked: list[str] = []
    results: dict[str, list[str]] = {}
    start = time.time()

    def route(route_, request):
        host = urlparse(request.url).hostname
        if request.url.startswith(("data:", "blob:")) or host in LOCAL_HOSTS:
            route_.continue_()
        else:
            blocked.append(request.url)
            watch.problems.append(f"blocked request outside the site: {request.url}")
            route_.abort("blockedbyclient")

    watch = PageWatch()
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=args.chromium, headless=True, args=CHROMIUM_ARGS
        )
        context = browser.new_context(
            viewport={"width": 1280, "height": 900}, service_workers="block"
        )
        context.route("**/*", route)
        page = context.new_page()
        page.on("console", watch.on_console)
        page.on("pageerror", watch.on_pageerror)
        page.on("requestfailed", watch.on_requestfailed)
        page.on("response", watch.on_response)

        for name in names:
            t0 = time.time()
            problems, info = check_page(page, watch, base, name, shots, timeout_ms)
            results[f"page {name}"] = problems
            detail = ", ".join(f"{k} {v}" for k, v in info.items())
            status = "ok  " if not problems else "FAIL"
            print(
                f"{status} {name:<32} {time.time() - t0:5.1f} s  {detail}", flush=True
            )
            for prob in problems:
                print(f"       - {prob}")

        problems, hits = check_search(page, watch, base, timeout_ms)
        results["search finds momentum"] = problems
        print(
            f"{'ok  ' if not problems else 'FAIL'} search 'momentum': {len(hits)} results "
            f"({', '.join(h.split('?')[0] for h in hits[:4])}{' ...' if len(hits) > 4 else ''})"
        )
        for prob in problems:
            print(f"       - {prob}")

        problems, where = check_solution_toggle(
            page, watch, base, names, shots, timeout_ms
        )
        results["exercise solution opens"] = problems
        print(
            f"{'ok  ' if not problems else 'FAIL'} exercise solution toggle"
            f"{' on ' + where if where else ''}"
        )
        for prob in problems:
            print(f"       - {prob}")
        browser.close()
    server.shutdown()

    failed = [k for k, v in results.items() if v]
    print(
        f"\nscreenshots: {shots}/ ({len(list(shots.glob('*.png')))} files); "
        f"requests blocked: {len(blocked)}; {time.time() - start:.0f} s"
    )
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
